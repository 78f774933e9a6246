//! A duplex of framed messages over any async byte stream.
//!
//! A [`Channel`] is two halves:
//!
//! * [`ChannelSender`] (cheap to clone) encodes a message on the caller's task
//!   and writes it straight to the stream when nothing is queued and the
//!   stream takes it at once; otherwise it puts the line on a queue that one
//!   writer task drains, coalescing every line queued at that moment into one
//!   `write` call. The queue is bounded in **bytes** (a semaphore of byte
//!   permits): when the peer stops reading, the socket fills, the writer
//!   stalls, the budget runs out and senders wait. A single message larger
//!   than the whole budget takes the whole budget, so it still goes through,
//!   alone.
//! * [`ChannelReceiver`] reads large chunks and hands out every complete
//!   line in them. Node's internal messages (PROTOCOL.md 1.3) never reach
//!   the caller: a `NODE_HANDLE` is answered with `NODE_HANDLE_NACK` (or the
//!   Node peer would queue everything after it forever) and other `NODE_`
//!   commands are dropped.
//!
//! The descriptor a `NODE_HANDLE` carries (SCM_RIGHTS) is never installed in
//! this process: we read with `recvmsg(2)` and no room for ancillary data, and
//! the kernel then discards the passed descriptors (Linux `scm_recv`, and
//! likewise on macOS). So "close any fd that came with it" holds by
//! construction; a test counts our open descriptors to keep proving it.

mod unix;
mod writer;

use std::borrow::Cow;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

pub(crate) use unix::HangUpProbe;
pub use writer::ChannelSender;
pub(crate) use writer::line_text;

use crate::error::{CloseReason, Error};
use crate::frame::{self, FrameDecoder, LineText, Message};

/// Settings of a channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Longest message line, in bytes, read or written (default
    /// [`frame::DEFAULT_MAX_MESSAGE_LEN`], 64 MiB). Longer incoming lines are
    /// skipped with [`FrameError::TooLong`](crate::FrameError::TooLong);
    /// longer outgoing messages are refused before anything is written.
    pub max_message_len: usize,
    /// How many bytes may wait in the outgoing queue before senders wait
    /// (default 1 MiB: enough to fill a socket buffer several times over, so
    /// the writer always has a batch ready, small enough not to matter).
    pub write_queue_bytes: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_message_len: frame::DEFAULT_MAX_MESSAGE_LEN,
            write_queue_bytes: 1024 * 1024,
        }
    }
}

/// How long a receiver goes on reading after our writes failed, before the
/// failure ends the channel (see `ChannelReceiver::recv_with`): time for
/// the reactor to report what a departing peer wrote, and its end of
/// stream, which then ends the channel as usual.
pub(crate) const WRITE_FAILURE_GRACE: Duration = Duration::from_millis(200);

/// Whether a write failed as writes to a peer that is gone do (a broken
/// pipe, a reset): then the peer's going is the story, not the write.
pub(crate) fn failed_as_peer_gone(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::NotConnected
    )
}

/// Size of the read buffer reserved before each read. Reading big chunks and
/// parsing every complete line in them keeps syscalls per message low.
const READ_CHUNK: usize = 64 * 1024;

/// The status a peer process ended with, published by whoever owns it
/// (the process layer); the session reads it to say how a channel ended.
pub type PeerExit = watch::Receiver<Option<ExitStatus>>;

/// A framed duplex over a byte stream. See the module docs.
pub struct Channel {
    sender: ChannelSender,
    receiver: ChannelReceiver,
    peer_exit: Option<PeerExit>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("sender", &self.sender)
            .field("receiver", &self.receiver)
            .field("has_peer_exit", &self.peer_exit.is_some())
            .finish()
    }
}

