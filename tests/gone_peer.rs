//! A peer that is gone while the session still has work with it: our
//! writes meet its broken pipe, and every wait must still end, with the
//! reason the session ends with. The peer is played by hand over a Unix
//! socket pair and dropped before the session's reader (on the test's one
//! thread) reads what it sent. Only the slow consumer's test depends on
//! time: it reads a message every 0.8 s, where 5 s without one would end
//! the session.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ipc_request::{
    Channel, ChannelConfig, CloseReason, Request, Responder, Session, SessionBuilder, SessionConfig,
    responder_fn,
};
use tokio::io::AsyncWriteExt;

/// A session over one end of a socket pair, set up with `builder`, and the
/// other end, handshake answered.
async fn session_with_a_hand_played_peer(
    builder: SessionBuilder,
    config: ChannelConfig,
) -> (
    Session,
    tokio::net::unix::OwnedReadHalf,
    tokio::net::unix::OwnedWriteHalf,
) {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let setup = tokio::spawn(builder.setup(Channel::from_unix(ours, config).unwrap()));
    let (mut reader, mut writer) = theirs.into_split();
    common::answer_handshake(&mut reader, &mut writer, Some(&["error", "cancel"])).await;
    (setup.await.unwrap().unwrap(), reader, writer)
}

fn request_line(uid: u32) -> String {
    format!(
        "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:REQUEST\",\"_IPC_REQUEST/REQUEST_UID\":\"{uid}\",\"_IPC_REQUEST/PAYLOAD\":{uid}}}\n"
    )
}

/// A session whose handler calls the peer back (telling `called_back`
/// first) before it answers, with one handler slot and one place in the
/// backlog: every request of the peer's past the second is refused, and
/// 1 KiB of refusals may wait to be written.
fn held_up_by_its_handler() -> (SessionBuilder, Arc<tokio::sync::Notify>) {
    let called_back = Arc::new(tokio::sync::Notify::new());
    let handler_called_back = called_back.clone();
    let builder = SessionBuilder::new()
        .config(SessionConfig {
            max_concurrent_handlers: 1,
            max_queued_requests: 1,
            max_unwritten_refusal_bytes: 1024,
            ..SessionConfig::default()
        })
        .handler(responder_fn(move |req: Request, responder: Responder| {
            let session = req.session();
            let called_back = handler_called_back.clone();
            async move {
                called_back.notify_one();
                let answer = session.request_raw(&"called back").await;
                let _ = responder.respond(&answer.is_ok()).await;
            }
        }));
    (builder, called_back)
}

/// Requests enough to hold the reader up: their refusals fill our small
/// socket buffer (see [`unix_pair_with_a_small_send_buffer`]) and the
/// 1 KiB that may wait to be written; the reader then waits with the
/// next. Under 200 KiB, so that the peer's write of
/// them never waits for the reader.
const HOLDING_UP: u32 = 1_000;

/// A socket pair whose first end, ours, has a send buffer of a few KiB.
fn unix_pair_with_a_small_send_buffer() -> (tokio::net::UnixStream, tokio::net::UnixStream) {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket and an int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&ours),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    (ours, theirs)
}

/// A session held up by its handler (see [`held_up_by_its_handler`]) that
/// a hand-played peer has sent [`HOLDING_UP`] requests and reads nothing
/// of: the handler runs the first and calls the peer back, the backlog
/// holds the second, the rest are refused until the refusals fill the
/// socket and their bound, and the reader waits with the next. (The
/// test's one thread runs the reader only when the test waits.)
async fn held_up_by_refusals() -> (
    Session,
    tokio::net::unix::OwnedReadHalf,
    tokio::net::unix::OwnedWriteHalf,
) {
    let (builder, _) = held_up_by_its_handler();
    let (ours, theirs) = unix_pair_with_a_small_send_buffer();
    let setup = tokio::spawn(builder.setup(Channel::from_unix(ours, ChannelConfig::default()).unwrap()));
    let (mut reader, mut writer) = theirs.into_split();
    common::answer_handshake(&mut reader, &mut writer, Some(&["error", "cancel"])).await;
    let session = setup.await.unwrap().unwrap();
    let requests: String = (1..=HOLDING_UP).map(request_line).collect();
    writer.write_all(requests.as_bytes()).await.unwrap();
    (session, reader, writer)
}

