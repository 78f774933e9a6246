//! The session over in-memory pairs: handshake orders, requests both ways,
//! ordering, many in flight, plain messages, failures.

#[path = "../common/mod.rs"]
mod common;

mod backlog;
mod failures;
mod handshake;
mod messages;
mod requests;
mod write_failures_and_shutdown;

use ipc_request::{Channel, ChannelConfig, setup};

/// A session over a real socket pair, and the other end's halves, its
/// handshake answered by hand as ipc-request 1.0.
pub(crate) async fn a_session_with_a_hand_played_peer_over_a_socket() -> (
    ipc_request::Session,
    tokio::net::unix::OwnedReadHalf,
    tokio::net::unix::OwnedWriteHalf,
) {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let ours = Channel::from_unix(ours, ChannelConfig::default()).unwrap();
    let (mut their_read, mut their_write) = theirs.into_split();
    let (client, ()) = tokio::join!(
        setup(ours, None),
        common::answer_handshake_as_one_dot_zero(&mut their_read, &mut their_write)
    );
    (client.unwrap(), their_read, their_write)
}
