//! What a peer sends cannot make this side hold more than its settings
//! allow, nor leave the peer without an answer: large requests while the
//! peer reads nothing, answers longer than the maximum, deep error data.
//! The peer is played by hand over an in-memory pipe.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::hand_played::{next_line, serve_over, wait_until_read, write_protocol_line};
use ipc_request::{ChannelConfig, Request, Responder, SessionBuilder, SessionConfig, responder_fn};
use serde_json::Value;

const MIB: usize = 1024 * 1024;

/// A request's payload of about 1 MiB, as JSON text.
fn one_mib_payload() -> String {
    format!("\"{}\"", "x".repeat(MIB))
}

#[tokio::test]
async fn requests_being_handled_hold_no_more_bytes_than_their_budget() {
    // Handlers that hold their requests until the gate opens. A slot each
    // (1,024 of them) would let all twenty 1 MiB requests in at once; the
    // byte budget lets in four, and the rest wait in the queue.
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (count, open) = (started.clone(), gate.clone());
    let handler = responder_fn(move |req: Request, responder: Responder| {
        count.fetch_add(1, Ordering::SeqCst);
        let open = open.clone();
        async move {
            let _pass = open.acquire().await.unwrap();
            let len = req.raw_payload().get().len();
            let _ = responder.respond(&len).await;
        }
    });
    let config = SessionConfig {
        max_handled_request_bytes: 4 * (MIB + 64),
        ..SessionConfig::default()
    };
    let builder = SessionBuilder::new().config(config).handler(handler);
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (session, mut reader, mut writer) = serve_over(
        ours,
        theirs,
        builder,
        ChannelConfig::default(),
        Some(&["error", "cancel"]),
    )
    .await;
    let mut messages = session.messages().unwrap();
    let payload = one_mib_payload();
    for n in 0..20 {
        write_protocol_line(&mut writer, "REQUEST", &format!("u{n}"), &payload).await;
    }
    // Every request has been read once the marker behind them arrives.
    wait_until_read(&mut writer, &mut messages).await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        4,
        "handlers started past the byte budget"
    );

    // As handlers end, the waiting requests get their turn: all answered.
    gate.add_permits(20);
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let line: Value =
            serde_json::from_str(&next_line(&mut reader, "an answer never came").await).unwrap();
        assert_eq!(line["_IPC_REQUEST/PAYLOAD"], payload.len());
        answered.insert(line["_IPC_REQUEST/REQUEST_UID"].as_str().unwrap().to_owned());
    }
    assert_eq!(answered.len(), 20);
    assert_eq!(started.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn without_a_handler_refusals_that_wait_for_room_stop_the_reader_at_the_byte_budget() {
    // No handler: each request is refused with a `NoHandler` answer. The
    // peer reads nothing, so the refusals wait for room in the write queue.
    // Each holds its request's bytes meanwhile: four 1 MiB requests are
    // refused, two wait in the queue (2 MiB), and the reader stops at the
    // seventh, before the marker behind them.
    let config = SessionConfig {
        max_handled_request_bytes: 4 * (MIB + 64),
        max_queued_request_bytes: 2 * (MIB + 64),
        ..SessionConfig::default()
    };
    let channel_config = ChannelConfig {
        write_queue_bytes: 1,
        ..ChannelConfig::default()
    };
    let (ours, theirs) = tokio::io::duplex(64);
    let (session, mut reader, mut writer) = serve_over(
        ours,
        theirs,
        SessionBuilder::new().config(config),
        channel_config,
        None,
    )
    .await;
    let mut messages = session.messages().unwrap();
    let payload = one_mib_payload();
    let peer = tokio::spawn(async move {
        for n in 0..8 {
            write_protocol_line(&mut writer, "REQUEST", &format!("u{n}"), &payload).await;
        }
        wait_until_read(&mut writer, &mut messages).await;
    });
    // Not a speed test: the reader cannot get to the marker, however long
    // it is given; half a second is enough for it to get there if it could.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!peer.is_finished(), "the reader read on past its byte budgets");

    // The peer reads: every request is refused, and the marker arrives.
    for _ in 0..8 {
        let line: Value =
            serde_json::from_str(&next_line(&mut reader, "a refusal never came").await).unwrap();
        assert_eq!(line["_IPC_REQUEST/PAYLOAD"]["name"], "NoHandler", "{line}");
    }
    tokio::time::timeout(Duration::from_secs(10), peer)
        .await
        .expect("the reader never went on")
        .unwrap();
}

#[tokio::test]
async fn an_answer_too_long_for_its_uid_still_reaches_the_peer_as_an_error() {
    // A UID that leaves less room than any answer needs: the answer, and
    // the error that replaces it, are both longer than the maximum. The
    // error goes anyway (as for a request too long to read), or the peer
    // would wait for ever.
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = results.clone();
    let handler = responder_fn(move |_: Request, responder: Responder| {
        let seen = seen.clone();
        async move {
            let sent = responder.respond(&"y".repeat(100)).await;
            seen.lock().unwrap().push(format!("{sent:?}"));
        }
    });
    let channel_config = ChannelConfig {
        max_message_len: 1024,
        ..ChannelConfig::default()
    };
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let builder = SessionBuilder::new().handler(handler);
    let (_session, mut reader, mut writer) =
        serve_over(ours, theirs, builder, channel_config, Some(&["error", "cancel"])).await;
    let uid = "u".repeat(880);
    write_protocol_line(&mut writer, "REQUEST", &uid, "1").await;
    let line: Value = serde_json::from_str(&next_line(&mut reader, "the peer got no answer").await).unwrap();
    assert_eq!(line["_IPC_REQUEST/REQUEST_UID"], uid.as_str());
    assert_eq!(line["_IPC_REQUEST/PAYLOAD"], Value::Null);
    let name = line["_IPC_REQUEST/ERROR"]["name"].as_str().unwrap();
    assert!(matches!(name, "ResponseNotSent" | "ErrorTooLarge"), "{line}");
    let told = results.lock().unwrap().clone();
    assert_eq!(told.len(), 1);
    assert!(told[0].contains("TooLong"), "{told:?}");
}
