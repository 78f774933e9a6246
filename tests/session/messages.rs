//! Plain messages: order beside requests and between racing senders, as a
//! stream, their bound, the ones kept from the handshake, and Node's internal
//! messages and handles.

use std::time::Duration;

use crate::common;
use crate::common::{connected, ops_handler};
use ipc_request::{Channel, ChannelConfig, Error, SessionBuilder, setup};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn plain_messages_interleaved_with_requests_arrive_untouched_and_in_order() {
    let (a, b) = connected().await;
    let mut messages = b.messages().expect("first call gets the stream");
    assert!(b.messages().is_none(), "one stream per session");
    let sent: Vec<Value> = (0..200)
        .map(|i| match i % 4 {
            0 => json!({"i": i, "cmd": "user", "nested": {"_IPC_REQUEST/x": 1}}),
            1 => json!(format!("text {i} \u{2028} é")),
            2 => json!([i, null, true]),
            _ => json!(i),
        })
        .collect();
    for (i, m) in sent.iter().enumerate() {
        a.send(m).await.unwrap();
        if i % 10 == 0 {
            let _: Value = a.request(&json!({"op":"echo","data":i})).await.unwrap();
        }
    }
    for expected in &sent {
        let got = messages.recv().await.unwrap().unwrap();
        assert_eq!(&got, expected);
    }
}

/// `recv_raw` hands over a message as the text that came, sharing the
/// stream with `recv`: one deserializes into the caller's own type with
/// no value tree, or keeps one no `Value` can hold (nested past 128).
#[tokio::test]
async fn plain_messages_as_the_text_that_came() {
    let (a, b) = connected().await;
    let mut messages = b.messages().unwrap();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    a.send(&json!({"n": 1})).await.unwrap();
    a.send(&serde_json::value::RawValue::from_string(deep.clone()).unwrap())
        .await
        .unwrap();
    a.send(&json!("after")).await.unwrap();
    a.send(&serde_json::value::RawValue::from_string(deep.clone()).unwrap())
        .await
        .unwrap();
    let first = messages.recv_raw().await.unwrap().unwrap();
    assert_eq!(first.get(), r#"{"n":1}"#);
    assert_eq!(messages.recv_raw().await.unwrap().unwrap().get(), deep);
    assert_eq!(messages.recv().await.unwrap().unwrap(), json!("after"));
    // The same message through `recv` is a decode error.
    assert!(matches!(
        messages.recv().await,
        Some(Err(Error::Decode { what: "message", .. }))
    ));
    a.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(10), messages.recv_raw())
        .await
        .expect("the stream did not end with the session");
    assert!(end.is_none(), "{end:?}");
}

/// `Messages` is a `Stream` too: its combinators see every message, then
/// its end when the session closes.
#[tokio::test]
async fn plain_messages_as_a_stream() {
    use futures_util::StreamExt;
    let (a, b) = connected().await;
    let messages = b.messages().unwrap();
    for i in 0..3 {
        a.send(&json!({"i": i})).await.unwrap();
    }
    a.shutdown().await;
    let got: Vec<Value> =
        tokio::time::timeout(Duration::from_secs(10), messages.map(Result::unwrap).collect())
            .await
            .expect("the stream did not end with the session");
    assert_eq!(got, [json!({"i": 0}), json!({"i": 1}), json!({"i": 2})]);
}

