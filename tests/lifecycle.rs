//! Deadlines, cancellation and backpressure, in process.

mod common;

use common::answer_handshake_as_one_dot_zero;
use common::breaks_when_armed::{Break, BreaksWhenArmed};
use common::hand_played::{
    PeerReader, PeerWriter, next_line, one_handler_slot_for_a_hand_played_peer, send_one_dot_zero_request,
    serve_a_hand_played_peer, serve_a_one_dot_zero_peer, serve_over, wait_until_read, write_protocol_line,
};

use std::sync::Arc;
use std::time::Duration;

use ipc_request::{
    Channel, ChannelConfig, Error, Request, Responder, SessionBuilder, SessionConfig, handler_fn,
    responder_fn, setup,
};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// A server whose handler waits for cancellation and reports what it saw:
/// that it was cancelled, and that its late answer was refused.
fn cancel_observer() -> (ipc_request::Handler, mpsc::UnboundedReceiver<(String, bool)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            let key: String = req.payload().unwrap();
            req.cancelled().await;
            let refused = matches!(responder.respond(&"late").await, Err(Error::Cancelled))
                // Told so again: no answer was given.
                && matches!(responder.respond(&"later").await, Err(Error::Cancelled));
            let _ = tx.send((key, refused));
        }
    });
    (handler, rx)
}

#[tokio::test]
async fn a_deadline_fails_the_request_cancels_it_at_the_peer_and_leaves_nothing_behind() {
    let (handler, mut seen) = cancel_observer();
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, server) = tokio::join!(setup(a, None), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    let err = client
        .request_timeout::<_, Value>("k1", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_millis(100)),
        "{err}"
    );
    assert_eq!(client.pending_requests(), 0);
    let (key, refused) = seen.recv().await.unwrap();
    assert_eq!(key, "k1");
    assert!(refused, "the answer after the cancel must be refused");
}

/// A session with a hand-played peer that can cancel, behind a 256-byte
/// pipe the peer does not read until told: a first request goes straight
/// to the pipe and only in part, and holds the writer up; the rest wait
/// in our queue.
async fn a_client_behind_a_pipe_its_peer_does_not_read() -> (ipc_request::Session, PeerReader, PeerWriter) {
    let (unused, _) = cancel_observer();
    let extensions = Some(&["error", "cancel"][..]);
    serve_a_hand_played_peer(unused, ChannelConfig::default(), 256, extensions).await
}

/// Everything the peer gets, up to the end of the stream (within 10 s).
async fn read_to_the_end(mut reader: PeerReader) -> String {
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_string(&mut text))
        .await
        .expect("the stream never ended")
        .unwrap();
    text
}

#[tokio::test]
async fn requests_that_time_out_still_queued_are_never_sent() {
    // A peer that can cancel, behind a 256-byte pipe it does not read
    // until every request below has timed out: most of them are still in
    // our queue then (500 KiB of them; the writer is held up on the first,
    // which went straight to the pipe and only in part). Those must never
    // reach the peer, neither as requests nor as cancels; the ones it got
    // are cancelled.
    let (client, reader, _writer) = a_client_behind_a_pipe_its_peer_does_not_read().await;
    const COUNT: usize = 250;
    let payload = "x".repeat(2048);
    let (client, payload) = (&client, &payload);
    let calls = (0..COUNT).map(|i| async move {
        client
            .request_raw_timeout(&(i, payload), Duration::from_millis(200))
            .await
    });
    for result in futures_util::future::join_all(calls).await {
        assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    }
    assert_eq!(client.pending_requests(), 0);
    client.close();
    let text = read_to_the_end(reader).await;
    let (mut requested, mut cancelled) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let message: Value = serde_json::from_str(line).unwrap();
        let uid = message["_IPC_REQUEST/REQUEST_UID"].as_str().unwrap().to_string();
        match message["_IPC_REQUEST/MSG_TYPE"].as_str().unwrap() {
            "_IPC_REQUEST/MSG_TYPE:REQUEST" => requested.push(uid),
            "_IPC_REQUEST/MSG_TYPE:CANCEL" => cancelled.push(uid),
            other => panic!("unexpected {other} in {line}"),
        }
    }
    assert!(
        requested.len() < COUNT / 4,
        "{} of {COUNT} requests were written though they timed out in our queue",
        requested.len()
    );
    cancelled.sort();
    requested.sort();
    assert_eq!(cancelled, requested, "exactly the requests written are cancelled");
}

#[tokio::test]
async fn requests_still_queued_when_the_session_closes_are_never_sent() {
    // As above, but the callers are told their requests failed by our own
    // close: those whose lines still wait in our queue must not reach the
    // peer afterwards (it would run requests whose callers were told they
    // failed, and a caller that retries elsewhere gets the work done twice).
    let (client, reader, _writer) = a_client_behind_a_pipe_its_peer_does_not_read().await;
    const COUNT: usize = 50;
    let payload = "x".repeat(2048);
    let calls: Vec<_> = (0..COUNT)
        .map(|i| {
            let (client, payload) = (client.clone(), payload.clone());
            tokio::spawn(async move { client.request_raw(&(i, payload)).await })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.pending_requests() < COUNT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the requests never all went out");
    client.close();
    for call in calls {
        let result = call.await.unwrap();
        assert!(
            matches!(result, Err(Error::Closed(ipc_request::CloseReason::Local))),
            "{result:?}"
        );
    }
    let text = read_to_the_end(reader).await;
    let requested = text
        .lines()
        .filter(|line| line.contains("MSG_TYPE:REQUEST"))
        .count();
    assert!(
        requested < COUNT / 4,
        "{requested} of {COUNT} requests were written after their callers were told they failed"
    );
}

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
async fn the_session_default_deadline_applies() {
    let (handler, _seen) = cancel_observer();
    let config = ipc_request::SessionConfig {
        request_timeout: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, server) = tokio::join!(SessionBuilder::new().config(config).setup(a), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    assert!(matches!(
        client.request::<_, Value>("x").await,
        Err(Error::Timeout(_))
    ));
}

#[tokio::test]
async fn dropping_a_request_future_cancels_it_at_the_peer() {
    let (handler, mut seen) = cancel_observer();
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, server) = tokio::join!(setup(a, None), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.request::<_, Value>("dropped").await })
    };
    while client.pending_requests() == 0 {
        tokio::task::yield_now().await;
    }
    call.abort();
    let (key, refused) = seen.recv().await.unwrap();
    assert_eq!(key, "dropped");
    assert!(refused);
    assert_eq!(client.pending_requests(), 0);
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
async fn setup_succeeds_for_a_peer_that_handshakes_and_leaves_at_once() {
    // On this current-thread runtime the reader reads the handshake answer
    // and the end of stream in one go, before setup runs again: the session
    // was established, then closed, and setup must say the former.
    let (a_io, b_io) = tokio::io::duplex(64 * 1024);
    let a = tokio::spawn(setup(Channel::from_stream(a_io, ChannelConfig::default()), None));
    let (mut b_read, mut b_write) = tokio::io::split(b_io);
    answer_handshake_as_one_dot_zero(&mut b_read, &mut b_write).await;
    drop((b_read, b_write));
    let session = a
        .await
        .unwrap()
        .expect("the handshake completed, so setup succeeds");
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .expect("the session is closed");
    assert!(
        matches!(session.close_reason(), Some(ipc_request::CloseReason::PeerClosed)),
        "{:?}",
        session.close_reason()
    );
}

/// A reader that panics when the bytes it hands out contain `trigger`.
struct PanicOn<R> {
    inner: R,
    trigger: &'static [u8],
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for PanicOn<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let trigger = self.trigger;
        if buf.filled()[before..]
            .windows(trigger.len())
            .any(|w| w == trigger)
        {
            panic!("the stream under the channel broke");
        }
        polled
    }
}

