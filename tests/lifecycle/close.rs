//! Closing a session: what it still sends and delivers, and how handlers,
//! tokens and kept requests hear of it.

use crate::cancel_observer;
use crate::common;
use crate::common::hand_played::{
    next_line, send_one_dot_zero_request, serve_a_hand_played_peer, serve_a_one_dot_zero_peer, serve_over,
    write_protocol_line,
};

use std::sync::Arc;
use std::time::Duration;

use ipc_request::{
    Channel, ChannelConfig, Error, Request, Responder, SessionBuilder, handler_fn, responder_fn, setup,
};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

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

/// A session whose runtime shuts down while it is open ends, saying so,
/// and lets go of its socket: the peer sees the end of the stream though a
/// handle of ours lives on. Before, it said "closed by this side", and the
/// write half, kept by the handle, kept the peer waiting until that went.
#[test]
fn a_session_whose_runtime_shuts_down_ends_and_the_peer_sees_the_end() {
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::UnixStream;

    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(theirs.try_clone().unwrap());
        let mut hello = String::new();
        reader.read_line(&mut hello).unwrap();
        let answer = common::handshake_answer(&hello, Some(&["error", "cancel"]));
        (&theirs).write_all(answer.as_bytes()).unwrap();
        (theirs, reader)
    });
    let (runtime, session) = common::session_on_a_runtime_of_its_own(ours, None);
    let (theirs, mut reader) = peer.join().unwrap();
    let asking = session.clone();
    runtime.spawn(async move { asking.request::<_, Value>(&"never answered").await });
    let mut request = String::new();
    reader.read_line(&mut request).unwrap();
    assert!(request.contains("never answered"), "{request}");

    drop(runtime);
    assert!(
        matches!(
            session.close_reason(),
            Some(ipc_request::CloseReason::RuntimeShutDown)
        ),
        "{:?}",
        session.close_reason()
    );
    theirs.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let end = reader.read_to_end(&mut rest);
    assert!(end.is_ok(), "no end of stream while our handle lives: {end:?}");
    // The request's cancel may come first: its future was dropped with the
    // runtime, a caller giving up.
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.lines().all(|line| line.contains("MSG_TYPE:CANCEL")),
        "{rest}"
    );
    // The handle that outlived its runtime tells a caller why.
    let late = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(session.request::<_, Value>(&"too late"));
    assert!(
        matches!(
            &late,
            Err(Error::Closed(ipc_request::CloseReason::RuntimeShutDown))
        ),
        "{late:?}"
    );
}
