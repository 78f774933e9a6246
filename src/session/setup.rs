//! Setting a session up: its settings, the builder, and the handshake
//! that [`setup`] waits for (PROTOCOL.md 2.1).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::backlog::Backlog;
use super::gone_peer::end_when_the_peer_is_gone_and_the_reader_held_up;
use super::incoming::read_loop;
use super::{Handler, Phase, Session, Shared, Table};
use crate::channel::Channel;
use crate::error::{CloseReason, Error};
use crate::protocol::HandshakeOut;

/// Settings of a session. `SessionConfig::default()` gives the documented
/// defaults. A count or size of 0 (`max_in_flight`,
/// `max_concurrent_handlers`, `max_queued_requests`, `message_buffer`,
/// `message_buffer_bytes`, `max_unwritten_refusal_bytes`) is taken as 1,
/// and a value past what Tokio's semaphores hold (`usize::MAX >> 3`, so
/// `usize::MAX` for "no limit") as that most; `message_buffer_bytes` and
/// `max_unwritten_refusal_bytes` at most as 4 GiB (on a 32-bit target,
/// 512 MiB), their semaphores' bound. `max_queued_request_bytes` is taken
/// as it is: at 0, one request at a time waits.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How long [`setup`] waits for the peer to complete the handshake
    /// (default 10 s: a Node child takes well under a second to start and
    /// set up; ten times that still fails a hung start quickly).
    pub handshake_timeout: Duration,
    /// Deadline applied to every request that does not set its own (default
    /// none). A dead or disconnected peer already fails every request at
    /// once, so a deadline only matters for a peer that is alive and slow,
    /// and how slow is too slow depends on the work: a default would fail
    /// long jobs that are working as intended. Set one here, or per call
    /// with [`Session::request_timeout`].
    pub request_timeout: Option<Duration>,
    /// Requests of ours in flight at once; further requests wait for a slot
    /// (default 65,536).
    pub max_in_flight: usize,
    /// The peer's requests handled at once (default 1,024); more wait in a
    /// bounded queue, see `max_queued_requests`.
    ///
    /// This is also what bounds the memory the running handlers hold: each
    /// holds its request while it runs, and, while a peer reads none of
    /// what we write, its answer too, until there is room in the write
    /// queue. A peer that sends large requests and reads nothing can so
    /// make this side hold up to this many requests and answers, and the
    /// backlog's requests, before the reader refuses any (or, for a peer
    /// that is made to wait, stops reading): with the defaults, 400 MiB of
    /// 1 MiB echo requests from a peer that read nothing held 812 MiB. For
    /// a peer you do not trust, lower this or
    /// [`ChannelConfig::max_message_len`](crate::ChannelConfig::max_message_len).
    ///
    /// A handler that calls the peer back holds its slot while it waits.
    /// If every slot of both sides is held by such a handler, each waiting
    /// for a call back that sits in the other side's backlog, they wait
    /// for each other for good (one slot a side is enough for that): give
    /// such calls a deadline
    /// ([`Session::request_timeout`](crate::Session::request_timeout)).
    pub max_concurrent_handlers: usize,
    /// The peer's requests that may wait for a handler slot (default
    /// 65,536). A request past this, or past `max_queued_request_bytes`, is
    /// refused at once, unhandled: its caller gets an error named
    /// `Overloaded`.
    ///
    /// The reader does not wait for room here: stopped with a request in
    /// hand, it would read nothing behind it, neither the answers to our
    /// own requests nor the cancels that free handler slots nor the answers
    /// that handlers calling the peer back wait for, and two sessions that
    /// flood each other would wait for each other for good. Node's protocol
    /// has no flow control, so with memory bounded a side can only wait or
    /// refuse; this one refuses (see `max_unwritten_refusal_bytes` for the
    /// bound on that).
    ///
    /// Except to a peer that speaks neither `error` nor `cancel`
    /// (ipc-request 1.0, or one that advertised neither; one whose
    /// handshake is still unread is refused), which has no error answers: a refusal would reach
    /// its caller as a successful answer holding the error. For such a
    /// peer the reader waits for room, as Node itself never stops reading;
    /// handlers that all wait on such a peer while this is full then wait
    /// for good. A peer that speaks `cancel` but not `error` is refused all
    /// the same (holding its cancels up could stall the handlers that wait
    /// for them), its refusal shaped as any failure is for it: the error as
    /// the answer's payload.
    pub max_queued_requests: usize,
    /// Total payload bytes of the requests waiting for a handler slot
    /// (default 64 MiB). One request is always let in, however large.
    pub max_queued_request_bytes: usize,
    /// Bytes of refusals (see `max_queued_requests`) that may wait to be
    /// written (default 64 MiB): they do not wait for room in the write
    /// queue, which our own requests may fill while the peer is busy.
    /// Past this (a peer that sends on and reads none of it) the reader
    /// stops reading until some are written. The error answers of
    /// responders dropped after their handler ended (a [`Responder`]
    /// moved elsewhere), sent from a destructor that cannot wait either,
    /// count here too; past it they still go, and no handler starts until
    /// they are written (the peer's requests wait in the backlog, and past
    /// it are refused).
    ///
    /// [`Responder`]: crate::Responder
    ///
    /// Keep it above what the peer can have in flight: two sessions whose
    /// readers both stop here wait for each other for good. A refusal is
    /// about 230 bytes with a short UID, so a peer of this crate with the
    /// default `max_in_flight` (65,536) can make at most about 15 MiB of
    /// them wait, if none of its requests was given up: a request that
    /// timed out (or was dropped) no longer counts against its
    /// `max_in_flight`, while its refusal is still written.
    pub max_unwritten_refusal_bytes: usize,
    /// When the session owns the child (default 200 ms): if the channel
    /// closes first, how long to wait for the child's exit status to name
    /// it in the error; if the child exits first, how long to go on reading
    /// what it wrote before the session ends, even if another process
    /// (a background job of a wrapper script) still holds the child's end
    /// of the channel.
    pub exit_grace: Duration,
    /// Plain messages buffered for [`Session::messages`] (default 1,024).
    /// Until someone takes the stream, messages past this (or past
    /// `message_buffer_bytes`) are dropped with a warning, unless the
    /// session was set up with [`SessionBuilder::keep_plain_messages`];
    /// after, the session stops reading until the stream's reader makes
    /// room (see [`Session::messages`]).
    pub message_buffer: usize,
    /// Total bytes of the plain messages buffered for [`Session::messages`]
    /// (default 64 MiB), held as the text that came: a message is parsed
    /// when it is taken from the stream. A message larger than this gets in
    /// when the buffer is empty. The error items of lines that could not be
    /// read are small and count against `message_buffer` only.
    pub message_buffer_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            handshake_timeout: Duration::from_secs(10),
            request_timeout: None,
            max_in_flight: 65_536,
            max_concurrent_handlers: 1_024,
            max_queued_requests: 65_536,
            max_queued_request_bytes: 64 * 1024 * 1024,
            max_unwritten_refusal_bytes: 64 * 1024 * 1024,
            exit_grace: Duration::from_millis(200),
            message_buffer: 1_024,
            message_buffer_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Sets up a session over `channel` with `handler` for the peer's requests