impl Channel {
    /// A channel over separate read and write halves. Spawns the writer task,
    /// so it must be called inside a Tokio runtime, and one with timers
    /// (`enable_all`, or `enable_time`: after a failed write the receiver
    /// reads on for a while, see [`ChannelReceiver::recv`]).
    pub fn new<R, W>(reader: R, writer: W, config: ChannelConfig) -> Channel
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let sender = ChannelSender::start(writer, &config);
        let receiver = ChannelReceiver {
            reader: Box::new(reader),
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: FrameDecoder::new(config.max_message_len),
            sender: sender.clone(),
            nacks_owed: 0,
            at_eof: false,
            write_failure_grace: None,
            hang_up_probe: None,
        };
        Channel {
            sender,
            receiver,
            peer_exit: None,
        }
    }

    /// A channel over one bidirectional stream (TCP, duplex, ...), split with
    /// `tokio::io::split`. For a Unix socket use [`Channel::from_unix`]:
    /// `tokio::net::UnixStream` can miss the data that follows a message
    /// carrying a descriptor (a Node handle), and wakes for every message
    /// the peer reads.
    pub fn from_stream<S>(stream: S, config: ChannelConfig) -> Channel
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        Channel::new(r, w, config)
    }

    /// A channel over a Unix stream socket (what Node uses), split without a
    /// lock. The socket is registered for readable events only and for
    /// writable ones only while it is full (see `channel/unix.rs` for the
    /// wake-ups that saves).
    pub fn from_unix(stream: tokio::net::UnixStream, config: ChannelConfig) -> Result<Channel, Error> {
        let socket = stream.into_std().map_err(|e| Error::Io(Arc::new(e)))?;
        Channel::from_unix_socket(socket.into(), config)
    }

    /// The same for a connected Unix stream socket's descriptor, which must
    /// be non-blocking already.
    pub(crate) fn from_unix_socket(socket: OwnedFd, config: ChannelConfig) -> Result<Channel, Error> {
        let (r, w) = unix::split(socket).map_err(|e| Error::Io(Arc::new(e)))?;
        let hang_up_probe = r.hang_up_probe();
        let mut channel = Channel::new(r, w, config);
        channel.receiver.hang_up_probe = Some(hang_up_probe);
        Ok(channel)
    }

    /// Two connected channels in memory, for tests and benchmarks.
    pub fn pair(config: ChannelConfig) -> (Channel, Channel) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        (
            Channel::from_stream(a, config.clone()),
            Channel::from_stream(b, config),
        )
    }

    /// Attaches the exit status of the peer process, so that a session over
    /// this channel can say how the peer ended (set by [`crate::process`]).
    pub fn set_peer_exit(&mut self, peer_exit: PeerExit) {
        self.peer_exit = Some(peer_exit);
    }

    /// Splits into the sending half, the receiving half and the peer's exit
    /// status source (if one was attached).
    pub fn into_parts(self) -> (ChannelSender, ChannelReceiver, Option<PeerExit>) {
        (self.sender, self.receiver, self.peer_exit)
    }

    /// The sending half.
    pub fn sender(&self) -> &ChannelSender {
        &self.sender
    }

    /// Receives the next message; see [`ChannelReceiver::recv`].
    pub async fn recv(&mut self) -> Result<Option<Message>, Error> {
        self.receiver.recv().await
    }
}

/// The receiving half of a channel.
pub struct ChannelReceiver {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// Used to answer `NODE_HANDLE` with `NODE_HANDLE_NACK`.
    sender: ChannelSender,
    /// NACKs owed to the peer and not yet queued: a `recv` dropped while a
    /// NACK waited for queue space leaves it to the next `recv`. (Node
    /// holds back every later message until its handle is answered.)
    nacks_owed: usize,
    at_eof: bool,
    /// Armed when a read would wait after our writes failed: how long we
    /// go on reading before the failure ends the channel (see `recv_with`).
    write_failure_grace: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Over a Unix socket: asks whether the peer hung up, without reading.
    hang_up_probe: Option<HangUpProbe>,
}

impl std::fmt::Debug for ChannelReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelReceiver")
            .field("buffered_bytes", &self.buf.len())
            .field("at_eof", &self.at_eof)
            .finish_non_exhaustive()
    }
}

impl ChannelReceiver {
    /// The next message from the peer.
    ///
    /// * `Ok(Some(message))`: one JSON value.
    /// * `Ok(None)`: end of stream (an unfinished trailing line is dropped).
    /// * `Err(Error::Frame(_))`: one bad line (too long, not JSON); it has
    ///   been skipped and the next call goes on.
    /// * `Err(Error::Closed(CloseReason::Io(_)))`: reading failed, or
    ///   writing did, and no end of stream came within 200 ms of this
    ///   receiver seeing it (what the peer wrote meanwhile is handed out
    ///   first); the channel is finished. A peer that is gone fails our
    ///   writes too (a broken pipe), and its stream then ends as usual,
    ///   after what it wrote.
    ///
    /// Cancel safe: if the future is dropped, no message is lost, and an
    /// answer owed to one of Node's own messages goes out with the next call.
    pub async fn recv(&mut self) -> Result<Option<Message>, Error> {
        self.recv_with(|line| frame::parse_message(line.text()).map(Parsed::Unchecked))
            .await
    }