#[tokio::test]
async fn a_panic_on_the_reader_fails_pending_requests_instead_of_hanging() {
    let (a_io, b_io) = tokio::io::duplex(64 * 1024);
    let (a_read, a_write) = tokio::io::split(a_io);
    let a_channel = Channel::new(
        PanicOn {
            inner: a_read,
            trigger: b"BOOM",
        },
        a_write,
        ChannelConfig::default(),
    );
    // b never answers: a's request stays pending until a's reader dies.
    let silent = responder_fn(|_req: Request, responder: Responder| async move {
        std::mem::forget(responder);
    });
    let b_channel = Channel::from_stream(b_io, ChannelConfig::default());
    let (a, b) = tokio::join!(setup(a_channel, None), setup(b_channel, silent));
    let (a, b) = (a.unwrap(), b.unwrap());
    let pending = tokio::spawn({
        let a = a.clone();
        async move { a.request_raw(&1).await }
    });
    while b.pending_requests() == 0 && a.pending_requests() == 0 {
        tokio::task::yield_now().await;
    }
    b.send("BOOM").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the pending request hung after the reader panicked")
        .unwrap();
    match answer {
        Err(Error::Closed(ipc_request::CloseReason::Io(e))) => {
            assert!(e.to_string().contains("panicked"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_panic_on_the_writer_task_fails_pending_requests_instead_of_hanging() {
    // The writer's counterpart of the test above: the request's line is
    // lost to the panic, and nothing else will end the session (b is
    // there and silent), so only the writer's failure can fail the request.
    let (a_io, b_io) = tokio::io::duplex(64 * 1024);
    let (a_read, a_write) = tokio::io::split(a_io);
    let (a_write, armed) = BreaksWhenArmed::new(a_write, Break::Panics);
    let a_channel = Channel::new(a_read, a_write, ChannelConfig::default());
    let b_channel = Channel::from_stream(b_io, ChannelConfig::default());
    let (a, b) = tokio::join!(setup(a_channel, None), setup(b_channel, None));
    let (a, _b) = (a.unwrap(), b.unwrap());
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let answer = tokio::time::timeout(Duration::from_secs(5), a.request_raw(&1))
        .await
        .expect("the pending request hung after the writer task panicked");
    let said_so = |reason: &ipc_request::CloseReason| matches!(reason, ipc_request::CloseReason::Io(e) if e.to_string() == "the channel's writer task panicked");
    match &answer {
        Err(Error::Closed(reason)) if said_so(reason) => {}
        other => panic!("{other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(5), a.closed())
        .await
        .expect("the session never closed");
    assert!(
        a.close_reason().as_ref().is_some_and(said_so),
        "{:?}",
        a.close_reason()
    );
    // Later calls are told the same, not that a runtime shut down.
    match a.request_raw(&2).await {
        Err(Error::Closed(reason)) if said_so(&reason) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_request_the_stream_took_nothing_of_is_not_sent_after_close() {
    // Session::close: requests whose lines still wait in the queue are
    // taken out of it, never sent. Here the pipe is exactly full and
    // nothing is queued, so the request's line takes the direct path and
    // the stream takes none of it; the session closes before the writer
    // task has run (nothing here waits between the two). The caller is
    // told Closed(Local), so the peer must never get the request.
    const PIPE: usize = 4096;
    let (ours, theirs) = tokio::io::duplex(PIPE);
    // A peer that could cancel: no cancel may stand in for the withdrawal.
    let extensions = Some(&["error", "cancel"][..]);
    let (session, mut peer_read, _peer_write) = serve_over(
        ours,
        theirs,
        SessionBuilder::new(),
        ChannelConfig::default(),
        extensions,
    )
    .await;
    // A JSON string and its newline: exactly the pipe, written whole.
    session.send(&"x".repeat(PIPE - 3)).await.unwrap();
    assert_eq!(session.queued_bytes(), 0);
    let mut call = std::pin::pin!(session.request_raw(&"must not run"));
    assert!(futures_util::FutureExt::now_or_never(&mut call).is_none());
    assert_eq!(
        session.pending_requests(),
        1,
        "the request is registered and handed over"
    );
    session.close();
    match call.await {
        Err(Error::Closed(ipc_request::CloseReason::Local)) => {}
        other => panic!("{other:?}"),
    }
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), peer_read.read_to_end(&mut seen))
        .await
        .expect("the channel never ended")
        .unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        !seen.contains("must not run"),
        "the peer got a request its caller was told failed: {:?}",
        seen.lines().skip(1).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_setup_dropped_before_the_handshake_closes_its_channel() {
    // The caller's own timeout around setup: nothing may go on running for
    // nobody, and the peer must see the channel end.
    let (ours, mut theirs) = tokio::io::duplex(4096);
    let pending = setup(Channel::from_stream(ours, ChannelConfig::default()), None);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), pending)
            .await
            .is_err()
    );
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), theirs.read_to_end(&mut seen))
        .await
        .expect("the channel of a dropped setup was never closed")
        .unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("_IPC_REQUEST/HANDSHAKE_UID"), "{seen}");
}

#[tokio::test]
async fn close_lets_go_of_the_channel_though_the_peer_keeps_its_end_open() {
    // After `close()` and the last handle's drop, nothing of the session
    // holds the channel any more: its reader stops too, rather than
    // waiting to read until the peer hangs up, which a silent peer that
    // never does would make last for ever, with the descriptor. The peer
    // sees our end closed (POLLHUP), without writing a byte (which would
    // wake the reader).
    use std::os::fd::AsRawFd;
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let (mut peer_reader, mut peer_writer) = tokio::io::split(theirs);
    let setup = tokio::spawn(setup(Channel::from_stream(ours, ChannelConfig::default()), None));
    common::answer_handshake(&mut peer_reader, &mut peer_writer, Some(&["error", "cancel"])).await;
    let session = setup.await.unwrap().unwrap();
    session.close();
    drop(session);
    let theirs = peer_reader.unsplit(peer_writer);
    let hung_up = tokio::task::spawn_blocking(move || {
        let mut watch = libc::pollfd {
            fd: theirs.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the call's duration.
        (0..100).any(|_| unsafe { libc::poll(&mut watch, 1, 100) } == 1 && watch.revents & libc::POLLHUP != 0)
    });
    assert!(
        hung_up.await.unwrap(),
        "10 s after close() and drop, the session still holds its channel"
    );
}

#[tokio::test]
async fn an_answer_read_before_the_close_still_reaches_its_caller() {
    // The peer answers and hangs up; the reader hands the answer over and
    // then ends the session, all before the caller looks again. The answer
    // came: the caller gets it, not the close.
    let (unused, _) = cancel_observer();
    let extensions = Some(&["error", "cancel"][..]);
    let (session, mut reader, mut writer) =
        serve_a_hand_played_peer(unused, ChannelConfig::default(), 4096, extensions).await;
    let mut call = Box::pin(session.request_raw(&"question"));
    assert!(futures_util::FutureExt::now_or_never(&mut call).is_none());
    let request: Value = serde_json::from_str(&next_line(&mut reader, "no request").await).unwrap();
    let uid = request["_IPC_REQUEST/REQUEST_UID"].as_str().unwrap().to_owned();
    write_protocol_line(&mut writer, "RESPONSE", &uid, "\"answer\"").await;
    drop((reader, writer));
    let reason = tokio::time::timeout(Duration::from_secs(10), session.closed()).await;
    assert!(
        matches!(reason, Ok(ipc_request::CloseReason::PeerClosed)),
        "{reason:?}"
    );
    assert_eq!(session.pending_requests(), 0, "answered: it waits no more");
    let answer = futures_util::FutureExt::now_or_never(&mut call).expect("answered by now");
    assert_eq!(answer.unwrap().get(), "\"answer\"");
}

#[tokio::test]
async fn a_handler_sees_the_channel_close_when_the_peer_cannot_cancel() {
    // Request::cancelled fires when the channel closes, whatever the peer
    // supports: here an ipc-request 1.0 peer, which has no cancel.
    let (tx, mut woke) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            req.cancelled().await;
            let _ = tx.send((req.is_cancelled(), responder.is_cancelled()));
        }
    });
    let (_server, reader, mut writer) =
        serve_a_one_dot_zero_peer(handler, ChannelConfig::default(), 4096).await;
    send_one_dot_zero_request(&mut writer, 1).await;
    drop((reader, writer));
    let seen = tokio::time::timeout(Duration::from_secs(5), woke.recv())
        .await
        .expect("the handler never saw the channel close");
    assert_eq!(seen, Some((true, true)));
}

