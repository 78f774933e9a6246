//! The backlog: sessions flooding each other, requests cancelled while they
//! wait for a handler, and a full backlog's refusals and push-back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common;
use crate::common::ops_handler;
use ipc_request::{Channel, ChannelConfig, Error, RemoteError, Request, SessionBuilder, handler_fn, setup};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn two_sessions_flooding_each_other_with_requests_do_not_deadlock() {
    // Tiny budgets make the circle easy to close: each side's handlers
    // wait for write budget held by its own requests, which wait for the
    // peer to read. The reader must keep reading (queueing requests for a
    // handler slot) so that answers keep flowing.
    let refused = flood_each_other(65_536).await;
    assert_eq!(refused, 0, "a backlog with room refused requests");
}

#[tokio::test]
async fn two_sessions_flooding_each_other_past_a_full_backlog_do_not_deadlock() {
    // With the backlog full too, a reader that waited for room would read
    // nothing more, and each side would wait for the other for good: what
    // does not fit is refused instead, and the rest is answered.
    let refused = flood_each_other(4).await;
    assert!(refused > 0, "the backlog never filled: the test shows nothing");
}

#[tokio::test]
async fn sessions_with_a_small_backlog_flooding_each_other_do_not_deadlock() {
    // A review's case: a backlog of 16 KiB, so that most of 10,000 small
    // requests each way are refused. A refusal is longer than the request
    // it answers, and each side's refusals queue behind its own requests:
    // when they were bounded by the backlog's bytes, both readers soon
    // stopped, each waiting for the other to read.
    let config = || ipc_request::SessionConfig {
        max_queued_request_bytes: 16 * 1024,
        ..Default::default()
    };
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (a, b) = tokio::join!(
        SessionBuilder::new()
            .config(config())
            .handler(ops_handler())
            .setup(a),
        SessionBuilder::new()
            .config(config())
            .handler(ops_handler())
            .setup(b),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let flood = |s: ipc_request::Session| async move {
        let sleep = json!({"op":"sleep","ms":1,"data":1});
        let calls = (0..10_000).map(|_| s.request::<_, Value>(&sleep));
        let mut refused = 0;
        for result in futures_util::future::join_all(calls).await {
            match result {
                Ok(got) => assert_eq!(got, json!(1)),
                Err(Error::Remote(e)) if e.name == "Overloaded" => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        refused
    };
    let (refused_a, refused_b) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(flood(a), flood(b))
    })
    .await
    .expect("deadlock: both sides stopped reading");
    assert!(
        refused_a + refused_b > 0,
        "nothing was refused: the test shows nothing"
    );
}

/// Two sessions with 4 handler slots and tiny write queues each send the
/// other 200 echo requests of 4 KiB at once; every call must end, echoed
/// or refused as `Overloaded`. Returns how many were refused.
async fn flood_each_other(max_queued_requests: usize) -> usize {
    let channel_config = ChannelConfig {
        write_queue_bytes: 8 * 1024,
        ..Default::default()
    };
    let session_config = || ipc_request::SessionConfig {
        max_concurrent_handlers: 4,
        max_queued_requests,
        ..Default::default()
    };
    let (a_io, b_io) = tokio::io::duplex(8 * 1024);
    let (a, b) = tokio::join!(
        SessionBuilder::new()
            .config(session_config())
            .handler(ops_handler())
            .setup(Channel::from_stream(a_io, channel_config.clone())),
        SessionBuilder::new()
            .config(session_config())
            .handler(ops_handler())
            .setup(Channel::from_stream(b_io, channel_config)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let refused = Arc::new(AtomicUsize::new(0));
    let flood = |s: ipc_request::Session, tag: &'static str| {
        let refused = refused.clone();
        async move {
            let calls = (0..200).map(|i| {
                let (s, refused) = (s.clone(), refused.clone());
                async move {
                    let data = format!("{tag}{i}{}", "z".repeat(4096));
                    match s.request::<_, Value>(&json!({"op":"echo","data":data})).await {
                        Ok(got) => assert_eq!(got, json!(data)),
                        Err(Error::Remote(e)) if e.name == "Overloaded" => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("{tag}{i}: {e:?}"),
                    }
                }
            });
            futures_util::future::join_all(calls).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(flood(a, "a"), flood(b, "b"))
    })
    .await
    .expect("deadlock: both sides stopped reading");
    refused.load(Ordering::Relaxed)
}

/// A server with one handler slot, busy with the client's request 0 until
/// `release` is told; its handler records every request it runs.
struct BusyServer {
    client: ipc_request::Session,
    server: ipc_request::Session,
    first: tokio::task::JoinHandle<Result<u32, Error>>,
    release: Arc<tokio::sync::Notify>,
    handled: Arc<std::sync::Mutex<Vec<u32>>>,
}

impl BusyServer {
    async fn start(max_queued_requests: usize) -> BusyServer {
        let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (started, release) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        let (seen, start, gate) = (handled.clone(), started.clone(), release.clone());
        let handler = handler_fn(move |req: Request| {
            let (seen, start, gate) = (seen.clone(), start.clone(), gate.clone());
            async move {
                let n: u32 = req.payload().unwrap();
                seen.lock().unwrap().push(n);
                if n == 0 {
                    start.notify_one();
                    gate.notified().await;
                }
                Ok::<_, RemoteError>(n)
            }
        });
        let config = ipc_request::SessionConfig {
            max_concurrent_handlers: 1,
            max_queued_requests,
            ..Default::default()
        };
        let (a, b) = Channel::pair(ChannelConfig::default());
        let (client, server) = tokio::join!(
            setup(a, None),
            SessionBuilder::new().config(config).handler(handler).setup(b)
        );
        let (client, server) = (client.unwrap(), server.unwrap());
        let first = tokio::spawn({
            let client = client.clone();
            async move { client.request::<_, u32>(&0).await }
        });
        started.notified().await;
        BusyServer {
            client,
            server,
            first,
            release,
            handled,
        }
    }

    /// Sends request `n` from a task of its own.
    fn request(&self, n: u32) -> tokio::task::JoinHandle<Result<u32, Error>> {
        let client = self.client.clone();
        tokio::spawn(async move { client.request::<_, u32>(&n).await })
    }
}

#[tokio::test]
async fn a_request_cancelled_while_it_waits_for_a_handler_never_runs() {
    let busy = BusyServer::start(65_536).await;
    let mut server_messages = busy.server.messages().unwrap();
    // 0 holds the only handler slot; 1 waits behind it and is cancelled
    // (its deadline passes); 2 waits behind it too.
    let timed_out = busy
        .client
        .request_timeout::<_, u32>(&1, Duration::from_millis(50))
        .await;
    assert!(matches!(timed_out, Err(Error::Timeout(_))), "{timed_out:?}");
    let third = busy.request(2);
    // The server reads in order: once this arrives, it has read the cancel
    // of 1 (2 may come before or after it; either way it waits behind 0).
    busy.client.send(&"read up to here").await.unwrap();
    server_messages.recv().await.unwrap().unwrap();
    busy.release.notify_one();
    assert_eq!(busy.first.await.unwrap().unwrap(), 0);
    assert_eq!(third.await.unwrap().unwrap(), 2);
    assert_eq!(*busy.handled.lock().unwrap(), [0, 2], "the cancelled request ran");
}

#[tokio::test]
async fn cancelled_requests_free_their_room_in_the_backlog_at_once() {
    // Were they kept until their turn, the backlog would stay full of
    // requests nobody waits for, and 3 would be refused as `Overloaded`
    // (before refusals, the reader stopped there, and a handler waiting
    // for an answer from the peer waited for ever).
    let busy = BusyServer::start(2).await;
    let mut server_messages = busy.server.messages().unwrap();
    let (one, two) = tokio::join!(
        busy.client
            .request_timeout::<_, u32>(&1, Duration::from_millis(50)),
        busy.client
            .request_timeout::<_, u32>(&2, Duration::from_millis(50)),
    );
    assert!(matches!(
        (one, two),
        (Err(Error::Timeout(_)), Err(Error::Timeout(_)))
    ));
    // Their cancels went first; 3 takes a freed place, while 0 still holds
    // the only handler slot.
    let third = busy.request(3);
    // Time for 3 to go out before the message. (Sent sooner, the message
    // overtakes it and the test passes without showing anything.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    busy.client.send(&"still reading").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), server_messages.recv())
        .await
        .expect("the reader stopped reading");
    assert_eq!(got.unwrap().unwrap(), json!("still reading"));
    busy.release.notify_one();
    assert_eq!(busy.first.await.unwrap().unwrap(), 0);
    assert_eq!(third.await.unwrap().unwrap(), 3);
    assert_eq!(*busy.handled.lock().unwrap(), [0, 3]);
}

#[tokio::test]
async fn a_request_past_a_full_backlog_is_refused_at_once_and_the_reader_goes_on() {
    let busy = BusyServer::start(1).await;
    let mut server_messages = busy.server.messages().unwrap();
    // 0 holds the only handler slot, 1 the only place in the backlog: 2 is
    // refused at once, and what comes behind it is read, while 0 still
    // holds its slot. (Sent sooner than this pause allows, 1 may not be
    // there first, and the test shows nothing.)
    let one = busy.request(1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let two = busy.request(2);
    match tokio::time::timeout(Duration::from_secs(5), two).await {
        Ok(Ok(Err(Error::Remote(e)))) => {
            assert_eq!(e.name, "Overloaded");
            assert!(e.message.contains("too many requests wait"), "{e:?}");
        }
        other => panic!("2 was not refused at once: {other:?}"),
    }
    busy.client.send(&"behind 2").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), server_messages.recv())
        .await
        .expect("the reader stopped behind a full backlog");
    assert_eq!(got.unwrap().unwrap(), json!("behind 2"));
    assert!(!busy.first.is_finished(), "0 was to hold its slot all along");
    busy.release.notify_one();
    assert_eq!(busy.first.await.unwrap().unwrap(), 0);
    assert_eq!(one.await.unwrap().unwrap(), 1);
    assert_eq!(*busy.handled.lock().unwrap(), [0, 1]);
}

#[tokio::test]
async fn handlers_waiting_on_the_peer_get_their_answers_though_the_backlog_is_full() {
    // The server's one handler slot is held by a handler that calls the
    // client back and waits for the answer; the backlog is full behind it.
    // Had the reader stopped with the next request in hand, that answer
    // would never be read, and the server would be stuck for good.
    let (started, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let (start, gate) = (started.clone(), release.clone());
    let client_handler = handler_fn(move |req: Request| {
        let (start, gate) = (start.clone(), gate.clone());
        async move {
            let n: u32 = req.payload()?;
            if n == 0 {
                start.notify_one();
                gate.notified().await;
            }
            Ok::<_, RemoteError>(n + 100)
        }
    });
    let server_handler = handler_fn(|req: Request| async move {
        let n: u32 = req.payload()?;
        let back: u32 = req.session().request(&n).await?;
        Ok::<_, RemoteError>(back)
    });
    let config = ipc_request::SessionConfig {
        max_concurrent_handlers: 1,
        max_queued_requests: 1,
        ..Default::default()
    };
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, server) = tokio::join!(
        SessionBuilder::new().handler(client_handler).setup(a),
        SessionBuilder::new()
            .config(config)
            .handler(server_handler)
            .setup(b)
    );
    let (client, server) = (client.unwrap(), server.unwrap());
    let mut server_messages = server.messages().unwrap();
    let call = |n: u32| {
        let client = client.clone();
        tokio::spawn(async move { client.request::<_, u32>(&n).await })
    };
    let zero = call(0);
    started.notified().await;
    let one = call(1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let two = call(2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.send(&"behind 2").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), server_messages.recv())
        .await
        .expect("the server stopped reading behind a full backlog");
    assert_eq!(got.unwrap().unwrap(), json!("behind 2"));
    release.notify_one();
    let answers = tokio::time::timeout(Duration::from_secs(5), async {
        (zero.await.unwrap(), one.await.unwrap(), two.await.unwrap())
    })
    .await
    .expect("the server is stuck: its handler never got the client's answer");
    assert_eq!(answers.0.unwrap(), 100);
    assert_eq!(answers.1.unwrap(), 101);
    assert!(
        matches!(&answers.2, Err(Error::Remote(e)) if e.name == "Overloaded"),
        "{:?}",
        answers.2
    );
}

#[tokio::test]
async fn a_peer_that_reads_no_refusals_is_pushed_back_and_loses_none() {
    // A peer that sends requests past a full backlog and reads nothing:
    // the refusals wait unwritten, at most max_unwritten_refusal_bytes of
    // them, and then the reader stops, so the peer's writes stall (memory
    // stays bounded). Once the peer reads, every request is accounted for.
    let queued = 2;
    let config = ipc_request::SessionConfig {
        max_concurrent_handlers: 1,
        max_queued_requests: queued,
        max_unwritten_refusal_bytes: 1024,
        ..Default::default()
    };
    let never = handler_fn(|_req: Request| std::future::pending::<Result<u32, RemoteError>>());
    let (ours, theirs) = tokio::io::duplex(1024);
    let (mut their_read, mut their_write) = tokio::io::split(theirs);
    let (server, ()) = tokio::join!(
        SessionBuilder::new()
            .config(config)
            .handler(never)
            .setup(Channel::from_stream(ours, ChannelConfig::default())),
        common::answer_handshake(&mut their_read, &mut their_write, Some(&["error", "cancel"])),
    );
    let _server = server.unwrap();
    let total = 10_000;
    let lines: String = (0..total)
        .map(|i| {
            format!(
                "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:REQUEST\",\"_IPC_REQUEST/REQUEST_UID\":\"r{i}\",\"_IPC_REQUEST/PAYLOAD\":{i}}}\n"
            )
        })
        .collect();
    let mut writing = Box::pin(their_write.write_all(lines.as_bytes()));
    let stalled = tokio::time::timeout(Duration::from_secs(2), &mut writing).await;
    assert!(
        stalled.is_err(),
        "the reader went on refusing into memory without bound"
    );
    // Now read: the writes go through, and every request is refused but
    // the one running and those in the backlog.
    let reading = tokio::spawn(async move {
        let mut refused = 0;
        while refused < total - 1 - queued {
            let line: Value = serde_json::from_str(&common::read_line(&mut their_read).await).unwrap();
            assert_eq!(line["_IPC_REQUEST/ERROR"]["name"], "Overloaded", "{line}");
            refused += 1;
        }
        refused
    });
    tokio::time::timeout(Duration::from_secs(30), writing)
        .await
        .expect("the peer's writes stayed stalled once it read")
        .unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("refusals missing")
        .unwrap();
    assert_eq!(refused, total - 1 - queued);
}
