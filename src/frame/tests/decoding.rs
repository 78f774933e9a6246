//! Decoding well-formed streams: Node's bytes, streams split anywhere, split
//! characters, lone surrogates, whitespace and blank lines.

use serde_json::json;

use super::*;

#[test]
fn decodes_the_exact_bytes_node_writes_for_an_object() {
    let bytes = [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d, 0x0a];
    assert_eq!(feed_all(&bytes), ok(&[r#"{"a":1}"#]));
    assert_eq!(value_of(&bytes), json!({"a": 1}));
}

#[test]
fn decodes_the_exact_bytes_node_writes_for_a_string() {
    assert_eq!(feed_all(b"\"x\"\n"), ok(&[r#""x""#]));
    assert_eq!(value_of(b"\"x\"\n"), json!("x"));
}

#[test]
fn decodes_a_raw_u2028_inside_a_string() {
    let bytes = b"\"a\xe2\x80\xa8b\"\n";
    assert_eq!(value_of(bytes), json!("a\u{2028}b"));
}

/// Several messages, with multi-byte characters, CRLF, blanks and padding.
/// Two lines hold a lone surrogate, one of them after another escape: the
/// search for the newline notes the first backslash, wherever a read ends.
const STREAM: &[u8] = "{\"a\":1}\n\"x\"\n\"é😀\u{2028}\"\r\n\n  [1,\"\\ud800\"] \n{\"k\":\"é\"}\n{\"q\":\"\\\"\",\"s\":\"\\udc00\"}\n".as_bytes();

fn stream_expected() -> Vec<Result<String, FrameError>> {
    ok(&[
        r#"{"a":1}"#,
        r#""x""#,
        "\"é😀\u{2028}\"",
        r#"[1,"\ufffd"]"#,
        r#"{"k":"é"}"#,
        r#"{"q":"\"","s":"\ufffd"}"#,
    ])
}

#[test]
fn decodes_a_stream_split_in_two_at_every_offset() {
    assert_eq!(feed_all(STREAM), stream_expected());
    for at in 0..=STREAM.len() {
        let (head, tail) = STREAM.split_at(at);
        assert_eq!(feed(1024, [head, tail]), stream_expected(), "split at {at}");
    }
}

#[test]
fn decodes_a_stream_fed_one_byte_at_a_time() {
    let chunks = STREAM.chunks(1);
    assert_eq!(feed(1024, chunks), stream_expected());
}

#[test]
fn waits_for_the_rest_of_a_split_multibyte_character() {
    for line in ["\"é\"\n", "\"😀\"\n", "\"\u{2028}\"\n"] {
        let bytes = line.as_bytes();
        // Cut after the first byte of the character (just after the opening quote).
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::from(&bytes[..2]);
        assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
        assert_eq!(decoder.scanned, 2, "scanned bytes are remembered");
        buf.extend_from_slice(&bytes[2..]);
        let message = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(message.get(), line.trim_end());
        assert!(buf.is_empty());
    }
}

#[test]
fn replaces_lone_surrogates_and_keeps_pairs() {
    let cases: &[(&str, &str)] = &[
        (r#""\ud800""#, "\u{fffd}"),
        (r#""\uD800""#, "\u{fffd}"),
        (r#""a\udc00b""#, "a\u{fffd}b"),
        (r#""ab\udbff""#, "ab\u{fffd}"),
        (r#""\ud800\n""#, "\u{fffd}\n"),
        (r#""\ud800\u0041""#, "\u{fffd}A"),
        (r#""\ud800x\udc00""#, "\u{fffd}x\u{fffd}"),
        (r#""\udc00\ud800""#, "\u{fffd}\u{fffd}"),
        (r#""\ud800\ud800\udc00""#, "\u{fffd}\u{10000}"),
        (r#""\ud83d\ude00""#, "😀"),
        (r#""\\ud800""#, "\\ud800"),
        (r#""\\\ud800""#, "\\\u{fffd}"),
        (r#""\\\\ud800""#, "\\\\ud800"),
    ];
    for (line, expected) in cases {
        let bytes = format!("{line}\n");
        assert_eq!(value_of(bytes.as_bytes()), json!(expected), "{line}");
    }
    // In a key and nested, too.
    assert_eq!(
        value_of(b"{\"\\ud800\":[{\"x\":\"\\udfff\"}]}\n"),
        json!({"\u{fffd}": [{"x": "\u{fffd}"}]})
    );
}

#[test]
fn leaves_texts_without_lone_surrogates_untouched() {
    for text in [
        r#""\ud83d\ude00""#,
        r#""\\ud800""#,
        r#""\u00e9\n\"\\""#,
        r#"[1,{"a":null}]"#,
    ] {
        assert_eq!(replace_lone_surrogates(text.as_bytes()), None, "{text}");
        let line = format!("{text}\n");
        assert_eq!(feed_all(line.as_bytes()), ok(&[text]));
    }
    // A replacement keeps the length and everything around it.
    assert_eq!(
        replace_lone_surrogates(br#"["\ud800",1]"#).unwrap(),
        br#"["\ufffd",1]"#
    );
}

#[test]
fn strips_crlf_and_surrounding_whitespace() {
    assert_eq!(feed_all(b"{\"a\":1}\r\n"), ok(&[r#"{"a":1}"#]));
    assert_eq!(feed_all(b"  \t{\"a\":1} \t \r\n"), ok(&[r#"{"a":1}"#]));
    assert_eq!(feed_all(b"\r 12 \r\n"), ok(&["12"]));
}

#[test]
fn form_feed_is_not_whitespace_as_json_parse_sees_it() {
    // `JSON.parse("\f1")` throws in Node: such a line is not JSON, and must
    // not be read as `1` (nor a line of only a form feed skipped as blank).
    let results = feed_all(b"\x0c1\n1\x0c\n\x0c\n2\n");
    assert_eq!(results.len(), 4, "{results:?}");
    for result in &results[..3] {
        assert!(
            matches!(result, Err(FrameError::InvalidJson { .. })),
            "{result:?}"
        );
    }
    assert_eq!(results[3], Ok("2".to_owned()));
}

#[test]
fn skips_blank_lines_without_error() {
    assert_eq!(feed_all(b"\n\r\n   \n\t\n1\n\n"), ok(&["1"]));
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(&b"\n \r\n\n"[..]);
    assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
    assert!(buf.is_empty());
}

#[test]
fn decodes_several_messages_from_one_buffer() {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(&b"1\n\"two\"\n[3]\n{\"fo"[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "1");
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), r#""two""#);
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "[3]");
    assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
    assert_eq!(&buf[..], b"{\"fo");
    buf.extend_from_slice(b"ur\":4}\n");
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), r#"{"four":4}"#);
}

#[test]
fn decodes_every_kind_of_top_level_value() {
    let texts = [
        r#"{"a":{"b":[]}}"#,
        "{}",
        "[1,2,[]]",
        "[]",
        r#""str""#,
        "0",
        "-17",
        "3.25",
        "-1.5e-7",
        "true",
        "false",
        "null",
    ];
    let stream: String = texts.iter().map(|t| format!("{t}\n")).collect();
    assert_eq!(feed_all(stream.as_bytes()), ok(&texts));
}