#[tokio::test]
async fn a_handler_that_answered_still_sees_the_channel_close_when_the_peer_can_cancel() {
    // The same promise, to a handler that answers first and works on: a
    // peer that can cancel reaches handlers through the session's map of
    // running handlers, and an answer must not take the handler out of it
    // while the handler still runs. Both of the responder's ways out:
    // answered with `respond` (request 1), and dropped unanswered (2, whose
    // error answer goes once its handler ends: see `AnswerState`).
    let (tx, mut events) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            let n: u64 = req.payload().unwrap();
            if n == 1 {
                responder.respond(&n).await.unwrap();
            } else {
                drop(responder);
            }
            let _ = tx.send((n, "answered"));
            let closed = tokio::time::timeout(Duration::from_secs(5), req.cancelled()).await;
            let _ = tx.send((
                n,
                if closed.is_ok() {
                    "saw the close"
                } else {
                    "timed out"
                },
            ));
        }
    });
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, server) = tokio::join!(setup(a, None), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    assert!(client.peer().supports("cancel"));
    assert_eq!(client.request::<_, u64>(&1).await.unwrap(), 1);
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>(&2).await }
    });
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(events.recv().await.unwrap());
    }
    client.close();
    while seen.len() < 4 {
        seen.push(events.recv().await.unwrap());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            (1, "answered"),
            (1, "saw the close"),
            (2, "answered"),
            (2, "saw the close")
        ]
    );
    assert!(second.await.unwrap().is_err());
}

/// A handler hands its request's token to background work, answers and
/// ends; then the session closes. The token must hear the close, whether
/// the peer can cancel or not: for one that can, it once did not (the
/// request's entry, the only way to it, had gone with the handler), and
/// the work ran on.
#[tokio::test]
async fn a_token_handed_out_hears_the_close_after_its_handler_ended() {
    for extensions in [Some(&["error", "cancel"][..]), None] {
        let (tokens_tx, mut tokens) = mpsc::unbounded_channel();
        let handler = handler_fn(move |req: Request| {
            let _ = tokens_tx.send(req.cancellation_token());
            async move { Ok::<_, ipc_request::RemoteError>(1) }
        });
        let (session, mut reader, mut writer) =
            serve_a_hand_played_peer(handler, ChannelConfig::default(), 64 * 1024, extensions).await;
        send_one_dot_zero_request(&mut writer, 1).await;
        let answer = next_line(&mut reader, "no answer").await;
        assert!(answer.contains("RESPONSE"), "{answer}");
        let token = tokens.recv().await.unwrap();
        // The handler's task ends, and the request's entry goes, just
        // after its answer: give it that moment (were the entry still
        // there, the close would reach the token through it, and the test
        // would prove nothing, not fail).
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !token.is_cancelled(),
            "{extensions:?}: cancelled before the close"
        );
        session.close();
        let heard = tokio::time::timeout(Duration::from_secs(5), token.cancelled()).await;
        assert!(
            heard.is_ok(),
            "{extensions:?}: the handed-out token never heard the close"
        );
    }
}

/// A request kept past its handler (moved to a task with its responder,
/// which answers) and then the session's close: `is_cancelled` must say
/// so before anything asked for the request's token, as `cancelled` does,
/// and as for a 1.0 peer (a review saw false, then true once `cancelled`
/// had run).
#[tokio::test]
async fn a_request_kept_past_its_handler_is_cancelled_by_the_close() {
    for extensions in [Some(&["error", "cancel"][..]), None] {
        let (kept_tx, mut kept) = mpsc::unbounded_channel();
        let handler = responder_fn(move |req: Request, responder: Responder| {
            let _ = kept_tx.send((req, responder));
            async {}
        });
        let (session, mut reader, mut writer) =
            serve_a_hand_played_peer(handler, ChannelConfig::default(), 64 * 1024, extensions).await;
        send_one_dot_zero_request(&mut writer, 1).await;
        let (req, responder) = kept.recv().await.unwrap();
        responder.respond(&1).await.unwrap();
        let answer = next_line(&mut reader, "no answer").await;
        assert!(answer.contains("RESPONSE"), "{answer}");
        // The handler's task ends, and the request's entry goes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!req.is_cancelled(), "{extensions:?}: cancelled before the close");
        session.close();
        assert!(
            req.is_cancelled(),
            "{extensions:?}: is_cancelled missed the close"
        );
        let heard = tokio::time::timeout(Duration::from_secs(5), req.cancelled()).await;
        assert!(heard.is_ok(), "{extensions:?}: cancelled() never heard the close");
    }
}

