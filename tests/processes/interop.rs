//! A Rust parent with Rust and Node children: full peers, another fd, the
//! Node side's own guards, 1.0 children, UIDs no Rust string can hold, a late
//! listener, and the invalid lines and handles a Node child sends.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{node, open_tcp_sockets};
use crate::{finish, node_child, parent_handler, rust_child, start};
use ipc_request::{Error, FrameError, Session, SessionBuilder, SpawnOptions, spawn_with};
use serde_json::{Value, json};

/// Everything a full (extensions) peer must do, whatever language it is in.
async fn exercise_full_peer(session: &Session) {
    assert!(
        session.peer().supports("error") && session.peer().supports("cancel"),
        "{:?}",
        session.peer()
    );

    // PROTOCOL.md 1.1: a child that opened its channel removes both
    // variables, so its own children do not inherit a channel they do not
    // own. Node does; so must we.
    let names = ["NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE", "PATH"];
    let env: Value = session.request(&json!({"op":"env","names":names})).await.unwrap();
    assert_eq!(env["NODE_CHANNEL_FD"], Value::Null, "{env}");
    assert_eq!(env["NODE_CHANNEL_SERIALIZATION_MODE"], Value::Null, "{env}");
    assert!(env["PATH"].is_string(), "the op reads the environment: {env}");

    let payload = json!({"nested": {"list": [1, 2.5, null, true], "text": "é 😀 \u{2028} \u{0001}"}});
    let got: Value = session
        .request(&json!({"op":"echo","data":payload}))
        .await
        .unwrap();
    assert_eq!(got, payload);

    // Many in flight, answered out of order.
    let calls = (0..200u64).map(|i| {
        let session = session.clone();
        async move {
            let ms = (i * 7919) % 50;
            let got: Value = session
                .request(&json!({"op":"sleep","ms":ms,"data":i}))
                .await
                .unwrap();
            assert_eq!(got, json!(i));
        }
    });
    futures_util::future::join_all(calls).await;

    // req1 req2 res2 res1
    let (slow, fast) = tokio::join!(
        async {
            let v: Value = session
                .request(&json!({"op":"sleep","ms":300,"data":"req1"}))
                .await
                .unwrap();
            (v, Instant::now())
        },
        async {
            let v: Value = session
                .request(&json!({"op":"sleep","ms":0,"data":"req2"}))
                .await
                .unwrap();
            (v, Instant::now())
        }
    );
    assert_eq!((slow.0, fast.0.clone()), (json!("req1"), json!("req2")));
    assert!(fast.1 < slow.1);

    // The child calls the parent back, while the parent waits on the child.
    let got: Value = session
        .request(&json!({"op":"call","data":"ping"}))
        .await
        .unwrap();
    assert_eq!(got, json!({"got": {"from": "rust-parent", "data": "ping"}}));

    // Our handler's failure reaches the child as an error.
    let got: Value = session
        .request(&json!({"op":"call","data":{"fail":true}}))
        .await
        .unwrap();
    assert_eq!(got["error"]["name"], json!("RangeError"));
    assert_eq!(got["error"]["message"], json!("parent refused"));
    assert_eq!(got["error"]["code"], json!(42));

    // The child's handler failure reaches us as a typed remote error.
    let fail = json!({"op":"fail","name":"TypeError","message":"boom","code":"E_BOOM","data":{"n":1}});
    match session.request::<_, Value>(&fail).await {
        Err(Error::Remote(e)) => {
            assert_eq!((e.name.as_str(), e.message.as_str()), ("TypeError", "boom"));
            assert_eq!(e.code, Some(json!("E_BOOM")));
            assert_eq!(e.data_as::<Value>().unwrap().unwrap(), json!({"n": 1}));
        }
        other => panic!("{other:?}"),
    }

    // Cancellation reaches the child's handler.
    let err = session
        .request_timeout::<_, Value>(
            &json!({"op":"wait_cancel","key":"k1"}),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    let seen: bool = session
        .request(&json!({"op":"cancelled","key":"k1"}))
        .await
        .unwrap();
    assert!(seen, "the child's handler did not observe the cancel");
    assert_eq!(session.pending_requests(), 0);
}

/// Plain messages from the child arrive in order, around protocol traffic.
async fn exercise_plain_messages(session: &Session) {
    let mut messages = session.messages().unwrap();
    let sent = json!([{"a": 1}, "two", 3, [4], null]);
    let count: Value = session
        .request(&json!({"op":"plain","messages":sent}))
        .await
        .unwrap();
    assert_eq!(count, json!(5));
    for expected in sent.as_array().unwrap() {
        assert_eq!(&messages.recv().await.unwrap().unwrap(), expected);
    }
}

#[tokio::test]
async fn rust_parent_with_rust_child() {
    let (session, child) = start(rust_child(&[])).await;
    exercise_full_peer(&session).await;
    exercise_plain_messages(&session).await;
    for (op, name) in [("panic", "HandlerPanicked"), ("drop", "ResponderDropped")] {
        match session.request::<_, Value>(&json!({ "op": op })).await {
            Err(Error::Remote(e)) => assert_eq!(e.name, name),
            other => panic!("{op}: {other:?}"),
        }
    }
    // A payload the child cannot read (nested past serde_json's depth
    // limit of 128) comes back as the child's error, not as an answer.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep = serde_json::value::RawValue::from_string(deep).unwrap();
    match session.request_raw(&deep).await {
        Err(Error::Remote(e)) => assert!(e.message.contains("recursion limit"), "{e:?}"),
        other => panic!("deep payload: {other:?}"),
    }
    finish(session, child).await;
}

#[tokio::test]
async fn rust_child_at_another_fd() {
    let options = SpawnOptions {
        fd: 7,
        ..Default::default()
    };
    let (channel, child) = spawn_with(rust_child(&[]), options).unwrap();
    let session = ipc_request::setup(channel, None).await.unwrap();
    let got: Value = session.request(&json!({"op":"echo","data":7})).await.unwrap();
    assert_eq!(got, json!(7));
    finish(session, child).await;
    assert!(matches!(
        spawn_with(
            rust_child(&[]),
            SpawnOptions {
                fd: 2,
                ..Default::default()
            }
        ),
        Err(Error::InvalidArgument(_))
    ));
    let past_the_limit = SpawnOptions {
        fd: 1 << 30,
        ..Default::default()
    };
    match spawn_with(rust_child(&[]), past_the_limit) {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("descriptor limit"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rust_parent_with_node_child() {
    let Some(node) = node() else { return };
    let (session, child) = start(node_child(&node, &[])).await;
    exercise_full_peer(&session).await;
    exercise_plain_messages(&session).await;
    finish(session, child).await;
}

/// The Node side's own guards, as the Rust side has them: an answer JSON
/// cannot hold comes as an error (not never), and `send` refuses what the
/// peer would take for Node's or the protocol's own messages.
#[tokio::test]
async fn a_node_child_fails_an_answer_json_cannot_hold_and_refuses_reserved_sends() {
    let Some(node) = node() else { return };
    let (session, child) = start(node_child(&node, &[])).await;
    let unsent = tokio::time::timeout(
        Duration::from_secs(10),
        session.request::<_, Value>(&json!({"op": "bigint"})),
    )
    .await
    .expect("no answer in place of the one JSON cannot hold");
    match unsent {
        Err(Error::Remote(e)) => assert_eq!(e.name, "ResponseNotSent", "{e:?}"),
        other => panic!("{other:?}"),
    }
    for op in ["throw_null", "function_answer", "handle_then_bad_error"] {
        let unsent = tokio::time::timeout(
            Duration::from_secs(10),
            session.request::<_, Value>(&json!({"op": op})),
        )
        .await
        .unwrap_or_else(|_| panic!("{op}: no answer"));
        match unsent {
            Err(Error::Remote(e)) => assert_eq!(e.name, "ResponseNotSent", "{op}: {e:?}"),
            other => panic!("{op}: {other:?}"),
        }
    }
    // What is sent is what was judged: the answer as first serialized.
    let flipped = tokio::time::timeout(
        Duration::from_secs(10),
        session.request::<_, Value>(&json!({"op": "flip_answer"})),
    )
    .await
    .expect("flip_answer: no answer");
    assert_eq!(flipped.unwrap(), json!({}));
    match session
        .request::<_, Value>(&json!({"op": "unreadable_error"}))
        .await
    {
        Err(Error::Remote(e)) => assert!(e.message.contains("could not be read"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    let refused: Value = session.request(&json!({"op": "send_reserved"})).await.unwrap();
    let reserved = "ERR_RESERVED_MESSAGE";
    assert_eq!(
        refused,
        json!([
            reserved,
            reserved,
            reserved,
            reserved,
            reserved,
            reserved,
            "sent",
            "sent",
            "ERR_UNSERIALIZABLE"
        ])
    );
    finish(session, child).await;

    // A 1.0 peer gets the error as the answer's payload.
    let (session, child) = start(node_child(&node, &["--v1"])).await;
    let unsent: Value =
        tokio::time::timeout(Duration::from_secs(10), session.request(&json!({"op": "bigint"})))
            .await
            .expect("no answer in place of the one JSON cannot hold")
            .unwrap();
    assert_eq!(unsent["name"], "ResponseNotSent", "{unsent}");
    finish(session, child).await;
}

#[tokio::test]
async fn rust_parent_with_a_one_dot_zero_node_child() {
    let Some(node) = node() else { return };
    let (session, child) = start(node_child(&node, &["--v1"])).await;
    assert!(!session.peer().advertises_extensions);
    let got: Value = session
        .request(&json!({"op":"echo","data":[1, "x"]}))
        .await
        .unwrap();
    assert_eq!(got, json!([1, "x"]));
    // Our handler fails; a 1.0 peer gets the error object as the payload.
    let got: Value = session
        .request(&json!({"op":"call","data":{"fail":true}}))
        .await
        .unwrap();
    assert_eq!(got["got"]["name"], json!("RangeError"), "{got}");
    assert_eq!(got["got"]["message"], json!("parent refused"));
    assert_eq!(got["got"]["code"], json!(42));
    // No cancel goes to a 1.0 peer: the request just times out locally.
    let err = session
        .request_timeout::<_, Value>(
            &json!({"op":"sleep","ms":500,"data":0}),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)));
    // Its late answer is dropped quietly; the session goes on.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got: Value = session
        .request(&json!({"op":"echo","data":"after"}))
        .await
        .unwrap();
    assert_eq!(got, json!("after"));
    finish(session, child).await;
}

/// A Node child speaking ipc-request 1.0 by hand, with UIDs that are
/// JavaScript strings no Rust `String` can hold (lone surrogates), and one
/// that holds U+FFFD itself: it sends its handshake and one request per UID
/// at once, matches each answer by its UID (`===`, as ipc-request 1.0
/// does), and reports in a plain message.
const NODE_CHILD_WITH_LONE_SURROGATE_UIDS: &str = r#"
const K = '_IPC_REQUEST/';
const handshakeUid = 'hs\udbff';
const uids = ['\ud800', '\ud801', '\udc00\ud800', 'a\ud83d', '\ufffd'];
const answers = new Map();
let established = false;
const report = (result) => {
  clearTimeout(timer);
  process.send({ result, answered: [...answers.keys()].map((uid) => JSON.stringify(uid)) });
};
const timer = setTimeout(() => report('timed out'), 20000);
process.on('message', (m) => {
  if (m[K + 'HANDSHAKE_MSG_TYPE'] === K + 'HANDSHAKE_MSG_TYPE:REQUEST') {
    process.send({
      [K + 'HANDSHAKE_UID']: m[K + 'HANDSHAKE_UID'],
      [K + 'HANDSHAKE_MSG_TYPE']: K + 'HANDSHAKE_MSG_TYPE:RESPONSE',
    });
  } else if (m[K + 'HANDSHAKE_MSG_TYPE'] === K + 'HANDSHAKE_MSG_TYPE:RESPONSE') {
    if (m[K + 'HANDSHAKE_UID'] !== handshakeUid) return report('handshake answered under another UID');
    if (established) return;
    established = true;
    uids.forEach((uid, i) => process.send({
      [K + 'MSG_TYPE']: K + 'MSG_TYPE:REQUEST',
      [K + 'REQUEST_UID']: uid,
      [K + 'PAYLOAD']: i,
    }));
  } else if (m[K + 'MSG_TYPE'] === K + 'MSG_TYPE:RESPONSE') {
    const uid = m[K + 'REQUEST_UID'];
    if (!uids.includes(uid)) return report('an answer under a UID never sent: ' + JSON.stringify(uid));
    answers.set(uid, m[K + 'PAYLOAD']);
    if (answers.size === uids.length) {
      const matched = uids.every((uid, i) => answers.get(uid).data === i);
      report(matched ? 'all answered' : 'answers mixed up');
    }
  }
});
process.on('disconnect', () => process.exit(0));
process.send({
  [K + 'HANDSHAKE_UID']: handshakeUid,
  [K + 'HANDSHAKE_MSG_TYPE']: K + 'HANDSHAKE_MSG_TYPE:REQUEST',
});
"#;

#[tokio::test]
async fn a_node_child_gets_its_answers_under_uids_no_rust_string_can_hold() {
    let Some(node) = node() else { return };
    let mut command = Command::new(node);
    command.arg("-e").arg(NODE_CHILD_WITH_LONE_SURROGATE_UIDS);
    let (session, child) = start(command).await;
    let mut messages = session.messages().unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), messages.recv())
        .await
        .expect("the Node child reports within its own 20 s")
        .unwrap()
        .unwrap();
    assert_eq!(report["result"], json!("all answered"), "{report}");
    finish(session, child).await;
}

#[tokio::test]
async fn rust_parent_with_a_node_child_whose_listener_comes_late() {
    let Some(node) = node() else { return };
    // The child ignores our first handshake request; its own completes both.
    let (session, child) = start(node_child(&node, &["--handshake-delay", "300"])).await;
    let got: Value = session.request(&json!({"op":"echo","data":1})).await.unwrap();
    assert_eq!(got, json!(1));
    finish(session, child).await;
}

#[tokio::test]
async fn an_invalid_line_and_a_handle_from_a_node_child_do_not_break_the_session() {
    let Some(node) = node() else { return };
    let (session, child) = start(node_child(&node, &[])).await;
    let mut messages = session.messages().unwrap();

    let written: Value = session
        .request(&json!({"op":"raw","text":"this is not json\n"}))
        .await
        .unwrap();
    assert_eq!(written, json!("written"));
    match messages.recv().await.unwrap() {
        Err(Error::Frame(FrameError::InvalidJson { snippet, .. })) => assert!(snippet.contains("not json")),
        other => panic!("{other:?}"),
    }

    let tcp_before = open_tcp_sockets();
    {
        // The count sees a TCP socket in this process, so the check below
        // would see an installed one.
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(open_tcp_sockets(), tcp_before + 1);
    }
    // Node sends NODE_HANDLE with a descriptor and then waits for our NACK
    // before writing anything else: the answer arriving proves the NACK.
    let sent: Value = tokio::time::timeout(Duration::from_secs(10), session.request(&json!({"op":"handle"})))
        .await
        .expect("the Node child stalled: no NODE_HANDLE_NACK?")
        .unwrap();
    assert_eq!(sent, json!("sent"));
    // A handle message that fills several reads: the kernel ends a read at
    // the bytes a descriptor came with, and what follows must still be read.
    send_a_handle_then_echo(
        &session,
        300_000,
        "the read stalled after a large message that carried a handle",
    )
    .await;
    assert!(
        open_tcp_sockets() <= tcp_before,
        "a passed descriptor was installed in our process"
    );
    // Node's internal messages never surfaced as plain messages.
    let count: Value = session
        .request(&json!({"op":"plain","messages":["marker"]}))
        .await
        .unwrap();
    assert_eq!(count, json!(1));
    assert_eq!(messages.recv().await.unwrap().unwrap(), json!("marker"));
    finish(session, child).await;
}

#[tokio::test]
async fn a_handle_from_a_node_child_with_a_message_too_long_to_read_is_still_refused() {
    // Node holds back everything it writes after a handle until the handle
    // is answered: one whose message is past our maximum length must be
    // answered too, or the child's answers stop for good.
    let Some(node) = node() else { return };
    let options = ipc_request::SpawnOptions {
        channel: ipc_request::ChannelConfig {
            max_message_len: 64 * 1024,
            ..Default::default()
        },
        ..Default::default()
    };
    let (channel, child) = ipc_request::spawn_with(node_child(&node, &[]), options).expect("spawn");
    let session = SessionBuilder::new()
        .handler(parent_handler())
        .setup(channel)
        .await
        .expect("handshake with the child");
    send_a_handle_then_echo(
        &session,
        300_000,
        "the Node child stalled behind a handle too long to read: no NODE_HANDLE_NACK?",
    )
    .await;
    finish(session, child).await;
}

/// Has the Node child send a handle with a message padded by `pad` bytes
/// (its answer comes only once the handle is answered: `stalled` if not),
/// then checks that an echo still goes through.
async fn send_a_handle_then_echo(session: &Session, pad: usize, stalled: &str) {
    let sent: Value = tokio::time::timeout(
        Duration::from_secs(10),
        session.request(&json!({"op":"handle","pad":pad})),
    )
    .await
    .expect(stalled)
    .unwrap();
    assert_eq!(sent, json!("sent"));
    let got: Value = session
        .request(&json!({"op":"echo","data":"still fine"}))
        .await
        .unwrap();
    assert_eq!(got, json!("still fine"));
}
