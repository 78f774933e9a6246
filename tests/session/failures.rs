//! Failures: handler errors and panics, no handler, closing, lines too long
//! or bad, answers and errors too long to send, what could not be decoded,
//! and answers that are not ours.

use std::time::Duration;

use crate::a_session_with_a_hand_played_peer_over_a_socket;
use crate::common;
use crate::common::{connected, ops_handler};
use ipc_request::{
    Channel, ChannelConfig, CloseReason, Error, RemoteError, Request, Responder, handler_fn, responder_fn,
    setup,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn handler_errors_panics_and_dropped_responders_answer_with_errors() {
    let (a, b) = Channel::pair(ChannelConfig::default());
    let handler = responder_fn(|req: Request, responder: Responder| async move {
        match req.payload::<String>().unwrap().as_str() {
            "error" => {
                let _ = responder
                    .fail(
                        RemoteError::new("TypeError", "boom")
                            .with_code("E_BOOM")
                            .with_data(json!({"n": 1})),
                    )
                    .await;
            }
            "panic" => panic!("handler exploded"),
            "drop" => drop(responder),
            "twice" => {
                responder.respond(&1).await.unwrap();
                assert!(matches!(responder.respond(&2).await, Err(Error::AlreadyAnswered)));
            }
            _ => {
                let _ = responder.respond(&"ok").await;
            }
        }
    });
    let (client, _server) = tokio::join!(setup(a, None), setup(b, handler));
    let client = client.unwrap();
    match client.request::<_, Value>("error").await {
        Err(Error::Remote(e)) => {
            assert_eq!((e.name.as_str(), e.message.as_str()), ("TypeError", "boom"));
            assert_eq!(e.code, Some(json!("E_BOOM")));
            assert_eq!(e.data_as::<Value>().unwrap().unwrap(), json!({"n": 1}));
        }
        other => panic!("{other:?}"),
    }
    match client.request::<_, Value>("panic").await {
        Err(Error::Remote(e)) => assert_eq!(e.name, "HandlerPanicked"),
        other => panic!("{other:?}"),
    }
    match client.request::<_, Value>("drop").await {
        Err(Error::Remote(e)) => assert_eq!(e.name, "ResponderDropped"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.request::<_, Value>("twice").await.unwrap(), json!(1));
    // Still serving after all that.
    assert_eq!(client.request::<_, Value>("fine").await.unwrap(), json!("ok"));
}

#[tokio::test]
async fn a_panic_in_a_returning_handler_carries_its_message() {
    let (a, b) = Channel::pair(ChannelConfig::default());
    let handler = handler_fn(|_req: Request| async move {
        if true {
            panic!("exploded with detail");
        }
        Ok::<_, RemoteError>(0)
    });
    let (client, _server) = tokio::join!(setup(a, None), setup(b, handler));
    match client.unwrap().request::<_, Value>(&0).await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.name, "HandlerPanicked");
            assert_eq!(e.message, "exploded with detail");
        }
        other => panic!("{other:?}"),
    }
}

/// The answer's `Serialize` is the handler's code too: a panic there is
/// answered as one in the handler, with its message (it once lost it, the
/// responder answering for it as dropped by a panic), and the session goes
/// on serving.
#[tokio::test]
async fn a_panic_while_a_returned_answer_is_serialized_carries_its_message() {
    struct PanicsWhenWritten;
    impl serde::Serialize for PanicsWhenWritten {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            panic!("serialize panicked")
        }
    }
    let (a, b) = Channel::pair(ChannelConfig::default());
    let handler = handler_fn(|req: Request| async move {
        match req.payload::<String>()?.as_str() {
            "panic" => Ok::<_, RemoteError>(Err(PanicsWhenWritten)),
            _ => Ok(Ok("fine")),
        }
    });
    let (client, _server) = tokio::join!(setup(a, None), setup(b, handler));
    let client = client.unwrap();
    match client.request::<_, Value>(&"panic").await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.name, "HandlerPanicked");
            assert_eq!(e.message, "serialize panicked");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        client.request::<_, Value>(&"again").await.unwrap(),
        json!({"Ok": "fine"})
    );
    assert_eq!(client.pending_requests(), 0);
}

