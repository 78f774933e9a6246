//! The blocking facade's deadlines while an async handler blocks the
//! session's only worker (as it must not): they are kept by the waiting
//! thread's own clock, so they end on time all the same.

mod common;

use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::Command;
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use common::example;
use ipc_request::{Error, Request, SessionBuilder, SessionConfig, blocking};
use serde_json::{Value, json};

/// An async handler that blocks its thread, as one must not: in a
/// blocking session that thread is the runtime's only worker, the one
/// that reads, writes and drives Tokio's timers. It tells `entered` first.
fn an_async_handler_that_blocks(block: Duration, entered: mpsc::Sender<()>) -> ipc_request::Handler {
    let entered = std::sync::Mutex::new(entered);
    ipc_request::handler_fn(move |_req: Request| {
        let entered = entered.lock().unwrap().clone();
        async move {
            let _ = entered.send(());
            std::thread::sleep(block);
            Ok::<_, ipc_request::RemoteError>("late")
        }
    })
}

/// A blocking session whose async handler is blocking the worker for
/// `block`, and its peer: a blocking session that answers at once, and
/// whose request (asked from a thread of its own, which waits until the
/// handler answers or the peer closes) set the handler going.
fn a_session_whose_worker_is_blocked(block: Duration) -> (blocking::Session, blocking::Session) {
    a_session_whose_worker_is_blocked_with(block, SessionConfig::default())
}

/// The same, with the blocked session's `config`.
fn a_session_whose_worker_is_blocked_with(
    block: Duration,
    config: SessionConfig,
) -> (blocking::Session, blocking::Session) {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (entered, entered_rx) = mpsc::channel();
    let handler = an_async_handler_that_blocks(block, entered);
    let peer = std::thread::spawn(move || {
        let echo = blocking::handler_fn(|req: Request| req.payload::<Value>());
        common::blocking_session_over(theirs, SessionBuilder::new().handler(echo))
    });
    let session = common::blocking_session_over(ours, SessionBuilder::new().config(config).handler(handler));
    let peer = peer.join().unwrap();
    let asker = peer.clone();
    std::thread::spawn(move || asker.request::<_, Value>(&"block your worker"));
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the handler never ran");
    (session, peer)
}

/// Far below the handler's block, far above a deadline of 200 ms on a
/// busy machine: a deadline of the facade kept to within this holds.
const HELD: Duration = Duration::from_secs(2);

/// Asserts that `call` fails with `Timeout(deadline)`, well within `HELD`.
fn times_out_on_time(what: &str, deadline: Duration, call: impl FnOnce() -> Result<(), Error>) {
    let started = std::time::Instant::now();
    let late = call();
    let took = started.elapsed();
    assert!(
        matches!(late, Err(Error::Timeout(d)) if d == deadline),
        "{what}: {late:?}"
    );
    assert!(took < HELD, "{what} ({deadline:?}) took {took:?}");
}

/// The deadlines of the blocking facade are kept by the caller's own
/// clock: a Tokio timer, driven by the blocked worker alone, kept a
/// `request_timeout` of 200 ms waiting for the handler's 6 s (a review
/// saw `Ok` after 5.5 s).
#[test]
fn request_timeouts_hold_while_an_async_handler_blocks_the_worker() {
    let (session, peer) = a_session_whose_worker_is_blocked(Duration::from_secs(3));
    let deadline = Duration::from_millis(200);
    times_out_on_time("request_timeout", deadline, || {
        session
            .request_timeout::<_, Value>(&"echo me", deadline)
            .map(drop)
    });
    times_out_on_time("request_raw_timeout", deadline, || {
        session.request_raw_timeout(&"echo me", deadline).map(drop)
    });
    peer.close();
}

/// The session's default deadline is kept by the caller's clock too, for
/// `request` and `request_raw` (those of a handler's `Peer` go the same
/// way; a review saw a default of 200 ms end after 3 s).
#[test]
fn the_default_deadline_holds_while_an_async_handler_blocks_the_worker() {
    let deadline = Duration::from_millis(200);
    let config = SessionConfig {
        request_timeout: Some(deadline),
        ..SessionConfig::default()
    };
    let (session, peer) = a_session_whose_worker_is_blocked_with(Duration::from_secs(3), config);
    times_out_on_time("request under a default", deadline, || {
        session.request::<_, Value>(&"echo me").map(drop)
    });
    times_out_on_time("request_raw under a default", deadline, || {
        session.request_raw(&"echo me").map(drop)
    });
    peer.close();
}

