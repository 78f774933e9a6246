use super::*;

fn msg(s: &str) -> Message {
    serde_json::from_str(s).unwrap()
}

fn encode<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

/// The UID of a request for `uid` as the peer's request would hand it over.
fn peer_uid(uid: &str) -> PeerUid {
    match classify(msg(&encode(&MessageOut::request(uid, &0)))) {
        Inbound::Request { uid, .. } => uid,
        other => panic!("{other:?}"),
    }
}

/// The JSON text of `uid` between its quotes.
fn json_text(uid: &str) -> String {
    let quoted = encode(uid);
    quoted[1..quoted.len() - 1].to_owned()
}

/// A line we wrote, as a JSON value.
fn value(line: &[u8]) -> serde_json::Value {
    assert_eq!(line.last(), Some(&b'\n'));
    serde_json::from_slice(line).unwrap()
}

#[test]
fn only_uids_written_as_we_write_ours_are_ours() {
    assert_eq!(our_id("1"), Ok(1));
    assert_eq!(our_id("18446744073709551615"), Ok(u64::MAX));
    for not_ours in [
        "",
        "0",
        "01",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1a",
        "18446744073709551616",
    ] {
        assert_eq!(our_id(not_ours), Err(not_ours.to_string()), "{not_ours:?}");
    }
}

#[test]
fn byte_written_envelopes_match_the_serde_ones() {
    let payload = serde_json::json!({"a": [1, "x\n\u{2028}"], "b": null});
    for uid in [
        "7",
        "18446744073709551615",
        "a-b_c.d:e",
        "needs \"escaping\"",
        "é",
        "",
    ] {
        let mut fast = Vec::new();
        encode_request(uid, &payload, 1 << 20, &mut fast).unwrap();
        let slow = encode(&MessageOut::request(uid, &payload));
        let slow_value: serde_json::Value = serde_json::from_str(&slow).unwrap();
        assert_eq!(value(&fast), slow_value, "{uid}");
        let peer = peer_uid(uid);
        assert_eq!(peer.as_json(), json_text(uid));
        assert!(
            matches!(classify(msg(std::str::from_utf8(&fast).unwrap().trim_end())), Inbound::Request { uid: u, .. } if u == peer)
        );

        // Answers give the peer's UID back as it came.
        let mut line = Vec::new();
        encode_response(&peer, &payload, 1 << 20, &mut line).unwrap();
        let want = serde_json::json!({
            "_IPC_REQUEST/MSG_TYPE": "_IPC_REQUEST/MSG_TYPE:RESPONSE",
            "_IPC_REQUEST/REQUEST_UID": uid,
            "_IPC_REQUEST/PAYLOAD": payload,
        });
        assert_eq!(value(&line), want, "{uid}");
        let error = RemoteError::new("E", "m");
        line.clear();
        encode_error_response(&peer, &error, 1 << 20, &mut line).unwrap();
        let want = serde_json::json!({
            "_IPC_REQUEST/MSG_TYPE": "_IPC_REQUEST/MSG_TYPE:RESPONSE",
            "_IPC_REQUEST/REQUEST_UID": uid,
            "_IPC_REQUEST/PAYLOAD": null,
            "_IPC_REQUEST/ERROR": error,
        });
        assert_eq!(value(&line), want, "{uid}");
        line.clear();
        encode_handshake_response(&peer, 1 << 20, &mut line).unwrap();
        let want = serde_json::json!({
            "_IPC_REQUEST/HANDSHAKE_UID": uid,
            "_IPC_REQUEST/HANDSHAKE_MSG_TYPE": "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:RESPONSE",
            "_IPC_REQUEST/EXTENSIONS": OUR_EXTENSIONS,
        });
        assert_eq!(value(&line), want, "{uid}");
    }
    // The limit counts the whole line, envelope included.
    let mut out = b"kept".to_vec();
    let err = encode_request("1", &"x".repeat(100), 120, &mut out).unwrap_err();
    assert!(matches!(err, FrameError::TooLong { max: 120, .. }), "{err}");
    assert_eq!(out, b"kept");
}

