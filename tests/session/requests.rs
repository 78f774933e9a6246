//! Requests both ways: matching answers out of order, many in flight, typed
//! calls, exact numbers, deadlines on raw requests, and calls back to the peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{connected, ops_handler};
use ipc_request::{
    Channel, ChannelConfig, Error, RemoteError, Request, SessionBuilder, SessionConfig, handler_fn, setup,
};
use serde_json::{Value, json};

#[tokio::test]
async fn both_sides_are_client_and_server_at_once() {
    let (a, b) = connected().await;
    let mut calls = Vec::new();
    for i in 0..100 {
        let (a, b) = (a.clone(), b.clone());
        calls.push(tokio::spawn(async move {
            let x: Value = a.request(&json!({"op":"echo","data":i})).await.unwrap();
            let y: Value = b.request(&json!({"op":"echo","data":-i})).await.unwrap();
            (x, y)
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let (x, y) = call.await.unwrap();
        assert_eq!(x, json!(i));
        assert_eq!(y, json!(-(i as i64)));
    }
}

#[tokio::test]
async fn answers_out_of_order_are_matched_by_id() {
    let (a, _b) = connected().await;
    let slow_req = json!({"op":"sleep","ms":200,"data":"req1"});
    let slow = a.request::<_, Value>(&slow_req);
    let fast = async {
        let r: Value = a
            .request(&json!({"op":"sleep","ms":0,"data":"req2"}))
            .await
            .unwrap();
        (r, std::time::Instant::now())
    };
    let (slow, (fast, fast_at)) =
        tokio::join!(async { (slow.await.unwrap(), std::time::Instant::now()) }, fast);
    assert_eq!(slow.0, json!("req1"));
    assert_eq!(fast, json!("req2"));
    assert!(fast_at < slow.1, "res2 arrived after res1");
}

#[tokio::test]
async fn ten_thousand_in_flight() {
    let (a, _b) = connected().await;
    let calls = (0..10_000).map(|i| {
        let a = a.clone();
        async move { a.request::<_, Value>(&json!({"op":"echo","data":i})).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), json!(i));
    }
    assert_eq!(a.pending_requests(), 0);
}

/// A request of `ops_handler`'s "echo" op, typed: its answer is `T`.
#[derive(serde::Serialize)]
struct Echo<T> {
    op: &'static str,
    data: T,
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> ipc_request::Call for Echo<T> {
    type Answer = T;
}

/// `Session::call` takes the answer's type from the request's: no
/// annotation, and a deadline as `request_timeout` has.
#[tokio::test]
async fn a_typed_call_gets_the_answer_its_request_names() {
    let (a, _b) = connected().await;
    let numbers = a
        .call(&Echo {
            op: "echo",
            data: vec![1u32, 2, 3],
        })
        .await
        .unwrap();
    assert_eq!(numbers, [1, 2, 3]);
    // A reference to a request is that request.
    let request = Echo {
        op: "echo",
        data: 4u8,
    };
    assert_eq!(a.call(&&request).await.unwrap(), 4);
    let text = a
        .call_timeout(
            &Echo {
                op: "echo",
                data: "x".to_string(),
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(text, "x");
    // An answer that is not the named type is a decode error, as with
    // `request`.
    let wrong = Echo {
        op: "echo",
        data: json!("not a number"),
    };
    assert!(matches!(
        a.request::<_, u32>(&wrong).await,
        Err(Error::Decode { .. })
    ));
    #[derive(serde::Serialize)]
    struct Sleep {
        op: &'static str,
        ms: u64,
        data: u8,
    }
    impl ipc_request::Call for Sleep {
        type Answer = u8;
    }
    let slow = Sleep {
        op: "sleep",
        ms: 60_000,
        data: 1,
    };
    let late = a.call_timeout(&slow, Duration::from_millis(1)).await;
    assert!(matches!(late, Err(Error::Timeout(_))), "{late:?}");
}

#[tokio::test]
async fn concurrent_handlers_are_capped() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let handler = handler_fn(move |_req: Request| {
        let (running, peak) = (r.clone(), p.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, RemoteError>(())
        }
    });
    let config = ipc_request::SessionConfig {
        max_concurrent_handlers: 4,
        ..Default::default()
    };
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, _server) = tokio::join!(
        setup(a, None),
        SessionBuilder::new().config(config).handler(handler).setup(b)
    );
    let client = client.unwrap();
    let calls = (0..64).map(|_| client.request::<_, ()>(&0));
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=4).contains(&peak), "peak {peak}");
}

#[tokio::test]
async fn numbers_travel_exactly_as_node_writes_them() {
    let (a, _b) = connected().await;
    // Shortest round-trip text of doubles, as JSON.stringify writes them.
    for text in [
        "0.23959544841335137",
        "5e-324",
        "1.7976931348623157e+308",
        "-0",
        "9007199254740993",
    ] {
        let sent: Value = serde_json::from_str(text).unwrap();
        let got: Value = a.request(&json!({"op":"echo","data":sent})).await.unwrap();
        assert_eq!(got, sent, "{text}");
    }
}

/// Every request in flight carries its future: 100,000 in flight at 350
/// bytes each is 35 MB, and past about 500 bytes the bench's
/// `bytes_per_inflight` goal (1 KiB) is lost. A wait added to the request
/// path once nearly doubled it unseen (a size is not a speed: it does not
/// vary from run to run).
#[tokio::test]
async fn a_request_future_stays_small() {
    let (a, _b) = connected().await;
    let size = std::mem::size_of_val(&a.request_raw(&(0u64, "hello, bench")));
    eprintln!("request_raw future: {size} bytes");
    assert!(size <= 448, "a request's future takes {size} bytes");
}

#[tokio::test]
async fn a_raw_request_with_a_deadline_times_out_and_the_others_still_answer() {
    let (a, _b) = connected().await;
    let slow = json!({"op":"sleep","ms":5_000,"data":1});
    match a.request_raw_timeout(&slow, Duration::from_millis(50)).await {
        Err(e @ Error::Timeout(_)) => assert_eq!(e.to_string(), "timed out after 50ms"),
        other => panic!("{other:?}"),
    }
    let quick = json!({"op":"echo","data":[1]});
    let answer = a
        .request_raw_timeout(&quick, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answer.get(), "[1]");
    assert_eq!(a.pending_requests(), 0);
}

#[tokio::test]
async fn a_handler_calls_the_peer_back_on_its_requests_session() {
    let (a, b) = Channel::pair(ChannelConfig::default());
    let calls_back = handler_fn(|req: Request| async move {
        let asked: Value = req.payload()?;
        let session = req.session();
        let answer: Value = session.request(&json!({"op":"echo","data":asked})).await?;
        Ok::<_, RemoteError>(json!({ "the caller said": answer }))
    });
    let (client, _server) = tokio::join!(
        SessionBuilder::new().handler(ops_handler()).setup(a),
        SessionBuilder::new().handler(calls_back).setup(b),
    );
    let got: Value = client.unwrap().request(&"hello").await.unwrap();
    assert_eq!(got, json!({ "the caller said": "hello" }));
}

/// 0 and `usize::MAX` (for "no limit") are valid for every count and size
/// of the channel and the session: each is taken within what it can be.
/// (A review found that `usize::MAX` for the write queue or the refusals'
/// budget would panic in Tokio's `Semaphore::new` on a 32-bit target,
/// whose bound there is below `u32::MAX`: run this with `--target
/// i686-unknown-linux-musl` to see it.)
#[tokio::test]
async fn every_limit_at_zero_or_at_no_limit_is_a_valid_setting() {
    for limit in [0, usize::MAX] {
        let channel = ChannelConfig {
            write_queue_bytes: limit,
            max_message_len: limit.max(1024),
        };
        let config = SessionConfig {
            max_in_flight: limit,
            max_concurrent_handlers: limit,
            max_queued_requests: limit,
            max_queued_request_bytes: limit,
            max_unwritten_refusal_bytes: limit,
            message_buffer: limit,
            message_buffer_bytes: limit,
            ..SessionConfig::default()
        };
        let side = || {
            SessionBuilder::new()
                .config(config.clone())
                .handler(ops_handler())
        };
        let (a, b) = Channel::pair(channel);
        let (a, b) = tokio::join!(side().setup(a), side().setup(b));
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut messages = b.messages().unwrap();
        let a = &a;
        let calls =
            (0..3).map(|i| async move { a.request::<_, Value>(&json!({"op": "echo", "data": i})).await });
        let answers = futures_util::future::join_all(calls).await;
        let answers: Vec<Value> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, [json!(0), json!(1), json!(2)], "limit {limit}");
        a.send(&json!({"plain": limit == 0})).await.unwrap();
        let plain = messages.recv().await.unwrap().unwrap();
        assert_eq!(plain, json!({"plain": limit == 0}), "limit {limit}");
        a.close();
    }
}
