//! What dropping the last handle writes, on whatever thread it happens, in
//! this process or in a child about to exit; and what shutdown_timeout says.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::Command;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use crate::common;
use crate::common::example;
use crate::{hand_played_peer, hand_played_peer_then};
use ipc_request::{
    Channel, ChannelConfig, CloseReason, Error, Request, SessionBuilder, SessionConfig, blocking,
};
use serde_json::{Value, json};

/// A blocking session over `socket`, with room in its queue for what
/// `fill` sends.
fn setup_over(socket: StdUnixStream) -> blocking::Session {
    common::blocking_session_over(socket, SessionBuilder::new())
}

/// Sends `n` messages of 64 KiB to a peer that reads nothing yet: far more
/// than the socket holds, so most of it waits in the writer's queue.
fn fill(session: &blocking::Session, n: usize) {
    let text = "x".repeat(64 * 1024);
    for i in 0..n {
        session.send(&json!({"i": i, "text": text})).unwrap();
    }
    let queued = session.queued_bytes();
    assert!(
        queued > n * 32 * 1024,
        "only {queued} bytes queued: the test shows nothing"
    );
}

/// The peer got the `n` messages of `fill`, in order, then the end.
fn assert_got_all(peer: std::thread::JoinHandle<Vec<String>>, n: usize, context: &str) {
    let lines = peer.join().unwrap();
    assert_eq!(
        lines.len(),
        n,
        "{context}: lines lost when the session was dropped"
    );
    for (i, line) in lines.iter().enumerate() {
        let message: Value = serde_json::from_str(line).unwrap();
        assert_eq!(message["i"], json!(i), "{context}");
    }
}

#[test]
fn dropping_the_last_handle_writes_what_was_queued_then_closes() {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (peer, go) = hand_played_peer(theirs);
    let session = setup_over(ours);
    fill(&session, 32);
    go.send(()).unwrap();
    drop(session);
    assert_got_all(peer, 32, "a plain thread");
}

#[test]
fn a_drop_on_a_runtime_thread_still_writes_what_was_queued() {
    // There the drop cannot wait (a task) or cannot tell it may (the
    // blocking pool): it leaves the waiting to a thread of its own.
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    for place in ["an async task", "a thread of the blocking pool"] {
        let (ours, theirs) = StdUnixStream::pair().unwrap();
        let (peer, go) = hand_played_peer(theirs);
        let session = setup_over(ours);
        fill(&session, 32);
        go.send(()).unwrap();
        if place == "an async task" {
            other.block_on(other.spawn(async move { drop(session) })).unwrap();
        } else {
            other
                .block_on(other.spawn_blocking(move || drop(session)))
                .unwrap();
        }
        assert_got_all(peer, 32, place);
    }
}

#[test]
fn calls_that_wait_panic_in_an_async_context_and_a_drop_there_does_not() {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (peer, go) = hand_played_peer(theirs);
    go.send(()).unwrap();
    let session = setup_over(ours);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        // A call with a deadline too: it waits on its own clock, not in a
        // `block_on`, yet makes the same check.
        let calls: [&dyn Fn(); 2] = [&|| drop(session.send(&json!("x"))), &|| {
            drop(session.request_timeout::<_, Value>(&json!("x"), Duration::from_secs(1)))
        }];
        for call in calls {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
            let panic = caught.expect_err("a call that waits, in an async task, must panic");
            let text = (panic.downcast_ref::<String>().map(String::as_str))
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or_default();
            assert!(text.contains("runtime"), "{text}");
        }
        // The last handle's drop cannot wait here: it closes, and returns.
        drop(session);
    });
    let lines = peer.join().unwrap();
    assert!(lines.is_empty(), "nothing was sent: {lines:?}");
}