    /// [`recv`](Self::recv) with each line's text parsed by `parse` (see
    /// [`FrameDecoder::decode_with`]); Node's internal messages are taken out
    /// and never returned. A line `parse` says cannot be one of them (see
    /// [`Parsed`]) is not searched for Node's `cmd`.
    pub(crate) async fn recv_with<T>(
        &mut self,
        parse: impl Fn(LineText<'_>) -> Result<Parsed<T>, serde_json::Error>,
    ) -> Result<Option<T>, Error> {
        loop {
            self.send_owed_nacks().await;
            let parse_line = |line: LineText<'_>| match parse(line) {
                Ok(Parsed::NotNodes(value)) => Ok(Line::Message(value)),
                Ok(Parsed::Unchecked(value)) => Ok(match node_internal_cmd(line.text()) {
                    Some(cmd) => Line::NodeInternal(cmd),
                    None => Line::Message(value),
                }),
                // Node's reader may take a line for its own that `parse`
                // refuses (another parser's limits): then it is Node's.
                Err(error) => node_internal_cmd(line.text())
                    .map(Line::NodeInternal)
                    .ok_or(error),
            };
            let decoded = if self.at_eof {
                self.decoder.decode_eof_with(&mut self.buf, parse_line)
            } else {
                self.decoder.decode_with(&mut self.buf, parse_line)
            };
            match decoded {
                Ok(Some(Line::NodeInternal(cmd))) => {
                    self.handle_node_internal(&cmd);
                    continue;
                }
                Ok(Some(Line::Message(msg))) => return Ok(Some(msg)),
                Ok(None) if self.at_eof => return Ok(None),
                Ok(None) => {}
                Err(e) => return Err(Error::Frame(e)),
            }
            if self.buf.is_empty() {
                // Every line read so far is handed out: start the next one
                // at the front of the allocation. `BytesMut` would otherwise
                // go on filling the space after the last line and, once it
                // reaches the end, copy the new line back to the front (or
                // grow): a 16 MiB copy per big message in an echo, seen in
                // its profile. Never allocates; copies nothing here.
                let _ = self.buf.try_reclaim(self.buf.capacity() + 1);
            }
            self.buf.reserve(READ_CHUNK);
            // Once our writes have failed, the channel is finished: the
            // lines queued then are lost, and whoever waits for answers to
            // them would wait for ever if the peer, still there, never ends
            // its stream (it shut down only its reading side; pipes; an
            // epoll registration that failed). But a peer that is simply
            // gone fails our writes too (a broken pipe), and what it wrote
            // before must still be read, with its end of stream: a read
            // that would wait does not prove nothing is there, the reactor
            // may not have reported it yet. So reading goes on for
            // WRITE_FAILURE_GRACE after the failure is first seen here, and
            // the failure ends the channel only when a read would wait
            // after that.
            let (sender, grace) = (&self.sender, &mut self.write_failure_grace);
            let mut read = std::pin::pin!(self.reader.read_buf(&mut self.buf));
            let read = std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
                Poll::Ready(result) => Poll::Ready(Ok(result)),
                Poll::Pending => match sender.poll_write_failed(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(reason) => grace
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_FAILURE_GRACE)))
                        .as_mut()
                        .poll(cx)
                        .map(|()| Err(reason)),
                },
            });
            match read.await {
                Ok(Ok(0)) => self.at_eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => self.at_eof = true,
                Ok(Err(e)) => return Err(Error::Closed(CloseReason::Io(Arc::new(e)))),
                Err(write_failure) => return Err(Error::Closed(write_failure)),
            }
        }
    }

    /// Over a Unix socket, a probe that tells whether the peer has hung up
    /// without reading what it sent first (see [`HangUpProbe`]); `None`
    /// over other streams.
    pub(crate) fn hang_up_probe(&self) -> Option<HangUpProbe> {
        self.hang_up_probe.clone()
    }

    /// The first bytes of the line last reported as too long (see
    /// [`FrameDecoder::too_long_head`]).
    pub(crate) fn too_long_head(&self) -> &[u8] {
        self.decoder.too_long_head()
    }

    /// Bytes already read and not yet handed out: non-zero means more
    /// messages are probably waiting, which the session uses to batch its
    /// answers into one write.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Handles one of Node's own messages (PROTOCOL.md 1.3), which never
    /// surface. A `NODE_HANDLE` is refused with a NACK (sent by
    /// [`send_owed_nacks`](Self::send_owed_nacks) before anything more is
    /// read); the descriptor that came with it was discarded by the kernel
    /// (see the module docs).
    fn handle_node_internal(&mut self, cmd: &str) {
        if cmd == "NODE_HANDLE" {
            self.nacks_owed += 1;
            tracing::debug!("refusing a handle from the peer (NODE_HANDLE_NACK)");
        } else {
            tracing::trace!("ignored Node internal message {cmd}");
        }
    }

    /// Queues the NACKs owed. Each waits for queue space like any line: a
    /// peer that floods us with handles and reads nothing is slowed down,
    /// not buffered without end. Cancel safe: a NACK counts as sent only
    /// once queued (`send_line` queues nothing if dropped while waiting).
    async fn send_owed_nacks(&mut self) {
        while self.nacks_owed > 0 {
            let line = br#"{"cmd":"NODE_HANDLE_NACK"}"#.iter().chain(b"\n").copied().collect();
            if self.sender.send_line(line).await.is_err() {
                // Closed: nothing more is written, to anyone.
                self.nacks_owed = 0;
                return;
            }
            self.nacks_owed -= 1;
        }
    }
}

