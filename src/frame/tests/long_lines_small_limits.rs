//! The reference model of `against_a_full_scan`, with lines long enough to
//! pass BAD_LINE_HEAD_LEN (the early report and the discarding after it),
//! limits around it, and the head kept for each bad line checked too.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::sample::select(b"\n\\\"\" \r\tab{}[],:1".to_vec()).prop_map(|b| vec![b]),
        2 => prop::sample::select(vec![&b"\\ud800"[..], b"\\\\", b"\r\n", b"\xff", b" \n"]).prop_map(<[u8]>::to_vec),
        2 => (0usize..2_500).prop_map(|n| b"y".repeat(n)),
        2 => (0usize..2_500).prop_map(|n| [b"[\"", &b"z".repeat(n)[..], b"\"]\n"].concat()),
        1 => (0usize..40).prop_map(|n| [&b" ".repeat(n)[..], b"[1]\n"].concat()),
    ]
}

fn head_of(line: &[u8]) -> Vec<u8> {
    reference_trim_start(&line[..line.len().min(BAD_LINE_HEAD_LEN)]).to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]
    #[test]
    fn long_lines_match_the_reference(
        pieces in prop::collection::vec(piece(), 0..12),
        points in prop::collection::vec(any::<Index>(), 0..12),
        max_len in prop_oneof![0usize..24, 1_000usize..1_100, 4_090usize..4_100, Just(DEFAULT_MAX_MESSAGE_LEN)],
    ) {
        let (input, mut want, mut got) = (pieces.concat(), Vec::new(), Vec::new());
        let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let last = lines.pop().unwrap();
        for line in lines.into_iter().chain((last.len() > max_len).then_some(last)) {
            // The head is cut before leading whitespace is trimmed: from
            // the line with only its end trimmed.
            let untrimmed_end = reference_trim_end(line);
            let trimmed = reference_trim_start(untrimmed_end);
            if line.len() > max_len {
                want.push((Err("too long".to_owned()), Some(head_of(line))));
                continue;
            }
            if trimmed.is_empty() {
                continue;
            }
            let fixed = replace_lone_surrogates(trimmed);
            let bytes = fixed.as_deref().unwrap_or(trimmed);
            let result = match std::str::from_utf8(bytes) {
                Ok(text) => parse_message(text).map_err(|e| invalid_json(&e, trimmed)),
                Err(_) => serde_json::from_slice(bytes).map_err(|e| invalid_json(&e, trimmed)),
            };
            let head = result.is_err().then(|| head_of(untrimmed_end));
            want.push((show(result), head));
        }
        let (mut decoder, mut buf) = (FrameDecoder::new(max_len), BytesMut::new());
        let at = cut_points(&points, input.len());
        for (i, pair) in at.windows(2).enumerate() {
            buf.extend_from_slice(&input[pair[0]..pair[1]]);
            loop {
                let result = if i == at.len() - 2 {
                    decoder.decode_eof(&mut buf)
                } else {
                    decoder.decode(&mut buf)
                };
                let Some(result) = result.transpose() else { break };
                let head = result.is_err().then(|| decoder.bad_line_head().to_vec());
                got.push((show(result), head));
            }
            prop_assert!(
                buf.len() <= max_len.max(BAD_LINE_HEAD_LEN - 1),
                "{} bytes held under a limit of {}", buf.len(), max_len
            );
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, want);
    }
}