/// The peer sent its requests and died: the reader holds one, waiting to
/// refuse it, and reads no further; the handler's own request met the
/// broken pipe. It once waited for the session's end,
/// which the reader, waiting for the handler, would never bring.
#[tokio::test]
async fn a_handler_whose_call_back_meets_a_broken_pipe_does_not_wait_for_ever() {
    let (session, reader, writer) = held_up_by_refusals().await;
    drop((reader, writer));
    let reason = tokio::time::timeout(Duration::from_secs(20), session.closed())
        .await
        .expect("the session never ended: its reader waits for a handler that waits for it");
    assert!(matches!(reason, CloseReason::PeerClosed), "{reason:?}");
    assert_eq!(session.pending_requests(), 0);
}

/// The stream of plain messages is taken, to be read once a request
/// returns (the documented way), and holds one. The peer sent three and
/// died: the reader waits for room, and the request met the broken pipe.
#[tokio::test]
async fn a_request_that_meets_a_broken_pipe_while_plain_messages_wait_returns() {
    let builder = SessionBuilder::new().config(SessionConfig {
        message_buffer: 1,
        ..SessionConfig::default()
    });
    let (session, reader, mut writer) =
        session_with_a_hand_played_peer(builder, ChannelConfig::default()).await;
    let mut messages = session.messages().unwrap();
    writer.write_all(b"1\n2\n3\n").await.unwrap();
    drop((reader, writer));
    let asked = tokio::time::timeout(Duration::from_secs(20), session.request_raw(&"hi"))
        .await
        .expect("the request never returned");
    assert!(asked.is_err(), "{asked:?}");
    // Nothing the peer sent is lost, and the stream ends.
    let mut got = Vec::new();
    while let Some(message) = messages.recv().await {
        got.push(message.unwrap());
    }
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(session.pending_requests(), 0);
}

/// The session's reader answers a request too long to read
/// (`RequestTooLong`) itself. When that write meets the broken pipe of a
/// peer that is gone, the reader must not wait for the session's end, which
/// only it can bring: it once did, for the whole exit grace (here a minute).
#[tokio::test]
async fn the_reader_does_not_wait_for_itself_when_its_answer_meets_a_broken_pipe() {
    use std::os::unix::process::ExitStatusExt;

    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let config = ChannelConfig {
        max_message_len: 300,
        ..ChannelConfig::default()
    };
    let mut channel = Channel::from_unix(ours, config).unwrap();
    // As if we owned the peer process: the session then waits up to the
    // exit grace for its exit status.
    let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
    channel.set_peer_exit(exit_rx);
    let builder = SessionBuilder::new()
        .config(SessionConfig {
            exit_grace: Duration::from_secs(60),
            ..SessionConfig::default()
        })
        .handler(responder_fn(|_: Request, _: Responder| async {}));
    let setup = tokio::spawn(builder.setup(channel));
    let (mut reader, mut writer) = theirs.into_split();
    common::answer_handshake(&mut reader, &mut writer, Some(&["error", "cancel"])).await;
    let session = setup.await.unwrap().unwrap();
    let too_long = format!(
        "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:REQUEST\",\"_IPC_REQUEST/REQUEST_UID\":\"1\",\"_IPC_REQUEST/PAYLOAD\":\"{}\"}}\n",
        "y".repeat(400)
    );
    writer.write_all(too_long.as_bytes()).await.unwrap();
    // Gone, and exited, before the session's reader (on this same thread)
    // reads the request: its answer meets the broken pipe.
    drop((reader, writer));
    exit_tx.send(Some(std::process::ExitStatus::from_raw(0))).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), session.closed())
        .await
        .expect("the session's reader waited for itself");
    assert!(
        matches!(reason, CloseReason::ChildExited(s) if s.success()),
        "{reason:?}"
    );
}