/// A line as the parser of [`ChannelReceiver::recv_with`] read it.
pub(crate) enum Parsed<T> {
    /// The parser knows every top-level key of the line and none is `cmd`
    /// (the protocol layer's exact form): it cannot be one of Node's own
    /// messages, and the search for one is skipped. That search is two
    /// scans of the whole line: 5% of a 16 MiB echo.
    NotNodes(T),
    /// Anything else: it is one of Node's if [`node_internal_cmd`] says so.
    Unchecked(T),
}

/// One line, sorted.
enum Line<T> {
    /// One of Node's own messages: its `cmd`.
    NodeInternal(String),
    /// Anything else, parsed.
    Message(T),
}

/// The `cmd` of a Node internal message (an object whose `cmd` is a string
/// longer than 5 characters starting with `NODE_`), or `None`.
///
/// Read as Node's `JSON.parse` reads it, because what matters is what the
/// Node peer will see: keys are decoded (`"\u0063md"` is `cmd`) and of
/// duplicate keys the last wins. Only the value of `cmd` is kept; the rest
/// is skipped without building anything.
pub(crate) fn node_internal_cmd(json: &str) -> Option<String> {
    static CMD_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"cmd\""));
    // Fast path: only an object can be one, and its key can only be `cmd`
    // if the text says so literally or has an escape somewhere.
    if !json.starts_with('{')
        || (CMD_FINDER.find(json.as_bytes()).is_none() && memchr::memchr(b'\\', json.as_bytes()).is_none())
    {
        return None;
    }
    struct LastCmd;
    impl<'de> serde::de::Visitor<'de> for LastCmd {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // Every `cmd` is only skipped over (as raw text): an earlier
            // duplicate that a value tree would refuse (`1e400`, deep
            // nesting) must not hide the last one, which Node reads.
            let mut cmd: Option<&'de RawValue> = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == "cmd" {
                    cmd = Some(map.next_value()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(cmd.and_then(json_string))
        }
    }
    // Node keeps a key with a lone surrogate escape, which serde_json
    // refuses; read it as U+FFFD, as the frame decoder does, so that such
    // a key cannot hide the rest of the object.
    let fixed = frame::replace_lone_surrogates(json.as_bytes());
    let text = match &fixed {
        Some(fixed) => std::str::from_utf8(fixed).ok()?,
        None => json,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let cmd = serde::Deserializer::deserialize_map(&mut de, LastCmd).ok()??;
    // The whole text must be one JSON value: `{"cmd":"NODE_HANDLE"} x` is a
    // bad line, not a handle (and a line the session's parser refused is
    // Node's only if it is one value).
    de.end().ok()?;
    (cmd.len() > 5 && cmd.starts_with("NODE_")).then_some(cmd)
}

/// The string `raw` holds, or `None` if it is not a string. A lone
/// surrogate (which Node's strings may hold) reads as U+FFFD, so that a
/// `cmd` that starts with `NODE_` is still seen to.
fn json_string(raw: &RawValue) -> Option<String> {
    if !raw.get().starts_with('"') {
        return None;
    }
    let fixed = frame::replace_lone_surrogates(raw.get().as_bytes());
    serde_json::from_slice(fixed.as_deref().unwrap_or(raw.get().as_bytes())).ok()
}

