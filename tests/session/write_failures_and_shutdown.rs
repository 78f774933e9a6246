//! Failed writes and broken pipes, what survives them, shutdown, and the
//! handler let go of when the session ends.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::a_session_with_a_hand_played_peer_over_a_socket;
use crate::common;
use crate::common::breaks_when_armed::{Break, BreaksWhenArmed};
use crate::common::ops_handler;
use ipc_request::{Channel, ChannelConfig, CloseReason, Error, RemoteError, Request, handler_fn, setup};
use serde_json::{Value, json};

/// Two connected sessions, ours over a write half that fails from the
/// first write after the handshake (see [`BreaksWhenArmed`]), with the
/// peer's exit status from `peer_exit` as for a spawned child; the peer
/// answers with [`ops_handler`].
async fn sessions_whose_writes_fail_once_set_up(
    peer_exit: Option<tokio::sync::watch::Receiver<Option<std::process::ExitStatus>>>,
) -> (ipc_request::Session, ipc_request::Session) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (read_half, write_half) = tokio::io::split(ours);
    let (writer, armed) = BreaksWhenArmed::new(write_half, Break::Fails);
    let mut ours = Channel::new(read_half, writer, ChannelConfig::default());
    if let Some(peer_exit) = peer_exit {
        ours.set_peer_exit(peer_exit);
    }
    let theirs = Channel::from_stream(theirs, ChannelConfig::default());
    let (client, server) = tokio::join!(setup(ours, None), setup(theirs, ops_handler()));
    armed.store(true, Ordering::SeqCst);
    (client.unwrap(), server.unwrap())
}

#[tokio::test]
async fn a_write_failure_fails_the_requests_whose_lines_it_lost() {
    // The request's line is accepted (queued), then the write fails while
    // the read side works on: without being told, the session would keep
    // the request waiting for an answer to a line the peer never got.
    let (client, server) = sessions_whose_writes_fail_once_set_up(None).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        client.request::<_, Value>(&json!({"op": "echo", "value": 1})),
    )
    .await
    .expect("the request waited for an answer to a line that was never written");
    match outcome {
        Err(Error::Closed(CloseReason::Io(e))) => {
            assert!(e.to_string().contains("the write side broke"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(client.close_reason(), Some(CloseReason::Io(_))));
    // The peer, still there, sees the channel end, though our handle lives.
    let peer_saw = tokio::time::timeout(Duration::from_secs(10), server.closed()).await;
    let peer_saw = peer_saw.expect("the peer never saw the channel close");
    assert!(matches!(peer_saw, CloseReason::PeerClosed), "{peer_saw:?}");
    drop(client);
}

#[tokio::test]
async fn a_write_failure_is_the_reason_though_an_owned_child_exits_in_answer() {
    // A Node child with a message listener exits (status 0) once its channel
    // closes, so our shutdown after the failure makes the child exit: the
    // session must still say that the write failed, not that the child
    // exited normally.
    use std::os::unix::process::ExitStatusExt;
    // As the process layer wires a spawned child.
    let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
    let (client, server) = sessions_whose_writes_fail_once_set_up(Some(exit_rx)).await;
    tokio::spawn(async move {
        server.closed().await;
        let _ = exit_tx.send(Some(std::process::ExitStatus::from_raw(0)));
    });
    let _ = client
        .request::<_, Value>(&json!({"op": "echo", "value": 1}))
        .await;
    let reason = tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .unwrap();
    assert!(
        matches!(reason, CloseReason::Io(_)),
        "the write failure is hidden: {reason:?}"
    );
}

#[tokio::test]
async fn a_broken_pipe_to_a_peer_that_stays_still_ends_the_session() {
    // The peer shuts down only its reading side and stays: our writes fail
    // with a broken pipe, as to a peer that is gone, but no end of stream
    // comes. The session must end all the same (lines lost that way would
    // leave their requests waiting), with the write's error.
    let (client, their_read, their_write) = a_session_with_a_hand_played_peer_over_a_socket().await;
    {
        use std::os::fd::AsRawFd;
        let fd = their_write.as_ref().as_raw_fd();
        // SAFETY: shutdown(2) on a socket this test owns.
        assert_eq!(unsafe { libc::shutdown(fd, libc::SHUT_RD) }, 0);
    }
    let refused = tokio::time::timeout(Duration::from_secs(10), client.request::<_, Value>(&json!(1))).await;
    assert!(
        matches!(refused, Ok(Err(Error::Closed(CloseReason::Io(_))))),
        "{refused:?}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .expect("the session lives on, unable to write, with the peer never closing");
    assert!(matches!(ended, CloseReason::Io(_)), "{ended:?}");
    drop((their_read, their_write));
}

#[tokio::test]
async fn an_answer_a_peer_wrote_before_it_went_survives_a_later_write_failing() {
    // The peer answers request 1 and goes; request 2 then fails to be
    // written (a broken pipe) before our reactor has seen the answer,
    // which is in our socket all the same: request 1 gets it
    // (PROTOCOL.md 1.4), and the session ends as the peer closing.
    let (client, mut their_read, their_write) = a_session_with_a_hand_played_peer_over_a_socket().await;
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, Value>(&json!(1)).await }
    });
    let request: Value = serde_json::from_str(&common::read_line(&mut their_read).await).unwrap();
    let answer = json!({
        "_IPC_REQUEST/MSG_TYPE": "_IPC_REQUEST/MSG_TYPE:RESPONSE",
        "_IPC_REQUEST/REQUEST_UID": request["_IPC_REQUEST/REQUEST_UID"],
        "_IPC_REQUEST/PAYLOAD": "the answer",
    });
    // Written and closed without yielding to our runtime.
    let mut theirs = their_read.reunite(their_write).unwrap().into_std().unwrap();
    theirs.set_nonblocking(false).unwrap();
    std::io::Write::write_all(&mut theirs, format!("{answer}\n").as_bytes()).unwrap();
    drop(theirs);
    let second = client.request::<_, Value>(&json!(2)).await;
    assert!(matches!(second, Err(Error::Closed(_))), "{second:?}");
    let first = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.unwrap(),
        json!("the answer"),
        "an answer in our socket was lost"
    );
    assert!(
        matches!(client.close_reason(), Some(CloseReason::PeerClosed)),
        "{:?}",
        client.close_reason()
    );
}