/// (or `None`: the peer's requests are then answered with an error named
/// `NoHandler`), and resolves once the handshake shows that the peer is
/// listening.
///
/// The Rust counterpart of ipc-request's `setupIpcSession(process,
/// handler)`; see [`SessionBuilder`] for settings.
///
/// # Errors
///
/// [`Error::HandshakeTimeout`] if the peer did not answer within
/// [`SessionConfig::handshake_timeout`]; [`Error::Closed`] if the channel
/// ended first (a child that exited: its status is in the reason);
/// [`Error::Frame`] if the channel's `max_message_len` is too small for
/// the handshake message itself.
///
/// # Panics
///
/// Outside a Tokio runtime (it starts the session's tasks on the current
/// one), as `tokio::spawn` does. The [`blocking`](crate::blocking) API
/// brings a runtime of its own.
pub async fn setup(channel: Channel, handler: impl Into<Option<Handler>>) -> Result<Session, Error> {
    SessionBuilder::new().handler(handler).setup(channel).await
}

/// A session with settings: `SessionBuilder::new().config(c).handler(h).setup(channel)`.
#[derive(Debug, Default)]
pub struct SessionBuilder {
    config: SessionConfig,
    handler: Option<Handler>,
    keep_plain_messages: bool,
}

impl SessionBuilder {
    /// Default settings, no handler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the settings.
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the handler for the peer's requests.
    pub fn handler(mut self, handler: impl Into<Option<Handler>>) -> Self {
        self.handler = handler.into();
        self
    }