#[cfg(test)]
mod tests {
    use super::node_internal_cmd;

    #[test]
    fn finished_resolves_when_the_writer_task_was_dropped_before_it_ran() {
        // A channel made on a runtime that shuts down before its writer task
        // is first polled, then used on another: nothing may wait for ever.
        let (ours, _theirs) = tokio::io::duplex(64);
        let first = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let channel =
            first.block_on(async { super::Channel::from_stream(ours, super::ChannelConfig::default()) });
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let finished = second.block_on(async {
            let waited = std::time::Duration::from_secs(5);
            tokio::time::timeout(waited, channel.sender().finished()).await
        });
        assert!(finished.is_ok(), "finished() waits for a writer that is gone");
    }

    #[tokio::test]
    async fn lines_left_unwritten_by_a_failed_channel_give_their_budget_back() {
        let (ours, theirs) = tokio::io::duplex(64);
        let channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
        let sender = channel.sender().clone();
        for i in 0..10 {
            sender.send(&format!("{i:0>96}")).await.unwrap();
        }
        assert!(
            sender.queued_bytes() > 0,
            "the lines should wait: the pipe holds 64 bytes"
        );
        drop(theirs);
        let drained = async {
            while sender.queued_bytes() > 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), drained)
            .await
            .expect("the budget of unwritten lines was never given back");
        assert!(sender.send(&1).await.is_err(), "the channel has failed");
    }

    /// A write half that fails every write, after taking nothing the first
    /// time if `waits_first` (the line then goes on to the writer task);
    /// its shutdown is `inner`'s.
    struct BrokenWriter<W> {
        inner: W,
        waits_first: bool,
    }

    fn broken() -> BrokenWriter<tokio::io::Sink> {
        BrokenWriter {
            inner: tokio::io::sink(),
            waits_first: false,
        }
    }

    impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for BrokenWriter<W> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if std::mem::take(&mut self.waits_first) {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(Err(std::io::Error::other("broken")))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_failed_write_shuts_the_write_half_down_on_either_path() {
        // The direct path (nothing queued: the sender writes, and fails) and
        // the writer task's (the line waits first): either way a peer still
        // there sees the channel end at once, though our handles live.
        use tokio::io::AsyncReadExt;
        for waits_first in [false, true] {
            let (ours, mut theirs) = tokio::io::duplex(1024);
            let (read_half, write_half) = tokio::io::split(ours);
            let writer = BrokenWriter {
                inner: write_half,
                waits_first,
            };
            let channel = super::Channel::new(read_half, writer, super::ChannelConfig::default());
            let _ = channel.sender().send(&1).await;
            let mut byte = [0u8; 1];
            let seen = tokio::time::timeout(std::time::Duration::from_secs(5), theirs.read(&mut byte)).await;
            assert_eq!(
                seen.expect("the peer never saw the channel end").unwrap(),
                0,
                "waits_first {waits_first}"
            );
            drop(channel);
        }
    }

    /// Takes nothing until `fail` is set, then fails; its shutdown never
    /// completes.
    struct FailsLaterNeverShutsDown {
        fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
        waker: std::sync::Arc<std::sync::Mutex<Option<std::task::Waker>>>,
    }

    impl tokio::io::AsyncWrite for FailsLaterNeverShutsDown {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return std::task::Poll::Ready(Err(std::io::Error::other("broken")));
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn lines_lost_to_a_failed_write_give_their_budget_back_though_the_shutdown_hangs() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker = std::sync::Arc::new(std::sync::Mutex::new(None::<std::task::Waker>));
        let writer = FailsLaterNeverShutsDown {
            fail: fail.clone(),
            waker: waker.clone(),
        };
        let channel = super::Channel::new(ours, writer, super::ChannelConfig::default());
        let sender = channel.sender().clone();
        // The first line waits in the writer task, which holds the stream;
        // the next two queue behind it.
        sender.send(&"first").await.unwrap();
        while waker.lock().unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        sender.send(&"second").await.unwrap();
        let written = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send_line_written(b"\"third\"\n".to_vec()).await }
        });
        tokio::task::yield_now().await;
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        waker.lock().unwrap().take().unwrap().wake();
        let written = tokio::time::timeout(std::time::Duration::from_secs(5), written)
            .await
            .expect("a sender waiting for its lost line to be written waits for ever")
            .unwrap();
        assert!(written.is_err(), "the line was never written");
        let released = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while sender.queued_bytes() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            released.is_ok(),
            "{} bytes of budget never came back",
            sender.queued_bytes()
        );
    }

    #[tokio::test]
    async fn after_a_failed_write_the_receiver_hands_out_what_came_then_ends() {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut channel = super::Channel::new(ours, broken(), super::ChannelConfig::default());
        theirs.write_all(b"1\n2\n").await.unwrap();
        assert!(channel.sender().send(&0).await.is_err(), "the write fails");
        let mut next = async || tokio::time::timeout(std::time::Duration::from_secs(5), channel.recv()).await;
        assert_eq!(next().await.unwrap().unwrap().unwrap().get(), "1");
        assert_eq!(next().await.unwrap().unwrap().unwrap().get(), "2");
        // The peer's end is still open: only the failed write can end this.
        match next()
            .await
            .expect("the receiver waited for more after the channel failed")
        {
            Err(crate::Error::Closed(crate::CloseReason::Io(e))) => assert_eq!(e.to_string(), "broken"),
            other => panic!("{other:?}"),
        }
        drop(theirs);
    }

    #[tokio::test]
    async fn what_a_gone_peer_wrote_is_read_though_a_write_to_it_failed_first() {
        // The peer writes its last line and goes; our next write fails
        // (a broken pipe) before the reactor has reported the line.
        use std::io::Write;
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut channel =
            super::Channel::from_unix_socket(ours.into(), super::ChannelConfig::default()).unwrap();
        theirs.write_all(b"\"the last line\"\n").unwrap();
        drop(theirs);
        assert!(channel.sender().send(&0).await.is_err(), "the peer is gone");
        let mut next = async || tokio::time::timeout(std::time::Duration::from_secs(5), channel.recv()).await;
        assert_eq!(next().await.unwrap().unwrap().unwrap().get(), "\"the last line\"");
        assert!(next().await.unwrap().unwrap().is_none(), "then its end of stream");
    }

    #[tokio::test]
    async fn a_closed_pipe_to_a_peer_whose_other_pipe_stays_open_still_ends_the_receiver() {
        // Pipes, as a child's stdin and stdout: the peer closes the one we
        // write to (a broken pipe) and keeps the one we read.
        let (our_tx, their_rx) = tokio::net::unix::pipe::pipe().unwrap();
        let (their_tx, our_rx) = tokio::net::unix::pipe::pipe().unwrap();
        let mut channel = super::Channel::new(our_rx, our_tx, super::ChannelConfig::default());
        drop(their_rx);
        // Refused or accepted (then lost): either way the write fails.
        let _ = channel.sender().send(&0).await;
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), channel.recv())
            .await
            .expect("the receiver waits for ever after the failure");
        assert!(
            matches!(ended, Err(crate::Error::Closed(crate::CloseReason::Io(_)))),
            "{ended:?}"
        );
        drop(their_tx);
    }

    #[tokio::test]
    async fn a_write_failing_while_close_drains_is_reported_as_the_failure() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let channel = super::Channel::new(
            ours,
            BrokenWriter {
                inner: tokio::io::sink(),
                waits_first: true,
            },
            super::ChannelConfig::default(),
        );
        let (sender, mut receiver, _) = channel.into_parts();
        sender
            .send(&1)
            .await
            .expect("accepted: the writer task writes it");
        sender.close();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), receiver.recv()).await;
        match ended.expect("the receiver waits for ever after the failure") {
            Err(crate::Error::Closed(crate::CloseReason::Io(e))) => assert_eq!(e.to_string(), "broken"),
            other => panic!("a lost line is no clean close: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_write_failing_while_the_receiver_waits_wakes_it() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let channel = super::Channel::new(ours, broken(), super::ChannelConfig::default());
        let (sender, mut receiver, _) = channel.into_parts();
        let waiting = tokio::spawn(async move { receiver.recv().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing to read yet");
        assert!(sender.send(&0).await.is_err());
        let received = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiting receiver was not woken by the failure")
            .unwrap();
        assert!(
            matches!(received, Err(crate::Error::Closed(crate::CloseReason::Io(_)))),
            "{received:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_send_reported_queued_is_written_when_close_races_it() {
        // Three tasks send as fast as the pipe allows while a fourth closes
        // the channel: each line whose send said Ok must reach the peer
        // before its end of stream, each later send must fail.
        for round in 0..100u64 {
            let (ours, theirs) = tokio::io::duplex(256);
            let ours = super::Channel::from_stream(ours, super::ChannelConfig::default());
            let mut theirs = super::Channel::from_stream(theirs, super::ChannelConfig::default());
            let reader = tokio::spawn(async move {
                let mut lines = 0u64;
                while theirs.recv().await.unwrap().is_some() {
                    lines += 1;
                }
                lines
            });
            let senders: Vec<_> = (0..3)
                .map(|_| {
                    let sender = ours.sender().clone();
                    tokio::spawn(async move {
                        let mut sent = 0u64;
                        while sender.send(&sent).await.is_ok() {
                            sent += 1;
                        }
                        sent
                    })
                })
                .collect();
            tokio::time::sleep(std::time::Duration::from_micros(round % 64)).await;
            ours.sender().close();
            let mut sent = 0;
            for task in senders {
                sent += task.await.unwrap();
            }
            let lines = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
                .await
                .expect("the stream never ended")
                .unwrap();
            assert_eq!(lines, sent, "round {round}: lines read / sends that said Ok");
        }
    }

    #[tokio::test]
    async fn a_channel_dropped_without_close_ends_the_stream_after_its_lines() {
        // Over a real socket pair, as a spawned child's channel is: the
        // peer must see what was sent, then end of stream, not wait for ever.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        for s in [&ours, &theirs] {
            s.set_nonblocking(true).unwrap();
        }
        let config = super::ChannelConfig::default();
        let ours = super::Channel::from_unix_socket(ours.into(), config.clone()).unwrap();
        let mut theirs = super::Channel::from_unix_socket(theirs.into(), config).unwrap();
        ours.sender().send(&"last words").await.unwrap();
        drop(ours);
        let within = std::time::Duration::from_secs(5);
        let got = tokio::time::timeout(within, theirs.recv()).await.expect("a line");
        assert_eq!(got.unwrap().unwrap().get(), "\"last words\"");
        let end = tokio::time::timeout(within, theirs.recv())
            .await
            .expect("the stream never ended");
        assert!(matches!(end, Ok(None)), "{end:?}");
    }

    #[tokio::test]
    async fn the_line_after_a_big_one_is_read_into_the_front_of_the_buffer() {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
        let big = format!("\"{}\"\n", "x".repeat(150_000));
        theirs.write_all(big.as_bytes()).await.unwrap();
        assert_eq!(channel.recv().await.unwrap().unwrap().get().len(), 150_002);
        theirs.write_all(b"[1]\n").await.unwrap();
        assert_eq!(channel.recv().await.unwrap().unwrap().get(), "[1]");
        // Read after the big line, the small one would leave the buffer
        // with only the space behind both (under 150,000 bytes); read at
        // the front, it leaves all of it but its own 4 bytes.
        let room = channel.receiver.buf.capacity();
        assert!(room > 150_000, "{room} bytes of room after the small line");
    }

    #[tokio::test]
    async fn node_messages_are_taken_out_unless_the_parser_rules_them_out() {
        use super::Parsed;
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let mut channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
        theirs
            .write_all(b"{\"cmd\":\"NODE_A\"}\n[1]\n{\"cmd\":\"NODE_B\"}\n[2]\n{\"cmd\":\"NODE_C\"}\n")
            .await
            .unwrap();
        drop(theirs);
        // NODE_A: unchecked, so searched and taken out. NODE_B: refused by
        // the parser, still Node's. NODE_C: ruled out, so it is a message.
        let parse = |line: crate::frame::LineText<'_>| -> Result<Parsed<String>, serde_json::Error> {
            let text = line.text();
            if text.contains("NODE_B") {
                return Err(serde::de::Error::custom("refused"));
            }
            let text = text.to_string();
            Ok(if text.contains("NODE_C") {
                Parsed::NotNodes(text)
            } else {
                Parsed::Unchecked(text)
            })
        };
        let mut got = Vec::new();
        while let Some(text) = channel.receiver.recv_with(parse).await.unwrap() {
            got.push(text);
        }
        assert_eq!(got, ["[1]", "[2]", r#"{"cmd":"NODE_C"}"#]);
    }

    #[tokio::test]
    async fn a_message_a_node_peer_would_take_for_its_own_is_refused_unsent() {
        // PROTOCOL.md 1.3: Node handles such a line itself, and an
        // unexpected NODE_ command makes it fail an internal assertion.
        let (a, mut b) = super::Channel::pair(super::ChannelConfig::default());
        for reserved in [
            serde_json::json!({"cmd": "NODE_HANDLE_ACK"}),
            serde_json::json!({"x": 1, "cmd": "NODE_anything"}),
        ] {
            let refused = a.sender().send(&reserved).await;
            assert!(
                matches!(refused, Err(crate::Error::ReservedMessage(_))),
                "{reserved}: {refused:?}"
            );
        }
        a.sender()
            .send(&serde_json::json!({"cmd": "mine"}))
            .await
            .unwrap();
        assert_eq!(b.recv().await.unwrap().unwrap().get(), r#"{"cmd":"mine"}"#);
    }

    #[tokio::test]
    async fn a_nack_still_goes_when_the_recv_that_read_the_handle_is_dropped() {
        // The NACK waits for queue space; a caller's timeout around `recv`
        // drops it there. The next `recv` must send it: a Node peer holds
        // back everything after a handle until it is answered.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, theirs) = tokio::io::duplex(64);
        let (mut their_reader, mut their_writer) = tokio::io::split(theirs);
        let config = super::ChannelConfig {
            write_queue_bytes: 64,
            ..super::ChannelConfig::default()
        };
        let mut channel = super::Channel::from_stream(ours, config);
        // Fills the pipe and takes the whole queue budget.
        channel.sender().send(&"x".repeat(200)).await.unwrap();
        their_writer
            .write_all(b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\"}\n[1]\n")
            .await
            .unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), channel.recv()).await;
        assert!(waited.is_err(), "the NACK should wait for queue space");
        let reading = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut chunk = [0; 256];
            while !String::from_utf8_lossy(&seen).contains("NODE_HANDLE_NACK") {
                let n = their_reader.read(&mut chunk).await.unwrap();
                assert!(n > 0, "end of stream before the NACK");
                seen.extend_from_slice(&chunk[..n]);
            }
        });
        let next = channel.recv().await.unwrap().unwrap();
        assert_eq!(next.get(), "[1]");
        tokio::time::timeout(std::time::Duration::from_secs(5), reading)
            .await
            .expect("the NACK of the dropped recv never went")
            .unwrap();
    }

    #[tokio::test]
    async fn channels_over_a_unix_socket_pair_talk_both_ways() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut a = super::Channel::from_unix(a, super::ChannelConfig::default()).unwrap();
        let mut b = super::Channel::from_unix(b, super::ChannelConfig::default()).unwrap();
        a.sender().send(&serde_json::json!({"to": "b"})).await.unwrap();
        assert_eq!(b.recv().await.unwrap().unwrap().get(), r#"{"to":"b"}"#);
        b.sender().send(&[1, 2]).await.unwrap();
        assert_eq!(a.recv().await.unwrap().unwrap().get(), "[1,2]");
        a.sender().close();
        assert!(
            b.recv().await.unwrap().is_none(),
            "a closed: b sees end of stream"
        );
    }

    #[test]
    fn node_internal_commands_are_read_as_json_parse_reads_them() {
        let internal = [
            r#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"with":"handle"}}"#,
            r#"{"cmd":"x","cmd":"NODE_HANDLE_ACK"}"#,
            r#"{"\u0063md":"NODE_HANDLE_ACK"}"#,
            r#"{"a":"\n","cmd":"NODE_CLUSTER"}"#,
            // An earlier duplicate no value tree takes does not hide the
            // last one (Node: 1e400 is Infinity, depth has no limit).
            r#"{"cmd":1e400,"cmd":"NODE_HANDLE"}"#,
            &format!(
                r#"{{"cmd":{}{},"cmd":"NODE_HANDLE"}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            // A lone surrogate in the name is still a name Node reads.
            r#"{"cmd":"NODE_HANDLE\ud800"}"#,
        ];
        for json in internal {
            assert!(node_internal_cmd(json).is_some(), "{json:.80}");
        }
        let plain = [
            r#"{"cmd":"NODE_"}"#,
            r#"{"cmd":"NODE_HANDLE_ACK","cmd":"x"}"#,
            r#"{"cmd":5}"#,
            r#"["NODE_\"cmd"]"#,
            r#""{\"cmd\":\"NODE_HANDLE\"}""#,
            r#"{"nested":{"cmd":"NODE_HANDLE"}}"#,
            r#"{"cmd":"NODE_HANDLE"} trailing"#,
            r#"{"cmd":"NODE_HANDLE"}{}"#,
            r#"{"cmd":"NODE_HANDLE","cmd":1e400}"#,
        ];
        for json in plain {
            assert!(node_internal_cmd(json).is_none(), "{json}");
        }
    }
}
