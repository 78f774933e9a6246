//! The JS session (examples/node/ipc_session.js): early and unheard plain
//! messages, rethrown errors, and two Node processes.

use std::process::Command;
use std::time::Duration;

use crate::common::{js_peer, node};
use crate::{finish, node_child, start};
use ipc_request::{ChildProcess, Error, Session};
use serde_json::{Value, json};

/// examples/node/ipc_session.js as a child, against three faults a storm
/// (a Rust parent driving it) found: plain messages sent right after the
/// handshake reached no listener, as the child could subscribe only once
/// its setup had resolved; `close()` dropped what Node had not written
/// yet, while each `send()` had said it was sent; and a `close()` while
/// Node was reading a large message never closed the channel (Node's
/// lost wake-up, in 18 to 26), so the child never exited and our requests waited for
/// ever. In both modes; the last in a few rounds, as it hit 16 in 20.
#[tokio::test]
async fn the_js_session_keeps_early_messages_and_writes_what_it_sent_before_it_closes() {
    // A hang, not a slow machine.
    const HANG: Duration = Duration::from_secs(60);
    let Some(node) = node() else { return };
    // Infinity: no limit on close's wait (it once made it 1 ms, as
    // setTimeout takes it, and the close lost everything).
    let modes: [&[&str]; 3] = [&[], &["--v1"], &["--close-timeout-ms", "Infinity"]];
    for args in modes {
        let (session, child) = ipc_request::spawn_session(node_child(&node, args), None)
            .await
            .unwrap();
        for i in 0..5 {
            session.send(&json!({"early": i})).await.unwrap();
        }
        let got: Value = session
            .request(&json!({"op": "plain_got", "n": 5}))
            .await
            .unwrap();
        let sent: Vec<Value> = (0..5).map(|i| json!({"early": i})).collect();
        assert_eq!(
            got,
            json!(sent),
            "{args:?}: plain messages lost before the child subscribed"
        );

        let mut messages = session.messages().unwrap();
        let n: u64 = session
            .request(&json!({"op": "send_then_close", "n": 20, "size": 2_000_000}))
            .await
            .unwrap();
        let mut seqs = Vec::new();
        while let Some(message) = tokio::time::timeout(HANG, messages.recv())
            .await
            .expect("the child's close never closed the channel")
        {
            seqs.push(message.unwrap()["seq"].as_u64().unwrap());
        }
        assert_eq!(
            seqs,
            (0..n).collect::<Vec<_>>(),
            "{args:?}: sent, then lost to the close"
        );
        assert!(child.wait_or_kill(HANG).await.unwrap().success(), "{args:?}");

        for round in 0..3 {
            let (session, child) = ipc_request::spawn_session(node_child(&node, args), None)
                .await
                .unwrap();
            child.set_kill_on_drop(true);
            // The child closes as it reads the request after the first
            // large one: while the next is half read.
            let big = json!({"op": "echo", "data": "x".repeat(8 << 20)});
            let close = json!({"op": "close", "after_ms": 0});
            let calls = futures_util::future::join_all(
                [&big, &close, &big, &big, &big].map(|payload| session.request_raw(payload)),
            );
            let results = tokio::time::timeout(HANG, calls).await.unwrap_or_else(|_| {
                panic!(
                    "{args:?} round {round}: requests still wait; the child's close never closed the channel"
                )
            });
            for result in results {
                assert!(
                    matches!(result, Ok(_) | Err(Error::Closed(_))),
                    "{args:?} round {round}: {result:?}"
                );
            }
            let status = tokio::time::timeout(HANG, child.wait())
                .await
                .expect("the child did not exit after its close")
                .unwrap();
            assert!(status.success(), "{args:?} round {round}: {status}");
        }
    }
}