#[test]
fn a_drop_on_the_sessions_own_handler_thread_still_writes_what_was_queued() {
    // The peer's request makes our handler take the last handle on the
    // session, send, and drop it, on the thread it runs on.
    let request = json!({
        "_IPC_REQUEST/MSG_TYPE": "_IPC_REQUEST/MSG_TYPE:REQUEST",
        "_IPC_REQUEST/REQUEST_UID": "r1",
        "_IPC_REQUEST/PAYLOAD": null,
    });
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (peer, go) = hand_played_peer_then(theirs, format!("{request}\n"));
    let last_handle: Arc<std::sync::Mutex<Option<blocking::Session>>> = Default::default();
    let handler = {
        let last_handle = last_handle.clone();
        blocking::handler_fn(move |_req: Request| {
            let session = loop {
                if let Some(session) = last_handle.lock().unwrap().take() {
                    break session;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            fill(&session, 32);
            go.send(()).unwrap();
            drop(session);
            Ok::<_, Error>("not sent: the session is closed")
        })
    };
    let session = common::blocking_session_over(ours, SessionBuilder::new().handler(handler));
    *last_handle.lock().unwrap() = Some(session);
    assert_got_all(peer, 32, "the session's own handler thread");
}

#[test]
fn a_session_dropped_as_its_thread_exits_still_writes_what_was_queued() {
    // Held in a thread-local that outlives Tokio's own: when the thread
    // exits, Tokio's context is gone and the drop may not block_on there
    // (a panic in a thread-local's destructor aborts the process).
    thread_local! {
        static HELD: std::cell::RefCell<Option<blocking::Session>> = const { std::cell::RefCell::new(None) };
    }
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (peer, go) = hand_played_peer(theirs);
    std::thread::spawn(move || {
        // Registered first, so destroyed after Tokio's context.
        HELD.with(|_| {});
        let session = setup_over(ours);
        fill(&session, 32);
        go.send(()).unwrap();
        HELD.with(|held| *held.borrow_mut() = Some(session));
    })
    .join()
    .unwrap();
    assert_got_all(peer, 32, "a thread-local dropped as its thread exits");
}

#[test]
fn shutdown_timeout_says_whether_the_queue_was_written_and_a_child_can_be_killed() {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (peer, go) = hand_played_peer(theirs);
    let session = setup_over(ours);
    assert!(session.close_reason().is_none());
    fill(&session, 32);
    // The peer reads nothing: not written in time, but closed anyway.
    assert!(!session.shutdown_timeout(Duration::from_millis(200)));
    assert!(matches!(session.close_reason(), Some(CloseReason::Local)));
    assert!(matches!(session.closed(), CloseReason::Local));
    go.send(()).unwrap();
    assert!(
        session.shutdown_timeout(Duration::from_secs(10)),
        "written once the peer reads"
    );
    drop(session);
    assert_got_all(peer, 32, "after shutdown_timeout");

    let (session, child) = blocking::spawn(Command::new(example("blocking_peer")), None).unwrap();
    assert!(matches!(child.wait_timeout(Duration::from_millis(50)), Ok(None)));
    assert!(child.try_status().is_none());
    child.kill();
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    assert!(
        matches!(session.closed(), CloseReason::ChildExited(_)),
        "{:?}",
        session.close_reason()
    );
    assert!(matches!(session.send(&1), Err(Error::Closed(_))));
}

/// A peer that goes without reading: the queue is lost to the failed
/// write, and `shutdown_timeout` must say so, not that it was written
/// (the wait ends at once either way). It once said true.
#[test]
fn shutdown_timeout_says_false_when_a_failed_write_lost_the_queue() {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (answered_tx, answered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let mut reader = BufReader::new(theirs.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        (&theirs)
            .write_all(common::handshake_answer(&line, None).as_bytes())
            .unwrap();
        answered_tx.send(()).unwrap();
        // Goes away without reading anything more.
        let _ = go_rx.recv();
    });
    let session = common::blocking_session_over(ours, SessionBuilder::new());
    answered_rx.recv().unwrap();
    let text = "x".repeat(64 * 1024);
    for i in 0..16 {
        session.send(&json!({"i": i, "text": text})).unwrap();
    }
    assert!(
        session.queued_bytes() > 0,
        "nothing queued: the test proves nothing"
    );
    drop(go_tx);
    peer.join().unwrap();
    assert!(!session.shutdown_timeout(Duration::from_secs(10)));
}

/// Messages each child of the tests below sends before it drops its
/// session and exits.
const MESSAGES_BEFORE_EXIT: usize = 64;

/// The child's part of the tests below, run as this test binary again
/// with the channel at its fd 0: opens it, sends 64 x 64 KiB, drops the
/// session where `drop_in` says, and exits at once, as a program's main
/// returning (nothing waits any more).
fn send_drop_and_exit(drop_in: impl FnOnce(blocking::Session)) -> ! {
    // SAFETY: the only test running in this process, on one thread.
    let session = unsafe { blocking::open_from_env(None) }.unwrap();
    let text = "x".repeat(64 * 1024);
    for i in 0..MESSAGES_BEFORE_EXIT {
        session.send(&json!({"i": i, "text": text})).unwrap();
    }
    drop_in(session);
    std::process::exit(0);
}

/// The parent's part: runs the test `name` as a child (see
/// [`send_drop_and_exit`]) and counts the messages that reach us. One is
/// buffered and they are read slowly, so that much is still queued in
/// the child when it drops its session and exits.
fn messages_from_a_child_that_exits(name: &'static str) -> usize {
    // `--exact` takes the test's path in this binary: this module's, past
    // the crate's name (`drops::`), then the name.
    let (_, module) = module_path!().split_once("::").unwrap();
    let path = format!("{module}::{name}");
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let child = std::thread::spawn(move || {
        common::run_in_a_child_process(&path, |child| {
            child
                .stdin(std::os::fd::OwnedFd::from(theirs))
                .env("NODE_CHANNEL_FD", "0")
                .env_remove("NODE_CHANNEL_SERIALIZATION_MODE");
        })
    });
    // Kept, not dropped, before the stream is taken.
    let session = common::blocking_session_over(
        ours,
        SessionBuilder::new()
            .config(SessionConfig {
                message_buffer: 1,
                ..SessionConfig::default()
            })
            .keep_plain_messages(),
    );
    let got = session
        .messages()
        .unwrap()
        .inspect(|_| std::thread::sleep(Duration::from_millis(5)))
        .filter(Result::is_ok)
        .count();
    child.join().unwrap();
    got
}

/// A program whose main thread entered a multi-thread runtime's context
/// (`let _guard = runtime.enter()`), sends, drops its session and exits:
/// what it queued must reach the peer. The drop, which cannot wait there,
/// returned at once, and the exit lost the rest of the queue (a review saw
/// 51 of 64 messages arrive); the process now waits for it as it exits.
#[test]
fn a_drop_on_a_thread_that_entered_a_runtime_writes_what_was_queued() {
    if common::in_a_child_process() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _entered = runtime.enter();
        send_drop_and_exit(drop);
    }
    let got =
        messages_from_a_child_that_exits("a_drop_on_a_thread_that_entered_a_runtime_writes_what_was_queued");
    assert_eq!(got, MESSAGES_BEFORE_EXIT, "messages lost as the child exited");
}

/// The same with a current-thread runtime, whose context a thread may
/// also be running (so the drop must not wait there).
#[test]
fn a_drop_on_a_thread_that_entered_a_current_thread_runtime_writes_what_was_queued() {
    if common::in_a_child_process() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        send_drop_and_exit(drop);
    }
    let got = messages_from_a_child_that_exits(
        "a_drop_on_a_thread_that_entered_a_current_thread_runtime_writes_what_was_queued",
    );
    assert_eq!(got, MESSAGES_BEFORE_EXIT, "messages lost as the child exited");
}

