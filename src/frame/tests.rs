//! Byte-level tests of the frame layer.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;

/// Decodes everything `buf` holds now, until `decode` returns `Ok(None)`.
fn drain(decoder: &mut FrameDecoder, buf: &mut BytesMut) -> Vec<Result<String, FrameError>> {
    let mut results = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Some(message)) => results.push(Ok(message.get().to_owned())),
            Ok(None) => return results,
            Err(error) => results.push(Err(error)),
        }
    }
}

/// Feeds `chunks` one after the other, draining after each, then decodes at end of stream.
fn feed<'a>(max_len: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Result<String, FrameError>> {
    let mut decoder = FrameDecoder::new(max_len);
    let mut buf = BytesMut::new();
    let mut results = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        results.extend(drain(&mut decoder, &mut buf));
    }
    while let Some(message) = decoder.decode_eof(&mut buf).transpose() {
        results.push(message.map(|m| m.get().to_owned()));
    }
    assert!(buf.is_empty(), "decode_eof left {buf:?}");
    results
}

/// A decode result with the message as text, for comparisons.
fn text(result: Result<Option<Message>, FrameError>) -> Result<Option<String>, FrameError> {
    result.map(|m| m.map(|m| m.get().to_owned()))
}

fn feed_all(bytes: &[u8]) -> Vec<Result<String, FrameError>> {
    feed(DEFAULT_MAX_MESSAGE_LEN, [bytes])
}

fn ok(texts: &[&str]) -> Vec<Result<String, FrameError>> {
    texts.iter().map(|t| Ok(t.to_string())).collect()
}

/// The one message in `line`, parsed as a `Value` (which a lone surrogate would break).
fn value_of(line: &[u8]) -> Value {
    let results = feed_all(line);
    assert_eq!(results.len(), 1, "{results:?}");
    let text = results[0].as_ref().expect("a message");
    serde_json::from_str(text).expect("the message parses as a Value")
}

fn encoded(value: &(impl serde::Serialize + ?Sized)) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, DEFAULT_MAX_MESSAGE_LEN, &mut out).expect("encodes");
    out
}

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

#[test]
fn accepts_a_line_of_exactly_max_len_and_rejects_one_more() {
    // 8 bytes: "[1,2,34]"; with padding it is 9 bytes before trimming.
    assert_eq!(feed(8, [&b"[1,2,34]\n"[..]]), ok(&["[1,2,34]"]));
    assert_eq!(
        feed(8, [&b"[1,2,34]\r\n"[..]]),
        vec![Err(FrameError::TooLong { len: 9, max: 8 })]
    );
}

#[test]
fn over_long_line_with_its_newline_is_consumed_and_the_next_decodes() {
    let results = feed(8, [&b"[1,2,3,4,5,6]\n7\n"[..]]);
    assert_eq!(
        results,
        vec![Err(FrameError::TooLong { len: 13, max: 8 }), Ok("7".into())]
    );
}

#[test]
fn over_long_line_without_its_newline_is_reported_at_once_and_discarded() {
    let mut decoder = FrameDecoder::new(8);
    let mut buf = BytesMut::from(&b"[1,2,3"[..]);
    assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
    buf.extend_from_slice(b",4,5");
    assert_eq!(
        text(decoder.decode(&mut buf)),
        Err(FrameError::TooLong { len: 10, max: 8 })
    );
    assert!(buf.is_empty(), "the buffer is cleared at once");
    // The rest of the line, in pieces, is dropped without another error.
    buf.extend_from_slice(b",6,7,8,9,10,11,12");
    assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
    assert!(buf.is_empty());
    buf.extend_from_slice(b",13]\ntrue\n[2]");
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "true");
    assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
    assert_eq!(&buf[..], b"[2]");
    buf.extend_from_slice(b"\n");
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "[2]");
}

#[test]
fn over_long_blank_line_is_too_long() {
    assert_eq!(
        feed(4, [&b"      \n1\n"[..]]),
        vec![Err(FrameError::TooLong { len: 6, max: 4 }), Ok("1".into())]
    );
}

