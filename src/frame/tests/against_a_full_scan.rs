//! Any stream, cut anywhere, decodes as splitting it on `\n` and rewriting each trimmed line
//! with the full-scan `replace_lone_surrogates` does: same texts parsed, same results.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

fn piece() -> impl Strategy<Value = Vec<u8>> {
    let tokens: Vec<&[u8]> = vec![
        b"\\ud800",
        b"\\udc00",
        b"\\ud83d\\ude00",
        b"\\\\",
        b"\\\"",
        b"\\u0041",
        b"ud800",
        "é😀\u{2028}".as_bytes(),
        &"😀".as_bytes()[..2],
        b"\r\n",
        b"\xff",
        b"a",
        b" ",
        b"\x0c",
    ];
    let pad = prop::sample::select(vec![&b""[..], b" ", b"\t ", b"\r"]);
    prop_oneof![
        8 => prop::sample::select(b"\n\\\\\\ud80c\"\" \r\tabAfF{}[],:1".to_vec()).prop_map(|b| vec![b]),
        4 => prop::sample::select(tokens.clone()).prop_map(<[u8]>::to_vec),
        3 => (pad.clone(), prop::collection::vec(prop::sample::select(tokens), 0..6), pad)
            .prop_map(|(pre, body, post)| [pre, b"[\"", &body.concat(), b"\"]", post, b"\n"].concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]
    #[test]
    fn matches_the_reference(
        pieces in prop::collection::vec(piece(), 0..60),
        points in prop::collection::vec(any::<Index>(), 0..12),
        max_len in prop_oneof![Just(DEFAULT_MAX_MESSAGE_LEN), 0usize..24],
    ) {
        let (input, mut want, mut got) = (pieces.concat(), Vec::new(), Vec::new());
        let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        // Unterminated: dropped at the end, unless already too long.
        let last = lines.pop().unwrap();
        for line in lines.into_iter().chain((last.len() > max_len).then_some(last)) {
            let trimmed = reference_trim_end(reference_trim_start(line));
            let fixed = replace_lone_surrogates(trimmed);
            let bytes = fixed.as_deref().unwrap_or(trimmed);
            let result = match std::str::from_utf8(bytes) {
                _ if line.len() > max_len => Err(FrameError::TooLong { len: 0, max: 0 }),
                _ if trimmed.is_empty() => continue,
                Ok(text) => {
                    let sent = std::str::from_utf8(trimmed).unwrap();
                    want.push(Ok(format!("seen {text} as {sent}")));
                    parse_message(text).map_err(|e| invalid_json(&e, trimmed))
                }
                Err(_) => serde_json::from_slice(bytes).map_err(|e| invalid_json(&e, trimmed)),
            };
            want.push(show(result));
        }
        let (mut decoder, mut buf) = (FrameDecoder::new(max_len), BytesMut::new());
        let at = cut_points(&points, input.len());
        for (i, pair) in at.windows(2).enumerate() {
            buf.extend_from_slice(&input[pair[0]..pair[1]]);
            loop {
                let mut seen = None;
                let parse = |line: LineText<'_>| {
                    seen = Some(Ok(format!("seen {} as {}", line.text(), line.as_sent())));
                    parse_message(line.text())
                };
                let result = if i == at.len() - 2 {
                    decoder.decode_eof_with(&mut buf, parse)
                } else {
                    decoder.decode_with(&mut buf, parse)
                };
                got.extend(seen);
                let Some(result) = result.transpose() else { break };
                got.push(show(result));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, want);
    }
}
