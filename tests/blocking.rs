//! The blocking API (`ipc_request::blocking`) with real children: a Node
//! child, and a child written with the blocking API itself; what its drop
//! writes; where it may and may not wait.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::{example, js_peer, node};
use ipc_request::{
    Channel, ChannelConfig, CloseReason, Error, Request, SessionBuilder, SessionConfig, blocking,
};
use serde_json::{Value, json};

/// Answers `{"from":"rust-parent","data":X}`, from a thread of the
/// blocking pool; `{"op":"ask_back","data":X}` first asks the peer to echo
/// X, from that thread, and answers what came back.
fn parent_handler(session: Arc<std::sync::OnceLock<blocking::Session>>) -> ipc_request::Handler {
    blocking::handler_fn(move |req: Request| {
        let data: Value = req.payload()?;
        if data.get("op") == Some(&json!("ask_back")) {
            let session = session.get().expect("set before the child asks");
            let echoed: Value = session.request(&json!({"op": "echo", "data": data["data"]}))?;
            return Ok::<_, Error>(json!({"asked_back": echoed}));
        }
        Ok(json!({"from": "rust-parent", "data": data}))
    })
}

fn node_child(node: &std::path::Path) -> Command {
    let mut command = Command::new(node);
    command.arg(js_peer()).arg("child");
    command
}

/// `child` has exited (the session's end reached it) within a few seconds.
fn assert_exits(child: &blocking::ChildProcess) {
    let status = child.wait_timeout(Duration::from_secs(10)).expect("wait");
    let status = status.expect("the child did not exit after its channel closed");
    assert!(status.success(), "{status}");
}

#[test]
fn a_blocking_parent_serves_and_asks_a_node_child() {
    let Some(node) = node() else { return };
    let cell = Arc::new(std::sync::OnceLock::new());
    let (session, child) = blocking::spawn(node_child(&node), parent_handler(cell.clone())).unwrap();
    cell.set(session.clone()).unwrap();
    assert!(session.peer().supports("cancel"), "{:?}", session.peer());

    let got: Value = session.request(&json!({"op": "echo", "data": "é 😀"})).unwrap();
    assert_eq!(got, json!("é 😀"));

    // The child calls us back while we wait for its answer: our blocking
    // handler answers on a thread of its own.
    let got: Value = session.request(&json!({"op": "call", "data": [1, 2]})).unwrap();
    assert_eq!(got, json!({"got": {"from": "rust-parent", "data": [1, 2]}}));

    // Many threads, many requests in flight at once, each answer its own.
    std::thread::scope(|scope| {
        for t in 0..8 {
            let session = &session;
            scope.spawn(move || {
                for i in 0..25 {
                    let data = json!([t, i]);
                    let got: Value = session
                        .request(&json!({"op": "sleep", "ms": (t * 7 + i) % 5, "data": data}))
                        .unwrap();
                    assert_eq!(got, data);
                }
            });
        }
    });

    match session
        .request::<_, Value>(&json!({"op": "fail", "name": "TypeError", "message": "boom", "code": 7}))
    {
        Err(Error::Remote(e)) => {
            assert_eq!((e.name.as_str(), e.message.as_str()), ("TypeError", "boom"));
            assert_eq!(e.code, Some(json!(7)));
        }
        other => panic!("expected the child's error, got {other:?}"),
    }

    // A deadline cancels the request at the child.
    let late = session.request_timeout::<_, Value>(
        &json!({"op": "wait_cancel", "key": "b1"}),
        Duration::from_millis(100),
    );
    assert!(matches!(late, Err(Error::Timeout(_))), "{late:?}");
    let cancelled: bool = session.request(&json!({"op": "cancelled", "key": "b1"})).unwrap();
    assert!(cancelled, "the child never saw the cancel");
    let late_raw = session.request_raw_timeout(
        &json!({"op": "wait_cancel", "key": "b2"}),
        Duration::from_millis(100),
    );
    assert!(matches!(late_raw, Err(Error::Timeout(_))), "{late_raw:?}");
    let cancelled: bool = session.request(&json!({"op": "cancelled", "key": "b2"})).unwrap();
    assert!(cancelled, "the child never saw the raw request's cancel");

    let mut messages = session.messages().expect("the stream, once");
    assert!(session.messages().is_none());
    let sent: u64 = session
        .request(&json!({"op": "plain", "messages": [1, "two", {"three": 3}]}))
        .unwrap();
    assert_eq!(sent, 3);
    let got: Vec<Value> = messages.by_ref().take(3).map(Result::unwrap).collect();
    assert_eq!(got, [json!(1), json!("two"), json!({"three": 3})]);
    match messages.recv_timeout(Duration::from_millis(50)) {
        Some(Err(Error::Timeout(_))) => {}
        other => panic!("expected nothing more, got {other:?}"),
    }

    // The last handle's drop closes the session (the handler's cell holds
    // a clone: close it first), and the child sees it.
    session.close();
    drop((session, cell));
    assert_exits(&child);
    assert!(messages.next().is_none(), "the stream ends with the session");
}