#[tokio::test]
async fn shutdown_resolves_once_what_was_queued_is_written() {
    use tokio::io::AsyncBufReadExt;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (go, wait_for_go) = tokio::sync::oneshot::channel::<()>();
    // A peer that answers the handshake, then reads nothing until told.
    let peer = tokio::spawn(async move {
        let (mut reader, mut writer) = tokio::io::split(theirs);
        common::answer_handshake_as_one_dot_zero(&mut reader, &mut writer).await;
        let mut lines = tokio::io::BufReader::new(reader).lines();
        let _ = wait_for_go.await;
        let mut count = 0;
        while let Some(line) = lines.next_line().await.unwrap() {
            let message: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(message["i"], json!(count));
            count += 1;
        }
        count
    });
    let config = ChannelConfig {
        write_queue_bytes: 16 << 20,
        ..ChannelConfig::default()
    };
    let session = setup(Channel::from_stream(ours, config), None).await.unwrap();
    let text = "x".repeat(64 * 1024);
    for i in 0..32 {
        session.send(&json!({"i": i, "text": text})).await.unwrap();
    }
    let shutting = {
        let session = session.clone();
        tokio::spawn(async move { session.shutdown().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !shutting.is_finished(),
        "resolved with 2 MiB queued and nothing read"
    );
    assert!(matches!(session.close_reason(), Some(CloseReason::Local)));
    go.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), shutting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.queued_bytes(), 0);
    assert_eq!(peer.await.unwrap(), 32, "every line, then the end of the stream");
}

#[tokio::test]
async fn the_handler_is_dropped_when_the_session_ends() {
    // A handler that holds a handle on its own session (to call the peer
    // back) must not keep it, and what it owns, alive for ever: the
    // session lets go of its handler when it ends.
    let (held, mut dropped) = tokio::sync::oneshot::channel::<()>();
    let handler = handler_fn(move |_req: Request| {
        let _held = &held;
        async { Ok::<_, RemoteError>(1) }
    });
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (a, b) = tokio::join!(setup(a, handler), setup(b, None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(b.request::<_, u32>(&0).await.unwrap(), 1);
    assert!(
        dropped
            .try_recv()
            .is_err_and(|e| e == tokio::sync::oneshot::error::TryRecvError::Empty)
    );
    a.close();
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut dropped).await;
    assert!(
        matches!(ended, Ok(Err(_))),
        "the handler outlived its session: {ended:?}"
    );
    drop(b);
}
