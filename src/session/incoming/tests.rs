//! The reader against hand-played peers, and a race of the reader with a
//! handler's task made to happen on purpose (`hooks`).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc};

use crate::{Channel, ChannelConfig, Request, Responder, SessionBuilder, SessionConfig, responder_fn};

/// Points in the session's code where a test can stop a thread.
pub(super) mod hooks {
    use std::sync::{Arc, Mutex};

    use crate::protocol::PeerUid;
    use crate::session::Shared;

    type Hook = Box<dyn FnOnce() + Send>;

    /// Run once, by the next `drain_backlog` to take a request out of the
    /// backlog, right after it did (the lock released), before the handler
    /// starts. The one other unit test that runs a session never takes a
    /// request out of the backlog, so a global will do.
    pub(in crate::session::incoming) static TAKEN_FROM_BACKLOG: Mutex<Option<Hook>> = Mutex::new(None);

    pub(in crate::session::incoming) fn taken_from_backlog() {
        let hook = TAKEN_FROM_BACKLOG.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// The peer handshake UID (as JSON, without its quotes) of the session
    /// whose handshake answer task `handshake_answer_written` holds up; any
    /// other session (the other unit tests run sessions too) passes
    /// through.
    pub(in crate::session::incoming) const HOLD_UP_ANSWER_OF: &str = "answer-of-a-peer-that-leaves-at-once";

    /// Where the held-up answer task and its session's reader meet:
    /// whichever comes second finds the other.
    struct Rendezvous {
        /// The session of [`HOLD_UP_ANSWER_OF`] (its `Shared`'s address),
        /// set as its answer task is spawned: no other session's reader,
        /// of a session since dropped at the same address, can count.
        expected: Option<usize>,
        /// Its reader already waits for the answer task.
        reader_waiting: bool,
        /// How to let its held-up answer task go on.
        held_up: Option<tokio::sync::oneshot::Sender<()>>,
    }

    static RENDEZVOUS: Mutex<Rendezvous> = Mutex::new(Rendezvous {
        expected: None,
        reader_waiting: false,
        held_up: None,
    });

    /// Run as the task that answers the peer's handshake request is
    /// spawned.
    pub(in crate::session::incoming) fn answer_task_spawned(shared: &Arc<Shared>, uid: &PeerUid) {
        if uid.as_json() == HOLD_UP_ANSWER_OF {
            *RENDEZVOUS.lock().unwrap() = Rendezvous {
                expected: Some(Arc::as_ptr(shared) as usize),
                reader_waiting: false,
                held_up: None,
            };
        }
    }

    /// Run by the task that waits for our handshake answer to be written,
    /// once it was, before it establishes the session: for the session of
    /// [`HOLD_UP_ANSWER_OF`], waits (up to 10 s) until its reader, having
    /// met the end of the channel, waits for this task.
    pub(in crate::session::incoming) async fn handshake_answer_written(shared: &Arc<Shared>) {
        let wait = {
            let mut rendezvous = RENDEZVOUS.lock().unwrap();
            if rendezvous.expected != Some(Arc::as_ptr(shared) as usize) {
                return;
            }
            if rendezvous.reader_waiting {
                // Met: no later session at this address may count.
                rendezvous.expected = None;
                return;
            }
            let (go_on, wait) = tokio::sync::oneshot::channel();
            rendezvous.held_up = Some(go_on);
            wait
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await;
    }

    /// Run by a reader that met the end of the channel before its session
    /// was established, as it starts waiting for the handshake answer task.
    pub(in crate::session::incoming) fn reader_waits_for_the_handshake_answer(shared: &Arc<Shared>) {
        let mut rendezvous = RENDEZVOUS.lock().unwrap();
        if rendezvous.expected != Some(Arc::as_ptr(shared) as usize) {
            return;
        }
        match rendezvous.held_up.take() {
            Some(go_on) => {
                // Met: no later session at this address may count.
                rendezvous.expected = None;
                let _ = go_on.send(());
            }
            None => rendezvous.reader_waiting = true,
        }
    }
}

/// A line as a hand-played peer writes it: a message of `kind` with `uid`
/// and `payload` (JSON text).
type PeerLines = tokio::io::Lines<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>;
type PeerWriter = tokio::io::WriteHalf<tokio::io::DuplexStream>;

/// A session set up with `config` and `handler` over an in-memory pipe of
/// `capacity` bytes, and the other end, its handshake answered by hand
/// for a peer that speaks `error` and `cancel`.
async fn serve_a_hand_played_peer(
    config: SessionConfig,
    handler: crate::Handler,
    capacity: usize,
) -> (crate::Session, PeerLines, PeerWriter) {
    let (ours, theirs) = tokio::io::duplex(capacity);
    let (reader, mut writer) = tokio::io::split(theirs);
    let mut lines = BufReader::new(reader).lines();
    let server = tokio::spawn(
        SessionBuilder::new()
            .config(config)
            .handler(handler)
            .setup(Channel::from_stream(ours, ChannelConfig::default())),
    );
    let hello: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    let shake = serde_json::json!({
        "_IPC_REQUEST/HANDSHAKE_UID": hello["_IPC_REQUEST/HANDSHAKE_UID"],
        "_IPC_REQUEST/HANDSHAKE_MSG_TYPE": "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:RESPONSE",
        "_IPC_REQUEST/EXTENSIONS": ["error", "cancel"],
    });
    writer.write_all(format!("{shake}\n").as_bytes()).await.unwrap();
    (server.await.unwrap().unwrap(), lines, writer)
}

fn protocol_line(kind: &str, uid: &str, payload: &str) -> String {
    format!(
        "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:{kind}\",\
         \"_IPC_REQUEST/REQUEST_UID\":\"{uid}\",\"_IPC_REQUEST/PAYLOAD\":{payload}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_read_while_a_request_moves_from_the_backlog_to_a_handler_reaches_it() {
    // Two handler slots. 7 (payload 1) is answered, and its handler works
    // on; 9 holds the other slot; the peer, having 7's answer, sends 7
    // again (payload 2), which waits. When 9 ends, its task takes 7(2) out
    // of the backlog, and is stopped there (the hook) while the peer's
    // cancel of 7 is read. The cancel means 7(2): it must not run, and the
    // first handler must not be cancelled.
    let finish_first = std::sync::Arc::new(Notify::new());
    let finish_nine = std::sync::Arc::new(Notify::new());
    let (tx, mut events) = mpsc::unbounded_channel();
    let handler = responder_fn({
        let (finish_first, finish_nine) = (finish_first.clone(), finish_nine.clone());
        move |req: Request, responder: Responder| {
            let (finish_first, finish_nine, tx) = (finish_first.clone(), finish_nine.clone(), tx.clone());
            async move {
                match req.payload::<u64>().unwrap() {
                    1 => {
                        responder.respond(&1).await.unwrap();
                        let _ = tx.send(tokio::select! {
                            _ = finish_first.notified() => "first finished",
                            _ = req.cancelled() => "first cancelled",
                        });
                    }
                    9 => {
                        finish_nine.notified().await;
                        let _ = responder.respond(&9).await;
                    }
                    n => {
                        let _ = tx.send(if n == 2 { "second ran" } else { "third ran" });
                        let _ = responder.respond(&n).await;
                    }
                }
            }
        }
    });
    let config = SessionConfig {
        max_concurrent_handlers: 2,
        ..SessionConfig::default()
    };
    let (server, mut lines, mut writer) = serve_a_hand_played_peer(config, handler, 4096).await;
    let mut messages = server.messages().unwrap();
    let mut next_answer = async || {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        let answer: Value = serde_json::from_str(&line.unwrap().unwrap().unwrap()).unwrap();
        answer["_IPC_REQUEST/PAYLOAD"].clone()
    };

    writer
        .write_all(protocol_line("REQUEST", "7", "1").as_bytes())
        .await
        .unwrap();
    assert_eq!(next_answer().await, 1);
    writer
        .write_all(protocol_line("REQUEST", "9", "9").as_bytes())
        .await
        .unwrap();
    writer
        .write_all(protocol_line("REQUEST", "7", "2").as_bytes())
        .await
        .unwrap();
    // Stop the thread that takes 7(2) out of the backlog until the cancel
    // has been read.
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    let (go_on, go_on_rx) = std::sync::mpsc::channel::<()>();
    *hooks::TAKEN_FROM_BACKLOG.lock().unwrap() = Some(Box::new(move || {
        stopped_tx.send(()).unwrap();
        let _ = go_on_rx.recv_timeout(Duration::from_secs(10));
    }));
    // Once this plain message is out, 7(2) has been read (and queued).
    writer.write_all(b"\"queued\"\n").await.unwrap();
    let marker = tokio::time::timeout(Duration::from_secs(10), messages.recv()).await;
    assert_eq!(marker.unwrap().unwrap().unwrap(), "queued");
    finish_nine.notify_one();
    tokio::task::spawn_blocking(move || stopped.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("9's task took 7(2) out of the backlog");
    writer
        .write_all(protocol_line("CANCEL", "7", "null").as_bytes())
        .await
        .unwrap();
    writer.write_all(b"\"cancelled\"\n").await.unwrap();
    let marker = tokio::time::timeout(Duration::from_secs(10), messages.recv()).await;
    assert_eq!(marker.unwrap().unwrap().unwrap(), "cancelled");
    go_on.send(()).unwrap();
    assert_eq!(next_answer().await, 9);
    finish_first.notify_one();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(event.unwrap().unwrap(), "first finished");
    writer
        .write_all(protocol_line("REQUEST", "8", "3").as_bytes())
        .await
        .unwrap();
    assert_eq!(next_answer().await, 3, "7(2) is not answered: it never ran");
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert_eq!(seen, ["third ran"]);
}

#[tokio::test]
async fn a_closed_session_lets_go_of_the_requests_in_its_backlog() {
    // Up to `max_queued_request_bytes` of the peer's requests may wait in
    // the backlog; once the session is closed nobody will run them, and
    // they must not stay in memory for as long as a handle lives. (This
    // session never takes a request out of the backlog: the hook above is
    // not reached.)
    let handler = responder_fn(|_: Request, _: Responder| std::future::pending::<()>());
    let config = SessionConfig {
        max_concurrent_handlers: 1,
        ..SessionConfig::default()
    };
    let (server, _lines, mut writer) = serve_a_hand_played_peer(config, handler, 64 * 1024).await;
    let big = format!("\"{}\"", "x".repeat(10_000));
    for uid in ["1", "2", "3", "4"] {
        writer
            .write_all(protocol_line("REQUEST", uid, &big).as_bytes())
            .await
            .unwrap();
    }
    let shared = &server.shared;
    tokio::time::timeout(Duration::from_secs(10), async {
        while shared.backlog.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the requests never reached the backlog");
    server.close();
    {
        let backlog = shared.backlog.lock().unwrap();
        assert_eq!(
            (backlog.len(), backlog.bytes()),
            (0, 0),
            "the backlog outlived the session"
        );
    }
    // The reader learns of a close only at its end (`closing`): a request
    // it read while the close ran reaches the backlog after it was
    // emptied, as this one does. It must not stay there either.
    let payload = serde_json::value::RawValue::from_string(big).unwrap();
    shared
        .start_handler(crate::protocol::PeerUid::plain("5"), payload)
        .await;
    let backlog = shared.backlog.lock().unwrap();
    assert_eq!(
        (backlog.len(), backlog.bytes()),
        (0, 0),
        "a request read as the session closed stayed in its backlog"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_succeeds_for_a_peer_that_reads_our_handshake_answer_and_leaves_at_once() {
    // The peer sends its handshake request, reads our answer and hangs up
    // without answering ours: we are established once that answer is
    // written (PROTOCOL.md 2.1 step 4). The task that waits for it to be
    // written is held up (the hook) until the reader has met the end of
    // the channel, as a busy machine may do; `setup` must still return the
    // session, closed by the peer.
    let (ours, theirs) = tokio::io::duplex(4096);
    let (reader, mut writer) = tokio::io::split(theirs);
    let mut lines = BufReader::new(reader).lines();
    let setup =
        tokio::spawn(SessionBuilder::new().setup(Channel::from_stream(ours, ChannelConfig::default())));
    let ours_hello: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(
        ours_hello["_IPC_REQUEST/HANDSHAKE_MSG_TYPE"],
        "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST"
    );
    let theirs_hello = serde_json::json!({
        "_IPC_REQUEST/HANDSHAKE_UID": hooks::HOLD_UP_ANSWER_OF,
        "_IPC_REQUEST/HANDSHAKE_MSG_TYPE": "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:REQUEST",
        "_IPC_REQUEST/EXTENSIONS": ["error", "cancel"],
    });
    writer
        .write_all(format!("{theirs_hello}\n").as_bytes())
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    let answer: Value = serde_json::from_str(&answer.unwrap().unwrap().unwrap()).unwrap();
    assert_eq!(
        answer["_IPC_REQUEST/HANDSHAKE_MSG_TYPE"],
        "_IPC_REQUEST/HANDSHAKE_MSG_TYPE:RESPONSE"
    );
    drop((lines, writer));
    let session = tokio::time::timeout(Duration::from_secs(20), setup)
        .await
        .expect("setup ends")
        .unwrap()
        .expect("established: our answer to the peer's handshake was written");
    let reason = tokio::time::timeout(Duration::from_secs(10), session.closed()).await;
    assert!(matches!(reason, Ok(crate::CloseReason::PeerClosed)), "{reason:?}");
}