    /// Keeps for [`Session::messages`] every plain message the peer sends
    /// once it is set up, as if the stream were taken then: none is dropped
    /// before you take it, the session waits for room instead (see
    /// [`SessionConfig::message_buffer`]). For a peer that sends plain
    /// messages as soon as it is set up, even in the write that carries its
    /// handshake message: more than the buffer holds can arrive before
    /// `setup` returns. Take the stream right after `setup`, and read it: a
    /// session that keeps its plain messages stops reading (requests and
    /// answers to ours included) while their buffer is full.
    ///
    /// Kept from the first of: the session is established, or the peer's
    /// handshake request is read and our answer to it is on its way (the
    /// peer may count itself set up as soon as it reads that answer).
    /// Messages that come before are buffered as usual, and dropped past
    /// the buffer: waiting for room then would stall the handshake, since
    /// nobody can take the stream before `setup` returns.
    ///
    /// One case still stalls it: a peer that sends its handshake request,
    /// then more plain messages than the buffer holds, then stops reading
    /// while our answer cannot be written (the channel full of what we sent
    /// before); its answer to our own request is then never read, and
    /// `setup` fails with [`Error::HandshakeTimeout`].
    pub fn keep_plain_messages(mut self) -> Self {
        self.keep_plain_messages = true;
        self
    }

    /// The handler slots the session will have.
    pub(crate) fn max_concurrent_handlers(&self) -> usize {
        self.config.max_concurrent_handlers
    }

