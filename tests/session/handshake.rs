//! The handshake: both sides at once or one first, a lost first request,
//! timeouts, and a peer that goes away.

use std::time::Duration;

use crate::common::{connected, ops_handler};
use ipc_request::{Channel, ChannelConfig, CloseReason, Error, SessionBuilder, setup};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn handshake_when_both_start_at_once() {
    let (a, b) = connected().await;
    assert!(a.peer().supports("error") && a.peer().supports("cancel"));
    assert!(b.peer().advertises_extensions);
}

#[tokio::test]
async fn handshake_when_one_side_starts_first() {
    for delay_a in [true, false] {
        let (a, b) = Channel::pair(ChannelConfig::default());
        let (first, second) = if delay_a { (b, a) } else { (a, b) };
        let early = tokio::spawn(setup(first, ops_handler()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!early.is_finished(), "established without a peer");
        let late = setup(second, ops_handler()).await.unwrap();
        let early = early.await.unwrap().unwrap();
        let got: Value = late.request(&json!({"op":"echo","data":1})).await.unwrap();
        assert_eq!(got, json!(1));
        let got: Value = early.request(&json!({"op":"echo","data":2})).await.unwrap();
        assert_eq!(got, json!(2));
    }
}

#[tokio::test]
async fn handshake_when_the_first_request_is_lost() {
    let (a_io, mut b_io) = tokio::io::duplex(64 * 1024);
    let a = tokio::spawn(setup(
        Channel::from_stream(a_io, ChannelConfig::default()),
        ops_handler(),
    ));
    // Nobody listens on b yet: read a's handshake request off the stream and
    // throw it away, as a Node peer without a listener would.
    let mut lost = Vec::new();
    loop {
        let byte = b_io.read_u8().await.unwrap();
        if byte == b'\n' {
            break;
        }
        lost.push(byte);
    }
    assert!(
        String::from_utf8(lost)
            .unwrap()
            .contains("HANDSHAKE_MSG_TYPE:REQUEST")
    );
    let b = setup(
        Channel::from_stream(b_io, ChannelConfig::default()),
        ops_handler(),
    )
    .await
    .unwrap();
    let a = a.await.unwrap().unwrap();
    let got: Value = a.request(&json!({"op":"echo","data":"x"})).await.unwrap();
    assert_eq!(got, json!("x"));
    let got: Value = b.request(&json!({"op":"echo","data":"y"})).await.unwrap();
    assert_eq!(got, json!("y"));
}

#[tokio::test]
async fn handshake_times_out_when_nobody_answers() {
    let (a, _b_unused) = tokio::io::duplex(1024);
    let config = ipc_request::SessionConfig {
        handshake_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let err = SessionBuilder::new()
        .config(config)
        .setup(Channel::from_stream(a, ChannelConfig::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::HandshakeTimeout(d) if d == Duration::from_millis(100)),
        "{err}"
    );
}

#[tokio::test]
async fn handshake_times_out_when_even_our_request_cannot_go_out() {
    // Something was sent on the channel before setup, and the peer reads
    // nothing: our handshake request waits for queue space, within the
    // deadline.
    let (a, _b_unread) = tokio::io::duplex(1024);
    let channel = Channel::from_stream(a, ChannelConfig::default());
    channel.sender().send(&"x".repeat(2 << 20)).await.unwrap();
    let config = ipc_request::SessionConfig {
        handshake_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let setup = SessionBuilder::new().config(config).setup(channel);
    let err = tokio::time::timeout(Duration::from_secs(5), setup)
        .await
        .expect("the handshake deadline did not cover sending our request")
        .unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout(_)), "{err}");
}

#[tokio::test]
async fn handshake_fails_at_once_when_the_peer_goes_away() {
    let (a, b) = tokio::io::duplex(1024);
    let started = std::time::Instant::now();
    let setup = tokio::spawn(setup(Channel::from_stream(a, ChannelConfig::default()), None));
    drop(b);
    let err = setup.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Closed(CloseReason::PeerClosed)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