/// The README's Node child asks its parent something once its answer is
/// written. The module docs' example drops its session right after that
/// answer, which closes the channel under the ask: Node throws such a
/// failure from `process` (an `EPIPE` stack trace, exit code 1) unless the
/// child handles it.
#[test]
fn the_node_example_child_ends_quietly_when_its_parent_drops_it_early() {
    let Some(node) = node() else { return };
    // The race goes either way: a review saw 4 crashes in 6 runs.
    for _ in 0..6 {
        let mut command = Command::new(&node);
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/node/child.js"))
            .stdout(Stdio::null());
        let (session, child) = blocking::spawn(command, None).unwrap();
        let answer: String = session.request("(REQUEST FROM parent)").unwrap();
        assert_eq!(answer, "(RESPONSE FROM child TO (REQUEST FROM parent))");
        drop(session);
        assert_exits(&child);
    }
}

#[test]
fn blocking_on_both_sides_with_requests_nested_in_handlers() {
    let cell = Arc::new(std::sync::OnceLock::new());
    let (session, child) = blocking::spawn(
        Command::new(example("blocking_peer")),
        parent_handler(cell.clone()),
    )
    .unwrap();
    cell.set(session.clone()).unwrap();

    // Our request makes the child's handler ask us; our handler, while
    // answering, asks the child again: four calls nested, each handler on a
    // blocking thread of its own side's runtime.
    let got: Value = session
        .request(&json!({"op": "call", "data": {"op": "ask_back", "data": "deep"}}))
        .unwrap();
    assert_eq!(got, json!({"got": {"asked_back": "deep"}}));

    match session.request::<_, Value>(&json!({"op": "panic"})) {
        Err(Error::Remote(e)) => assert_eq!(e.name, "HandlerPanicked", "{e:?}"),
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    // The child goes on serving after its handler panicked.
    let got: Value = session.request(&json!({"op": "echo", "data": 5})).unwrap();
    assert_eq!(got, json!(5));
    // Typed calls, the answer's type named by the request's.
    #[derive(serde::Serialize)]
    struct Echo {
        op: &'static str,
        data: Vec<u8>,
    }
    impl ipc_request::Call for Echo {
        type Answer = Vec<u8>;
    }
    assert_eq!(
        session
            .call(&Echo {
                op: "echo",
                data: vec![7]
            })
            .unwrap(),
        [7]
    );
    let echo = Echo {
        op: "echo",
        data: vec![8],
    };
    assert_eq!(session.call_timeout(&echo, Duration::from_secs(10)).unwrap(), [8]);

    session.close();
    drop((session, cell));
    assert_exits(&child);
}

/// A peer played by hand on a blocking socket: answers the handshake, then
/// reads nothing until told to go (so that what the session sends piles up
/// in its queue), then reads lines until the end of the stream and returns
/// them.
fn hand_played_peer(socket: StdUnixStream) -> (std::thread::JoinHandle<Vec<String>>, mpsc::Sender<()>) {
    hand_played_peer_then(socket, String::new())
}

/// [`hand_played_peer`], writing `text` right after its handshake answer.
fn hand_played_peer_then(
    socket: StdUnixStream,
    text: String,
) -> (std::thread::JoinHandle<Vec<String>>, mpsc::Sender<()>) {
    let (go, wait_for_go) = mpsc::channel();
    let peer = std::thread::spawn(move || {
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let answer = common::handshake_answer(&line, None);
        (&socket).write_all(format!("{answer}{text}").as_bytes()).unwrap();
        let _ = wait_for_go.recv();
        reader.lines().map(Result::unwrap).collect()
    });
    (peer, go)
}

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

/// A child that holds its channel open (it inherits it) and never uses
/// it, for a minute.
fn a_child_that_never_shakes_hands() -> Command {
    let mut command = Command::new("sleep");
    command.arg("60");
    command
}

#[test]
fn a_child_that_never_shakes_hands_is_killed_when_spawn_fails() {
    let config = SessionConfig {
        handshake_timeout: Duration::from_millis(300),
        ..SessionConfig::default()
    };
    // Its pid from the handle spawn_with_pipes shows before the handshake
    // (a pid file the child wrote raced the kill: under load, one was
    // found created but still empty).
    let mut pid = 0;
    let spawned = blocking::spawn_with_pipes(
        a_child_that_never_shakes_hands(),
        Default::default(),
        SessionBuilder::new().config(config),
        |child| pid = child.id(),
    );
    assert!(matches!(spawned, Err(Error::HandshakeTimeout(_))), "{spawned:?}");
    assert_ne!(pid, 0);
    // SAFETY: signal 0 only asks whether the process exists.
    let gone = unsafe { libc::kill(pid as i32, 0) } != 0;
    assert!(gone, "the child {pid} still runs (or was not reaped)");
}

/// A child that writes 70 kB to its piped stderr before it opens its
/// channel: more than a pipe holds, so it waits for a reader first.
fn a_child_that_logs_before_it_listens() -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"head -c 70000 /dev/zero >&2; exec "$0""#)
        .arg(example("blocking_peer"))
        .stderr(Stdio::piped());
    command
}