/// The child we own exits, but its end of the channel stays open (another
/// process holds a copy: no end of stream), while this side holds the
/// reader up (see [`held_up_by_refusals`]), and a handler waits for the
/// answer to its call back, which will never come. The
/// reader, held up, never looks at the exit status; the session must end
/// anyway, failing the call back.
#[tokio::test]
async fn a_child_that_exits_while_this_side_holds_the_reader_up_ends_the_session() {
    use std::os::unix::process::ExitStatusExt;

    let (builder, called_back) = held_up_by_its_handler();
    let (ours, theirs) = unix_pair_with_a_small_send_buffer();
    let mut channel = Channel::from_unix(ours, ChannelConfig::default()).unwrap();
    let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
    channel.set_peer_exit(exit_rx);
    let setup = tokio::spawn(builder.setup(channel));
    let (mut reader, mut writer) = theirs.into_split();
    common::answer_handshake(&mut reader, &mut writer, Some(&["error", "cancel"])).await;
    let session = setup.await.unwrap().unwrap();
    let requests: String = (1..=HOLDING_UP).map(request_line).collect();
    writer.write_all(requests.as_bytes()).await.unwrap();
    called_back.notified().await;
    exit_tx.send(Some(std::process::ExitStatus::from_raw(9))).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), session.closed())
        .await
        .expect("the session never ended: its reader waits for a handler that waits for a dead child");
    assert!(
        matches!(reason, CloseReason::ChildExited(s) if s.signal() == Some(9)),
        "{reason:?}"
    );
    // The peer's end stayed open all along.
    drop((reader, writer));
}

/// A peer we do not own (a Node parent, say) hangs up while this side
/// holds the reader up with refusals it has not read (see
/// [`held_up_by_refusals`]), and a handler waits for the answer to its call
/// back, written before the peer went. No exit status comes; the refusals
/// still to be written may meet its going, or the held-up reader's probe
/// sees it hang up (its end of stream, behind what the reader has not
/// read, is never reached). The session must end, failing the call back.
/// (With nothing of ours left to write, a plain message the application
/// has not read holds the reader up: see
/// `a_request_to_a_peer_that_hangs_up_while_plain_messages_wait_fails`.)
#[tokio::test]
async fn a_peer_that_hangs_up_while_this_side_holds_the_reader_up_ends_the_session() {
    let (session, mut reader, writer) = held_up_by_refusals().await;
    let call_back = common::read_line(&mut reader).await;
    assert!(call_back.contains("called back"), "{call_back}");
    drop((reader, writer));
    let reason = tokio::time::timeout(Duration::from_secs(30), session.closed())
        .await
        .expect("the session never ended: its reader waits for a handler that waits for a peer that hung up");
    assert!(matches!(reason, CloseReason::PeerClosed), "{reason:?}");
    assert_eq!(session.pending_requests(), 0);
}

/// A peer that stops reading (it shut down its reading side: alive, not
/// hung up) while this side holds the reader up with refusals it cannot
/// write. No event says why the writer's room never comes, and nothing else
/// will: the writer, trying the socket again, must meet the broken pipe,
/// and the session end with it.
#[tokio::test]
async fn a_peer_that_stops_reading_while_this_side_holds_the_reader_up_ends_the_session() {
    let (session, mut reader, writer) = held_up_by_refusals().await;
    let call_back = common::read_line(&mut reader).await;
    assert!(call_back.contains("called back"), "{call_back}");
    let peer = reader.reunite(writer).unwrap().into_std().unwrap();
    peer.shutdown(std::net::Shutdown::Read).unwrap();
    // Queued behind the refusals, or failed at once if their write failed
    // first: either way it does not wait.
    let sent = tokio::time::timeout(Duration::from_secs(30), session.send(&"unread")).await;
    assert!(sent.is_ok(), "{sent:?}");
    let reason = tokio::time::timeout(Duration::from_secs(30), session.closed())
        .await
        .expect("the session never ended: its reader waits for a handler that waits for a peer that reads nothing");
    // The peer is alive: the broken pipe is the story.
    assert!(
        matches!(&reason, CloseReason::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe),
        "{reason:?}"
    );
    assert_eq!(session.pending_requests(), 0);
    drop(peer);
}

