//! Property tests of the JSON-mode framing: `encode` writes what serde_json writes; what it
//! writes, cut anywhere, decodes to the same values; arbitrary bytes never panic the decoder
//! nor grow its buffer without bound; and lone surrogates decode the way
//! `String::from_utf16_lossy` reads them.

use bytes::BytesMut;
use ipc_request::frame::{FrameDecoder, FrameError, Message, encode};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

/// Characters that stress JSON strings: controls, quotes, backslashes, line and paragraph
/// separators, astral characters, plus anything at all.
fn arb_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => (0u8..0x20).prop_map(char::from),
        1 => prop::sample::select(vec![
            '"', '\\', '/', '\u{7f}', '\u{2028}', '\u{2029}', '\u{fffd}', '\u{feff}', 'é', '😀',
        ]),
    ]
}

fn arb_string() -> impl Strategy<Value = String> {
    prop::collection::vec(arb_char(), 0..12).prop_map(|chars| chars.into_iter().collect())
}

/// A finite f64 that serde_json reads back exactly (without its `float_roundtrip` feature it
/// may be one ulp off on some inputs, which is not what these tests are about).
fn arb_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite and exactly re-read", |f| {
        f.is_finite()
            && serde_json::to_string(f)
                .ok()
                .and_then(|text| serde_json::from_str::<f64>(&text).ok())
                == Some(*f)
    })
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        arb_f64().prop_map(Value::from),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_string(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Cuts `bytes` at the given points (in any order, duplicates allowed) into chunks.
fn cut<'a>(bytes: &'a [u8], points: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = points.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Feeds the chunks one by one, draining after each, then drains at end of stream.
fn decode_chunks(decoder: &mut FrameDecoder, chunks: &[&[u8]]) -> Vec<Result<Message, FrameError>> {
    let mut buf = BytesMut::new();
    let mut results = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(result) = decoder.decode(&mut buf).transpose() {
            results.push(result);
        }
    }
    while let Some(result) = decoder.decode_eof(&mut buf).transpose() {
        results.push(result);
    }
    assert!(buf.is_empty());
    results
}