#[test]
fn pipes_taken_before_the_handshake_let_a_child_that_fills_one_first_shake_hands() {
    let drained = std::sync::Mutex::new(None);
    let (session, child) = blocking::spawn_with_pipes(
        a_child_that_logs_before_it_listens(),
        Default::default(),
        SessionBuilder::new(),
        |child| {
            let mut stderr = child.take_stderr().unwrap().expect("stderr is piped");
            *drained.lock().unwrap() = Some(std::thread::spawn(move || {
                std::io::copy(&mut stderr, &mut std::io::sink()).unwrap()
            }));
        },
    )
    .expect("the handshake, with stderr read meanwhile");
    session.close();
    assert_exits(&child);
    let drained = drained.into_inner().unwrap().unwrap().join().unwrap();
    assert!(drained >= 70_000, "{drained} bytes of stderr");
}

#[test]
fn pipes_left_for_after_the_handshake_leave_such_a_child_waiting() {
    // What `spawn_with`'s docs warn of: the pipes can only be taken once
    // the handshake is done, which this child never gets to.
    let config = SessionConfig {
        handshake_timeout: Duration::from_millis(500),
        ..SessionConfig::default()
    };
    let spawned = blocking::spawn_with(
        a_child_that_logs_before_it_listens(),
        Default::default(),
        SessionBuilder::new().config(config),
    );
    assert!(matches!(spawned, Err(Error::HandshakeTimeout(_))), "{spawned:?}");
}

#[test]
fn a_child_whose_take_pipes_panics_is_killed() {
    let mut pid = 0;
    let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        blocking::spawn_with_pipes(
            a_child_that_never_shakes_hands(),
            Default::default(),
            SessionBuilder::new(),
            |child| {
                pid = child.id();
                panic!("take_pipes gave up");
            },
        )
    }));
    assert!(spawned.is_err(), "the panic went by");
    assert_ne!(pid, 0);
    let state = common::process_state_once(pid, |state| state.is_none());
    assert_eq!(state, None, "the child {pid} was left running (or unreaped)");
}

#[test]
fn a_spawn_in_a_destructor_during_an_unrelated_panic_keeps_its_child() {
    // The kill that guards take_pipes must not take any unwinding for its
    // own panic (a review saw such a spawn's child killed).
    struct SpawnOnDrop(mpsc::Sender<Result<Value, String>>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let outcome = blocking::spawn(Command::new(example("blocking_peer")), None)
                .and_then(|(session, _child)| session.request::<_, Value>(&json!({"op": "echo", "data": 1})))
                .map_err(|e| e.to_string());
            let _ = self.0.send(outcome);
        }
    }
    let (tx, rx) = mpsc::channel();
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _spawns_as_it_drops = SpawnOnDrop(tx);
        panic!("an unrelated failure");
    }));
    assert_eq!(rx.recv().unwrap(), Ok(json!(1)));
}