#[tokio::test]
async fn a_handler_that_cancels_its_own_token_still_answers_its_caller() {
    // The token is the handler's to share with its own work; cancelling
    // it must not cost the caller the answer (or, for a dropped responder,
    // the error that says there will be none).
    let handler = responder_fn(|req: Request, responder: Responder| async move {
        req.cancellation_token().cancel();
        assert!(req.is_cancelled());
        if req.payload::<u64>().unwrap() == 1 {
            responder.respond(&"answered anyway").await.unwrap();
        }
    });
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, server) = tokio::join!(setup(a, None), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    let within = Duration::from_secs(5);
    let answer = tokio::time::timeout(within, client.request::<_, String>(&1)).await;
    assert_eq!(answer.expect("no answer came").unwrap(), "answered anyway");
    let dropped = tokio::time::timeout(within, client.request::<_, String>(&2)).await;
    match dropped.expect("no answer came") {
        Err(Error::Remote(e)) => assert_eq!(e.name, "ResponderDropped"),
        other => panic!("{other:?}"),
    }
}

/// A handler for the UID tests, and what it reports. Payload 1 is
/// answered at once, then its handler works on until `finish_first` (or
/// its cancel); payload 2 waits up to 5 s for its cancel; payload 3 is
/// answered.
fn answer_first_then_work_on() -> (
    ipc_request::Handler,
    Arc<tokio::sync::Notify>,
    mpsc::UnboundedReceiver<&'static str>,
) {
    let finish_first = Arc::new(tokio::sync::Notify::new());
    let (tx, events) = mpsc::unbounded_channel();
    let handler = responder_fn({
        let finish_first = finish_first.clone();
        move |req: Request, responder: Responder| {
            let (finish_first, tx) = (finish_first.clone(), tx.clone());
            async move {
                match req.payload::<u64>().unwrap() {
                    1 => {
                        responder.respond(&1).await.unwrap();
                        let _ = tx.send(tokio::select! {
                            _ = finish_first.notified() => "first finished",
                            _ = req.cancelled() => "first cancelled",
                        });
                    }
                    2 => {
                        let _ = tx.send("second started");
                        let heard = tokio::time::timeout(Duration::from_secs(5), req.cancelled()).await;
                        let _ = tx.send(if heard.is_ok() {
                            "second cancelled"
                        } else {
                            "second missed it"
                        });
                    }
                    n => {
                        let _ = tx.send("third ran");
                        let _ = responder.respond(&n).await;
                    }
                }
            }
        }
    });
    (handler, finish_first, events)
}

#[tokio::test]
async fn uids_that_differ_only_in_lone_surrogates_stay_apart_and_go_back_as_sent() {
    // A JS peer's UIDs are UTF-16 strings and may hold lone surrogates,
    // which no Rust String can: read as U+FFFD, "\ud800" and "\ud801"
    // would be one UID in our tables, and neither would come back in an
    // answer. One handler slot: \ud800 runs, unanswered, until its cancel;
    // \ud801 waits for the slot, and its cancel must drop it there, not
    // reach the handler of \ud800.
    let (handler, _finish_first, mut events) = answer_first_then_work_on();
    let (_server, mut messages, mut reader, mut writer) =
        one_handler_slot_for_a_hand_played_peer(handler).await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap()
    };
    write_protocol_line(&mut writer, "REQUEST", r"\ud800", "2").await;
    assert_eq!(next().await, "second started");
    write_protocol_line(&mut writer, "REQUEST", r"\ud801", "3").await;
    write_protocol_line(&mut writer, "CANCEL", r"\ud801", "null").await;
    wait_until_read(&mut writer, &mut messages).await;
    write_protocol_line(&mut writer, "CANCEL", r"\ud800", "null").await;
    assert_eq!(next().await, "second cancelled");
    // A new request, under a UID whose surrogates pair up only in part: its
    // answer is the first line we write, and gives the UID back as sent.
    write_protocol_line(&mut writer, "REQUEST", r"\udc00\ud801\udc01", "3").await;
    assert_eq!(next().await, "third ran");
    let answer = common::read_line(&mut reader).await;
    assert!(
        answer.starts_with(
            r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"\udc00𐐁","#
        ),
        "{answer}"
    );
    assert!(events.try_recv().is_err(), "the cancelled \\ud801 never ran");
}

#[tokio::test]
async fn a_handler_done_with_a_uid_leaves_a_later_request_with_it_cancellable() {
    // A peer may reuse a UID once it has its answer. The first handler,
    // answered and finishing later, must not take the second one's entry
    // out of the map of running handlers: the peer's cancel would miss it.
    let (handler, finish_first, mut events) = answer_first_then_work_on();
    let (_server, _reader, mut writer) = serve_a_hand_played_peer(
        handler,
        ChannelConfig::default(),
        4096,
        Some(&["error", "cancel"]),
    )
    .await;
    write_protocol_line(&mut writer, "REQUEST", "7", "1").await;
    write_protocol_line(&mut writer, "REQUEST", "7", "2").await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(next().await, "second started");
    finish_first.notify_one();
    assert_eq!(next().await, "first finished");
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    assert_eq!(next().await, "second cancelled");
}

#[tokio::test]
async fn a_cancel_of_a_reused_uid_drops_the_waiting_request_not_the_answered_handler() {
    // One handler slot. Request 7 (payload 1) is answered and its handler
    // works on, holding the slot; the peer, having the answer, sends 7
    // again (payload 2), which waits for the slot, and cancels it. The
    // cancel means that newer request: it must never run, and the first
    // handler, whose caller is already answered, must not be cancelled.
    let (handler, finish_first, mut events) = answer_first_then_work_on();
    let (_server, mut messages, mut reader, mut writer) =
        one_handler_slot_for_a_hand_played_peer(handler).await;
    write_protocol_line(&mut writer, "REQUEST", "7", "1").await;
    let first_answer: Value = serde_json::from_str(&common::read_line(&mut reader).await).unwrap();
    assert_eq!(first_answer["_IPC_REQUEST/PAYLOAD"], 1);
    write_protocol_line(&mut writer, "REQUEST", "7", "2").await;
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    wait_until_read(&mut writer, &mut messages).await;
    finish_first.notify_one();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(event.unwrap().unwrap(), "first finished");
    write_protocol_line(&mut writer, "REQUEST", "8", "3").await;
    let third_answer: Value = serde_json::from_str(&common::read_line(&mut reader).await).unwrap();
    assert_eq!(
        third_answer["_IPC_REQUEST/PAYLOAD"], 3,
        "only the third is answered"
    );
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert_eq!(seen, ["third ran"]);
}

