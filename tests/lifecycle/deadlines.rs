//! Deadlines and dropped request futures: what they cancel at the peer, and
//! the requests they leave queued, which are never sent.

use crate::cancel_observer;
use crate::common::hand_played::{PeerReader, PeerWriter, serve_a_hand_played_peer};

use std::time::Duration;

use ipc_request::{Channel, ChannelConfig, Error, SessionBuilder, setup};
use serde_json::Value;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn a_deadline_fails_the_request_cancels_it_at_the_peer_and_leaves_nothing_behind() {
    let (handler, mut seen) = cancel_observer();
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, server) = tokio::join!(setup(a, None), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    let err = client
        .request_timeout::<_, Value>("k1", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_millis(100)),
        "{err}"
    );
    assert_eq!(client.pending_requests(), 0);
    let (key, refused) = seen.recv().await.unwrap();
    assert_eq!(key, "k1");
    assert!(refused, "the answer after the cancel must be refused");
}

/// A session with a hand-played peer that can cancel, behind a 256-byte
/// pipe the peer does not read until told: a first request goes straight
/// to the pipe and only in part, and holds the writer up; the rest wait
/// in our queue.
async fn a_client_behind_a_pipe_its_peer_does_not_read() -> (ipc_request::Session, PeerReader, PeerWriter) {
    let (unused, _) = cancel_observer();
    let extensions = Some(&["error", "cancel"][..]);
    serve_a_hand_played_peer(unused, ChannelConfig::default(), 256, extensions).await
}

/// Everything the peer gets, up to the end of the stream (within 10 s).
async fn read_to_the_end(mut reader: PeerReader) -> String {
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_string(&mut text))
        .await
        .expect("the stream never ended")
        .unwrap();
    text
}

#[tokio::test]
async fn requests_that_time_out_still_queued_are_never_sent() {
    // A peer that can cancel, behind a 256-byte pipe it does not read
    // until every request below has timed out: most of them are still in
    // our queue then (500 KiB of them; the writer is held up on the first,
    // which went straight to the pipe and only in part). Those must never
    // reach the peer, neither as requests nor as cancels; the ones it got
    // are cancelled.
    let (client, reader, _writer) = a_client_behind_a_pipe_its_peer_does_not_read().await;
    const COUNT: usize = 250;
    let payload = "x".repeat(2048);
    let (client, payload) = (&client, &payload);
    let calls = (0..COUNT).map(|i| async move {
        client
            .request_raw_timeout(&(i, payload), Duration::from_millis(200))
            .await
    });
    for result in futures_util::future::join_all(calls).await {
        assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    }
    assert_eq!(client.pending_requests(), 0);
    client.close();
    let text = read_to_the_end(reader).await;
    let (mut requested, mut cancelled) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let message: Value = serde_json::from_str(line).unwrap();
        let uid = message["_IPC_REQUEST/REQUEST_UID"].as_str().unwrap().to_string();
        match message["_IPC_REQUEST/MSG_TYPE"].as_str().unwrap() {
            "_IPC_REQUEST/MSG_TYPE:REQUEST" => requested.push(uid),
            "_IPC_REQUEST/MSG_TYPE:CANCEL" => cancelled.push(uid),
            other => panic!("unexpected {other} in {line}"),
        }
    }
    assert!(
        requested.len() < COUNT / 4,
        "{} of {COUNT} requests were written though they timed out in our queue",
        requested.len()
    );
    cancelled.sort();
    requested.sort();
    assert_eq!(cancelled, requested, "exactly the requests written are cancelled");
}

#[tokio::test]
async fn requests_still_queued_when_the_session_closes_are_never_sent() {
    // As above, but the callers are told their requests failed by our own
    // close: those whose lines still wait in our queue must not reach the
    // peer afterwards (it would run requests whose callers were told they
    // failed, and a caller that retries elsewhere gets the work done twice).
    let (client, reader, _writer) = a_client_behind_a_pipe_its_peer_does_not_read().await;
    const COUNT: usize = 50;
    let payload = "x".repeat(2048);
    let calls: Vec<_> = (0..COUNT)
        .map(|i| {
            let (client, payload) = (client.clone(), payload.clone());
            tokio::spawn(async move { client.request_raw(&(i, payload)).await })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.pending_requests() < COUNT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the requests never all went out");
    client.close();
    for call in calls {
        let result = call.await.unwrap();
        assert!(
            matches!(result, Err(Error::Closed(ipc_request::CloseReason::Local))),
            "{result:?}"
        );
    }
    let text = read_to_the_end(reader).await;
    let requested = text
        .lines()
        .filter(|line| line.contains("MSG_TYPE:REQUEST"))
        .count();
    assert!(
        requested < COUNT / 4,
        "{requested} of {COUNT} requests were written after their callers were told they failed"
    );
}

#[tokio::test]
async fn the_session_default_deadline_applies() {
    let (handler, _seen) = cancel_observer();
    let config = ipc_request::SessionConfig {
        request_timeout: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, server) = tokio::join!(SessionBuilder::new().config(config).setup(a), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    assert!(matches!(
        client.request::<_, Value>("x").await,
        Err(Error::Timeout(_))
    ));
}

#[tokio::test]
async fn dropping_a_request_future_cancels_it_at_the_peer() {
    let (handler, mut seen) = cancel_observer();
    let (a, b) = Channel::pair(ChannelConfig::default());
    let (client, server) = tokio::join!(setup(a, None), setup(b, handler));
    let (client, _server) = (client.unwrap(), server.unwrap());
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.request::<_, Value>("dropped").await })
    };
    while client.pending_requests() == 0 {
        tokio::task::yield_now().await;
    }
    call.abort();
    let (key, refused) = seen.recv().await.unwrap();
    assert_eq!(key, "dropped");
    assert!(refused);
    assert_eq!(client.pending_requests(), 0);
}
