//! Backpressure: a full backlog of requests from the peer, a peer that stops
//! reading, and a `respond` given up on a full write queue.

use crate::common;
use crate::common::answer_handshake_as_one_dot_zero;
use crate::common::hand_played::{
    PeerReader, PeerWriter, next_line, send_one_dot_zero_request, serve_a_hand_played_peer, serve_over,
    wait_until_read, write_protocol_line,
};

use std::sync::Arc;
use std::time::Duration;

use ipc_request::{
    Channel, ChannelConfig, Request, Responder, SessionBuilder, SessionConfig, handler_fn, responder_fn,
    setup,
};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A session with `handler`, one handler slot and one place in the
/// backlog, and a hand-played peer advertising `extensions` (`None`: 1.0).
async fn one_slot_and_one_place_for(
    handler: ipc_request::Handler,
    extensions: Option<&[&str]>,
) -> (ipc_request::Session, PeerReader, PeerWriter) {
    let config = SessionConfig {
        max_concurrent_handlers: 1,
        max_queued_requests: 1,
        ..SessionConfig::default()
    };
    let builder = SessionBuilder::new().config(config).handler(handler);
    let (ours, theirs) = tokio::io::duplex(4096);
    serve_over(ours, theirs, builder, ChannelConfig::default(), extensions).await
}

#[tokio::test]
async fn a_one_dot_zero_peer_past_a_full_backlog_is_made_to_wait_not_refused() {
    // A 1.0 peer has no error answers: a refusal would reach its caller as
    // a successful answer holding the error. So the reader waits for room.
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let handler = handler_fn(move |req: Request| {
        let gate = gate.clone();
        async move {
            let n: u64 = req.payload()?;
            if n == 1 {
                gate.notified().await;
            }
            Ok::<_, ipc_request::RemoteError>(n * 10)
        }
    });
    let (_server, mut reader, mut writer) = one_slot_and_one_place_for(handler, None).await;
    for n in 1..=3 {
        send_one_dot_zero_request(&mut writer, n).await;
    }
    // 1 runs (held), 2 waits in the backlog, 3 waits in the reader: no
    // answer may come yet.
    let early = tokio::time::timeout(Duration::from_millis(300), common::read_line(&mut reader)).await;
    assert!(early.is_err(), "answered while every request was held: {early:?}");
    release.notify_one();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let line: Value =
            serde_json::from_str(&next_line(&mut reader, "an answer never came").await).unwrap();
        answers.push(line["_IPC_REQUEST/PAYLOAD"].clone());
    }
    assert_eq!(answers, [10, 20, 30]);
}

#[tokio::test]
async fn a_peer_that_can_cancel_but_takes_no_errors_is_refused_not_made_to_wait() {
    // Its cancels must keep being read: the one handler slot is held by a
    // handler that waits for its cancel, the backlog is full behind it.
    // Made to wait as a 1.0 peer is, the reader would hold request 3, and
    // the cancel of 1 behind it would never be read (a review's case).
    let handler = handler_fn(|req: Request| async move {
        req.cancelled().await;
        Ok::<_, ipc_request::RemoteError>("stopped")
    });
    let (server, mut reader, mut writer) = one_slot_and_one_place_for(handler, Some(&["cancel"])).await;
    let mut messages = server.messages().unwrap();
    for n in 1..=3 {
        send_one_dot_zero_request(&mut writer, n).await;
    }
    write_protocol_line(&mut writer, "CANCEL", "1", "null").await;
    wait_until_read(&mut writer, &mut messages).await;
    // 3 was refused, as a failure goes to a peer without `error`: the
    // error as the payload.
    let refusal: Value = serde_json::from_str(&next_line(&mut reader, "3 was not refused").await).unwrap();
    assert_eq!(refusal["_IPC_REQUEST/REQUEST_UID"], "3", "{refusal}");
    assert_eq!(refusal["_IPC_REQUEST/PAYLOAD"]["name"], "Overloaded", "{refusal}");
}