#[tokio::test]
async fn a_handler_whose_uid_the_peer_reused_still_sees_the_close() {
    // The second request with UID 7 takes its place in the map of running
    // handlers (a cancel of 7 now means it), but the first, answered and
    // still working, must still hear the session end.
    let (tx, mut events) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            let n = req.payload::<u64>().unwrap();
            if n == 1 {
                responder.respond(&1).await.unwrap();
            }
            let _ = tx.send((n, "started"));
            let heard = tokio::time::timeout(Duration::from_secs(5), req.cancelled()).await;
            let _ = tx.send((
                n,
                if heard.is_ok() {
                    "saw the close"
                } else {
                    "missed it"
                },
            ));
        }
    });
    let (_server, reader, mut writer) = serve_a_hand_played_peer(
        handler,
        ChannelConfig::default(),
        4096,
        Some(&["error", "cancel"]),
    )
    .await;
    for n in ["1", "2"] {
        write_protocol_line(&mut writer, "REQUEST", "7", n).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(events.recv().await.unwrap());
    }
    drop((reader, writer));
    while seen.len() < 4 {
        seen.push(events.recv().await.unwrap());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            (1, "saw the close"),
            (1, "started"),
            (2, "saw the close"),
            (2, "started")
        ]
    );
}

#[tokio::test]
async fn a_dropped_responder_answers_nothing_once_its_request_is_cancelled() {
    // The handler drops its responder unanswered and works on: the error
    // answer it leaves goes out when the handler ends. If the peer has
    // cancelled the request by then, nothing may go (PROTOCOL.md 3): the
    // peer may already have reused the UID.
    let (tx, mut events) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            match req.payload::<u64>().unwrap() {
                1 => {
                    drop(responder);
                    req.cancelled().await;
                    let _ = tx.send("first cancelled");
                }
                n => {
                    let _ = responder.respond(&n).await;
                }
            }
        }
    });
    let (_server, mut reader, mut writer) = serve_a_hand_played_peer(
        handler,
        ChannelConfig::default(),
        4096,
        Some(&["error", "cancel"]),
    )
    .await;
    write_protocol_line(&mut writer, "REQUEST", "7", "1").await;
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(event.unwrap().unwrap(), "first cancelled");
    // The UID again, for a request that is answered: its answer is the
    // first line we write.
    write_protocol_line(&mut writer, "REQUEST", "7", "2").await;
    let line = next_line(&mut reader, "no answer").await;
    let value: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["_IPC_REQUEST/PAYLOAD"], 2, "{line}");
}

#[tokio::test]
async fn an_answer_waiting_for_room_is_not_written_once_its_request_is_cancelled() {
    // The peer reads nothing for a while: answers wait for room in the
    // write queue, and the peer, tired of waiting, cancels. An answer still
    // waiting then is not written (PROTOCOL.md 3), whether a handler's
    // `respond` (which then fails with Cancelled) or the error a dropped
    // responder left; the peer may already have reused the UID.
    let (tx, mut events) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            match req.payload::<u64>().unwrap() {
                1 => drop(responder),
                5 => {
                    let first = responder.respond(&5).await;
                    // Refused after its wait for room: nothing was written,
                    // and a second try is told the same.
                    let second = responder.respond(&6).await;
                    let _ = tx.send(match first {
                        Err(Error::Cancelled) => second,
                        other => other,
                    });
                }
                n => {
                    let _ = responder.respond(&n).await;
                }
            }
        }
    });
    let config = ChannelConfig {
        write_queue_bytes: 4096,
        ..ChannelConfig::default()
    };
    let (session, mut reader, mut writer) =
        serve_a_hand_played_peer(handler, config, 4096, Some(&["error", "cancel"])).await;
    let mut messages = session.messages().unwrap();
    // A long plain line fills the pipe and holds the whole write budget.
    session.send(&"x".repeat(50_000)).await.unwrap();
    write_protocol_line(&mut writer, "REQUEST", "7", "1").await;
    write_protocol_line(&mut writer, "REQUEST", "9", "5").await;
    // Time for both answers to start waiting for room (if they do not,
    // they are refused before they wait, and the test still holds).
    tokio::time::sleep(Duration::from_millis(100)).await;
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    write_protocol_line(&mut writer, "CANCEL", "9", "null").await;
    wait_until_read(&mut writer, &mut messages).await;
    write_protocol_line(&mut writer, "REQUEST", "7", "2").await;
    // Now the peer reads: after the plain line, the only answer is the one
    // to the reused UID.
    let plain = common::read_line(&mut reader).await;
    assert!(plain.len() > 50_000);
    let line = next_line(&mut reader, "no answer").await;
    let value: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["_IPC_REQUEST/REQUEST_UID"], "7", "{line}");
    assert_eq!(value["_IPC_REQUEST/PAYLOAD"], 2, "{line}");
    let respond = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert!(
        matches!(respond.unwrap().unwrap(), Err(ipc_request::Error::Cancelled)),
        "respond must say its answer was not written"
    );
}