/// A peer that stops reading while our requests wait for room, and then
/// shuts down its reading side, alive and silent. The reader is idle, not
/// held up; the writer waits for room that never comes, and no event says
/// why. Every request must still fail, and the session end (a review found
/// them all waiting, for as long as the peer lived).
#[tokio::test]
async fn requests_waiting_for_room_fail_once_the_peer_reads_no_more() {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let setup = tokio::spawn(
        SessionBuilder::new().setup(Channel::from_unix(ours, ChannelConfig::default()).unwrap()),
    );
    let (mut reader, mut writer) = theirs.into_split();
    common::answer_handshake(&mut reader, &mut writer, Some(&["error", "cancel"])).await;
    let session = setup.await.unwrap().unwrap();
    let payload = "x".repeat(16 * 1024);
    let requests: Vec<_> = (0..64)
        .map(|_| {
            let session = session.clone();
            let payload = payload.clone();
            tokio::spawn(async move { session.request_raw(&payload).await })
        })
        .collect();
    let peer = reader.reunite(writer).unwrap().into_std().unwrap();
    // Shut down only once our writer waits for room: before that, its next
    // send fails at once, and the test proves nothing.
    let unread = || {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, on a socket we hold.
        assert_eq!(
            unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&peer), libc::FIONREAD, &mut n) },
            0
        );
        n
    };
    loop {
        let before = unread();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if before > 0 && unread() == before {
            break;
        }
    }
    peer.shutdown(std::net::Shutdown::Read).unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(30), session.closed())
        .await
        .expect("the session never ended: its writer waits for room from a peer that reads no more");
    assert!(
        matches!(&reason, CloseReason::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe),
        "{reason:?}"
    );
    for request in requests {
        let result = request.await.unwrap();
        assert!(matches!(result, Err(ipc_request::Error::Closed(_))), "{result:?}");
    }
    assert_eq!(session.pending_requests(), 0);
    drop(peer);
}

/// The same with plain messages: the stream is taken, to be read once a
/// request returns (the documented way), and holds one. The request is
/// written; the peer sends three messages and hangs up without answering.
/// The request must fail rather than wait for ever, and the stream end.
#[tokio::test]
async fn a_request_to_a_peer_that_hangs_up_while_plain_messages_wait_fails() {
    let builder = SessionBuilder::new().config(SessionConfig {
        message_buffer: 1,
        ..SessionConfig::default()
    });
    let (session, mut reader, mut writer) =
        session_with_a_hand_played_peer(builder, ChannelConfig::default()).await;
    let mut messages = session.messages().unwrap();
    let request = tokio::spawn({
        let session = session.clone();
        async move { session.request_raw(&"never answered").await }
    });
    let line = common::read_line(&mut reader).await;
    assert!(line.contains("never answered"), "{line}");
    writer.write_all(b"1\n2\n3\n").await.unwrap();
    drop((reader, writer));
    let asked = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("the request to a peer that hung up never returned")
        .unwrap();
    assert!(
        matches!(asked, Err(ipc_request::Error::Closed(CloseReason::PeerClosed))),
        "{asked:?}"
    );
    // The stream ends. What the reader held or had not read when the
    // session ended is lost (the README says so): the first message at least
    // was buffered before.
    let mut got = Vec::new();
    while let Some(message) = messages.recv().await {
        got.push(message.unwrap());
    }
    let sent = [serde_json::json!(1), serde_json::json!(2), serde_json::json!(3)];
    assert!(!got.is_empty() && sent.starts_with(&got), "{got:?}");
}

/// A peer that shut down its reading side, but is alive and still sends
/// plain messages, while this side holds the reader up with messages it
/// has not read yet and has nothing to write. Not gone: its messages keep
/// coming, and the session goes on. (A review saw the probe that finds a
/// peer that reads no more cut such a peer off after 8 s, losing its
/// messages; only a reader held up by our unwritten lines may take that
/// for the peer's going.)
#[tokio::test]
async fn a_peer_that_only_stopped_reading_while_plain_messages_wait_is_not_cut_off() {
    let builder = SessionBuilder::new().config(SessionConfig {
        message_buffer: 1,
        ..SessionConfig::default()
    });
    let (session, reader, writer) = session_with_a_hand_played_peer(builder, ChannelConfig::default()).await;
    let mut messages = session.messages().unwrap();
    let peer = reader.reunite(writer).unwrap().into_std().unwrap();
    peer.shutdown(std::net::Shutdown::Read).unwrap();
    let mut peer = tokio::net::UnixStream::from_std(peer).unwrap();
    peer.write_all(b"1\n2\n3\n").await.unwrap();
    // Past the probe's interval and the held-up reader's patience.
    let ended = tokio::time::timeout(Duration::from_secs(8), session.closed()).await;
    assert!(ended.is_err(), "the session ended: {ended:?}");
    for n in 1..=3 {
        assert_eq!(messages.recv().await.unwrap().unwrap(), serde_json::json!(n));
    }
    peer.write_all(b"4\n").await.unwrap();
    assert_eq!(messages.recv().await.unwrap().unwrap(), serde_json::json!(4));
}

