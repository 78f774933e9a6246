//! A peer played by hand: a session over one end of an in-memory pipe,
//! and the test writing and reading the other end's raw lines.

use std::time::Duration;

use ipc_request::{Channel, ChannelConfig, SessionBuilder, SessionConfig};

/// A session with one handler slot, serving a hand-played peer that speaks
/// `error` and `cancel`: the session, its message stream and the peer's two
/// halves.
pub async fn one_handler_slot_for_a_hand_played_peer(
    handler: ipc_request::Handler,
) -> (
    ipc_request::Session,
    ipc_request::Messages,
    PeerReader,
    PeerWriter,
) {
    let config = SessionConfig {
        max_concurrent_handlers: 1,
        ..SessionConfig::default()
    };
    let (server, reader, writer) =
        serve_a_hand_played_peer_with(config, handler, 4096, Some(&["error", "cancel"])).await;
    let messages = server.messages().unwrap();
    (server, messages, reader, writer)
}

/// Writes a plain message and waits for it: once it is out, the session's
/// reader has been through every line written before it.
pub async fn wait_until_read(writer: &mut PeerWriter, messages: &mut ipc_request::Messages) {
    use tokio::io::AsyncWriteExt;
    writer.write_all(b"\"read so far\"\n").await.unwrap();
    let marker = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .unwrap();
    assert_eq!(marker.unwrap().unwrap(), "read so far");
}

pub type PeerReader = tokio::io::ReadHalf<tokio::io::DuplexStream>;
pub type PeerWriter = tokio::io::WriteHalf<tokio::io::DuplexStream>;

/// A session with `handler`, over an in-memory pipe of `capacity` bytes
/// each way, whose peer is played by hand as ipc-request 1.0 (no
/// extensions: it cannot cancel). Returns the session and the peer's ends.
pub async fn serve_a_one_dot_zero_peer(
    handler: ipc_request::Handler,
    config: ChannelConfig,
    capacity: usize,
) -> (ipc_request::Session, PeerReader, PeerWriter) {
    serve_a_hand_played_peer(handler, config, capacity, None).await
}

/// [`serve_a_one_dot_zero_peer`], with a peer that advertises `extensions`
/// (`None`: none, as 1.0).
pub async fn serve_a_hand_played_peer(
    handler: ipc_request::Handler,
    config: ChannelConfig,
    capacity: usize,
    extensions: Option<&[&str]>,
) -> (ipc_request::Session, PeerReader, PeerWriter) {
    let (ours, theirs) = tokio::io::duplex(capacity);
    serve_over(
        ours,
        theirs,
        SessionBuilder::new().handler(handler),
        config,
        extensions,
    )
    .await
}

/// [`serve_a_hand_played_peer`] with session settings of its own, over the
/// default channel settings.
pub async fn serve_a_hand_played_peer_with(
    session_config: SessionConfig,
    handler: ipc_request::Handler,
    capacity: usize,
    extensions: Option<&[&str]>,
) -> (ipc_request::Session, PeerReader, PeerWriter) {
    let (ours, theirs) = tokio::io::duplex(capacity);
    let builder = SessionBuilder::new().config(session_config).handler(handler);
    serve_over(ours, theirs, builder, ChannelConfig::default(), extensions).await
}

pub async fn serve_over(
    ours: tokio::io::DuplexStream,
    theirs: tokio::io::DuplexStream,
    builder: SessionBuilder,
    config: ChannelConfig,
    extensions: Option<&[&str]>,
) -> (ipc_request::Session, PeerReader, PeerWriter) {
    let (mut reader, mut writer) = tokio::io::split(theirs);
    let server = tokio::spawn(builder.setup(Channel::from_stream(ours, config)));
    super::answer_handshake(&mut reader, &mut writer, extensions).await;
    (server.await.unwrap().unwrap(), reader, writer)
}

/// Writes a 1.0 request with UID `n` and payload `n`.
pub async fn send_one_dot_zero_request(writer: &mut PeerWriter, n: u64) {
    write_protocol_line(writer, "REQUEST", &n.to_string(), &n.to_string()).await;
}

/// The next line the hand-played peer reads, within 10 s (else `missing`
/// is the failure).
pub async fn next_line(reader: &mut PeerReader, missing: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), super::read_line(reader))
        .await
        .expect(missing)
}

/// Writes one line as a hand-played peer: a message of `kind` (`REQUEST`,
/// `CANCEL`) with `uid`, and `payload` as JSON text.
pub async fn write_protocol_line(writer: &mut PeerWriter, kind: &str, uid: &str, payload: &str) {
    use tokio::io::AsyncWriteExt;
    let line = format!(
        "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:{kind}\",\
         \"_IPC_REQUEST/REQUEST_UID\":\"{uid}\",\"_IPC_REQUEST/PAYLOAD\":{payload}}}\n"
    );
    writer.write_all(line.as_bytes()).await.unwrap();
}
