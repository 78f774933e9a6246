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
mod withdrawals;
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
pub(crate) use withdrawals::LineTicket;
pub use writer::ChannelSender;
pub(crate) use writer::line_text;

use crate::error::{CloseReason, Error};
use crate::frame::{self, FrameDecoder, FrameError, LineText, Message};

/// Settings of a channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Longest message line, in bytes, read or written (default
    /// [`frame::DEFAULT_MAX_MESSAGE_LEN`], 64 MiB). Longer incoming lines are
    /// skipped with [`FrameError::TooLong`];
    /// longer outgoing messages are refused before anything is written. Lines
    /// written are capped at [`frame::NODE_MAX_LINE_LEN`] (512 MiB less 24
    /// bytes on 64-bit platforms) even if this is larger: a longer line would
    /// crash a Node peer.
    pub max_message_len: usize,
    /// How many bytes may wait in the outgoing queue before senders wait
    /// (default 1 MiB: enough to fill a socket buffer several times over, so
    /// the writer always has a batch ready, small enough not to matter).
    /// 0 is taken as 1 (a line always gets in alone), and a value past
    /// 4 GiB (on a 32-bit target, 512 MiB) as that: `usize::MAX` for "no
    /// limit".
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

/// The most a byte budget kept in a Tokio semaphore can hold, here and in
/// the session: its permits are taken a `u32` at a time, and
/// `Semaphore::new` panics past `Semaphore::MAX_PERMITS` (`usize::MAX >>
/// 3`, which on a 32-bit target is below `u32::MAX`: 512 MiB less one).
pub(crate) const MOST_BUDGET_BYTES: usize = if (u32::MAX as usize) < tokio::sync::Semaphore::MAX_PERMITS {
    u32::MAX as usize
} else {
    tokio::sync::Semaphore::MAX_PERMITS
};

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

/// The most one read appends to the buffer. Before each read the buffer
/// holds at most one unfinished line of at most `max_message_len` bytes
/// (or under [`frame::BAD_LINE_HEAD_LEN`], if that is more: see
/// [`FrameDecoder`]), so with this the reader never needs more than
/// that plus `READ_LIMIT`, and its buffer grows no further (see
/// `make_room_for_a_read`). Read into all its room, a buffer that had
/// doubled to hold a long line took as much again in one read: a line too
/// long for an 8 MiB limit held 16.9 MiB (a review). A socket rarely has
/// more than a few hundred KiB queued, so this costs no syscalls in
/// practice.
const READ_LIMIT: usize = 1024 * 1024;

/// A line too long to read that was longer than this had the buffer grow
/// for it, and the buffer is given back: a broken or hostile peer's line
/// must not cost its size for the channel's life. (One grown for a line
/// that was read is kept, for the next such line: see the README's bounds.)
const KEEP_AFTER_TOO_LONG: usize = 2 * READ_CHUNK;

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

/// Panics outside a Tokio runtime, with this crate's message and at the
/// caller's call of `function` (the public functions that call this track
/// their caller): Tokio's own panic would come from deep inside the
/// channel, naming neither.
#[track_caller]
pub(crate) fn require_runtime(function: &str) {
    if let Err(e) = tokio::runtime::Handle::try_current() {
        panic!(
            "ipc_request::{function} must be called inside a Tokio runtime with IO and timers \
             enabled ({e}); a program without one has ipc_request::blocking"
        );
    }
}