/// A Node handler that rethrows the error its own request to us got passes
/// it on whole, but not a name that says the request was not run
/// (NoHandler here: we have no handler): the child's handler did run, and
/// a caller may send a "not run" request again. As the Rust side does.
#[tokio::test]
async fn a_node_handler_that_rethrows_a_not_run_error_does_not_pass_it_on_as_not_run() {
    let Some(node) = node() else { return };
    let (session, child) = start(node_child(&node, &[])).await;
    match session
        .request::<_, Value>(&json!({"op": "call_rethrow", "data": {"fail": true}}))
        .await
    {
        Err(Error::Remote(e)) => {
            assert_eq!(
                (e.name.as_str(), e.message.as_str()),
                ("RangeError", "parent refused")
            );
            assert_eq!(e.code, Some(json!(42)));
        }
        other => panic!("passed on whole: {other:?}"),
    }
    finish(session, child).await;

    let (session, child) = ipc_request::spawn_session(node_child(&node, &[]), None)
        .await
        .unwrap();
    match session
        .request::<_, Value>(&json!({"op": "call_rethrow", "data": 1}))
        .await
    {
        Err(Error::Remote(e)) => {
            assert_eq!(e.name, "Remote", "{e:?}");
            assert!(e.message.contains("NoHandler"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    finish(session, child).await;
}

/// The JS session keeps plain messages that come before anyone listens,
/// but within a bound, as the Rust side does: 1,024 messages and 64 MiB of
/// their JSON text. Past it they are counted, not kept (an application
/// that never listens held 800 MiB once).
#[tokio::test]
async fn the_js_session_keeps_unheard_plain_messages_within_a_bound() {
    let Some(node) = node() else { return };
    let mib = "x".repeat(1 << 20); // 1,048,578 bytes as JSON: 63 fit in 64 MiB
    let (session, child, dropped) = sent_to_a_child_not_listening(&node, &mib, 70).await;
    assert_eq!(dropped, 7);
    finish(session, child).await;

    // Nested too deep for JSON.stringify, kept as text all the same (8 MiB
    // and 20,000 levels: 7 fit).
    let deep = format!(
        "[\"{}\",{}{}]",
        "x".repeat(8 << 20),
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let deep = serde_json::value::RawValue::from_string(deep).unwrap();
    let (session, child, dropped) = sent_to_a_child_not_listening(&node, &deep, 12).await;
    assert_eq!(dropped, 5, "deep messages kept past the bound");
    finish(session, child).await;

    // Deep and long, of empty arrays: kept as text (3 bytes each with the
    // comma, 22 of these 3 MB messages fit), not as the objects Node made
    // of them, which took about 20 times the memory (1.28 GB of heap, once)
    // and were counted by a walk as 2 bytes each (33 fit).
    let deep = format!(
        "[{}{}{}]",
        "[],".repeat(1_000_000),
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep = serde_json::value::RawValue::from_string(deep).unwrap();
    let (session, child, dropped) = sent_to_a_child_not_listening(&node, &deep, 25).await;
    assert_eq!(dropped, 3, "kept by the length of their text");
    let heap: u64 = session.request(&json!({"op": "heap"})).await.unwrap();
    assert!(
        heap < 256 << 20,
        "{} messages of 3 MB kept: {} MiB of heap",
        25 - dropped,
        heap >> 20
    );
    finish(session, child).await;
}

/// A JS-session child that has no plain-message listener, sent `message`
/// `times` over; with how many of them it dropped.
async fn sent_to_a_child_not_listening<M: serde::Serialize + ?Sized>(
    node: &std::path::Path,
    message: &M,
    times: usize,
) -> (Session, ChildProcess, u64) {
    let (session, child) = ipc_request::spawn_session(node_child(node, &["--no-plain-listener"]), None)
        .await
        .unwrap();
    for _ in 0..times {
        session.send(message).await.unwrap();
    }
    let dropped: u64 = session.request(&json!({"op": "dropped"})).await.unwrap();
    (session, child, dropped)
}

/// Edge cases of the JS session between two Node processes
/// (tests/js/session_edges.js): a close() from a 'disconnect' listener
/// added before the session's own, a plain-message listener that throws,
/// the listeners a handshake that timed out leaves, a second try with
/// other extensions than the first, a handler that outlives such a timeout, a message that cannot be kept as text,
/// timeout options that Number() would read as 0, options that must reject
/// and not throw, setup on a closed
/// channel, a peer gone during the handshake, a send close() gave up on,
/// `extensions: null`, and the stack of an error passed on.
#[test]
fn the_js_session_between_two_node_processes() {
    let Some(node) = node() else { return };
    let script = js_peer().with_file_name("session_edges.js");
    let output = Command::new(node).arg(script).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("PASS ").count(), 13, "{stdout}");
}

/// A plain message nested deeper than Node's JSON.stringify can go (it
/// parses far deeper than it writes), sent before the child listens: the
/// JS session keeps it whole for its listener. Once it crashed the child
/// with a RangeError, sizing the message for its buffer.
#[tokio::test]
async fn the_js_session_keeps_a_deep_plain_message_that_came_before_anyone_listened() {
    let Some(node) = node() else { return };
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep = serde_json::value::RawValue::from_string(deep).unwrap();
    for round in 0..3 {
        let (session, child) = ipc_request::spawn_session(node_child(&node, &[]), None)
            .await
            .unwrap();
        session.send(&json!({"seq": 1})).await.unwrap();
        session.send(&deep).await.unwrap();
        session.send(&json!({"seq": 2})).await.unwrap();
        let got: Value = session
            .request(&json!({"op": "plain_got", "n": 3}))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            got,
            json!([{"seq": 1}, {"depth": 20_000}, {"seq": 2}]),
            "round {round}"
        );
        finish(session, child).await;
    }
}
