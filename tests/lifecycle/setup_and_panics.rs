//! Setup against peers that leave at once or have not handshaken yet, and
//! panics on the reader and the writer task.

use crate::common::answer_handshake_as_one_dot_zero;
use crate::common::breaks_when_armed::{Break, BreaksWhenArmed};
use crate::common::hand_played::{next_line, write_protocol_line};
use crate::common::watched_reader::WatchedReader;

use std::time::Duration;

use ipc_request::{
    Channel, ChannelConfig, Error, Request, Responder, SessionBuilder, handler_fn, responder_fn, setup,
};
use serde_json::Value;
use tokio::io::AsyncReadExt;

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

#[tokio::test]
async fn a_panic_on_the_reader_fails_pending_requests_instead_of_hanging() {
    let (a_io, b_io) = tokio::io::duplex(64 * 1024);
    let (a_read, a_write) = tokio::io::split(a_io);
    // The stream breaks (panics) once it reads BOOM.
    let panics_on_boom = |bytes: &[u8]| {
        if bytes.windows(4).any(|w| w == b"BOOM") {
            panic!("the stream under the channel broke");
        }
    };
    let a_read = WatchedReader {
        inner: a_read,
        watch: panics_on_boom,
    };
    let a_channel = Channel::new(a_read, a_write, ChannelConfig::default());
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