#[test]
fn invalid_line_is_reported_and_the_next_decodes() {
    let results = feed_all(b"nope\n{\"a\":1}\n");
    assert_eq!(results.len(), 2);
    match &results[0] {
        Err(FrameError::InvalidJson { reason, snippet }) => {
            assert_eq!(snippet, "nope");
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    assert_eq!(results[1], Ok(r#"{"a":1}"#.to_string()));
}

#[test]
fn rejects_what_is_not_exactly_one_json_value() {
    for line in [
        &b"1 2\n"[..],
        b"{\"a\":1}{\"b\":2}\n",
        b"\"a\x01b\"\n",
        b"\"a\tb\"\n",
        b"{\"a\":}\n",
        b"\"unterminated\n",
        b"\"bad escape \\x\"\n",
        b"\"\xff\xfe\"\n",
        b"\"\xe2\x80\"\n",
        b"NaN\n",
        b"\\\n",
        b"\"a\\\n",
        b"\"\\u\n",
        b"\"\\ud800\\\n",
        b"\"\\ud800\\u12\n",
    ] {
        let results = feed_all(line);
        assert!(
            matches!(results.as_slice(), [Err(FrameError::InvalidJson { .. })]),
            "{line:?}: {results:?}"
        );
    }
}

#[test]
fn invalid_json_snippet_is_short_and_lossy() {
    let mut line = vec![b'x'; 200];
    line.push(b'\n');
    match feed_all(&line).as_slice() {
        [Err(FrameError::InvalidJson { snippet, .. })] => assert_eq!(snippet, &"x".repeat(64)),
        other => panic!("{other:?}"),
    }
    match feed_all(b"  \"\xff\"  \n").as_slice() {
        [Err(FrameError::InvalidJson { snippet, .. })] => assert_eq!(snippet, "\"\u{fffd}\""),
        other => panic!("{other:?}"),
    }
    let wide = "😀".repeat(100) + "\n";
    match feed_all(wide.as_bytes()).as_slice() {
        [Err(FrameError::InvalidJson { snippet, .. })] => assert_eq!(snippet, &"😀".repeat(64)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn decode_eof_returns_complete_lines_and_drops_the_unfinished_one() {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(&b"1\n\n2\r\n{\"unfinished\":"[..]);
    assert_eq!(decoder.decode_eof(&mut buf).unwrap().unwrap().get(), "1");
    assert_eq!(decoder.decode_eof(&mut buf).unwrap().unwrap().get(), "2");
    assert_eq!(text(decoder.decode_eof(&mut buf)), Ok(None));
    assert!(buf.is_empty());
    // A complete-looking value without its newline is unfinished too.
    let mut buf = BytesMut::from(&b"true"[..]);
    assert_eq!(text(decoder.decode_eof(&mut buf)), Ok(None));
    assert!(buf.is_empty());
}

#[test]
fn decode_eof_reports_errors_of_complete_lines_and_resets() {
    let mut decoder = FrameDecoder::new(4);
    let mut buf = BytesMut::from(&b"oops\n123456"[..]);
    assert!(matches!(
        decoder.decode_eof(&mut buf),
        Err(FrameError::InvalidJson { .. })
    ));
    assert_eq!(
        text(decoder.decode_eof(&mut buf)),
        Err(FrameError::TooLong { len: 6, max: 4 })
    );
    assert_eq!(text(decoder.decode_eof(&mut buf)), Ok(None));
    assert!(!decoder.discarding);
    // A new stream through the same decoder starts clean.
    buf.extend_from_slice(b"7\n");
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().get(), "7");
}

#[test]
fn default_decoder_uses_the_default_limit() {
    assert_eq!(FrameDecoder::default().max_len(), DEFAULT_MAX_MESSAGE_LEN);
    assert_eq!(FrameDecoder::new(10).max_len(), 10);
}

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
fn decode_with_hands_the_parser_clean_trimmed_text_and_reports_its_errors() {
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::from(&b"  {\"a\":\"\\ud800\"}\r\n[1, 2 \nnot json\n\xff\n"[..]);
    let mut seen = Vec::new();
    let mut parse = |line: LineText<'_>| {
        seen.push((line.text().to_owned(), line.as_sent().to_owned()));
        serde_json::from_str::<Value>(line.text())
    };
    assert_eq!(
        decoder.decode_with(&mut buf, &mut parse),
        Ok(Some(json!({"a": "\u{fffd}"})))
    );
    assert!(matches!(
        decoder.decode_with(&mut buf, &mut parse),
        Err(FrameError::InvalidJson { .. })
    ));
    assert!(matches!(
        decoder.decode_with(&mut buf, &mut parse),
        Err(FrameError::InvalidJson { .. })
    ));
    // Not UTF-8: refused before any parser sees it.
    let not_utf8 = decoder.decode_with(&mut buf, &mut parse);
    assert!(
        matches!(not_utf8, Err(FrameError::InvalidJson { .. })),
        "{not_utf8:?}"
    );
    assert_eq!(decoder.decode_with(&mut buf, &mut parse), Ok(None));
    let seen: Vec<(&str, &str)> = seen.iter().map(|(text, sent)| (&text[..], &sent[..])).collect();
    assert_eq!(
        seen,
        [
            (r#"{"a":"\ufffd"}"#, r#"{"a":"\ud800"}"#),
            ("[1, 2", "[1, 2"),
            ("not json", "not json")
        ]
    );
}

#[test]
fn invalid_utf8_inside_a_string_is_reported_with_its_position() {
    let results = feed_all(b"{\"a\":\"\xff\"}\n");
    match &results[..] {
        [Err(FrameError::InvalidJson { reason, .. })] => {
            assert!(reason.contains("column 7"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_line_in_several_reads_keeps_its_backslash_free_prefix() {
    let (mut decoder, mut buf) = (FrameDecoder::default(), BytesMut::from(&b"[\"ab"[..]));
    assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
    buf.extend_from_slice(b"cd");
    assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
    assert_eq!(
        decoder.clean, 6,
        "a later read goes on looking for the first backslash"
    );
    buf.extend_from_slice(b"e\\\"");
    assert_eq!(text(decoder.decode(&mut buf)), Ok(None));
    assert_eq!(decoder.clean, 7);
}

/// Any stream, cut anywhere, decodes as splitting it on `\n` and rewriting each trimmed line
/// with the full-scan `replace_lone_surrogates` does: same texts parsed, same results.
mod against_a_full_scan {
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

    /// A result, with the length of a TooLong left out: it depends on where the reads fall.
    fn show(result: Result<Message, FrameError>) -> Result<String, String> {
        result.map(|m| m.get().to_owned()).map_err(|e| match e {
            FrameError::TooLong { .. } => "too long".to_owned(),
            e => e.to_string(),
        })
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
                // JSON whitespace, as `JSON.parse` skips it (not form feed).
                let mut trimmed = line;
                while let [b' ' | b'\t' | b'\r', rest @ ..] = trimmed {
                    trimmed = rest;
                }
                while let [rest @ .., b' ' | b'\t' | b'\r'] = trimmed {
                    trimmed = rest;
                }
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
            let mut at: Vec<usize> =
                points.iter().map(|i| i.index(input.len() + 1)).chain([0, input.len()]).collect();
            at.sort();
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
}

#[test]
fn the_head_of_an_over_long_line_is_kept_for_the_layer_above() {
    let line = format!("  [\"{}\"]", "y".repeat(BAD_LINE_HEAD_LEN + 1_000));
    let head = &line.as_bytes()[2..2 + BAD_LINE_HEAD_LEN];
    // Its newline seen in the same read, then not yet seen.
    for (bytes, len) in [(format!("{line}\n[1]\n"), line.len()), (line.clone(), line.len())] {
        let mut decoder = FrameDecoder::new(100);
        assert!(decoder.bad_line_head().is_empty());
        let mut buf = BytesMut::from(bytes.as_bytes());
        let results = drain(&mut decoder, &mut buf);
        assert_eq!(results[0], Err(FrameError::TooLong { len, max: 100 }));
        assert_eq!(decoder.bad_line_head(), head, "leading whitespace skipped");
    }
    // A short over-long line is kept whole.
    let mut decoder = FrameDecoder::new(4);
    let mut buf = BytesMut::from(&b"[1,2,3]\n"[..]);
    drain(&mut decoder, &mut buf);
    assert_eq!(decoder.bad_line_head(), b"[1,2,3]");
}

#[test]
fn the_head_of_a_line_that_is_not_json_is_kept_for_the_layer_above() {
    let bad = format!(
        "\t{{\"a\":\"\u{e9}\",\"b\":[{}\u{ff}",
        "1,".repeat(BAD_LINE_HEAD_LEN)
    );
    let mut bytes = bad.clone().into_bytes();
    *bytes.last_mut().unwrap() = 0xff; // and not UTF-8 either
    bytes.extend_from_slice(b"\n[1]\n{\"c\":}\n");
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::from(&bytes[..]);
    let results = drain(&mut decoder, &mut buf);
    assert!(
        matches!(results[0], Err(FrameError::InvalidJson { .. })),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1], Ok("[1]".to_string()));
    assert!(
        matches!(results[2], Err(FrameError::InvalidJson { .. })),
        "{:?}",
        results[2]
    );
    // The last bad line's, trimmed, whole: it is short.
    assert_eq!(decoder.bad_line_head(), br#"{"c":}"#);
    // The first one's, cut at the limit, leading whitespace skipped.
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(decoder.decode(&mut buf).is_err());
    assert_eq!(decoder.bad_line_head(), &bytes[1..1 + BAD_LINE_HEAD_LEN]);
    // A line read well leaves it as it was.
    assert_eq!(
        decoder.decode(&mut buf).map(|m| m.map(|m| m.get().to_string())),
        Ok(Some("[1]".into()))
    );
    assert_eq!(decoder.bad_line_head(), &bytes[1..1 + BAD_LINE_HEAD_LEN]);
}