#[tokio::test]
async fn a_peer_that_stops_reading_bounds_our_queue_while_we_send_a_gibibyte() {
    const MESSAGE: usize = 1024 * 1024;
    const COUNT: usize = 1024; // 1 GiB in total
    const PIPE: usize = 64 * 1024;
    let (a_io, b_io) = tokio::io::duplex(PIPE);
    let config = ChannelConfig {
        write_queue_bytes: 4 * MESSAGE,
        ..Default::default()
    };
    // The peer is raw bytes in this test: it answers the handshake as an
    // ipc-request 1.0 peer would, then reads only when the test says so.
    let a = tokio::spawn(setup(Channel::from_stream(a_io, config), None));
    let (mut b_read, mut b_write) = tokio::io::split(b_io);
    answer_handshake_as_one_dot_zero(&mut b_read, &mut b_write).await;
    let a = a.await.unwrap().unwrap();

    let text = format!("\"{}\"", "y".repeat(MESSAGE - 3));
    let payload: Arc<Box<RawValue>> = Arc::new(RawValue::from_string(text).unwrap());
    // Messages whose send returned: written, or queued within the budget.
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = {
        let (a, accepted) = (a.clone(), accepted.clone());
        tokio::spawn(async move {
            for _ in 0..COUNT {
                a.send(&**payload).await.unwrap();
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let cap = a.queue_capacity();
    // What we hold for the peer (accepted, not yet read by it) is at most
    // the budget plus what the pipe itself buffers; counted from the sends
    // and the reads, not from the budget, so that a line slipping past the
    // budget would show.
    let mut max_held = 0;
    let held = |received: usize| {
        (accepted.load(std::sync::atomic::Ordering::SeqCst) * MESSAGE).saturating_sub(received)
    };
    // Phase 1: the peer reads nothing. The sender fills the queue to its
    // budget and must then wait.
    while a.queued_bytes() + MESSAGE <= cap && held(0) <= cap + PIPE && !sender.is_finished() {
        tokio::task::yield_now().await;
        max_held = max_held.max(held(0));
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    max_held = max_held.max(held(0));
    assert!(
        !sender.is_finished(),
        "1 GiB cannot go to a peer that reads nothing"
    );
    // Phase 2: the peer reads; the queue is checked after every chunk.
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0;
    while received < COUNT * MESSAGE {
        let n = b_read.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended early");
        received += n;
        max_held = max_held.max(held(received));
    }
    sender.await.unwrap();
    assert_eq!(received, COUNT * MESSAGE, "every byte of every message arrived");
    assert!(
        max_held <= cap + PIPE,
        "held {max_held} bytes for the peer, more than the budget {cap} + the pipe {PIPE}"
    );
}

#[tokio::test]
async fn dropped_responders_cannot_grow_our_queue_when_the_peer_reads_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A handler that drops every responder: each request gets an error
    // answer. The peer (1.0, so nothing past the backlog is refused) floods
    // us with requests and reads nothing; those answers must wait for
    // queue space, which stops our reader, instead of piling up in memory.
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let handler = responder_fn(move |_req: Request, responder: Responder| {
        counter.fetch_add(1, Ordering::SeqCst);
        drop(responder);
        async {}
    });
    let channel_config = ChannelConfig {
        write_queue_bytes: 4096,
        ..Default::default()
    };
    let session_config = ipc_request::SessionConfig {
        max_concurrent_handlers: 4,
        max_queued_requests: 16,
        ..Default::default()
    };
    let (a_io, b_io) = tokio::io::duplex(16 * 1024);
    let (mut b_read, mut b_write) = tokio::io::split(b_io);
    let a = tokio::spawn(
        SessionBuilder::new()
            .config(session_config)
            .handler(handler)
            .setup(Channel::from_stream(a_io, channel_config)),
    );
    answer_handshake_as_one_dot_zero(&mut b_read, &mut b_write).await;
    let a = a.await.unwrap().unwrap();
    use tokio::io::AsyncWriteExt;
    const REQUESTS: usize = 100_000;
    let flood = tokio::spawn(async move {
        for i in 0..REQUESTS {
            let request = serde_json::json!({
                "_IPC_REQUEST/MSG_TYPE": "_IPC_REQUEST/MSG_TYPE:REQUEST",
                "_IPC_REQUEST/REQUEST_UID": i.to_string(),
                "_IPC_REQUEST/PAYLOAD": i
            });
            b_write
                .write_all(format!("{request}\n").as_bytes())
                .await
                .unwrap();
        }
    });
    // The error answers fill our queue to its budget...
    tokio::time::timeout(Duration::from_secs(30), async {
        while a.queued_bytes() + 200 < a.queue_capacity() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the error answers never filled the queue: they bypass it");
    // ...and then our reader stops: the handlers started stay a handful.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    let count = started.load(Ordering::SeqCst);
    assert!(
        count < 1_000,
        "{count} handlers ran for a peer that reads nothing"
    );
    assert!(!flood.is_finished(), "all requests were read");
    flood.abort();
}

#[tokio::test]
async fn a_respond_given_up_while_the_queue_is_full_still_answers_the_caller() {
    // Its caller must still get an answer, an error.
    let (tx, mut gave_up) = mpsc::unbounded_channel();
    let (_server, mut reader, _writer) =
        give_up_a_respond_on_a_full_queue(None, move |_, responder, timed_out| {
            let _ = tx.send((timed_out, responder.is_answered()));
            async {}
        })
        .await;
    let (timed_out, answered) = tokio::time::timeout(Duration::from_secs(5), gave_up.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(timed_out, "respond should have waited for the full queue");
    assert!(
        !answered,
        "a respond that never went out does not count as an answer"
    );
    // Now read: both requests get an answer line.
    let mut uids = Vec::new();
    while uids.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(5), common::read_line(&mut reader))
            .await
            .expect("an answer never came");
        let value: Value = serde_json::from_str(&line).unwrap();
        uids.push((
            value["_IPC_REQUEST/REQUEST_UID"].as_str().unwrap().to_string(),
            value["_IPC_REQUEST/PAYLOAD"]["name"].as_str().map(str::to_string),
        ));
    }
    assert_eq!(uids[0].0, "1");
    assert_eq!(uids[1], ("2".to_string(), Some("ResponderDropped".to_string())));
}

#[tokio::test]
async fn a_respond_given_up_still_hears_the_cancel_of_a_peer_that_can_cancel() {
    // With a peer that advertises `cancel`, handlers are told of a cancel
    // through the session's map of running handlers. The given-up respond
    // must leave its handler in that map, or the peer's cancel (and the
    // session's close) never reaches it.
    let (tx, mut seen) = mpsc::unbounded_channel();
    let (_server, _reader, mut writer) =
        give_up_a_respond_on_a_full_queue(Some(&["error", "cancel"]), move |req, _, timed_out| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(("gave up", timed_out));
                let heard = tokio::time::timeout(Duration::from_secs(5), req.cancelled()).await;
                let _ = tx.send(("heard the cancel", heard.is_ok()));
            }
        })
        .await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .unwrap()
    };
    assert_eq!(next().await, Some(("gave up", true)));
    write_protocol_line(&mut writer, "CANCEL", "2", "null").await;
    assert_eq!(
        next().await,
        Some(("heard the cancel", true)),
        "the peer's cancel never reached the handler whose respond gave up"
    );
}

/// A session whose queue holds one line, serving a hand-played peer (see
/// [`serve_a_hand_played_peer`]) that reads nothing and has sent requests
/// 1 and 2. The first answer (10,000 bytes) fills the queue; the handler
/// of request 2 gives up on its respond after 100 ms (its own timeout),
/// then runs `then` with whether the respond timed out.
async fn give_up_a_respond_on_a_full_queue<F, Fut>(
    extensions: Option<&[&str]>,
    then: F,
) -> (ipc_request::Session, PeerReader, PeerWriter)
where
    F: Fn(Request, Responder, bool) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let then = Arc::new(then);
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let then = then.clone();
        async move {
            let n: u64 = req.payload().unwrap();
            if n == 1 {
                let _ = responder.respond(&"x".repeat(10_000)).await;
                return;
            }
            let attempt = tokio::time::timeout(Duration::from_millis(100), responder.respond(&n)).await;
            then(req, responder, attempt.is_err()).await;
        }
    });
    let config = ChannelConfig {
        write_queue_bytes: 1,
        ..ChannelConfig::default()
    };
    let (server, reader, mut writer) = serve_a_hand_played_peer(handler, config, 64, extensions).await;
    for n in 1..=2 {
        send_one_dot_zero_request(&mut writer, n).await;
    }
    (server, reader, writer)
}

