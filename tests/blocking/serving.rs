//! Serving and asking with the blocking API: a Node child, a blocking child,
//! requests nested in handlers, handler limits, and handlers that wait on the
//! peer or for a cancel.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use crate::common;
use crate::common::{example, js_peer, node};
use crate::{assert_exits, hand_played_peer};
use ipc_request::{Channel, ChannelConfig, Error, Request, SessionBuilder, SessionConfig, blocking};
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
    let got: Vec<Value> = messages.by_ref().take(2).map(Result::unwrap).collect();
    assert_eq!(got, [json!(1), json!("two")]);
    let raw = messages.recv_raw().unwrap().unwrap();
    assert_eq!(raw.get(), r#"{"three":3}"#);
    match messages.recv_timeout(Duration::from_millis(50)) {
        Some(Err(Error::Timeout(_))) => {}
        other => panic!("expected nothing more, got {other:?}"),
    }
    match messages.recv_raw_timeout(Duration::from_millis(50)) {
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
    let (runtime, session) = common::session_on_a_runtime_of_its_own(ours, handler);
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
    assert!(told.contains("Closed(RuntimeShutDown)"), "{told}");
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