#[tokio::test]
async fn a_request_too_long_to_read_is_refused_under_its_uid_as_sent() {
    // The line is never parsed; its UID is read from its first bytes, and
    // one with escapes (a lone surrogate, an escaped quote) goes back as the
    // peer wrote it, or the peer could not match the refusal.
    let config = ChannelConfig {
        max_message_len: 300,
        ..ChannelConfig::default()
    };
    let handler = responder_fn(|_: Request, _: Responder| async {});
    let (_server, mut reader, mut writer) = serve_a_hand_played_peer(handler, config, 4096, None).await;
    let big = format!("\"{}\"", "y".repeat(400));
    write_protocol_line(&mut writer, "REQUEST", r#"\ud800\"x"#, &big).await;
    let line = next_line(&mut reader, "the refusal never came").await;
    assert!(
        line.contains(r#""_IPC_REQUEST/REQUEST_UID":"\ud800\"x","#),
        "{line}"
    );
    // serde_json refuses the lone surrogate a JS peer reads.
    let value: Value = serde_json::from_str(&line.replace(r"\ud800", r"\ufffd")).unwrap();
    assert_eq!(value["_IPC_REQUEST/PAYLOAD"]["name"], "RequestTooLong", "{line}");
    // A UID that makes the refusal itself longer than our maximum: it is
    // sent all the same, or the peer would wait for ever.
    let long_uid = r"\ud800".repeat(200);
    write_protocol_line(&mut writer, "REQUEST", &long_uid, &big).await;
    let line = next_line(&mut reader, "the refusal never came").await;
    assert!(line.len() > 1_200, "{line}");
    assert!(
        line.contains(&format!(r#""_IPC_REQUEST/REQUEST_UID":"{long_uid}","#)),
        "{line}"
    );
}

#[tokio::test]
async fn a_line_that_is_not_json_but_has_an_envelope_is_answered_not_left_waiting() {
    // A peer of another make may write a payload that is not JSON (Node
    // cannot). The envelope comes first and is well formed, so the line is
    // known: a request is refused under its UID, an answer fails the
    // request it answers. Either way nobody waits for ever, and it is not
    // a plain message's error.
    use tokio::io::AsyncWriteExt;
    let handler = handler_fn(|_: Request| async { Ok::<_, Error>("ran") });
    let (session, mut reader, mut writer) =
        serve_a_hand_played_peer(handler, ChannelConfig::default(), 4096, None).await;
    let mut messages = session.messages().unwrap();
    let head = |kind: &str, uid: &str| {
        format!(
            "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:{kind}\",\
             \"_IPC_REQUEST/REQUEST_UID\":\"{uid}\",\"_IPC_REQUEST/PAYLOAD\":"
        )
        .into_bytes()
    };
    let not_utf8 = [&head("REQUEST", "a")[..], b"\"\xff\"}\n"].concat();
    let not_json = [&head("REQUEST", "b")[..], b"[1,}}\n"].concat();
    for (line, uid) in [(not_utf8, "a"), (not_json, "b")] {
        writer.write_all(&line).await.unwrap();
        let answer = next_line(&mut reader, "the refusal never came").await;
        let value: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(value["_IPC_REQUEST/REQUEST_UID"], uid, "{answer}");
        assert_eq!(
            value["_IPC_REQUEST/PAYLOAD"]["name"], "RequestUnreadable",
            "{answer}"
        );
    }
    // An answer to our request that is not JSON fails that request.
    let asking = tokio::spawn({
        let session = session.clone();
        async move { session.request::<_, Value>(&"q").await }
    });
    let request = next_line(&mut reader, "our request never came").await;
    let request: Value = serde_json::from_str(&request).unwrap();
    let uid = request["_IPC_REQUEST/REQUEST_UID"].as_str().unwrap().to_owned();
    let bad_answer = [&head("RESPONSE", &uid)[..], b"{\"a\":\xff}}\n"].concat();
    writer.write_all(&bad_answer).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), asking)
        .await
        .expect("a request answered with a line that is not JSON was left waiting")
        .unwrap();
    assert!(
        matches!(
            answer,
            Err(Error::Frame(ipc_request::FrameError::InvalidJson { .. }))
        ),
        "{answer:?}"
    );
    assert_eq!(session.pending_requests(), 0);
    // None of the three reached the plain messages; a line without an
    // envelope does, as its error.
    writer.write_all(b"{\"x\":}\n[\"plain\"]\n").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .unwrap();
    assert!(
        matches!(first, Some(Err(Error::Frame(ipc_request::FrameError::InvalidJson { ref snippet, .. }))) if snippet == r#"{"x":}"#),
        "{first:?}"
    );
    let second = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .unwrap();
    assert_eq!(second.unwrap().unwrap(), serde_json::json!(["plain"]));
    // And the session goes on.
    write_protocol_line(&mut writer, "REQUEST", "c", "1").await;
    let answer = next_line(&mut reader, "no answer").await;
    assert!(answer.contains(r#""_IPC_REQUEST/PAYLOAD":"ran""#), "{answer}");
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

/// `count` once it has not moved for a `period`, or has reached `all`:
/// when a flood that writes to a reader that may stop has stalled.
async fn once_it_stops_moving(count: &std::sync::atomic::AtomicUsize, period: Duration, all: usize) -> usize {
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(period).await;
        let now = count.load(std::sync::atomic::Ordering::SeqCst);
        if now == last || now == all {
            return now;
        }
        last = now;
    }
}

/// Sends `requests` requests (UIDs 0, 1, ...) with `payload` to a session
/// whose answers nobody reads, until the flood stops moving (it finishes
/// at once if nothing holds it back); then reads `requests` answers, each
/// an error with one of `names`, one per UID. Returns how many requests
/// went in before the flood stalled, and how many answers had each name.
async fn flood_unread_then_read_errors(
    mut writer: PeerWriter,
    reader: &mut PeerReader,
    requests: usize,
    payload: String,
    names: &[&str],
) -> (usize, std::collections::HashMap<String, usize>) {
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = tokio::spawn({
        let written = written.clone();
        async move {
            for n in 0..requests {
                write_protocol_line(&mut writer, "REQUEST", &n.to_string(), &payload).await;
                written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let stalled_at = once_it_stops_moving(&written, Duration::from_millis(100), requests).await;
    let mut answered = std::collections::HashSet::new();
    let mut by_name = std::collections::HashMap::new();
    while answered.len() < requests {
        let line = next_line(reader, "an answer never came").await;
        let value: Value = serde_json::from_str(&line).unwrap();
        // The error as the `error` extension sends it, or as the payload
        // for a peer without it (1.0).
        let error = match &value["_IPC_REQUEST/ERROR"] {
            Value::Null => &value["_IPC_REQUEST/PAYLOAD"],
            error => error,
        };
        let name = error["name"].as_str().unwrap_or_default();
        assert!(names.contains(&name), "{line}");
        *by_name.entry(name.to_string()).or_insert(0) += 1;
        answered.insert(value["_IPC_REQUEST/REQUEST_UID"].as_str().unwrap().to_string());
    }
    flood.await.unwrap();
    (stalled_at, by_name)
}

#[tokio::test]
async fn a_peer_sending_requests_too_long_to_read_and_reading_nothing_is_slowed_down() {
    // Each such request gets an error answer. While the peer reads none,
    // they may take up max_unwritten_refusal_bytes unwritten and then must
    // wait (we stop reading), not pile up; once it reads, every request
    // has its answer.
    const REQUESTS: usize = 1_000;
    let config = ChannelConfig {
        max_message_len: 300,
        write_queue_bytes: 1024,
    };
    let handler = responder_fn(|_: Request, _: Responder| async {});
    let builder = SessionBuilder::new()
        .config(SessionConfig {
            max_unwritten_refusal_bytes: 1024,
            ..SessionConfig::default()
        })
        .handler(handler);
    let (ours, theirs) = tokio::io::duplex(4096);
    let (_server, mut reader, writer) = serve_over(ours, theirs, builder, config, None).await;
    let big = format!("\"{}\"", "y".repeat(400));
    let (stalled_at, _) =
        flood_unread_then_read_errors(writer, &mut reader, REQUESTS, big, &["RequestTooLong"]).await;
    assert!(
        stalled_at < 50,
        "{stalled_at} requests of 400 bytes went in while the peer read nothing"
    );
}

/// A session whose handler hands each responder to a task that drops it a
/// moment later (each request is answered `ResponderDropped`), with a
/// refusals' budget and a write queue of 1 KiB, and a backlog of
/// `backlog` requests.
fn a_session_whose_responders_are_dropped_late(backlog: usize) -> (SessionBuilder, ChannelConfig) {
    let handler = responder_fn(|_: Request, responder: Responder| {
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            drop(responder);
        });
        async {}
    });
    let builder = SessionBuilder::new()
        .config(SessionConfig {
            max_unwritten_refusal_bytes: 1024,
            max_queued_requests: backlog,
            ..SessionConfig::default()
        })
        .handler(handler);
    let config = ChannelConfig {
        write_queue_bytes: 1024,
        ..ChannelConfig::default()
    };
    (builder, config)
}

#[tokio::test]
async fn responders_dropped_after_their_handler_do_not_answer_a_peer_that_reads_nothing_without_end() {
    // Each handler hands its responder to a task that drops it a moment
    // later: the handler slot is free at once, and each drop queues an
    // error answer from a destructor, which cannot wait for room. While
    // the peer reads none, those answers count against the refusals'
    // budget, past which no handler starts: requests wait in the backlog,
    // and past it are refused, and the refusals stop the reader, not pile
    // up (a review queued 100,000 answers so). Once the peer reads, every
    // request has its answer.
    const REQUESTS: usize = 1_000;
    // A peer with `error` and `cancel` is refused past the backlog; a 1.0
    // peer is not (it would take a refusal for an answer): the reader waits
    // for room instead. Either way the flood stalls.
    for extensions in [Some(&["error", "cancel"][..]), None] {
        let (builder, config) = a_session_whose_responders_are_dropped_late(16);
        let (ours, theirs) = tokio::io::duplex(4096);
        let (_server, mut reader, writer) = serve_over(ours, theirs, builder, config, extensions).await;
        let names = ["ResponderDropped", "Overloaded"];
        let (stalled_at, by_name) =
            flood_unread_then_read_errors(writer, &mut reader, REQUESTS, "0".into(), &names).await;
        // What goes in: the requests the 4 KiB pipe holds unread (about
        // 40), and those read until the reader stops: their answers fill
        // our 4 KiB pipe and the 1 KiB budget (about 25), then the
        // overdraft of the handlers started before it was seen (at most a
        // read's worth, the pipe's 40), then the backlog's 16, then (a peer
        // with `error`) refusals until they too wait on the spent budget.
        // About 180; unbounded, all 1,000.
        assert!(
            stalled_at < 400,
            "{extensions:?}: {stalled_at} requests of 100 bytes went in while the peer read nothing"
        );
        let refused = by_name.get("Overloaded").copied().unwrap_or(0);
        match extensions {
            Some(_) => assert!(
                refused > 0,
                "no request was refused past the backlog: {by_name:?}"
            ),
            None => assert_eq!(refused, 0, "a 1.0 peer was refused: {by_name:?}"),
        }
    }
}

#[tokio::test]
async fn a_closed_session_reads_on_so_a_peer_stuck_writing_is_not_left_stuck() {
    // After close(), what is queued (a plain message larger than the pipe,
    // or nothing) is still written, once the peer reads. A peer whose
    // reader first waits for its own writes to us to go through (a session
    // of this crate whose refusals wait on their budget) reads nothing
    // until then: if we stopped reading at the close, or once our flush was
    // done, its writes would wait for us, with our end behind them, for
    // good. So we read on, and drop what we read.
    use tokio::io::AsyncWriteExt;
    for queued in [64 * 1024, 0] {
        let handler = responder_fn(|_: Request, _: Responder| async {});
        let (session, mut reader, mut writer) =
            serve_a_hand_played_peer(handler, ChannelConfig::default(), 4096, None).await;
        let big = "x".repeat(queued);
        if queued > 0 {
            session.send(&big).await.unwrap();
        }
        session.close();
        // 256 KiB after the close, through a 4 KiB pipe: it goes only if
        // we read. (The session's handle lives on, as after close() it may.)
        // Not more: with nothing queued, the drain reads for 1 s after the
        // close, which a busy machine's debug build must not run out of.
        let lines = "[1]\n".repeat(64 * 1024);
        tokio::time::timeout(Duration::from_secs(4), writer.write_all(lines.as_bytes()))
            .await
            .unwrap_or_else(|_| panic!("{queued} bytes queued: the closed session stopped reading"))
            .unwrap();
        // Now the peer reads: the message, whole, then the end.
        if queued > 0 {
            let line = next_line(&mut reader, "the queued message was not written").await;
            assert_eq!(line.len(), big.len() + 2, "the message whole, quoted");
        }
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest))
            .await
            .expect("our side never ended")
            .unwrap();
        assert!(rest.is_empty(), "nothing after the message: {} bytes", rest.len());
        drop(session);
    }
}

#[tokio::test]
async fn a_closed_session_stops_reading_a_peer_that_floods_it_and_reads_nothing() {
    // The other side of the test above: a peer that reads nothing, or a
    // byte every 2 s, so our flush does not move (by 64 KiB in 5 s), and
    // sends on after our close. Reading it is no help to anyone; the
    // reader gives up after 5 s, where it read on for as long as the peer
    // sent (reviews saw 45 MB read so, and 325 MB with the byte now and
    // then).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for trickle in [false, true] {
        let handler = responder_fn(|_: Request, _: Responder| async {});
        let (session, mut reader, mut writer) =
            serve_a_hand_played_peer(handler, ChannelConfig::default(), 4096, None).await;
        session.send(&"x".repeat(64 * 1024)).await.unwrap();
        session.close();
        drop(session);
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let flood = tokio::spawn({
            let written = written.clone();
            async move {
                let chunk = "[1]\n".repeat(1024);
                while writer.write_all(chunk.as_bytes()).await.is_ok() {
                    written.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        let trickling = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            if !trickle {
                return reader;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if reader.read(&mut byte).await.unwrap_or(0) == 0 {
                    return reader;
                }
            }
        });
        // Until the flood stops moving for a second; it never does if we
        // read on without end.
        let moving = once_it_stops_moving(&written, Duration::from_secs(1), usize::MAX);
        let stalled = tokio::time::timeout(Duration::from_secs(20), moving)
            .await
            .unwrap_or_else(|_| {
                panic!("trickle {trickle}: the closed session read on as long as the peer flooded it")
            });
        assert!(
            stalled > 1 << 20,
            "trickle {trickle}: it did not read on after the close: {stalled} bytes"
        );
        flood.abort();
        trickling.abort();
    }
}

#[tokio::test]
async fn a_closed_session_reads_on_while_one_long_line_of_its_flush_moves_slowly() {
    // A peer held up by us (it reads only once each of its writes to us has
    // gone through) reads our one long line steadily but slowly, over more
    // than the 5 s the drain waits for its flush to move: it moves, within
    // the line. Taken for stalled (what was queued changes only once the
    // whole line is written), the drain stopped and both sides waited for
    // good (a review's test).
    use tokio::io::AsyncWriteExt;
    let handler = responder_fn(|_: Request, _: Responder| async {});
    let (session, mut reader, mut writer) =
        serve_a_hand_played_peer(handler, ChannelConfig::default(), 64 * 1024, None).await;
    let len = 6 * 1024 * 1024;
    session.send(&"x".repeat(len)).await.unwrap();
    session.close();
    drop(session);
    let peer = async {
        let chunk = "[1]\n".repeat(1024);
        let mut buf = vec![0u8; 8 * 1024];
        let mut total = 0;
        loop {
            writer.write_all(chunk.as_bytes()).await.unwrap();
            match reader.read(&mut buf).await.unwrap() {
                0 => return total,
                n => total += n,
            }
            // About 800 KB/s: 7.5 s for the line.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let total = tokio::time::timeout(Duration::from_secs(60), peer)
        .await
        .expect("the peer, held up by us, never got our whole line and our end");
    assert_eq!(total, len + 3, "the line, quoted, and its newline");
}

#[tokio::test]
async fn a_session_stuck_writing_to_one_that_closes_sees_its_end() {
    // Two sessions of this crate. P's refusals wait on their budget, which
    // only A's reading frees; A's reader is held up too (a full buffer of
    // plain messages nobody reads). A closes, its requests withdrawn, with
    // nothing left to write: P must still see A's end, which needs A to
    // read what P is writing (a review's test).
    let (a_io, p_io) = tokio::io::duplex(4096);
    let p_builder = SessionBuilder::new()
        .config(SessionConfig {
            max_concurrent_handlers: 1,
            max_queued_requests: 1,
            max_unwritten_refusal_bytes: 1024,
            ..SessionConfig::default()
        })
        .handler(responder_fn(|_: Request, responder: Responder| async move {
            std::future::pending::<()>().await;
            drop(responder);
        }));
    let a_builder = SessionBuilder::new().config(SessionConfig {
        message_buffer: 1,
        ..SessionConfig::default()
    });
    let (a, p) = tokio::join!(
        a_builder.setup(Channel::from_stream(a_io, ChannelConfig::default())),
        p_builder.setup(Channel::from_stream(p_io, ChannelConfig::default()))
    );
    let (a, p) = (a.unwrap(), p.unwrap());
    let _unread = a.messages().unwrap();
    for _ in 0..4 {
        p.send(&"fill").await.unwrap();
    }
    for i in 0..400u32 {
        let a = a.clone();
        tokio::spawn(async move { a.request::<_, Value>(&i).await });
    }
    // Until P's reader is held up: P's queue stops moving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.close();
    let seen = tokio::time::timeout(Duration::from_secs(10), p.closed())
        .await
        .expect("P never saw the end of A, which closed");
    assert!(matches!(seen, ipc_request::CloseReason::PeerClosed), "{seen:?}");
}

#[tokio::test]
async fn a_session_whose_answers_wait_past_their_budget_still_sees_the_peer_end() {
    // The flood above with room in the backlog for all of it, then the
    // peer ends its stream (as a session of this crate does on close: it
    // shuts its write side down and reads no more) and keeps its socket.
    // Answers past the budget hold handlers back, not the reader: it reads
    // on, to the end, and the session ends (a review saw a reader stopped
    // for them miss that end, and the session stay open for good).
    use tokio::io::AsyncWriteExt;
    let (builder, config) = a_session_whose_responders_are_dropped_late(65_536);
    let (ours, theirs) = tokio::io::duplex(4096);
    let (server, _reader, mut writer) = serve_over(ours, theirs, builder, config, None).await;
    for n in 0..1_000 {
        write_protocol_line(&mut writer, "REQUEST", &n.to_string(), "0").await;
    }
    writer.shutdown().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), server.closed())
        .await
        .expect("the peer ended its stream, and the session is still open");
    assert!(matches!(ended, ipc_request::CloseReason::PeerClosed), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_session_closed_fails_with_closed() {
    // As `respond` documents; `Cancelled` is for the peer's cancel. The
    // handler wakes on another thread while the close is still under way:
    // rounds, so that it sometimes answers in the middle of it.
    for round in 0..100 {
        let started = Arc::new(tokio::sync::Notify::new());
        let (tx, mut answered) = mpsc::unbounded_channel();
        let handler = responder_fn({
            let started = started.clone();
            move |req: Request, responder: Responder| {
                let (started, tx) = (started.clone(), tx.clone());
                async move {
                    started.notify_one();
                    req.cancelled().await;
                    let _ = tx.send(responder.respond(&1).await);
                }
            }
        });
        let (a, b) = Channel::pair(ChannelConfig::default());
        let (client, server) = tokio::join!(setup(a, None), setup(b, handler));
        let (client, server) = (client.unwrap(), server.unwrap());
        let call = tokio::spawn(async move { client.request::<_, u64>(&1).await });
        started.notified().await;
        server.close();
        let result = tokio::time::timeout(Duration::from_secs(5), answered.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(result, Err(Error::Closed(ipc_request::CloseReason::Local))),
            "round {round}: {result:?}"
        );
        assert!(call.await.unwrap().is_err());
    }
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

#[tokio::test]
async fn a_request_before_the_peers_handshake_sees_a_peer_that_advertised_nothing() {
    // A peer that breaks the protocol: it sends a request before any
    // handshake message. The handler's session says what the session
    // then assumes, rather than panicking.
    let handler = handler_fn(|req: Request| async move {
        let peer = req.session().peer().clone();
        Ok::<_, ipc_request::RemoteError>((peer.advertises_extensions, peer.supports("cancel")))
    });
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut reader, mut writer) = tokio::io::split(theirs);
    let setup = tokio::spawn(
        SessionBuilder::new()
            .handler(handler)
            .setup(Channel::from_stream(ours, ChannelConfig::default())),
    );
    let _hello = next_line(&mut reader, "no handshake request").await;
    write_protocol_line(&mut writer, "REQUEST", "early", "null").await;
    let answer: Value =
        serde_json::from_str(&next_line(&mut reader, "no answer to the early request").await).unwrap();
    assert_eq!(answer["_IPC_REQUEST/REQUEST_UID"], "early");
    assert_eq!(
        answer["_IPC_REQUEST/PAYLOAD"],
        serde_json::json!([false, false]),
        "{answer}"
    );
    setup.abort();
}
