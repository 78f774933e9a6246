//! Lines too long to read, peers that flood us and read nothing, and closed
//! sessions that read on to drain them.

use crate::common::hand_played::{
    PeerReader, PeerWriter, next_line, serve_a_hand_played_peer, serve_over, write_protocol_line,
};
use crate::common::watched_reader::WatchedReader;

use std::sync::Arc;
use std::time::Duration;

use ipc_request::{
    Channel, ChannelConfig, Error, Request, Responder, SessionBuilder, SessionConfig, handler_fn,
    responder_fn,
};
use serde_json::Value;
use tokio::io::AsyncReadExt;

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
    let p_read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (p_reader, p_writer) = tokio::io::split(p_io);
    let p_reader = WatchedReader {
        inner: p_reader,
        watch: {
            let p_read = p_read.clone();
            move |bytes: &[u8]| {
                p_read.fetch_add(bytes.len(), std::sync::atomic::Ordering::SeqCst);
            }
        },
    };
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
        p_builder.setup(Channel::new(p_reader, p_writer, ChannelConfig::default()))
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
    // Until P's reader is held up: it stops reading, with A's requests
    // still queued.
    let stalled = once_it_stops_moving(&p_read, Duration::from_millis(200), usize::MAX);
    tokio::time::timeout(Duration::from_secs(10), stalled)
        .await
        .expect("P's reader never stopped");
    assert!(
        a.queued_bytes() > 0,
        "P read all of A's requests: its reader was never held up"
    );
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