/// Reads the stream to its end, waiting `pause` after each message, as a
/// consumer slower than the peer does.
async fn read_slowly(mut messages: ipc_request::Messages, pause: Duration) -> Vec<serde_json::Value> {
    let mut got = Vec::new();
    while let Some(message) = messages.recv().await {
        got.push(message.unwrap());
        tokio::time::sleep(pause).await;
    }
    got
}

/// What a peer wrote before it went is delivered to a consumer slower
/// than the session's bounds (12 messages 0.8 s apart, one buffered at a
/// time: the last ones come well after the ~5.5 s a held-up reader gets):
/// the reader, held up by it, still reads, so the session is left to end
/// as it does. For a child we own that exited, and for a peer we do not
/// own whose going our write met.
#[tokio::test]
async fn what_a_gone_peer_wrote_reaches_a_slow_consumer_in_full() {
    use std::os::unix::process::ExitStatusExt;
    let pause = Duration::from_millis(800);
    let sent: Vec<serde_json::Value> = (1..=12).map(serde_json::Value::from).collect();
    let lines: String = sent.iter().map(|n| format!("{n}\n")).collect();
    let one_buffered = || {
        SessionBuilder::new().config(SessionConfig {
            message_buffer: 1,
            ..SessionConfig::default()
        })
    };

    let owned_child = async {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut channel = Channel::from_unix(ours, ChannelConfig::default()).unwrap();
        let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
        channel.set_peer_exit(exit_rx);
        let setup = tokio::spawn(one_buffered().setup(channel));
        let (mut reader, mut writer) = theirs.into_split();
        common::answer_handshake(&mut reader, &mut writer, Some(&["error", "cancel"])).await;
        let session = setup.await.unwrap().unwrap();
        let messages = session.messages().unwrap();
        writer.write_all(lines.as_bytes()).await.unwrap();
        drop((reader, writer));
        exit_tx.send(Some(std::process::ExitStatus::from_raw(0))).unwrap();
        let consumer = tokio::spawn(read_slowly(messages, pause));
        // Told before the session ends (its reader is kept busy for
        // seconds): what is known then, the child's exit.
        match session.request_raw(&"meets the broken pipe").await {
            Err(ipc_request::Error::Closed(CloseReason::ChildExited(status))) => assert!(status.success()),
            other => panic!("{other:?}"),
        }
        (consumer.await.unwrap(), session.close_reason())
    };
    let not_owned = async {
        let (session, reader, mut writer) =
            session_with_a_hand_played_peer(one_buffered(), ChannelConfig::default()).await;
        let messages = session.messages().unwrap();
        writer.write_all(lines.as_bytes()).await.unwrap();
        drop((reader, writer));
        let consumer = tokio::spawn(read_slowly(messages, pause));
        // As the session will end: the peer closed (not "Broken pipe").
        match session.send(&"meets the broken pipe").await {
            Err(ipc_request::Error::Closed(CloseReason::PeerClosed)) => {}
            other => panic!("{other:?}"),
        }
        (consumer.await.unwrap(), session.close_reason())
    };
    let ((from_child, child_reason), (from_peer, peer_reason)) = tokio::join!(owned_child, not_owned);
    assert_eq!(from_child, sent, "lost what the child wrote");
    assert!(
        matches!(child_reason, Some(CloseReason::ChildExited(s)) if s.success()),
        "{child_reason:?}"
    );
    assert_eq!(from_peer, sent, "lost what the peer wrote");
    assert!(
        matches!(peer_reason, Some(CloseReason::PeerClosed)),
        "{peer_reason:?}"
    );
}

