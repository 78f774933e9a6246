//! Encoding: Node's bytes, buffer sizes, control characters and embedded raw
//! JSON, what a failed encode leaves, round trips, and error messages.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;

#[test]
fn encode_writes_the_bytes_node_writes() {
    assert_eq!(
        encoded(&json!({"a": 1})),
        [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d, 0x0a]
    );
    assert_eq!(encoded("x"), b"\"x\"\n");
    assert_eq!(encoded(&()), b"null\n");
    assert_eq!(encoded("a\u{2028}b"), "\"a\u{2028}b\"\n".as_bytes());
}

#[test]
fn encode_appends_after_existing_content() {
    let mut out = b"1\n".to_vec();
    encode(&[2, 3], 100, &mut out).unwrap();
    encode("four", 100, &mut out).unwrap();
    assert_eq!(out, b"1\n[2,3]\n\"four\"\n");
}

#[test]
fn encode_sizes_the_buffer_of_a_big_string_once() {
    // Without room for the closing bytes, the closing quote would double
    // the buffer and copy the whole line (see `LINE_TAIL_ROOM`).
    let text = "x".repeat(1 << 20);
    let mut out = Vec::with_capacity(64);
    encode_wrapped(&[b"{\"payload\":"], text.as_str(), b"}", usize::MAX, &mut out).unwrap();
    assert_eq!(out.len(), text.len() + 15);
    assert!(
        out.capacity() < out.len() + 2 * super::writing::LINE_TAIL_ROOM,
        "a {}-byte line grew its buffer to {} bytes",
        out.len(),
        out.capacity()
    );
}

#[test]
fn encode_never_writes_raw_control_characters() {
    let every_control: String = (0u8..0x20).chain([0x7f]).map(char::from).collect();
    let value = json!({ every_control.clone(): [every_control.clone(), "\u{2028}\u{2029}"] });
    let out = encoded(&value);
    assert_eq!(out.last(), Some(&b'\n'));
    assert!(
        out[..out.len() - 1].iter().all(|&b| b >= 0x20),
        "raw control byte in {out:?}"
    );
    assert_eq!(value_of(&out), value);
}

#[test]
fn encode_removes_newlines_from_embedded_raw_json() {
    let raw = RawValue::from_string("{\n  \"a\": [1,\r\n\t2],\n  \"b\": \"x y\"\n}".into()).unwrap();
    let out = encoded(&("p", &raw));
    let line = std::str::from_utf8(&out).unwrap();
    assert_eq!(line, "[\"p\",{  \"a\": [1,2],  \"b\": \"x y\"}]\n");
    assert_eq!(value_of(&out), json!(["p", {"a": [1, 2], "b": "x y"}]));
    // Whitespace around a raw value is not part of it (the encoder's check
    // for brackets at its start relies on that).
    for text in ["\r\n [1,\n2]\t\n", "\n\"a b\"\n", "\t1\r\n"] {
        let raw = RawValue::from_string(text.into()).unwrap();
        let out = encoded(&raw);
        assert!(
            !out[..out.len() - 1]
                .iter()
                .any(|b| matches!(b, b'\n' | b'\r' | b'\t')),
            "{text:?}"
        );
    }
}

#[test]
fn encode_counts_embedded_raw_json_without_the_whitespace_it_leaves_out() {
    let raw = RawValue::from_string("[1,\n\t2]".into()).unwrap();
    let mut out = Vec::new();
    encode(&raw, 5, &mut out).unwrap();
    assert_eq!(out, b"[1,2]\n");
    assert!(matches!(
        encode(&raw, 4, &mut out),
        Err(FrameError::TooLong { max: 4, .. })
    ));
    assert_eq!(out, b"[1,2]\n", "a refused message leaves nothing behind");
}

#[test]
fn encode_too_long_restores_out() {
    let mut out = b"earlier\n".to_vec();
    assert_eq!(encode("abcd", 6, &mut out), Ok(()));
    assert_eq!(out, b"earlier\n\"abcd\"\n");
    let before = out.clone();
    let error = encode("abcde", 6, &mut out).unwrap_err();
    assert!(
        matches!(error, FrameError::TooLong { len, max: 6 } if len > 6),
        "{error:?}"
    );
    assert_eq!(out, before);
    let big = vec!["some text"; 1000];
    assert!(matches!(
        encode(&big, 100, &mut out),
        Err(FrameError::TooLong { max: 100, .. })
    ));
    assert_eq!(out, before);
}