/// A handler's [`blocking::Peer`] keeps the default deadline the same way:
/// a call back, made while another request has the worker blocked, ends on
/// time.
#[test]
fn a_handlers_call_back_keeps_the_default_deadline_while_the_worker_is_blocked() {
    let deadline = Duration::from_millis(200);
    let (entered, entered_rx) = mpsc::channel();
    let entered_rx = Mutex::new(Some(entered_rx));
    let (called_back, called_back_rx) = mpsc::channel();
    let called_back = Mutex::new(called_back);
    // "call back" starts a thread that calls the peer back as soon as
    // "block" holds the worker; the peer never answers the call.
    let handler = ipc_request::handler_fn(move |req: Request| {
        let block = req.payload::<String>().map(|p| p == "block");
        let entered = entered.clone();
        let calling = (
            entered_rx.lock().unwrap().take(),
            called_back.lock().unwrap().clone(),
        );
        async move {
            if block? {
                let _ = entered.send(());
                std::thread::sleep(Duration::from_secs(3));
                return Ok::<_, ipc_request::RemoteError>("late");
            }
            let (Some(entered_rx), called_back) = calling else {
                return Ok("called back already");
            };
            std::thread::spawn(move || {
                entered_rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("never blocked");
                let started = std::time::Instant::now();
                let answer = blocking::Peer::of(&req).request::<_, Value>(&"never answered");
                let _ = called_back.send((answer, started.elapsed()));
            });
            Ok("calling back")
        }
    });
    let config = SessionConfig {
        request_timeout: Some(deadline),
        ..SessionConfig::default()
    };
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || {
        let never = ipc_request::handler_fn(|_req: Request| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, ipc_request::RemoteError>("never")
        });
        common::blocking_session_over(theirs, SessionBuilder::new().handler(never))
    });
    let session = common::blocking_session_over(ours, SessionBuilder::new().config(config).handler(handler));
    let peer = peer.join().unwrap();
    assert_eq!(
        peer.request::<_, Value>(&"call back").unwrap(),
        json!("calling back")
    );
    let asker = peer.clone();
    std::thread::spawn(move || asker.request::<_, Value>(&"block"));
    let (answer, took) = called_back_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the call back never returned");
    assert!(
        matches!(answer, Err(Error::Timeout(d)) if d == deadline),
        "{answer:?}"
    );
    assert!(took < HELD, "the call back ({deadline:?}) took {took:?}");
    peer.close();
    drop(session);
}

#[test]
fn recv_timeout_holds_while_an_async_handler_blocks_the_worker() {
    let (session, peer) = a_session_whose_worker_is_blocked(Duration::from_secs(3));
    let mut messages = session.messages().unwrap();
    // Sent, but unread until the handler returns: nothing reads meanwhile.
    peer.send(&"unread").unwrap();
    let deadline = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let got = messages.recv_timeout(deadline);
    let took = started.elapsed();
    assert!(
        matches!(got, Some(Err(Error::Timeout(d))) if d == deadline),
        "{got:?}"
    );
    assert!(took < HELD, "recv_timeout({deadline:?}) took {took:?}");
    // The stream goes on: the message is read once the handler returns.
    let got = messages.recv_timeout(Duration::from_secs(30));
    assert_eq!(got.map(Result::unwrap), Some(json!("unread")));
    peer.close();
}

#[test]
fn shutdown_timeout_holds_while_an_async_handler_blocks_the_worker() {
    let (session, peer) = a_session_whose_worker_is_blocked(Duration::from_secs(3));
    session.send(&"queued").unwrap();
    let started = std::time::Instant::now();
    let written = session.shutdown_timeout(Duration::from_millis(200));
    let took = started.elapsed();
    assert!(!written, "written, though the writer could not run");
    assert!(took < HELD, "shutdown_timeout(200ms) took {took:?}");
    peer.close();
}

/// The drop of the last handle waits at most DROP_FLUSH_TIMEOUT, then
/// HANDLER_STOP_TIMEOUT for the runtime to stop: a review saw it wait for
/// the whole 12 s of a handler's sleep.
#[test]
fn a_drop_is_bounded_while_an_async_handler_blocks_the_worker() {
    let (session, peer) = a_session_whose_worker_is_blocked(Duration::from_secs(15));
    session.send(&"queued").unwrap();
    let bound = blocking::DROP_FLUSH_TIMEOUT + blocking::HANDLER_STOP_TIMEOUT;
    let started = std::time::Instant::now();
    drop(session);
    let took = started.elapsed();
    assert!(took < bound + HELD, "the drop took {took:?}");
    peer.close();
}

/// A real child, whose request (its handler calling us back, asked by
/// ours) has our async handler block the worker for `block`.
fn a_child_whose_parents_worker_is_blocked(block: Duration) -> (blocking::Session, blocking::ChildProcess) {
    let (entered, entered_rx) = mpsc::channel();
    let handler = an_async_handler_that_blocks(block, entered);
    let (session, child) = blocking::spawn(Command::new(example("blocking_peer")), handler).unwrap();
    let asker = session.clone();
    std::thread::spawn(move || asker.request::<_, Value>(&json!({"op": "call", "data": null})));
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the handler never ran");
    (session, child)
}

/// The same with a real child, and `ChildProcess::wait_timeout`.
#[test]
fn wait_timeout_holds_while_an_async_handler_blocks_the_worker() {
    let (session, child) = a_child_whose_parents_worker_is_blocked(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let waited = child.wait_timeout(Duration::from_millis(200));
    let took = started.elapsed();
    assert!(matches!(waited, Ok(None)), "{waited:?}");
    assert!(took < HELD, "wait_timeout(200ms) took {took:?}");
    child.kill();
    session.close();
}

/// `ChildProcess::wait_or_kill`'s grace is kept by the caller's clock
/// too: the kill goes when it ends, though the exit status it returns
/// still waits for the worker, which publishes it. With the grace a Tokio
/// timer, a child that never exited was killed only once the handler let
/// the worker go (a review saw 3.7 s for a grace of 300 ms).
#[test]
fn the_grace_of_wait_or_kill_holds_while_an_async_handler_blocks_the_worker() {
    let (session, child) = a_child_whose_parents_worker_is_blocked(Duration::from_secs(4));
    let pid = child.id();
    let started = std::time::Instant::now();
    let waiting = std::thread::spawn(move || child.wait_or_kill(Duration::from_millis(200)));
    // Killed, it is a zombie until the reaping task (on the held worker)
    // runs, or gone once that has.
    while matches!(common::process_state(pid), Some(state) if state != 'Z') {
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed_after = started.elapsed();
    let status = waiting.join().unwrap().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status:?}"
    );
    assert!(
        killed_after < HELD,
        "wait_or_kill(200ms) killed after {killed_after:?}"
    );
    session.close();
}