#[tokio::test]
async fn plain_messages_nobody_took_are_bounded_in_bytes_too() {
    // Until `messages()` is taken, what comes is kept as its text, up to
    // the byte budget; the rest is dropped with a warning, not kept as
    // value trees many times its size.
    let config = ipc_request::SessionConfig {
        message_buffer_bytes: 10_000,
        ..Default::default()
    };
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (a, b) = tokio::join!(
        setup(a, ops_handler()),
        SessionBuilder::new()
            .config(config)
            .handler(ops_handler())
            .setup(b)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let text = |i: usize| format!("{i:0>998}"); // 1,000 bytes as JSON
    for i in 0..20 {
        a.send(&text(i)).await.unwrap();
    }
    // Answered after b has read every message sent before it.
    let _: Value = a.request(&json!({"op":"echo","data":0})).await.unwrap();
    assert_eq!(b.dropped_messages(), 10, "the drops are counted");
    let mut messages = b.messages().unwrap();
    a.send(&"after").await.unwrap();
    let mut got = Vec::new();
    loop {
        let message = messages.recv().await.unwrap().unwrap();
        if message == "after" {
            break;
        }
        got.push(message);
    }
    let kept: Vec<Value> = (0..10).map(|i| json!(text(i))).collect();
    assert_eq!(got, kept, "the first 10,000 bytes are kept, the rest dropped");
    assert_eq!(b.dropped_messages(), 10, "none dropped once the stream is taken");
    // A stream taken, then dropped: what comes is lost, and counted.
    drop(messages);
    for i in 0..3 {
        a.send(&text(i)).await.unwrap();
    }
    let _: Value = a.request(&json!({"op":"echo","data":0})).await.unwrap();
    assert_eq!(
        b.dropped_messages(),
        13,
        "lost to a dropped stream, and not counted"
    );
}

#[tokio::test]
async fn reserved_messages_are_refused() {
    let (a, _b) = connected().await;
    let err = a.send(&json!({"cmd": "NODE_HANDLE_ACK"})).await.unwrap_err();
    assert!(matches!(err, Error::ReservedMessage(_)), "{err}");
    let lookalike = json!({
        "_IPC_REQUEST/MSG_TYPE": "_IPC_REQUEST/MSG_TYPE:RESPONSE",
        "_IPC_REQUEST/REQUEST_UID": "1",
        "_IPC_REQUEST/PAYLOAD": null
    });
    assert!(matches!(a.send(&lookalike).await, Err(Error::ReservedMessage(_))));
    // "NODE" alone (5 characters) is not Node's: it passes.
    a.send(&json!({"cmd": "NODE_"})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_senders_messages_keep_their_order_when_senders_race() {
    // Small budget and a small pipe: lines go both ways, straight to the
    // stream and through the queue, and must never overtake each other.
    let config = ChannelConfig {
        write_queue_bytes: 4096,
        ..Default::default()
    };
    let (a_io, b_io) = tokio::io::duplex(1024);
    let a = Channel::from_stream(a_io, config.clone());
    let b = Channel::from_stream(b_io, config);
    let (a, b) = tokio::join!(setup(a, None), setup(b, None));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut messages = b.messages().unwrap();
    const SENDERS: u64 = 8;
    const EACH: u64 = 2_000;
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let a = a.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    a.send(&json!({"s": s, "i": i, "pad": "p".repeat((i % 7 * 50) as usize)}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut next = vec![0u64; SENDERS as usize];
    for _ in 0..SENDERS * EACH {
        let m = messages.recv().await.unwrap().unwrap();
        let (s, i) = (m["s"].as_u64().unwrap() as usize, m["i"].as_u64().unwrap());
        assert_eq!(i, next[s], "sender {s} out of order");
        next[s] += 1;
    }
    for s in senders {
        s.await.unwrap();
    }
}

#[tokio::test]
async fn a_json_parse_view_of_keys_keeps_node_internal_commands_from_being_sent() {
    let (a, _b) = connected().await;
    for text in [
        r#"{"cmd":"x","cmd":"NODE_HANDLE_ACK"}"#,
        r#"{"\u0063md":"NODE_HANDLE_ACK"}"#,
        r#"{"cmd":1e400,"cmd":"NODE_HANDLE_NACK"}"#,
        &format!(
            r#"{{"cmd":{}{},"cmd":"NODE_HANDLE_NACK"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        ),
    ] {
        let raw = serde_json::value::RawValue::from_string(text.to_string()).unwrap();
        assert!(
            matches!(a.send(&raw).await, Err(Error::ReservedMessage(_))),
            "{text:.80}"
        );
    }
}

#[tokio::test]
async fn a_handle_from_the_peer_is_refused_and_the_session_goes_on() {
    let (a_io, b_io) = tokio::io::duplex(64 * 1024);
    let (mut b_read, mut b_write) = tokio::io::split(b_io);
    let a = tokio::spawn(setup(Channel::from_stream(a_io, ChannelConfig::default()), None));
    common::answer_handshake_as_one_dot_zero(&mut b_read, &mut b_write).await;
    let a = a.await.unwrap().unwrap();
    let mut messages = a.messages().unwrap();
    // Between two lines in the exact form the session reads without
    // looking for Node's messages, and with the handle's `cmd` last.
    b_write
        .write_all(
            concat!(
                r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"9","_IPC_REQUEST/PAYLOAD":1}"#,
                "\n",
                r#"{"type":"net.Socket","msg":"m","cmd":"NODE_HANDLE"}"#,
                "\n{\"after\":1}\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let refusal = tokio::time::timeout(Duration::from_secs(5), common::read_line(&mut b_read))
        .await
        .expect("no NODE_HANDLE_NACK: the handle was not seen as Node's");
    assert_eq!(refusal, r#"{"cmd":"NODE_HANDLE_NACK"}"#);
    assert_eq!(messages.recv().await.unwrap().unwrap(), json!({"after": 1}));
}

#[tokio::test]
async fn plain_messages_sent_with_the_handshake_are_all_kept_when_asked() {
    // A peer may send plain messages as soon as it is set up, even in the
    // write that carries its handshake message: more than the buffer holds
    // (1,024) can arrive before `setup` returns, so before anyone could
    // take the stream. Kept, none is dropped, whichever way the handshake
    // completes (PROTOCOL.md 2.1 step 4): by the peer's answer to ours, or
    // by our answer to the peer's request (ours lost: the peer ignores it).
    for peer_answers in [true, false] {
        kept_plain_messages_arrive_whole(peer_answers).await;
    }
}

async fn kept_plain_messages_arrive_whole(peer_answers: bool) {
    const SENT: u64 = 3_000;
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (mut their_read, mut their_write) = tokio::io::split(theirs);
    let setup = tokio::spawn(
        SessionBuilder::new()
            .keep_plain_messages()
            .setup(Channel::from_stream(ours, ChannelConfig::default())),
    );
    let hello: Value = serde_json::from_str(&common::read_line(&mut their_read).await).unwrap();
    // Before its handshake message, more than the buffer holds too: those
    // may be dropped, but must not stall the handshake.
    let mut burst: String = (0..1_500).map(|i| format!("\"early {i}\"\n")).collect();
    let handshake = if peer_answers {
        json!({
            "_IPC_REQUEST/HANDSHAKE_UID": hello["_IPC_REQUEST/HANDSHAKE_UID"],
            "_IPC_REQUEST/HANDSHAKE_MSG_TYPE": "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:RESPONSE"
        })
    } else {
        json!({
            "_IPC_REQUEST/HANDSHAKE_UID": "theirs",
            "_IPC_REQUEST/HANDSHAKE_MSG_TYPE": "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST"
        })
    };
    burst += &handshake.to_string();
    for i in 0..SENT {
        burst.push_str(&format!("\n{i}"));
    }
    burst.push('\n');
    their_write.write_all(burst.as_bytes()).await.unwrap();
    let session = setup.await.unwrap().unwrap();
    let mut messages = session.messages().unwrap();
    let mut next = async || {
        tokio::time::timeout(std::time::Duration::from_secs(10), messages.recv())
            .await
            .expect("a message never came")
            .unwrap()
            .unwrap()
    };
    let mut first = next().await;
    let mut early = 0;
    while first.is_string() {
        assert_eq!(first, json!(format!("early {early}")));
        early += 1;
        first = next().await;
    }
    assert!(early <= 1_500);
    assert_eq!(first, json!(0), "peer answers: {peer_answers}");
    for i in 1..SENT {
        assert_eq!(next().await, json!(i), "peer answers: {peer_answers}");
    }
}