#[test]
fn a_child_dropped_without_waiting_is_still_reaped() {
    let peer = example("blocking_peer");
    // One that exits once its channel closes; one that then waits for its
    // stdin to close, which nobody took: dropping the handles closes it.
    let mut then_reads_stdin = Command::new("sh");
    then_reads_stdin
        .arg("-c")
        .arg(format!("'{}'; exec cat", peer.display()))
        .stdin(Stdio::piped());
    for command in [Command::new(&peer), then_reads_stdin] {
        let (session, child) = blocking::spawn(command, None).unwrap();
        let pid = child.id();
        // Nothing of ours waits for it any more: it must still be reaped,
        // not left a zombie.
        drop((session, child));
        let state = common::process_state_once(pid, |state| state.is_none());
        assert_eq!(state, None, "child {pid} is still there");
    }
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
fn piped_stdio_is_there_for_the_taking_as_files() {
    let mut command = Command::new("sh");
    // A background job copies one line of stdin to stderr (through fd 5:
    // a background job's own stdin is /dev/null); the shell then becomes
    // the child that speaks the protocol.
    let script = format!(
        "exec 5<&0; head -n 1 <&5 >&2 & exec 5<&-; echo from-the-child; exec '{}'",
        example("blocking_peer").display()
    );
    command.arg("-c").arg(script);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (session, child) = blocking::spawn(command, None).unwrap();
    let mut stdin = child.take_stdin().unwrap().expect("stdin is piped");
    assert!(child.take_stdin().unwrap().is_none(), "taken once");
    stdin.write_all(b"ping\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    BufReader::new(child.take_stdout().unwrap().expect("stdout is piped"))
        .read_line(&mut out)
        .unwrap();
    assert_eq!(out, "from-the-child\n");
    let mut err = String::new();
    BufReader::new(child.take_stderr().unwrap().expect("stderr is piped"))
        .read_line(&mut err)
        .unwrap();
    assert_eq!(err, "ping\n");
    let got: Value = session.request(&json!({"op": "echo", "data": 1})).unwrap();
    assert_eq!(got, json!(1));
    drop(session);
    assert_exits(&child);
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

#[test]
fn no_limit_on_handlers_is_a_valid_setting() {
    // usize::MAX means "no limit" for the session; the runtime's blocking
    // pool, sized from it, must not overflow.
    for limit in [usize::MAX, 0] {
        let (ours, theirs) = StdUnixStream::pair().unwrap();
        let (peer, go) = hand_played_peer(theirs);
        go.send(()).unwrap();
        let config = SessionConfig {
            max_concurrent_handlers: limit,
            ..SessionConfig::default()
        };
        let session = common::blocking_session_over(ours, SessionBuilder::new().config(config));
        session.send(&json!({"i": 0})).unwrap();
        drop(session);
        assert_eq!(peer.join().unwrap(), [r#"{"i":0}"#], "limit {limit}");
    }
}

#[test]
fn one_handler_slot_still_leaves_threads_for_a_handlers_own_blocking_work() {
    let Some(node) = node() else { return };
    // The handler's own spawn_blocking needs a second thread of the pool.
    let handler = blocking::handler_fn(|_req: Request| {
        let runtime = tokio::runtime::Handle::current();
        runtime.block_on(tokio::task::spawn_blocking(|| 5))
    });
    let config = SessionConfig {
        max_concurrent_handlers: 1,
        ..SessionConfig::default()
    };
    let builder = SessionBuilder::new().config(config).handler(handler);
    let (session, child) = blocking::spawn_with(node_child(&node), Default::default(), builder).unwrap();
    let got: Value = session
        .request_timeout(&json!({"op": "call", "data": null}), Duration::from_secs(10))
        .unwrap();
    assert_eq!(got, json!({"got": 5}));
    drop(session);
    assert_exits(&child);
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
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let child = std::thread::spawn(move || {
        common::run_in_a_child_process(name, |child| {
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

#[test]
fn a_runtime_dropped_while_a_blocking_handler_waits_on_the_peer_ends_the_wait() {
    // An async session whose blocking handler calls the peer back, and a
    // peer that never answers; the application drops the runtime with the
    // session open. Tokio's drop waits for the handler's thread: the
    // handler's call must fail, not wait for a reader that is gone.
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let _peer = std::thread::spawn(move || {
        let mut reader = BufReader::new(theirs.try_clone().unwrap());
        let mut hello = String::new();
        reader.read_line(&mut hello).unwrap();
        let answer = common::handshake_answer(hello.trim_end(), Some(&["error", "cancel"]));
        let request = r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:REQUEST","_IPC_REQUEST/REQUEST_UID":"1","_IPC_REQUEST/PAYLOAD":null}"#;
        (&theirs)
            .write_all(format!("{answer}{request}\n").as_bytes())
            .unwrap();
        // Reads everything, answers nothing, until the end of the stream.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let (entered, entered_rx) = mpsc::channel();
    let (told, told_rx) = mpsc::channel();
    let handler = blocking::handler_fn(move |req: Request| {
        entered.send(()).unwrap();
        let answer = blocking::Peer::of(&req).request::<_, Value>(&"never answered");
        told.send(format!("{answer:?}")).unwrap();
        answer
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let session = runtime
        .block_on(async {
            ours.set_nonblocking(true).unwrap();
            let stream = tokio::net::UnixStream::from_std(ours).unwrap();
            ipc_request::setup(Channel::from_unix(stream, ChannelConfig::default())?, handler).await
        })
        .unwrap();
    entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (dropped, dropped_rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(runtime);
        dropped.send(()).unwrap();
    });
    dropped_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the runtime's drop waits for ever for a handler blocked on the peer");
    let told = told_rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert!(told.contains("Closed(Local)"), "{told}");
    drop(session);
}

/// `blocking::wait_for_cancel` in a blocking handler: false once its
/// timeout has passed; true, long before its timeout, when the caller
/// drops the request (a CANCEL) and when the session closes.
#[test]
fn wait_for_cancel_returns_at_the_cancel_or_at_its_timeout() {
    const AN_HOUR_MS: u64 = 3_600_000;
    // A hang, not a slow machine: the handler would otherwise wait an hour.
    const HANG: Duration = Duration::from_secs(60);
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (waited_tx, mut waited) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let handler = blocking::handler_fn(move |req: Request| {
        let wait_ms: u64 = req.payload()?;
        let _ = started_tx.send(());
        let cancelled = blocking::wait_for_cancel(&req, Duration::from_millis(wait_ms));
        let _ = waited_tx.send(cancelled);
        Ok::<_, ipc_request::RemoteError>(cancelled)
    });
    let server = std::thread::spawn(move || {
        common::blocking_session_over(theirs, SessionBuilder::new().handler(handler))
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        ours.set_nonblocking(true).unwrap();
        let stream = tokio::net::UnixStream::from_std(ours).unwrap();
        let channel = Channel::from_unix(stream, ChannelConfig::default()).unwrap();
        let client = ipc_request::setup(channel, None).await.unwrap();
        let server = server.join().unwrap();

        let timed_out: bool = client.request(&50u64).await.unwrap();
        assert!(!timed_out, "no cancel came, yet the wait said there was one");
        started.recv().await.unwrap();
        assert_eq!(waited.recv().await, Some(false));

        // The request dropped as soon as its handler runs: a CANCEL.
        {
            let call = client.request_raw(&AN_HOUR_MS);
            tokio::select! {
                answer = call => panic!("answered before its cancel: {answer:?}"),
                _ = started.recv() => {}
            }
        }
        let seen = tokio::time::timeout(HANG, waited.recv()).await;
        assert_eq!(seen.expect("the wait went on after the CANCEL"), Some(true));

        // The session closes while the handler waits.
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request_raw(&AN_HOUR_MS).await }
        });
        started.recv().await.unwrap();
        client.close();
        let seen = tokio::time::timeout(HANG, waited.recv()).await;
        assert_eq!(seen.expect("the wait went on after the close"), Some(true));
        assert!(matches!(call.await.unwrap(), Err(Error::Closed(_))));
        drop(server);
    });
}