#[test]
fn request_roundtrip() {
    let text = encode(&MessageOut::request("7", &serde_json::json!({"a": [1, 2]})));
    match classify(msg(&text)) {
        Inbound::Request { uid, payload } => {
            assert_eq!(uid.as_json(), "7");
            assert_eq!(payload.get(), r#"{"a":[1,2]}"#);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn null_payload_is_still_a_request_but_missing_payload_is_plain() {
    let with_null = r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":null}"#;
    assert!(matches!(classify(msg(with_null)), Inbound::Request { payload, .. } if payload.get() == "null"));
    let without =
        r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"1"}"#;
    assert!(matches!(classify(msg(without)), Inbound::Plain(_)));
}

#[test]
fn one_dot_zero_shapes_as_the_js_library_writes_them() {
    // Key order and spacing as JSON.stringify writes them from 1.0.
    let hs = r#"{"_IPC_REQUEST/HANDSHAKE_UID":"abc","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST"}"#;
    assert!(
        matches!(classify(msg(hs)), Inbound::HandshakeRequest { uid, extensions: None } if uid.as_json() == "abc")
    );
    let res = r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"x1","_IPC_REQUEST/PAYLOAD":"hi"}"#;
    assert!(
        matches!(classify(msg(res)), Inbound::Response { uid: Err(uid), payload, error: None } if uid == "x1" && payload.get() == "\"hi\"")
    );
}

#[test]
fn extensions_are_read_and_unknown_entries_ignored() {
    let hs = r#"{"_IPC_REQUEST/HANDSHAKE_UID":"u","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:RESPONSE","_IPC_REQUEST/EXTENSIONS":["error",5,"future"]}"#;
    match classify(msg(hs)) {
        Inbound::HandshakeResponse { extensions, .. } => {
            assert_eq!(extensions.unwrap(), vec!["error", "future"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn extension_names_are_kept_within_bounds() {
    let extensions = |list: &str| {
        let hs = format!(
            r#"{{"_IPC_REQUEST/HANDSHAKE_UID":"u","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST","_IPC_REQUEST/EXTENSIONS":{list}}}"#
        );
        match classify(msg(&hs)) {
            Inbound::HandshakeRequest { extensions, .. } => extensions.unwrap(),
            other => panic!("{other:?}"),
        }
    };
    // Names past the first MAX_EXTENSION_NAMES, and names too long, are
    // dropped; values of every kind, nested too, are skipped over.
    let many: Vec<String> = (0..MAX_EXTENSION_NAMES + 10).map(|i| format!("n{i}")).collect();
    let long = "x".repeat(MAX_EXTENSION_NAME_LEN + 1);
    let just = "y".repeat(MAX_EXTENSION_NAME_LEN);
    let names: Vec<String> = many.iter().map(|name| format!(r#""{name}""#)).collect();
    let listed = format!(
        r#"["{long}","{just}",[["cancel"]],{{"error":1}},null,true,-1,2.5,"a\u0062c",{}]"#,
        names.join(",")
    );
    let got = extensions(&listed);
    assert_eq!(got.len(), MAX_EXTENSION_NAMES);
    assert_eq!((got[0].as_str(), got[1].as_str()), (just.as_str(), "abc"));
    assert_eq!(got[2..], many[..MAX_EXTENSION_NAMES - 2]);
    // Not a list: no names (the peer still advertised extensions).
    for not_a_list in [r#""error""#, r#"{"0":"error"}"#, "7"] {
        assert_eq!(extensions(not_a_list), Vec::<String>::new(), "{not_a_list}");
    }
}

#[test]
fn an_error_code_of_another_kind_is_kept_as_sent() {
    let text = r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"3","_IPC_REQUEST/PAYLOAD":null,"_IPC_REQUEST/ERROR":{"code":{ "b" : [1, 2] , "a":null }}}"#;
    match classify(msg(text)) {
        Inbound::Response { error: Some(e), .. } => {
            let code = remote_error(&e).code;
            assert_eq!(code, Some(serde_json::json!(r#"{ "b" : [1, 2] , "a":null }"#)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn our_handshake_carries_extensions() {
    let text = encode(&HandshakeOut::request("u1"));
    assert!(text.contains(r#""_IPC_REQUEST/EXTENSIONS":["error","cancel"]"#));
    assert!(matches!(classify(msg(&text)), Inbound::HandshakeRequest { .. }));
}

#[test]
fn error_response_roundtrip() {
    let err = RemoteError::new("TypeError", "boom")
        .with_code("E_BOOM")
        .with_data(serde_json::json!({"n": 1}));
    let mut line = Vec::new();
    encode_error_response(&peer_uid("3"), &err, 1 << 20, &mut line).unwrap();
    match classify(msg(std::str::from_utf8(&line).unwrap().trim_end())) {
        Inbound::Response { payload, error, .. } => {
            assert_eq!(payload.get(), "null");
            assert_eq!(remote_error(&error.unwrap()), err);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_error_code_goes_out_as_a_string_or_a_number_only() {
    // PROTOCOL.md section 3: `code` is a string or a number. The field is
    // public and holds any JSON value; what is written never breaks that.
    let written = |code: Option<serde_json::Value>| {
        let mut err = RemoteError::new("E", "m");
        err.code = code;
        let mut line = Vec::new();
        encode_error_response(&peer_uid("3"), &err, 1 << 20, &mut line).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&line).unwrap();
        line["_IPC_REQUEST/ERROR"].get("code").cloned()
    };
    use serde_json::json;
    assert_eq!(written(Some(json!("ENOENT"))), Some(json!("ENOENT")));
    assert_eq!(written(Some(json!(-7))), Some(json!(-7)));
    assert_eq!(written(Some(json!(true))), Some(json!("true")));
    assert_eq!(written(Some(json!({"x": [1]}))), Some(json!(r#"{"x":[1]}"#)));
    assert_eq!(written(Some(json!(null))), None, "no code key at all");
    assert_eq!(written(None), None);
    assert_eq!(
        RemoteError::new("E", "m").with_code(json!([1])).code,
        Some(json!("[1]"))
    );
    assert_eq!(RemoteError::new("E", "m").with_code(json!(null)).code, None);
    assert_eq!(RemoteError::new("E", "m").with_code(3).code, Some(json!(3)));
}

#[test]
fn an_error_code_read_is_a_string_or_a_number_too() {
    let read = |code: &str| {
        let text = format!(
            r#"{{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"3","_IPC_REQUEST/PAYLOAD":null,"_IPC_REQUEST/ERROR":{{"name":"E","message":"m","code":{code}}}}}"#
        );
        match classify(msg(&text)) {
            Inbound::Response { error: Some(e), .. } => remote_error(&e).code,
            other => panic!("{other:?}"),
        }
    };
    use serde_json::json;
    assert_eq!(read(r#""EPIPE""#), Some(json!("EPIPE")));
    assert_eq!(read("32"), Some(json!(32)));
    assert_eq!(read("false"), Some(json!("false")));
    assert_eq!(read(r#"{"a":1}"#), Some(json!(r#"{"a":1}"#)));
    assert_eq!(read("null"), None);
}

#[test]
fn an_error_whose_data_or_code_is_too_deep_for_a_value_keeps_its_name_and_message() {
    // Node nests as deep as it likes; serde_json's `Value` stops at 128.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let text = format!(
        r#"{{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"3","_IPC_REQUEST/PAYLOAD":null,"_IPC_REQUEST/ERROR":{{"name":"TypeError","message":"bad input","code":{deep},"stack":"at x","data":{{"d":{deep}}}}}}}"#
    );
    match classify(msg(&text)) {
        Inbound::Response { error: Some(e), .. } => {
            let e = remote_error(&e);
            assert_eq!((e.name.as_str(), e.message.as_str()), ("TypeError", "bad input"));
            assert_eq!(e.stack.as_deref(), Some("at x"));
            assert_eq!(e.code, Some(serde_json::Value::String(deep.clone())));
            // The data is its text, however deep.
            assert_eq!(
                e.data.as_deref().map(|d| d.get()),
                Some(format!(r#"{{"d":{deep}}}"#).as_str())
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_error_still_fails_the_request() {
    let text = r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"3","_IPC_REQUEST/PAYLOAD":null,"_IPC_REQUEST/ERROR":"oops"}"#;
    match classify(msg(text)) {
        Inbound::Response { error: Some(e), .. } => assert_eq!(remote_error(&e).message, "\"oops\""),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_messages_stay_plain() {
    for text in [
        "1",
        "\"_IPC_REQUEST/MSG_TYPE\"",
        r#"{"a":1}"#,
        r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:OTHER","_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":1}"#,
        r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":5,"_IPC_REQUEST/PAYLOAD":1}"#,
        r#"{"_IPC_REQUEST/HANDSHAKE_UID":"u"}"#,
    ] {
        assert!(
            matches!(classify(msg(text)), Inbound::Plain(m) if m.get() == text),
            "{text}"
        );
    }
}

#[test]
fn parse_inbound_accepts_what_the_frame_parser_accepts_and_classifies_alike() {
    let request = encode(&MessageOut::request("7", &serde_json::json!([1, "x"])));
    let response = |uid: &str, payload: serde_json::Value| {
        let mut line = Vec::new();
        encode_response(&peer_uid(uid), &payload, 1 << 20, &mut line).unwrap();
        String::from_utf8(line).unwrap().trim_end().to_owned()
    };
    let texts = [
        request.clone(),
        response("7", "y".into()),
        response("not-ours", 1.into()),
        encode(&MessageOut::cancel("7")),
        encode(&HandshakeOut::request("u")),
        r#"{"a":1}"#.to_string(),
        "[1,2]".to_string(),
        "\"_IPC_REQUEST/\"".to_string(),
        // Not JSON, though the envelope is all there.
        format!("{request}x"),
        format!("{request}{{}}"),
        format!(" \n{request}\t"),
        request.replace("\"_IPC_REQUEST/PAYLOAD\":", "\"_IPC_REQUEST/PAYLOAD\":01"),
        request.replace("\"x\"", "\"\u{1}\""),
        // JSON, but plain: a duplicate envelope key, a UID of the wrong type.
        request.replacen('{', r#"{"_IPC_REQUEST/MSG_TYPE":1,"#, 1),
        request.replace(r#""7""#, "7"),
    ];
    for text in &texts {
        let two_pass = frame::parse_message(text).map(classify);
        let one_pass = parse_inbound(LineText::clean(text));
        assert_eq!(one_pass.is_ok(), two_pass.is_ok(), "{text}");
        if let (Ok(one), Ok(two)) = (one_pass, two_pass) {
            assert_eq!(format!("{one:?}"), format!("{two:?}"), "{text}");
        }
    }
}

#[test]
fn the_exact_envelope_reader_agrees_with_the_serde_one() {
    // Every combination: where the byte-level reader answers, the serde
    // reader gives the same answer and the text is JSON.
    let heads = [
        REQUEST_HEAD,
        RESPONSE_HEAD,
        r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:CANCEL","_IPC_REQUEST/REQUEST_UID":""#,
    ];
    let uids = [
        "7",
        "",
        "a-b_c.d:e",
        "18446744073709551616",
        "x\"y",
        "x\\\\y",
        "é",
        "a b",
    ];
    let separators = [
        UID_TO_PAYLOAD,
        r#"", "_IPC_REQUEST/PAYLOAD":"#,
        r#"","_IPC_REQUEST/PAYLOAD" :"#,
    ];
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let payloads = [
        &deep,
        "1e400",
        r#""\ud800""#,
        "\t\n1",
        "[1,]",
        "1",
        "-0.5e3",
        "01",
        "1.",
        "null",
        "tru",
        "true",
        r#""s""#,
        r#""a\"b""#,
        r#""\u00""#,
        "\"\u{1}\"",
        "[1,{\"x\":null}]",
        "{}",
        "[",
        " 1",
        "1 ",
        "",
        r#""}""#,
    ];
    let suffixes = [
        "}",
        " }",
        "}x",
        "}}",
        "",
        r#","_IPC_REQUEST/ERROR":{}}"#,
        r#","cmd":"x"}"#,
        r#","_IPC_REQUEST/PAYLOAD":2}"#,
    ];
    let mut answered = 0;
    for head in heads {
        for uid in uids {
            for separator in separators {
                for payload in payloads {
                    for suffix in suffixes {
                        let text = format!("{head}{uid}{separator}{payload}{suffix}");
                        let Some(exact) = classify_exact(&text) else {
                            continue;
                        };
                        answered += 1;
                        assert!(frame::parse_message(&text).is_ok(), "{text}");
                        let envelope =
                            classify_envelope(LineText::clean(&text)).expect("the serde reader answers too");
                        assert_eq!(format!("{exact:?}"), format!("{envelope:?}"), "{text}");
                    }
                }
            }
        }
    }
    // 2 heads x 4 plain UIDs x 1 separator x 14 valid payloads x 1 suffix.
    assert_eq!(answered, 112);
}

proptest::proptest! {
    #[test]
    fn what_we_write_is_read_by_the_exact_reader(uid in "[0-9a-zA-Z._:-]{0,20}", n in proptest::num::i64::ANY, text in ".{0,20}") {
        let payload = serde_json::json!([n, text, {"k": null}]);
        let mut line = Vec::new();
        encode_request(&uid, &payload, 1 << 20, &mut line).unwrap();
        let line = std::str::from_utf8(&line).unwrap().trim_end();
        let sent = serde_json::to_string(&payload).unwrap();
        let is_request = matches!(
            classify_exact(line),
            Some(Inbound::Request { uid: u, payload: p }) if u.as_json() == uid && p.get() == sent
        );
        proptest::prop_assert!(is_request, "{}", line);
        let mut line = Vec::new();
        encode_response(&PeerUid::plain(&uid), &payload, 1 << 20, &mut line).unwrap();
        let line = std::str::from_utf8(&line).unwrap().trim_end();
        let is_response = matches!(
            classify_exact(line),
            Some(Inbound::Response { uid: u, payload: p, error: None })
                if u == our_id(&uid) && p.get() == sent
        );
        proptest::prop_assert!(is_response, "{}", line);
    }
}

proptest::proptest! {
    /// The channel skips its search for Node's own messages on the
    /// lines this reader takes (`parse_inbound_line` says `exact`):
    /// sound only if none of them has a top-level `cmd`, however the
    /// payload and what follows it try to smuggle one in.
    #[test]
    fn lines_the_exact_reader_takes_are_never_nodes_own(
        head in proptest::sample::select(vec![REQUEST_HEAD, RESPONSE_HEAD]),
        uid in "[0-9a-zA-Z._:-]{0,6}",
        payload in proptest::sample::select(vec![
            r#"{"cmd":"NODE_HANDLE"}"#, r#"1,"cmd":"NODE_HANDLE""#, r#""x","cmd":"NODE_HANDLE""#,
            r#"{}, "cmd":"NODE_HANDLE""#, r#"null}{"cmd":"NODE_HANDLE""#, "1", r#""\u0063md""#,
            r#"[1]"cmd""#, r#"1 ,"\u0063md":"NODE_X""#, r#"{"a":1}"#, "\"NODE_HANDLE\"",
        ]),
        tail in proptest::sample::select(vec![
            "}", r#","cmd":"NODE_HANDLE"}"#, r#","\u0063md":"NODE_HANDLE"}"#, "} ", "}\n", "",
        ]),
    ) {
        let text = format!("{head}{uid}{UID_TO_PAYLOAD}{payload}{tail}");
        if let Ok((_, true)) = parse_inbound_line(LineText::clean(&text)) {
            proptest::prop_assert!(crate::channel::node_internal_cmd(&text).is_none(), "{}", text);
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(object.len(), 3, "{}", text);
            proptest::prop_assert!(!object.contains_key("cmd"), "{}", text);
        }
    }
}

#[test]
fn arrays_are_never_protocol_messages() {
    for text in [
        r#"["_IPC_REQUEST/MSG_TYPE:REQUEST","1",{"a":1}]"#,
        r#"["_IPC_REQUEST/MSG_TYPE:RESPONSE","5",null]"#,
    ] {
        assert!(matches!(classify(msg(text)), Inbound::Plain(_)), "{text}");
        assert!(!is_protocol_message(text), "{text}");
    }
}

#[test]
fn protocol_lookalikes_are_detected_for_sending() {
    assert!(is_protocol_message(
        r#"{"\u005fIPC_REQUEST/HANDSHAKE_UID":"u","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":5}"#
    ));
    assert!(is_protocol_message(
        r#"{"_IPC_REQUEST/MSG_TYPE":1,"_IPC_REQUEST/MSG_TYPE":2,"_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":0}"#
    ));
    assert!(is_protocol_message(&encode(&MessageOut::cancel("1"))));
    assert!(!is_protocol_message(r#"{"_IPC_REQUEST/x":1}"#));
    assert!(!is_protocol_message(r#"{"a":1}"#));
}

#[test]
fn a_too_long_line_is_known_by_its_envelope_up_to_the_payload() {
    let request = encode(&MessageOut::request("42", &"x".repeat(300)));
    let response = r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"7","_IPC_REQUEST/PAYLOAD":[1,2,3]}"#;
    assert_eq!(
        unreadable_line(&request.as_bytes()[..120]),
        Some(UnreadableLine::Request(PeerUid::plain("42")))
    );
    assert_eq!(
        unreadable_line(response.as_bytes()),
        Some(UnreadableLine::Response(Ok(7)))
    );
    // Cut before the payload key: the UID may not be whole.
    let cut = request.find("\",\"_IPC_REQUEST/PAYLOAD").unwrap();
    assert_eq!(unreadable_line(&request.as_bytes()[..cut]), None);
    assert_eq!(unreadable_line(&request.as_bytes()[..cut - 1]), None);
    // Other shapes are only reported.
    assert_eq!(unreadable_line(br#"{"a":"_IPC_REQUEST/MSG_TYPE"}"#), None);
    assert_eq!(unreadable_line(b"[1,2,3]"), None);
    // A UID with escapes, lone surrogates included, as the peer wrote it
    // (no parser has seen this line: the decoder keeps its head as sent).
    for (written, kept) in [
        (r#""4\u0032""#, "42"),
        (r#""\ud800\"""#, r#"\ud800\""#),
        (r#""a\\""#, r"a\\"),
    ] {
        let escaped = request.replacen("\"42\"", written, 1);
        let uid = match unreadable_line(escaped.as_bytes()) {
            Some(UnreadableLine::Request(uid)) => uid,
            other => panic!("{written}: {other:?}"),
        };
        assert_eq!(uid.as_json(), kept);
    }
    let answer = |uid: &str| unreadable_line(response.replacen("\"7\"", uid, 1).as_bytes());
    assert_eq!(answer(r#""\u0037""#), Some(UnreadableLine::Response(Ok(7))));
    assert_eq!(
        answer(r#""\ud800""#),
        Some(UnreadableLine::Response(Err(r"\ud800".into())))
    );
    // What would go back to the peer must be well formed: no raw control
    // character, no broken escape, no string without its end in the head.
    for broken in [
        "\"a\u{1}\"",
        r#""\x""#,
        r#""\u12""#,
        r#""\u12g4""#,
        r#""a\"#,
        r#""\""#,
    ] {
        let escaped = request.replacen("\"42\"", broken, 1);
        assert_eq!(unreadable_line(escaped.as_bytes()), None, "{broken}");
    }
}

#[test]
fn a_too_long_line_is_known_whatever_the_order_of_its_envelope() {
    // Nothing in the protocol orders the keys: a peer that writes the UID
    // first, or with whitespace between tokens, still gets its request
    // refused and its answer to ours failed, rather than waiting for ever.
    let uid_first = r#"{"_IPC_REQUEST/REQUEST_UID":"42","_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/PAYLOAD":"xxxx"#;
    assert_eq!(
        unreadable_line(uid_first.as_bytes()),
        Some(UnreadableLine::Request(PeerUid::plain("42")))
    );
    let spaced = "{ \"_IPC_REQUEST/MSG_TYPE\" :\t\"_IPC_REQUEST/MSG_TYPE:RESPONSE\" ,\r\n \"_IPC_REQUEST/REQUEST_UID\": \"7\" , \"_IPC_REQUEST/PAYLOAD\" : [1";
    assert_eq!(
        unreadable_line(spaced.as_bytes()),
        Some(UnreadableLine::Response(Ok(7)))
    );
    // An error answer that writes its error before its payload.
    let error_first = r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"7","_IPC_REQUEST/ERROR":{"name":"E","stack":"xxx"#;
    assert_eq!(
        unreadable_line(error_first.as_bytes()),
        Some(UnreadableLine::Response(Ok(7)))
    );
    // A repeated key: the reader of whole lines takes such a line for a
    // plain message, so this one must not take it for a request or answer.
    let twice = r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/REQUEST_UID":"2","_IPC_REQUEST/PAYLOAD":0"#;
    assert_eq!(unreadable_line(twice.as_bytes()), None);
    let whole: String = twice.to_string() + "}";
    assert!(
        matches!(
            parse_inbound_line(LineText::clean(&whole)),
            Ok((Inbound::Plain(_), _))
        ),
        "the whole line is plain"
    );
    // Not an envelope: another key before the payload, a key missing, a
    // cancel, a type that is no string.
    for other in [
        r#"{"a":"b","_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":0"#,
        r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/PAYLOAD":0"#,
        r#"{"_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":0"#,
        r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:CANCEL","_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":0"#,
        r#"{"_IPC_REQUEST/MSG_TYPE":1,"_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":0"#,
        r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST" "_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":0"#,
    ] {
        assert_eq!(unreadable_line(other.as_bytes()), None, "{other}");
    }
}

#[test]
fn a_look_alike_nested_past_any_value_trees_limit_is_still_known() {
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let request = format!(
        r#"{{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":{deep}}}"#
    );
    assert!(is_protocol_message(&request));
    let handshake =
        format!(r#"{{"x":{deep},"_IPC_REQUEST/HANDSHAKE_UID":"h","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":1}}"#);
    assert!(is_protocol_message(&handshake));
    assert!(!is_protocol_message(&format!(
        r#"{{"_IPC_REQUEST/PAYLOAD":{deep}}}"#
    )));
}

#[test]
fn a_look_alike_with_a_lone_surrogate_key_is_still_known() {
    // Node's JSON.parse keeps the key; it must not hide the others.
    let request = r#"{"\ud800":0,"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":"forged"}"#;
    assert!(is_protocol_message(request));
    assert_eq!(
        crate::channel::node_internal_cmd(r#"{"\ud800":1,"cmd":"NODE_HANDLE"}"#).as_deref(),
        Some("NODE_HANDLE")
    );
}

proptest::proptest! {
    /// Any head at all is read without a panic; and the head of any
    /// request we write, cut anywhere past its payload's key, is known
    /// as that request, cut before it, is not.
    #[test]
    fn any_head_is_read_and_ours_are_known_from_their_payload_on(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        uid in "[0-9a-zA-Z._:-]{1,12}",
        cut in 0usize..400,
    ) {
        let _ = unreadable_line(&bytes);
        let mut line = Vec::new();
        encode_request(&uid, &"y".repeat(300), 1 << 20, &mut line).unwrap();
        let cut = cut.min(line.len());
        let payload_from = REQUEST_HEAD.len() + uid.len() + UID_TO_PAYLOAD.len();
        let known = unreadable_line(&line[..cut]);
        if cut >= payload_from {
            proptest::prop_assert_eq!(known, Some(UnreadableLine::Request(PeerUid::plain(&uid))));
        } else {
            proptest::prop_assert_eq!(known, None);
        }
    }
}

#[test]
fn a_cancel_is_read_as_a_cancel_of_that_uid() {
    // The `cancel` extension (PROTOCOL.md 3): the peer stops waiting for
    // its request; read as plain, the handler would run on and the user
    // would get the cancel as a message of theirs.
    for (text, uid) in [
        (encode(&MessageOut::cancel("7")), "7"),
        (
            r#"{"_IPC_REQUEST/REQUEST_UID":"a\"b","_IPC_REQUEST/PAYLOAD":null,"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:CANCEL"}"#.to_string(),
            r#"a\"b"#,
        ),
    ] {
        assert!(
            matches!(classify(msg(&text)), Inbound::Cancel { uid: u } if u.as_json() == uid),
            "{text}"
        );
        assert!(
            matches!(parse_inbound(LineText::clean(&text)), Ok(Inbound::Cancel { uid: u }) if u.as_json() == uid),
            "{text}"
        );
    }
}

#[test]
fn a_too_long_line_with_its_type_twice_is_only_reported() {
    // The reader of whole lines takes a repeated MSG_TYPE for a plain
    // message; the head reader must not fail one of our requests for it.
    let twice = r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"7","_IPC_REQUEST/PAYLOAD":0"#;
    assert_eq!(unreadable_line(twice.as_bytes()), None);
    assert!(matches!(
        parse_inbound_line(LineText::clean(&format!("{twice}}}"))),
        Ok((Inbound::Plain(_), _))
    ));
}

#[test]
fn a_peer_uid_shows_as_its_json_text() {
    // Log lines show a UID as the peer wrote it, a lone surrogate as its
    // escape.
    let uid = match unreadable_line(
        br#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"a\uD800\"","_IPC_REQUEST/PAYLOAD":"#,
    ) {
        Some(UnreadableLine::Request(uid)) => uid,
        other => panic!("{other:?}"),
    };
    assert_eq!(uid.to_string(), r#"a\ud800\""#);
    assert_eq!(format!("{uid:?}"), r#"PeerUid("a\ud800\"")"#);
}