impl Channel {
    /// A channel over separate read and write halves. Spawns the writer task,
    /// so it must be called inside a Tokio runtime, and one with timers
    /// (`enable_all`, or `enable_time`: after a failed write the receiver
    /// reads on for a while, see [`ChannelReceiver::recv`]).
    #[track_caller]
    pub fn new<R, W>(reader: R, writer: W, config: ChannelConfig) -> Channel
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        require_runtime("Channel::new");
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
            #[cfg(test)]
            largest_buffer: READ_CHUNK,
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
    /// the peer reads. Panics outside a Tokio runtime, as [`Channel::new`].
    #[track_caller]
    pub fn from_stream<S>(stream: S, config: ChannelConfig) -> Channel
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        require_runtime("Channel::from_stream");
        let (r, w) = tokio::io::split(stream);
        Channel::new(r, w, config)
    }

    /// A channel over a Unix stream socket (what Node uses), split without a
    /// lock. The socket is registered for readable events only and for
    /// writable ones only while it is full (see `channel/unix.rs` for the
    /// wake-ups that saves); a write that waits for room tries again every
    /// second, as a peer that shut down its reading side makes no event.
    /// Panics outside a Tokio runtime with IO and timers, as
    /// [`Channel::new`].
    #[track_caller]
    pub fn from_unix(stream: tokio::net::UnixStream, config: ChannelConfig) -> Result<Channel, Error> {
        require_runtime("Channel::from_unix");
        let socket = stream.into_std().map_err(|e| Error::Io(Arc::new(e)))?;
        Channel::from_unix_socket(socket.into(), config)
    }

    /// The same for a connected Unix stream socket's descriptor, which must
    /// be non-blocking already.
    #[track_caller]
    pub(crate) fn from_unix_socket(socket: OwnedFd, config: ChannelConfig) -> Result<Channel, Error> {
        let (r, w) = unix::split(socket).map_err(|e| Error::Io(Arc::new(e)))?;
        let hang_up_probe = r.hang_up_probe();
        let mut channel = Channel::new(r, w, config);
        channel.receiver.hang_up_probe = Some(hang_up_probe);
        Ok(channel)
    }

    /// Two connected channels in memory, for tests and benchmarks. Panics
    /// outside a Tokio runtime, as [`Channel::new`].
    #[track_caller]
    pub fn pair(config: ChannelConfig) -> (Channel, Channel) {
        require_runtime("Channel::pair");
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
    /// The largest room for reading seen before a read (a lower bound of
    /// the buffer's allocation: `BytesMut` counts capacity from where
    /// reading resumes).
    #[cfg(test)]
    largest_buffer: usize,
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
    /// * `Ok(None)`: end of stream (an unfinished trailing line is dropped,
    ///   but for one already longer than `max_message_len`, reported first
    ///   as `Err(Error::Frame(FrameError::TooLong))`).
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
                Err(e @ FrameError::TooLong { len, .. }) => {
                    // Decided on the line's length, not on the buffer's
                    // capacity, which `BytesMut` counts from where reading
                    // resumes: a line skipped whole left little of it (a
                    // review found 8 MiB kept that way).
                    if len > KEEP_AFTER_TOO_LONG {
                        self.give_back_a_grown_buffer();
                    }
                    match node_internal_cmd_at_head(self.decoder.bad_line_head()) {
                        // Still Node's: a handle too long to read is refused
                        // like any other, or the Node peer would hold back
                        // everything it sends after it, for good.
                        Some(cmd) => {
                            tracing::warn!("skipped one of Node's own messages ({cmd}): {e}");
                            self.handle_node_internal(&cmd);
                            continue;
                        }
                        None => return Err(Error::Frame(e)),
                    }
                }
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
            self.make_room_for_a_read();
            #[cfg(test)]
            {
                self.largest_buffer = self.largest_buffer.max(self.buf.capacity());
            }
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
            let mut room = bytes::BufMut::limit(&mut self.buf, READ_LIMIT);
            let mut read = std::pin::pin!(self.reader.read_buf(&mut room));
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

    /// The first bytes of the line last reported as too long or not JSON
    /// (see [`FrameDecoder::bad_line_head`]).
    pub(crate) fn bad_line_head(&self) -> &[u8] {
        self.decoder.bad_line_head()
    }

    /// Bytes already read and not yet handed out: non-zero means more
    /// messages are probably waiting, which the session uses to batch its
    /// answers into one write.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// After a line too long to read, which grew the buffer: a small
    /// buffer instead, which keeps whatever followed that line.
    fn give_back_a_grown_buffer(&mut self) {
        let mut smaller = BytesMut::with_capacity(READ_CHUNK.max(self.buf.len()));
        smaller.extend_from_slice(&self.buf);
        self.buf = smaller;
    }

    /// Room for at least [`READ_CHUNK`] bytes: the space before the data
    /// if that is enough (no allocation), else a larger buffer, doubling as
    /// `BytesMut` would, but never past the most a read needs:
    /// `max_message_len` (the unfinished line) plus [`READ_LIMIT`]. Left to
    /// `BytesMut`, a line near a 64 MiB limit allocated 128 MiB.
    fn make_room_for_a_read(&mut self) {
        if self.buf.capacity() - self.buf.len() >= READ_CHUNK || self.buf.try_reclaim(READ_CHUNK) {
            return;
        }
        let len = self.buf.len();
        let most = self.decoder.max_len().saturating_add(READ_LIMIT);
        let grown = self
            .buf
            .capacity()
            .saturating_mul(2)
            .min(most)
            .max(len + READ_CHUNK);
        let mut larger = BytesMut::with_capacity(grown);
        larger.extend_from_slice(&self.buf);
        self.buf = larger;
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

/// The `cmd` of a Node internal message too long to read, from the first
/// bytes of its line (`head`), or `None`. Node writes its own messages with
/// `cmd` as the first key (`{"cmd":"NODE_HANDLE","type":...,"msg":...}`),
/// so a head that starts that way, literally, is one; one that does not is
/// reported as a line too long, as before. (The rest of the line cannot be
/// looked at: it is being skipped. So a line with `cmd` twice is judged by
/// the first, where Node's reader takes the last; no Node writer makes
/// one, as `JSON.stringify` writes each key once.)
fn node_internal_cmd_at_head(head: &[u8]) -> Option<String> {
    let json_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let skip_ws = |bytes: &'_ [u8]| -> usize { bytes.iter().take_while(|b| json_ws(b)).count() };
    let mut rest = head;
    for token in [&b"{"[..], b"\"cmd\"", b":"] {
        rest = &rest[skip_ws(rest)..];
        rest = rest.strip_prefix(token)?;
    }
    rest = &rest[skip_ws(rest)..];
    if rest.first() != Some(&b'"') {
        return None;
    }
    // The string's closing quote: the first `"` not escaped.
    let mut at = 1;
    let end = loop {
        match rest.get(at)? {
            b'\\' => at += 2,
            b'"' => break at,
            _ => at += 1,
        }
    };
    let token = &rest[..=end];
    let fixed = frame::replace_lone_surrogates(token);
    let cmd: String = serde_json::from_slice(fixed.as_deref().unwrap_or(token)).ok()?;
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
mod tests;