    /// Runs the handshake over `channel` (see [`setup`]).
    pub async fn setup(self, channel: Channel) -> Result<Session, Error> {
        let (sender, receiver, peer_exit) = channel.into_parts();
        let config = self.config;
        // Tokio panics on capacities past Semaphore::MAX_PERMITS ("no
        // limit" written as usize::MAX must not do that).
        let bounded = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS);
        let (messages_tx, messages_rx) = mpsc::channel(bounded(config.message_buffer));
        let message_bytes = config
            .message_buffer_bytes
            .clamp(1, crate::channel::MOST_BUDGET_BYTES);
        let (phase, _) = watch::channel(Phase::Handshaking);
        let shared = Arc::new(Shared {
            sender,
            next_id: AtomicU64::new(1),
            table: Mutex::new(Table::default()),
            peer: OnceLock::new(),
            phase,
            closing: CancellationToken::new(),
            more_input: AtomicBool::new(false),
            lines_read: AtomicU64::new(0),
            peer_hung_up: Notify::new(),
            reader_ended: OnceLock::new(),
            in_flight: Semaphore::new(bounded(config.max_in_flight)),
            handler_slots: Arc::new(Semaphore::new(bounded(config.max_concurrent_handlers))),
            backlog: Mutex::new(Backlog::default()),
            backlog_space: Notify::new(),
            refusals_unwritten: Arc::new(Semaphore::new(super::refusal_budget(&config))),
            overdraft: Default::default(),
            backlog_len: AtomicUsize::new(0),
            answering_handshake: AtomicBool::new(false),
            handshake_answer: Mutex::new(None),
            was_established: AtomicBool::new(false),
            messages_tx: Mutex::new(Some(messages_tx)),
            messages_rx: Mutex::new(Some(messages_rx)),
            plain_messages_wait: AtomicBool::new(false),
            messages_dropped: AtomicU64::new(0),
            keep_plain_messages: self.keep_plain_messages,
            message_bytes: Arc::new(Semaphore::new(message_bytes)),
            message_bytes_total: message_bytes,
            handler: Mutex::new(self.handler),
            peer_exit: peer_exit.clone(),
            runtime: tokio::runtime::Handle::current(),
            config,
        });
        // Until a Session is handed back, dropping this future (the
        // caller's own timeout, a select!) or failing must not leave the
        // reader, the writer and the socket running for nobody.
        let mut unclaimed = ShutOnDrop(Some(shared.clone()), CloseReason::Local);
        let our_uid = fresh_uid();
        // The handler is in place and we listen before announcing (2.1 step 1).
        let hello = shared.sender.encode(&HandshakeOut::request(&our_uid))?;
        let mut phase = shared.phase.subscribe();
        tokio::spawn(end_when_the_peer_is_gone_and_the_reader_held_up(shared.clone()));
        let reader = read_loop(shared.clone(), receiver, peer_exit, our_uid.clone());
        // The reader task holds the session through a guard that ends it if
        // the task is dropped before it ended the session itself: its
        // runtime shut down with the session open. Every pending request
        // then fails, instead of waiting for a reader that is gone (a
        // blocking handler waiting on one, through `blocking::Peer`, kept
        // the runtime's drop waiting for its thread for ever: a review
        // found it). Made here and moved in, so that a task dropped before
        // its first poll drops it too. After the reader's own end the
        // session is closed already, and the guard does nothing.
        let reader_guard = ShutOnDrop(Some(shared.clone()), CloseReason::RuntimeShutDown);
        tokio::spawn(async move {
            // A panic on the reader (a bug, or a panicking stream the channel
            // was built on) must fail what waits on it, not leave it hanging.
            // (Not a let chain: those need Rust 1.88, past `rust-version`.)
            let read = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(reader)).await;
            if let (Err(_), Some(shared)) = (read, &reader_guard.0) {
                let error = std::io::Error::other("the session's reader panicked");
                shared.shut(CloseReason::Io(Arc::new(error)));
            }
        });

        // The deadline covers sending our request too: the queue may be
        // full already (lines sent on the channel before setup, a peer that
        // reads nothing). A failed send means the channel is already
        // closed: the reader publishes why, and that is what we report.
        let timeout = shared.config.handshake_timeout;
        let outcome = tokio::time::timeout(timeout, async {
            let _ = shared.sender.send_line(hello).await;
            phase.wait_for(|p| !matches!(p, Phase::Handshaking)).await
        })
        .await;
        let mut established = |shared| {
            unclaimed.0 = None;
            Ok(Session { shared })
        };
        match outcome {
            Ok(Ok(p)) => match &*p {
                Phase::Established => established(shared),
                // The peer may have been quick: handshake, requests both
                // ways and close, all before this task ran again. The
                // session did its work; its close reason says how it ended.
                Phase::Closed(_) if shared.was_established.load(Ordering::Acquire) => established(shared),
                Phase::Closed(reason) => Err(Error::Closed(reason.clone())),
                Phase::Handshaking => unreachable!("wait_for returned early"),
            },
            Ok(Err(_)) => Err(Error::Closed(CloseReason::PeerClosed)),
            Err(_) => {
                shared.shut(CloseReason::Local);
                Err(Error::HandshakeTimeout(timeout))
            }
        }
    }
}

/// Shuts the session down when dropped, unless taken out first, for the
/// reason it holds: a setup given up before it handed a `Session` back
/// (`Local`), or a reader task dropped with its runtime
/// (`RuntimeShutDown`). Either is an ordinary way for a program to end (a
/// `main` that returns with its sessions open), no failure to warn of.
struct ShutOnDrop(Option<Arc<Shared>>, CloseReason);

impl Drop for ShutOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            if shared.closed_reason().is_none() {
                tracing::debug!("a session was let go of while open: it is closed");
            }
            shared.shut(self.1.clone());
        }
    }
}

/// A fresh handshake UID: unique per process, per call and over time.
fn fresh_uid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