/// The same with the last handle dropped inside an async task, and the
/// process exiting as soon as the task is done.
#[test]
fn a_drop_in_an_async_task_writes_what_was_queued_before_the_process_exits() {
    if common::in_a_child_process() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        send_drop_and_exit(|session| {
            runtime.block_on(async move { tokio::spawn(async move { drop(session) }).await.unwrap() })
        });
    }
    let got = messages_from_a_child_that_exits(
        "a_drop_in_an_async_task_writes_what_was_queued_before_the_process_exits",
    );
    assert_eq!(got, MESSAGES_BEFORE_EXIT, "messages lost as the child exited");
}

/// The last handle dropped in the body of a current-thread runtime's
/// `block_on`, whose tasks include the peer reading what was queued: the
/// drop must not wait there (the peer could not read), and everything
/// must still arrive. Waiting there once stalled the runtime for the
/// whole 2 s bound, and the queue was lost.
#[test]
fn a_drop_in_a_current_thread_block_on_leaves_its_runtime_running() {
    const MESSAGES: usize = 64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = runtime.block_on(async {
        let (ours, theirs) = StdUnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        // The peer, on this runtime: one message buffered, read once the
        // drop comes.
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let peer = tokio::spawn(async move {
            let channel = Channel::from_unix(
                tokio::net::UnixStream::from_std(theirs).unwrap(),
                ChannelConfig::default(),
            )
            .unwrap();
            let session = SessionBuilder::new()
                .config(SessionConfig {
                    message_buffer: 1,
                    ..SessionConfig::default()
                })
                .keep_plain_messages()
                .setup(channel)
                .await
                .unwrap();
            let mut messages = session.messages().unwrap();
            let _ = go_rx.await;
            let mut got = 0;
            while let Some(Ok(_)) = messages.recv().await {
                got += 1;
            }
            got
        });
        let session = tokio::task::spawn_blocking(move || {
            let session = common::blocking_session_over(ours, SessionBuilder::new());
            let text = "x".repeat(64 * 1024);
            for i in 0..MESSAGES {
                session.send(&json!({"i": i, "text": text})).unwrap();
            }
            session
        })
        .await
        .unwrap();
        assert!(
            session.queued_bytes() > 0,
            "nothing queued: the test proves nothing"
        );
        go_tx.send(()).unwrap();
        drop(session);
        peer.await.unwrap()
    });
    assert_eq!(got, MESSAGES, "messages lost");
}