/// An exit grace of `Duration::MAX` ("wait for the exit status however
/// long") once made the bound of a request that met a broken pipe
/// overflow, a panic in the caller.
#[tokio::test]
async fn a_request_that_meets_a_broken_pipe_under_an_endless_exit_grace_does_not_panic() {
    use std::os::unix::process::ExitStatusExt;
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let mut channel = Channel::from_unix(ours, ChannelConfig::default()).unwrap();
    let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
    channel.set_peer_exit(exit_rx);
    let builder = SessionBuilder::new().config(SessionConfig {
        exit_grace: Duration::MAX,
        ..SessionConfig::default()
    });
    let setup = tokio::spawn(builder.setup(channel));
    let (mut reader, mut writer) = theirs.into_split();
    common::answer_handshake(&mut reader, &mut writer, Some(&["error", "cancel"])).await;
    let session = setup.await.unwrap().unwrap();
    drop((reader, writer));
    // The child's status comes once the request has met the broken pipe.
    let request = tokio::spawn({
        let session = session.clone();
        async move { session.request_raw(&1).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    exit_tx.send(Some(std::process::ExitStatus::from_raw(0))).unwrap();
    match tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .unwrap()
        .unwrap()
    {
        Err(ipc_request::Error::Closed(CloseReason::ChildExited(status))) => assert!(status.success()),
        other => panic!("{other:?}"),
    }
}

/// A session over a socket pair whose peer we own, as far as the session
/// knows (`set_peer_exit`), with an exit grace of a minute: a dead peer's
/// session ends only that long after its exit (or the end of its channel).
async fn a_peer_we_own_with_a_minute_of_exit_grace() -> (
    Session,
    tokio::net::unix::OwnedReadHalf,
    tokio::net::unix::OwnedWriteHalf,
    tokio::sync::watch::Sender<Option<std::process::ExitStatus>>,
) {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let mut channel = Channel::from_unix(ours, ChannelConfig::default()).unwrap();
    let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
    channel.set_peer_exit(exit_rx);
    let builder = SessionBuilder::new().config(SessionConfig {
        exit_grace: Duration::from_secs(60),
        ..SessionConfig::default()
    });
    let setup = tokio::spawn(builder.setup(channel));
    let (mut reader, mut writer) = theirs.into_split();
    common::answer_handshake(&mut reader, &mut writer, Some(&["error", "cancel"])).await;
    (setup.await.unwrap().unwrap(), reader, writer, exit_tx)
}

/// A deadline that passes while the session waits out its exit grace for a
/// peer known to be gone reports the peer gone, not a slow peer.
#[tokio::test]
async fn a_deadline_that_passes_after_the_child_exited_says_it_exited() {
    use std::os::unix::process::ExitStatusExt;

    // The child exited, but something (a background job it started) still
    // holds its end of the channel: no end of stream comes.
    let (session, _reader, _writer, exit_tx) = a_peer_we_own_with_a_minute_of_exit_grace().await;
    exit_tx
        .send(Some(std::process::ExitStatus::from_raw(3 << 8)))
        .unwrap();
    let result = session
        .request_raw_timeout(&"anyone?", Duration::from_millis(200))
        .await;
    match result {
        Err(ipc_request::Error::Closed(CloseReason::ChildExited(status))) => {
            assert_eq!(status.code(), Some(3))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_deadline_that_passes_after_the_channel_ended_says_the_peer_closed_it() {
    // The end of the channel is read; the exit status is not known yet.
    let (session, reader, writer, _exit_tx) = a_peer_we_own_with_a_minute_of_exit_grace().await;
    let call = tokio::spawn({
        let session = session.clone();
        async move {
            session
                .request_raw_timeout(&"anyone?", Duration::from_secs(2))
                .await
        }
    });
    // Its request read, the peer hangs up without answering.
    let mut reader = tokio::io::BufReader::new(reader);
    let mut request = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut request)
        .await
        .unwrap();
    assert!(request.contains("anyone?"), "{request}");
    drop((reader, writer));
    match call.await.unwrap() {
        Err(ipc_request::Error::Closed(CloseReason::PeerClosed)) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_deadline_that_passes_after_our_write_broke_says_how() {
    // A live peer that shut its reading side: our request's write fails
    // with a broken pipe, and the reader ends (after its grace for what the
    // peer wrote) with that error, as the session will once its exit grace
    // is over. The deadline says the same, not a guess.
    let (session, reader, writer, _exit_tx) = a_peer_we_own_with_a_minute_of_exit_grace().await;
    let theirs = reader.reunite(writer).unwrap().into_std().unwrap();
    theirs.shutdown(std::net::Shutdown::Read).unwrap();
    let result = session
        .request_raw_timeout(&"anyone?", Duration::from_secs(2))
        .await;
    match result {
        Err(ipc_request::Error::Closed(CloseReason::Io(e))) => {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}")
        }
        other => panic!("{other:?}"),
    }
    drop(theirs);
}