/// A handshake request after the first is answered as a refusal is,
/// without waiting for room in the write queue: our own messages may fill
/// it while the peer reads nothing. Answered through the queue, it stopped
/// the reader, and what the peer sent behind it went unread.
#[tokio::test]
async fn a_late_handshake_request_does_not_stop_the_reader_while_our_queue_is_full() {
    const MESSAGE: usize = 1024;
    let config = ChannelConfig {
        write_queue_bytes: 4 * MESSAGE,
        ..Default::default()
    };
    let (ours, theirs) = tokio::io::duplex(4096);
    let (a, mut b_read, mut b_write) = serve_over(ours, theirs, SessionBuilder::new(), config, None).await;
    let mut messages = a.messages().unwrap();
    let filler = {
        let a = a.clone();
        let text = "z".repeat(MESSAGE);
        tokio::spawn(async move {
            for _ in 0..64 {
                a.send(&text).await.unwrap();
            }
        })
    };
    while a.queued_bytes() + MESSAGE <= a.queue_capacity() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!filler.is_finished(), "the queue was to stay full");
    let late = concat!(
        r#"{"_IPC_REQUEST/HANDSHAKE_UID":"late","_IPC_REQUEST/HANDSHAKE_MSG_TYPE":"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST"}"#,
        "\n\"behind the handshake\"\n"
    );
    b_write.write_all(late.as_bytes()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), messages.recv())
        .await
        .expect("the reader stopped behind the late handshake request");
    assert_eq!(got.unwrap().unwrap(), "behind the handshake");
    // The peer reads at last: the filler's messages, and the answer.
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while !filler.is_finished() || !all.ends_with(b"\n") || !String::from_utf8_lossy(&all).contains("late") {
        let n = tokio::time::timeout(Duration::from_secs(5), b_read.read(&mut buf))
            .await
            .expect("the rest never came")
            .unwrap();
        all.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8(all).unwrap();
    assert!(
        answer
            .lines()
            .any(|line| line.contains(r#""_IPC_REQUEST/HANDSHAKE_UID":"late""#)
                && line.contains("HANDSHAKE_MSG_TYPE:RESPONSE")),
        "no answer to the late handshake"
    );
}