/// How Node's `JSON.stringify` writes a string of UTF-16 code units: lone surrogates as
/// `\uXXXX` escapes, everything else as text (here optionally as escapes too).
fn js_string_literal(units: &[u16], escape_everything: bool) -> String {
    let mut out = String::from("\"");
    for decoded in char::decode_utf16(units.iter().copied()) {
        match decoded {
            Ok(c) if escape_everything => {
                let mut pair = [0u16; 2];
                for unit in c.encode_utf16(&mut pair) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            Ok(c) => {
                let quoted = serde_json::to_string(&c.to_string()).unwrap();
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
            Err(lone) => out.push_str(&format!("\\u{:04x}", lone.unpaired_surrogate())),
        }
    }
    out.push('"');
    out
}

proptest! {
    /// `encode` writes strings with its own escaper (see
    /// `frame/json_writer.rs`); everything must still come out exactly as
    /// serde_json writes it.
    #[test]
    fn encode_writes_exactly_what_serde_json_writes(
        value in arb_value(),
        long in prop::collection::vec(arb_char(), 0..48).prop_map(String::from_iter),
    ) {
        for value in [value, Value::String(long)] {
            let mut line = Vec::new();
            encode(&value, 1 << 20, &mut line).unwrap();
            let mut expected = serde_json::to_vec(&value).unwrap();
            expected.push(b'\n');
            prop_assert_eq!(String::from_utf8(line).unwrap(), String::from_utf8(expected).unwrap());
        }
    }

    #[test]
    fn encoded_values_cut_anywhere_decode_to_the_same_values(
        values in prop::collection::vec(arb_value(), 0..8),
        points in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for value in &values {
            let before = stream.len();
            encode(value, 1 << 20, &mut stream).unwrap();
            let line = &stream[before..];
            prop_assert_eq!(line.iter().filter(|&&b| b < 0x20).count(), 1);
            prop_assert_eq!(line.last(), Some(&b'\n'));
        }
        let chunks = cut(&stream, &points);
        let decoded = decode_chunks(&mut FrameDecoder::new(1 << 20), &chunks);
        let decoded: Vec<Value> = decoded
            .into_iter()
            .map(|message| serde_json::from_str(message.unwrap().get()).unwrap())
            .collect();
        prop_assert_eq!(decoded, values);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_the_buffer_stays_bounded(
        max_len in 64usize..512,
        chunks in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    4 => any::<u8>(),
                    2 => Just(b'\n'),
                    4 => prop::sample::select(b"{}[]\":, \r\t\\u0123456789abcdefDnrtl-.eE".to_vec()),
                ],
                0..700,
            ),
            0..12,
        ),
    ) {
        let mut decoder = FrameDecoder::new(max_len);
        let mut buf = BytesMut::new();
        let mut messages = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            buf.extend_from_slice(chunk);
            loop {
                let result = if i + 1 == chunks.len() {
                    decoder.decode_eof(&mut buf)
                } else {
                    decoder.decode(&mut buf)
                };
                prop_assert!(
                    buf.len() <= max_len + chunk.len(),
                    "buffer of {} bytes, max_len {}, chunk {}", buf.len(), max_len, chunk.len()
                );
                match result {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => break,
                    Err(FrameError::TooLong { len, max }) => {
                        prop_assert_eq!(max, max_len);
                        prop_assert!(len > max_len);
                    }
                    Err(FrameError::InvalidJson { snippet, .. }) => {
                        prop_assert!(snippet.chars().count() <= 64);
                    }
                    Err(error) => {
                        prop_assert!(false, "decoder returned {}", error);
                    }
                }
            }
            // Between reads the buffer holds at most one unfinished line.
            prop_assert!(buf.len() <= max_len);
        }
        for message in messages {
            let text = message.get();
            prop_assert!(!text.is_empty() && text.len() <= max_len);
            prop_assert_eq!(text.trim_ascii(), text);
            prop_assert!(!text.contains('\n'));
            let mut line = Vec::new();
            encode(&message, max_len, &mut line).unwrap();
            let again = decode_chunks(&mut FrameDecoder::new(max_len), &[&line]);
            prop_assert_eq!(again.len(), 1);
            let again = again.into_iter().next().unwrap().unwrap();
            // Tabs and CRs between tokens are dropped by `encode`; the value is the same.
            let squeezed: String = text.chars().filter(|c| !matches!(c, '\t' | '\r')).collect();
            prop_assert_eq!(again.get(), squeezed);
        }
    }

    #[test]
    fn js_strings_with_lone_surrogates_decode_like_from_utf16_lossy(
        units in prop::collection::vec(
            prop_oneof![
                2 => any::<u16>(),
                2 => 0xD800u16..0xE000,
                1 => Just(u16::from(b'\\')),
                1 => Just(u16::from(b'u')),
            ],
            0..16,
        ),
        escape_everything in any::<bool>(),
        points in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        let literal = js_string_literal(&units, escape_everything);
        let stream = format!("{literal}\n[{literal},{{{literal}:0}}]\n");
        let chunks = cut(stream.as_bytes(), &points);
        let decoded = decode_chunks(&mut FrameDecoder::default(), &chunks);
        let expected = String::from_utf16_lossy(&units);
        let values: Vec<Value> = decoded
            .into_iter()
            .map(|message| serde_json::from_str(message.unwrap().get()).unwrap())
            .collect();
        let mut object = Map::new();
        object.insert(expected.clone(), Value::from(0));
        prop_assert_eq!(
            values,
            vec![
                Value::String(expected.clone()),
                Value::Array(vec![Value::String(expected), Value::Object(object)]),
            ]
        );
    }
}