#[test]
fn encode_error_restores_out() {
    let mut map = HashMap::new();
    map.insert(vec![1u8, 2], "value");
    let mut out = b"earlier\n".to_vec();
    let error = encode(&map, 1000, &mut out).unwrap_err();
    match error {
        FrameError::Encode { reason } => assert!(reason.contains("key"), "{reason}"),
        other => panic!("expected Encode, got {other:?}"),
    }
    assert_eq!(out, b"earlier\n");
    // A nested failure, after much has been written, is undone too.
    let nested = json!([1, 2, "three"]);
    let mut out = Vec::new();
    assert!(matches!(
        encode(&(nested, &map), 1000, &mut out),
        Err(FrameError::Encode { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn encode_then_decode_roundtrips() {
    let values = [
        json!({"_IPC_REQUEST/PAYLOAD": {"x": [1, 2.5, null, true]}, "s": "a\nb\"c\\"}),
        json!("é😀\u{2028}\u{0}"),
        json!([]),
        json!(-0.0),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(null),
    ];
    let mut out = Vec::new();
    for value in &values {
        encode(value, 1024, &mut out).unwrap();
    }
    let decoded: Vec<Value> = feed(1024, [out.as_slice()])
        .into_iter()
        .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
        .collect();
    assert_eq!(decoded, values);
    // And a decoded message re-encodes to the same text.
    let message: Message = serde_json::from_str(r#"{"a":[1,"\ufffd"]}"#).unwrap();
    assert_eq!(encoded(&message), b"{\"a\":[1,\"\\ufffd\"]}\n");
}

#[test]
fn error_messages_name_the_numbers() {
    let too_long = FrameError::TooLong { len: 70, max: 64 }.to_string();
    assert!(too_long.contains("70") && too_long.contains("64"), "{too_long}");
    let invalid = FrameError::InvalidJson {
        reason: "expected value".into(),
        snippet: "nope".into(),
    }
    .to_string();
    assert!(
        invalid.contains("expected value") && invalid.contains("nope"),
        "{invalid}"
    );
}

#[test]
fn encode_wrapped_counts_the_suffix_against_the_maximum() {
    // "[1]" is 3 bytes: the suffix is what takes it past 2. Without it
    // counted, a line longer than the maximum (or than what Node reads,
    // NODE_MAX_LINE_LEN) would go out: the protocol's `}` ends every
    // request and answer this way.
    let mut out = b"earlier\n".to_vec();
    assert_eq!(
        encode_wrapped(&[b"["], &1, b"]", 2, &mut out),
        Err(FrameError::TooLong { len: 3, max: 2 })
    );
    assert_eq!(out, b"earlier\n");
    assert_eq!(encode_wrapped(&[b"["], &1, b"]", 3, &mut out), Ok(()));
    assert_eq!(out, b"earlier\n[1]\n");
}

#[test]
fn encode_wrapped_refuses_a_prefix_already_past_the_maximum() {
    // The prefix alone (5 bytes) is over the maximum: refused with its own
    // length, before the value is written, and `out` is left as it was.
    let mut out = b"xyz".to_vec();
    assert_eq!(
        encode_wrapped(&[b"[1,", b"2,"], &3, b"]", 4, &mut out),
        Err(FrameError::TooLong { len: 5, max: 4 })
    );
    assert_eq!(out, b"xyz");
    // A prefix of exactly the maximum is not refused for itself; the value
    // after it is, and the length reported is past the maximum, as the
    // error's own message ("exceeds the maximum") says.
    let error = encode_wrapped(&[b"[1,2"], &3, b"]", 4, &mut out).unwrap_err();
    assert!(
        matches!(error, FrameError::TooLong { len, max: 4 } if len > 4),
        "{error:?}"
    );
    assert_eq!(out, b"xyz");
}

#[test]
fn encode_writes_a_big_top_level_string_into_an_empty_buffer() {
    // The one big write that comes first in the line: room is made for it
    // in a buffer that holds nothing yet (the other big-string test has a
    // prefix before it).
    let text = "x".repeat(5_000);
    let mut out = Vec::new();
    encode(text.as_str(), DEFAULT_MAX_MESSAGE_LEN, &mut out).unwrap();
    assert_eq!(out, format!("\"{text}\"\n").into_bytes());
}