/// So is the conversion of the handler's error, which runs its `Display`.
#[tokio::test]
async fn a_panic_while_a_returned_error_is_converted_carries_its_message() {
    #[derive(Debug)]
    struct PanicsWhenShown;
    impl std::fmt::Display for PanicsWhenShown {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display panicked")
        }
    }
    impl std::error::Error for PanicsWhenShown {}
    let (a, b) = Channel::pair(ChannelConfig::default());
    let handler = handler_fn(|req: Request| async move {
        match req.payload::<String>().unwrap().as_str() {
            "panic" => Err(PanicsWhenShown),
            _ => Ok("fine"),
        }
    });
    let (client, _server) = tokio::join!(setup(a, None), setup(b, handler));
    let client = client.unwrap();
    match client.request::<_, Value>(&"panic").await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.name, "HandlerPanicked");
            assert_eq!(e.message, "display panicked");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.request::<_, Value>(&"again").await.unwrap(), json!("fine"));
}

#[tokio::test]
async fn requests_to_a_side_without_handler_fail_with_no_handler() {
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, _server) = tokio::join!(setup(a, None), setup(b, None));
    match client.unwrap().request::<_, Value>(&0).await {
        Err(Error::Remote(e)) => assert_eq!(e.name, "NoHandler"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn closing_fails_pending_requests_on_both_sides_and_later_calls() {
    let (a, b) = connected().await;
    let pending = {
        let b = b.clone();
        tokio::spawn(async move { b.request::<_, Value>(&json!({"op":"sleep","ms":60_000})).await })
    };
    let mine = {
        let a = a.clone();
        tokio::spawn(async move { a.request::<_, Value>(&json!({"op":"sleep","ms":60_000})).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.close();
    assert!(matches!(
        mine.await.unwrap(),
        Err(Error::Closed(CloseReason::Local))
    ));
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Closed(CloseReason::PeerClosed)), "{err}");
    assert!(matches!(b.closed().await, CloseReason::PeerClosed));
    assert!(matches!(
        a.request::<_, Value>(&1).await,
        Err(Error::Closed(CloseReason::Local))
    ));
    assert!(matches!(b.send(&1).await, Err(Error::Closed(_))));
}

#[tokio::test]
async fn a_too_long_request_fails_alone() {
    let config = ChannelConfig {
        max_message_len: 1024,
        ..Default::default()
    };
    let (a, b) = Channel::pair(config);
    let (a, _b) = tokio::join!(setup(a, ops_handler()), setup(b, ops_handler()));
    let a = a.unwrap();
    let big = "x".repeat(2000);
    let err = a
        .request::<_, Value>(&json!({"op":"echo","data":big}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Frame(ipc_request::FrameError::TooLong { max: 1024, .. })
        ),
        "{err}"
    );
    assert_eq!(a.pending_requests(), 0);
    assert_eq!(
        a.request::<_, Value>(&json!({"op":"echo","data":"small"}))
            .await
            .unwrap(),
        json!("small")
    );
}

#[tokio::test]
async fn a_line_too_long_for_its_reader_fails_its_request_instead_of_leaving_it_waiting() {
    // Node has no length limit, so a peer may send more than our limit. An
    // answer too long to read fails its request; a request too long for
    // the peer is answered by the peer with an error.
    let (small_io, big_io) = tokio::io::duplex(64 * 1024);
    let small_config = ChannelConfig {
        max_message_len: 1024,
        ..Default::default()
    };
    let (small, big) = tokio::join!(
        setup(Channel::from_stream(small_io, small_config), ops_handler()),
        setup(
            Channel::from_stream(big_io, ChannelConfig::default()),
            ops_handler()
        ),
    );
    let (small, big) = (small.unwrap(), big.unwrap());
    let within = Duration::from_secs(5);
    let answer = tokio::time::timeout(
        within,
        small.request::<_, Value>(&json!({"op":"repeat","n":2000})),
    )
    .await
    .expect("a request whose answer was too long was left waiting");
    assert!(
        matches!(
            answer,
            Err(Error::Frame(ipc_request::FrameError::TooLong { max: 1024, .. }))
        ),
        "{answer:?}"
    );
    assert_eq!(small.pending_requests(), 0);
    let big_request = json!({"op":"echo","data":"x".repeat(2000)});
    let refused = tokio::time::timeout(within, big.request::<_, Value>(&big_request))
        .await
        .expect("a request too long for the peer was left waiting");
    match refused {
        Err(Error::Remote(e)) => {
            assert_eq!(e.name, "RequestTooLong");
            assert!(e.message.contains("1024"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    for side in [&small, &big] {
        let echo = side.request::<_, Value>(&json!({"op":"echo","data":"on"})).await;
        assert_eq!(echo.unwrap(), json!("on"), "the session goes on");
    }
}

#[tokio::test]
async fn a_too_long_request_read_in_pieces_is_answered_though_its_uid_ends_past_the_first() {
    // The envelope that says whom to answer is read from the line's first
    // 4 KiB. Under a limit below that, the line passes the limit before its
    // UID is all in; it was reported then, with the UID cut, and the peer
    // never answered. The pipe holds 1,100 bytes, so the session reads the
    // line in pieces of at most that.
    let config = ChannelConfig {
        max_message_len: 1047,
        ..Default::default()
    };
    let (_session, mut reader, mut writer) = common::hand_played::serve_a_hand_played_peer(
        ops_handler(),
        config,
        1_100,
        Some(&["error", "cancel"]),
    )
    .await;
    let uid = format!("{}-5", "u".repeat(2_738));
    common::hand_played::write_protocol_line(&mut writer, "REQUEST", &uid, r#"{"op":"echo","data":1}"#).await;
    let line = common::hand_played::next_line(&mut reader, "the too-long request was never answered").await;
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["_IPC_REQUEST/REQUEST_UID"], json!(uid));
    assert_eq!(answer["_IPC_REQUEST/ERROR"]["name"], "RequestTooLong", "{answer}");
    common::hand_played::write_protocol_line(&mut writer, "REQUEST", "6", r#"{"op":"echo","data":2}"#).await;
    let line = common::hand_played::next_line(&mut reader, "the session went on").await;
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["_IPC_REQUEST/PAYLOAD"], json!(2), "{answer}");
}

#[tokio::test]
async fn a_bad_line_from_the_peer_is_reported_and_the_session_goes_on() {
    let (a_io, b_io) = tokio::io::duplex(64 * 1024);
    let (mut b_read, mut b_write) = tokio::io::split(b_io);
    // b speaks the protocol by hand: answer a's handshake, then send garbage
    // and a plain message.
    let a = tokio::spawn(setup(Channel::from_stream(a_io, ChannelConfig::default()), None));
    common::answer_handshake_as_one_dot_zero(&mut b_read, &mut b_write).await;
    b_write.write_all(b"not json\n{\"after\":1}\n").await.unwrap();
    let a = a.await.unwrap().unwrap();
    assert!(!a.peer().advertises_extensions, "a 1.0 peer");
    let mut messages = a.messages().unwrap();
    let bad = messages.recv().await.unwrap().unwrap_err();
    assert!(
        matches!(bad, Error::Frame(ipc_request::FrameError::InvalidJson { .. })),
        "{bad}"
    );
    assert_eq!(messages.recv().await.unwrap().unwrap(), json!({"after": 1}));
}

#[tokio::test]
async fn an_answer_too_long_to_send_reaches_the_caller_as_an_error() {
    let config = ChannelConfig {
        max_message_len: 4096,
        ..Default::default()
    };
    let (a, b) = Channel::pair(config);
    let handler = handler_fn(|_req: Request| async move { Ok::<_, RemoteError>("z".repeat(10_000)) });
    let (client, server) = tokio::join!(setup(a, None), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    match client.request::<_, Value>(&0).await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.name, "ResponseNotSent");
            assert!(e.message.contains("4096"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_error_too_long_to_send_goes_shortened_then_as_error_too_large() {
    let config = ChannelConfig {
        max_message_len: 4096,
        ..Default::default()
    };
    let (a, b) = Channel::pair(config);
    // Too long by its data, its message or its name, as the request says.
    let handler = handler_fn(|req: Request| async move {
        let long = |text: &str| text.repeat(10_000);
        let error = match req.payload::<String>()?.as_str() {
            "data" => RemoteError::new("BigError", "what the caller needs")
                .with_data(long("d"))
                .with_stack("at handler"),
            "data, no message" => RemoteError::new("BigError", "").with_data(long("d")),
            // Three bytes a character: 1,024 bytes end inside one.
            "message" => RemoteError::new("BigError", long("€")),
            _ => RemoteError::new(long("N"), "m").with_data(long("dd")),
        };
        Err::<(), _>(error.with_code("E_BIG"))
    });
    let (client, server) = tokio::join!(setup(a, None), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    async fn fail(client: &ipc_request::Session, too_long_by: &str) -> RemoteError {
        match client.request::<_, Value>(&too_long_by).await {
            Err(Error::Remote(e)) => *e,
            other => panic!("{other:?}"),
        }
    }

    // Too long by its data: the rest goes, and says what was left out.
    let e = fail(&client, "data").await;
    assert_eq!((e.name.as_str(), &e.code), ("BigError", &Some(json!("E_BIG"))));
    assert_eq!(e.stack, None);
    assert!(e.data.is_none());
    let note = "what the caller needs (its data and its stack not sent: message of ";
    assert!(e.message.starts_with(note), "{}", e.message);
    assert!(
        e.message.ends_with("exceeds the maximum of 4096 bytes)"),
        "{}",
        e.message
    );
    let e = fail(&client, "data, no message").await;
    assert!(e.message.starts_with("(its data not sent: "), "{}", e.message);

    // Too long by its message: cut to a kilobyte, on a character boundary.
    let e = fail(&client, "message").await;
    assert_eq!((e.name.as_str(), &e.code), ("BigError", &Some(json!("E_BIG"))));
    let (kept, note) = e
        .message
        .split_once("... (the rest of its message not sent: ")
        .unwrap();
    assert_eq!(kept, "€".repeat(341), "the 1,023 bytes before the 1,024th");
    assert!(note.ends_with(')'), "{note}");

    // Too long by its name, even shortened (without its data):
    // ErrorTooLarge, naming the start of it.
    let e = fail(&client, "name").await;
    assert_eq!(e.name, "ErrorTooLarge");
    let why = format!("{}: the error was too large to send (message of ", "N".repeat(64));
    assert!(e.message.starts_with(&why), "{}", e.message);
    assert!(
        e.message.ends_with("exceeds the maximum of 4096 bytes)"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn an_answer_whose_uid_only_parses_to_one_of_ours_is_not_ours() {
    // We issue UIDs as plain decimals ("1", "2", ...). "01" and "+1" read as
    // the number 1 too, but they are not the UID of our request: such an
    // answer must not take that request's place, and the real answer must
    // still reach it.
    for forged_prefix in ["0", "+", "00"] {
        let (client, mut their_read, mut their_write) =
            a_session_with_a_hand_played_peer_over_a_socket().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request::<_, Value>(&json!("q")).await }
        });
        let request: Value = serde_json::from_str(&common::read_line(&mut their_read).await).unwrap();
        let uid = request["_IPC_REQUEST/REQUEST_UID"].as_str().unwrap().to_string();
        for (answer_uid, payload) in [
            (format!("{forged_prefix}{uid}"), "not yours"),
            (uid.clone(), "yours"),
        ] {
            let line = json!({
                "_IPC_REQUEST/MSG_TYPE": "_IPC_REQUEST/MSG_TYPE:RESPONSE",
                "_IPC_REQUEST/REQUEST_UID": answer_uid,
                "_IPC_REQUEST/PAYLOAD": payload,
            });
            their_write
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got.unwrap(),
            json!("yours"),
            "UID {forged_prefix}{uid} took request {uid}'s place"
        );
    }
}

#[tokio::test]
async fn what_could_not_be_decoded_is_named_answer_request_or_message() {
    let (a, b) = connected().await;
    let mut b_messages = b.messages().unwrap();
    // Nested past serde_json's 128 levels: valid JSON no `Value` can hold.
    let deep: Box<serde_json::value::RawValue> =
        serde_json::value::RawValue::from_string(format!("{}{}", "[".repeat(200), "]".repeat(200))).unwrap();

    let answer = a.request::<_, u32>(&json!({"op":"echo","data":"text"})).await;
    match answer {
        Err(e @ Error::Decode { what: "answer", .. }) => {
            assert!(e.to_string().starts_with("could not decode the answer: "), "{e}");
            // The message holds serde_json's: a chain printer must not
            // repeat it.
            assert!(std::error::Error::source(&e).is_none(), "{e}");
        }
        other => panic!("{other:?}"),
    }

    // The handler's `req.payload()?` fails; the caller hears it was its request.
    match a.request::<_, Value>(&deep).await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.name, "DecodeRequest", "named by the variant, not `Error`");
            assert!(
                e.message.starts_with("could not decode the request's payload: "),
                "{e:?}"
            )
        }
        other => panic!("{other:?}"),
    }

    a.send(&deep).await.unwrap();
    match b_messages.recv().await.unwrap() {
        Err(e @ Error::Decode { what: "message", .. }) => {
            assert!(e.to_string().starts_with("could not decode the message: "), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn values_nested_a_million_deep_anywhere_in_a_line_neither_crash_nor_stop_the_session() {
    // A stack overflow would abort the process; a reader stuck on such a
    // line would answer nothing after it. Each place a line can hold a
    // value: a plain message, a request's payload (in the exact form and
    // with its keys reordered), an answer's error, a handshake's
    // extensions, beside a `cmd`, and a deep prefix of what is not JSON
    // (a review's hostile peer).
    let handler =
        handler_fn(|req: Request| async move { Ok::<_, RemoteError>(req.payload::<Value>().is_ok()) });
    let (session, mut reader, mut writer) = common::hand_played::serve_a_hand_played_peer(
        handler,
        ChannelConfig::default(),
        1 << 20,
        Some(&["error", "cancel"]),
    )
    .await;
    let n = 1_000_000;
    let array = format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let object = format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    let extensions = format!("{}\"error\"{}", "[".repeat(n), "]".repeat(n));
    let p = "_IPC_REQUEST/";
    let lines = [
        array.clone(),
        object.clone(),
        format!(r#"{{"{p}MSG_TYPE":"{p}MSG_TYPE:REQUEST","{p}REQUEST_UID":"d1","{p}PAYLOAD":{array}}}"#),
        format!(r#"{{"{p}REQUEST_UID":"d2","{p}MSG_TYPE":"{p}MSG_TYPE:REQUEST","{p}PAYLOAD":{object}}}"#),
        format!(
            r#"{{"{p}REQUEST_UID":"1","{p}MSG_TYPE":"{p}MSG_TYPE:RESPONSE","{p}PAYLOAD":null,"{p}ERROR":{{"name":"E","data":{array},"code":{object}}}}}"#
        ),
        format!(
            r#"{{"{p}HANDSHAKE_UID":"h","{p}HANDSHAKE_MSG_TYPE":"{p}HANDSHAKE_MSG_TYPE:REQUEST","{p}EXTENSIONS":{extensions}}}"#
        ),
        format!(r#"{{"cmd":{array},"x":1}}"#),
        format!(r#"{{"x":{array},"cmd":"NODE_HANDLE"}}"#),
        format!("{}x", "[".repeat(n)),
        format!(r#"{{"{p}MSG_TYPE":"{p}MSG_TYPE:REQUEST","{p}REQUEST_UID":"d3","{p}PAYLOAD":3}}"#),
    ];
    let read_to_d3 = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let line = common::hand_played::next_line(&mut reader, "a line").await;
            let done = line.contains(r#""d3""#);
            got.push(line);
            if done {
                return got;
            }
        }
    });
    for line in &lines {
        writer.write_all(line.as_bytes()).await.unwrap();
        writer.write_all(b"\n").await.unwrap();
    }
    let got = tokio::time::timeout(Duration::from_secs(60), read_to_d3)
        .await
        .expect("no answer to the request after the deep lines")
        .unwrap();
    let answered = |uid: &str, payload: &str| {
        got.iter()
            .any(|l| l.contains(&format!(r#""{uid}""#)) && l.contains(&format!(r#""{p}PAYLOAD":{payload}"#)))
    };
    // Valid JSON, but deeper than a `Value` holds: the handler says so.
    assert!(answered("d1", "false") && answered("d2", "false"), "{got:?}");
    assert!(answered("d3", "true"), "{got:?}");
    assert!(
        got.iter().any(|l| l.contains(r#"HANDSHAKE_UID":"h""#)),
        "the stray handshake unanswered"
    );
    assert!(
        got.iter().any(|l| l.contains("NODE_HANDLE_NACK")),
        "the handle not refused"
    );
    assert_eq!(session.pending_requests(), 0);
}
