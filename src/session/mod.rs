//! The session: handshake, pending requests, handler dispatch, plain
//! messages, close and failure (PROTOCOL.md sections 2 and 3).

// This file holds the [`Session`] handle (our requests: ids from a
// counter, a map from id to the slot its answer is handed over in) and
// the state it shares with the reader; `setup.rs` the settings, the
// builder and the handshake's wait; `incoming.rs` the reader task
// (handshake answers, routing answers, starting handlers, plain messages,
// failing everything when the channel ends); `backlog.rs` the peer's
// requests waiting for a handler slot; `close.rs` the session's end,
// once, the errors that report it, and the reader's drain after a local
// close; `gone_peer.rs` what a caller is
// told while the peer is going, and how a session ends when the peer is
// gone while this side holds the reader up;
// `handler.rs` what a handler sees; `answers.rs` how a handler's answer
// is written, and the budget of those sent from a responder's drop;
// `messages.rs` the stream of the peer's plain messages;
// `pending.rs` the table's slots and the guard that keeps the table of our
// pending requests honest.

mod answers;
mod backlog;
mod close;
mod gone_peer;
mod handler;
mod incoming;
mod messages;
mod pending;
mod setup;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, Semaphore, TryAcquireError, mpsc, watch};
use tokio_util::sync::CancellationToken;

use handler::AnswerState;
pub(crate) use handler::panic_error;
pub use handler::{Handler, Request, Responder, handler_fn, responder_fn};
use messages::BufferedMessage;
pub use messages::Messages;

use backlog::Backlog;
use gone_peer::is_write_to_a_gone_peer;
pub use setup::{SessionBuilder, SessionConfig, setup};

use crate::channel::{ChannelSender, line_text, node_internal_cmd};
use crate::error::{CloseReason, Error};
use crate::frame::Message;
use crate::protocol::{self, EXT_CANCEL, EXT_ERROR, PeerUid};
use pending::{PendingGuard, PendingTable};

/// How many bytes of refusals may wait to be written (see
/// `Shared::refuse`): `max_unwritten_refusal_bytes`, within what a
/// semaphore holds.
fn refusal_budget(config: &SessionConfig) -> usize {
    config
        .max_unwritten_refusal_bytes
        .clamp(1, crate::channel::MOST_BUDGET_BYTES)
}

/// What the peer said it understands, from its handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The extension names it advertised, as sent (unknown ones included),
    /// within bounds: the first
    /// [`MAX_EXTENSION_NAMES`](crate::protocol::MAX_EXTENSION_NAMES) that
    /// are strings of at most
    /// [`MAX_EXTENSION_NAME_LEN`](crate::protocol::MAX_EXTENSION_NAME_LEN)
    /// bytes. They are kept for the session's life, and the list is the
    /// peer's to make as long as a line.
    pub extensions: Vec<String>,
    /// False for an ipc-request 1.0 peer (no extensions key at all).
    pub advertises_extensions: bool,
    /// The two extensions this crate uses, looked up once: they are asked
    /// about for every request and answer.
    takes_errors: bool,
    can_cancel: bool,
}

impl PeerInfo {
    fn new(extensions: Option<Vec<String>>) -> Self {
        let extensions = extensions.map(|names| {
            let has = |name: &str| names.iter().any(|e| e == name);
            (has(EXT_ERROR), has(EXT_CANCEL), names)
        });
        let advertises_extensions = extensions.is_some();
        let (takes_errors, can_cancel, extensions) = extensions.unwrap_or_default();
        PeerInfo {
            extensions,
            advertises_extensions,
            takes_errors,
            can_cancel,
        }
    }

    /// True if the peer advertised extension `name`.
    pub fn supports(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e == name)
    }
}

#[derive(Debug, Clone)]
enum Phase {
    Handshaking,
    Established,
    Closed(CloseReason),
}

/// What a pending request receives. The error is boxed so that the slot
/// every request in flight carries stays small.
type Answer = Result<Message, Box<Error>>;

#[derive(Default)]
struct Table {
    /// Our requests waiting for an answer, by id, and answers that came
    /// and wait for their caller to take them.
    pending: PendingTable,
    /// The peer's requests being handled, by its UID, for `cancel`. Only
    /// filled when the peer can cancel.
    running: HashMap<PeerUid, RunningHandler>,
    /// Handlers whose UID the peer used again while they still ran (it
    /// may, once it has their answer): out of `running`, where the newer
    /// request is what a cancel of that UID means, but still told of the
    /// close. As many as such handlers (and responders) still alive, which
    /// a peer that sends one UID over and over to handlers that keep their
    /// responders makes many: by the address of their answer state (see
    /// [`AnswerState::key`]), so that each answer finds its own at once (a
    /// scan of a list made each answer's cost grow with their number: a
    /// review's test answered 20,000 such requests in 1.06 s, and in 72 ms
    /// with the map).
    displaced: HashMap<usize, RunningHandler>,
    /// Set once; from then on nothing is added to either map.
    closed: Option<CloseReason>,
}

/// A handler in the `running` map.
struct RunningHandler {
    cancel: CancellationToken,
    /// Says whose entry this is (a peer may reuse a UID once answered), and
    /// takes the news that the answer is refused.
    answer: Arc<AnswerState>,
}

impl RunningHandler {
    /// The peer cancelled the request, or the session closed: the handler
    /// is told, and whatever it answers is not written.
    fn refuse(self) {
        self.answer.refuse();
        self.cancel.cancel();
        self.answer.cancel_handed_out();
    }
}

pub(crate) struct Shared {
    sender: ChannelSender,
    config: SessionConfig,
    /// Taken out (and dropped) when the session ends: a handler that holds
    /// a handle on its own session (to call the peer back) would otherwise
    /// keep it, and whatever it owns, alive for ever. Locked once per
    /// request, to clone it.
    handler: Mutex<Option<Handler>>,
    next_id: AtomicU64,
    table: Mutex<Table>,
    peer: OnceLock<PeerInfo>,
    phase: watch::Sender<Phase>,
    /// Cancelled when the session ends, to stop the reader.
    closing: CancellationToken,
    /// The reader holds more input than the message it is dispatching: more
    /// requests are probably coming at once, so answers go through the
    /// writer task and share one write instead of one write each.
    more_input: AtomicBool,
    /// Lines the reader has taken from the channel: whether it still makes
    /// progress (see `end_when_the_peer_is_gone_and_the_reader_held_up`).
    lines_read: AtomicU64,
    /// Why the channel ended, set by the reader as its loop ends, before
    /// it waits out its graces (see `Shared::deadline_error`).
    reader_ended: OnceLock<CloseReason>,
    /// Told by the reader when, held up, it finds that the peer hung up
    /// (see `end_when_the_peer_is_gone_and_the_reader_held_up`).
    peer_hung_up: Notify,
    in_flight: Semaphore,
    handler_slots: Arc<Semaphore>,
    /// The peer's requests waiting for a handler slot, in arrival order.
    backlog: Mutex<Backlog>,
    /// Told whenever a request leaves the backlog for a handler, for a
    /// reader waiting for room: one that does not refuse, as the peer
    /// speaks neither `error` nor `cancel` (see `start_handler`).
    backlog_space: Notify,
    /// The bytes of the refusals the reader has sent and the channel has
    /// not yet written (see `Shared::refuse`): [`refusal_budget`] permits.
    refusals_unwritten: Arc<Semaphore>,
    /// Error answers queued past `refusals_unwritten` (see
    /// `Shared::send_orphan_answer`).
    overdraft: Arc<answers::Overdraft>,
    /// The backlog's length, readable without its lock.
    backlog_len: AtomicUsize,
    /// A handshake answer is already on its way during the handshake.
    answering_handshake: AtomicBool,
    /// The task that establishes the session once our answer to the peer's
    /// handshake request is written; the reader lets it finish before it
    /// ends a session still handshaking (see `read_loop`).
    handshake_answer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when the handshake completes, and never cleared: a session can
    /// be established, serve and close before `setup` looks at the phase.
    was_established: AtomicBool,
    messages_tx: Mutex<Option<mpsc::Sender<BufferedMessage>>>,
    messages_rx: Mutex<Option<mpsc::Receiver<BufferedMessage>>>,
    /// The stream is taken, or the session is established and keeps plain
    /// messages: a plain message waits for room in its buffer instead of
    /// being dropped.
    plain_messages_wait: AtomicBool,
    /// Plain messages dropped (the buffer full while `plain_messages_wait`
    /// was false, or the taken stream dropped):
    /// [`Session::dropped_messages`].
    messages_dropped: AtomicU64,
    /// See [`SessionBuilder::keep_plain_messages`].
    keep_plain_messages: bool,
    /// The byte budget of the plain messages buffered; each holds permits
    /// for its length until taken from the stream.
    message_bytes: Arc<Semaphore>,
    message_bytes_total: usize,
    /// The peer's exit status, when we own the child: the reader waits up
    /// to `exit_grace` for it before the session ends.
    peer_exit: Option<crate::channel::PeerExit>,
    /// The runtime the session was set up on, whose tasks serve it: for the
    /// blocking facade's calls from a handler's thread.
    runtime: tokio::runtime::Handle,
}

/// A handle on an established session. Cheap to clone; all clones share it.
///
/// The session lives until either side closes it: dropping the handles
/// does not close it (a child that only answers requests keeps serving).
/// Call [`Session::close`] to end it. It runs on the Tokio runtime it was
/// set up on: if that runtime shuts down first, the session ends with
/// [`CloseReason::RuntimeShutDown`],
/// failing what was pending, and the peer sees the end of the stream.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.shared.peer.get())
            .field("closed", &self.shared.closed_reason())
            .finish()
    }
}

impl Session {
    /// Sends a request and waits for its answer, deserialized as `Res`.
    /// Uses the session's default deadline, if any. serde_json refuses to
    /// deserialize an answer nested more than 128 deep ([`Error::Decode`]);
    /// [`request_raw`](Self::request_raw) returns any answer as its text.
    ///
    /// # Errors
    ///
    /// - [`Error::Remote`]: the peer's handler failed, or the peer refused
    ///   the request unhandled (the names this crate sends are listed at
    ///   [`RemoteError`](crate::RemoteError));
    /// - [`Error::Closed`]: the session ended before the answer came, and
    ///   why ([`CloseReason`]: our close, the peer's, the child's exit
    ///   status, a failed write);
    /// - [`Error::Timeout`]: the session's default deadline passed
    ///   ([`SessionConfig::request_timeout`](crate::SessionConfig::request_timeout));
    /// - [`Error::Frame`]: the request does not serialize, or is longer than
    ///   the maximum message length (nothing was sent; the session goes
    ///   on); or the answer is longer than this side reads;
    /// - [`Error::Decode`]: the answer is not a `Res`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the request: it is forgotten here, and
    /// never sent if it still waits in the queue; one already sent is
    /// cancelled at the peer if the peer speaks `cancel` (an ipc-request
    /// 1.0 peer runs it to the end), as
    /// [`request_timeout`](Self::request_timeout) describes.
    pub async fn request<Req, Res>(&self, payload: &Req) -> Result<Res, Error>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        let raw = self
            .send_request(payload, self.shared.config.request_timeout)
            .await?;
        serde_json::from_str(raw.get()).map_err(Error::decode_answer)
    }

    /// Like [`Session::request`], with its own deadline: past it the
    /// request fails with [`Error::Timeout`] (with [`Error::Closed`] if the
    /// peer is known to be gone by then), is forgotten, and is
    /// cancelled at the peer if the peer supports `cancel`. The deadline
    /// covers waiting for a slot and for queue space too. Dropping the
    /// request future does the same.
    ///
    /// A request whose line still waits in the channel's queue then (behind
    /// others, for a peer that reads slowly) is never sent, whatever the
    /// peer supports. Already on its way, and so cancelled as above: a line
    /// written straight to the socket (sent while nothing was queued) or
    /// sitting in the socket's kernel buffer, and the lines the channel's
    /// writer task has taken for the write it is doing (under 128 KiB of
    /// small lines, or one large line; rarely, one more: see the README's
    /// "Errors, deadlines, cancellation").
    pub async fn request_timeout<Req, Res>(&self, payload: &Req, timeout: Duration) -> Result<Res, Error>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        let raw = self.send_request(payload, Some(timeout)).await?;
        serde_json::from_str(raw.get()).map_err(Error::decode_answer)
    }

    /// Sends a request and returns the answer as raw JSON text.
    ///
    /// An answer longer than this side's `max_message_len` fails the
    /// request with [`Error::Frame`] (`TooLong`); a request longer than the
    /// peer's limit comes back, from a peer running this crate, as
    /// [`Error::Remote`] named `RequestTooLong`.
    pub async fn request_raw<Req: Serialize + ?Sized>(&self, payload: &Req) -> Result<Message, Error> {
        self.send_request(payload, self.shared.config.request_timeout)
            .await
    }

    /// [`request_raw`](Self::request_raw) with its own deadline, as
    /// [`request_timeout`](Self::request_timeout) has.
    pub async fn request_raw_timeout<Req: Serialize + ?Sized>(
        &self,
        payload: &Req,
        timeout: Duration,
    ) -> Result<Message, Error> {
        self.send_request(payload, Some(timeout)).await
    }

    async fn send_request<Req: Serialize + ?Sized>(
        &self,
        payload: &Req,
        timeout: Option<Duration>,
    ) -> Result<Message, Error> {
        match timeout {
            None => self.call_inner(payload).await,
            // Boxed: a timer is large, and without the box every request
            // future would carry one, deadline or not (memory per request in
            // flight is measured by the bench).
            Some(d) => Box::pin(tokio::time::timeout(d, self.call_inner(payload)))
                .await
                .unwrap_or_else(|_| Err(self.shared.deadline_error(d))),
        }
    }

    async fn call_inner<Req: Serialize + ?Sized>(&self, payload: &Req) -> Result<Message, Error> {
        let shared = &self.shared;
        // try_acquire first: it does not spend the task's cooperative budget
        // (see send_line_inner in the channel).
        let _slot = match shared.in_flight.try_acquire() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => return Err(shared.closed_error()),
            // Boxed: a semaphore's wait node is large, and every request
            // future in flight would carry it unboxed, waiting or not.
            Err(TryAcquireError::NoPermits) => Box::pin(shared.in_flight.acquire())
                .await
                .map_err(|_| shared.closed_error())?,
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        // Encode first: a message that is too long fails this call alone,
        // before anything is registered or written. (In a block, so the id's
        // text buffer is not kept across the awaits below.)
        let line = {
            let mut uid = itoa::Buffer::new();
            let uid = uid.format(id);
            shared
                .sender
                .encode_with(|max, out| protocol::encode_request(uid, payload, max, out))?
        };
        // The guard exists before the send: from here on, a drop (deadline,
        // caller gave up) removes the entry and, once sent, cancels it.
        let (mut guard, in_flight) = PendingGuard::register(shared, id)?;
        // Alone: straight to the stream. With others in flight: through the
        // writer task, so that requests sent together share one write.
        // (Two calls, not one with `in_flight > 1`: measured, the one call
        // made this future 480 bytes instead of 352 (360 since it waits on
        // the table, not a oneshot), and every request in flight carries it.)
        let sent = if in_flight > 1 {
            shared.sender.send_withdrawable_line(line, true).await
        } else {
            shared.sender.send_withdrawable_line(line, false).await
        };
        match sent.map_err(|e| shared.send_error_now(e)) {
            Ok(ticket) => guard.mark_sent(ticket),
            // The peer is gone (a broken pipe) and the session about to end:
            // its reader reads what the peer wrote, waits for the child's
            // exit status, then fails every pending request with that. So
            // this one stays pending, to be told the same as the others,
            // not the write's error. (Not marked sent: nothing to cancel.)
            // For as long as the reader may take, no longer: a reader held
            // up elsewhere (every handler slot taken by handlers that wait
            // for this very request, plain messages nobody reads yet)
            // would never get there. Boxed: off the common path, and a
            // timer would make every request's future larger.
            Err(e) if is_write_to_a_gone_peer(&e) => {
                let limit = shared.gone_peer_limit();
                let Ok(told) = Box::pin(tokio::time::timeout(limit, guard.answer())).await else {
                    // Still in the table: the guard's drop takes it out.
                    return Err(Error::Closed(shared.gone_peer_reason()));
                };
                return told;
            }
            Err(e) => return Err(e),
        }
        // The wait spends none of Tokio's cooperative budget (a oneshot
        // receiver's would, and needed `unconstrained`: a task awaiting
        // thousands of requests at once, in a join_all, would otherwise hit
        // the budget on every poll and go quadratic; measured with 100,000
        // requests in one join_all, 10k -> 170k req/s). This answer is never
        // ready before the peer has read the request and the reader task
        // has run, so the caller yields here anyway.
        guard.answer().await
    }

    /// Sends a plain message (not a request): the peer's `process.on
    /// ('message')` or [`Session::messages`] gets it. Refused with
    /// [`Error::ReservedMessage`] if it would look like a Node internal
    /// message or an ipc-request protocol message.
    ///
    /// Returns once the message is in the outgoing queue (after waiting for
    /// room there), not once it is written: a program that ends right
    /// after awaits [`shutdown`](Self::shutdown) first.
    ///
    /// # Errors
    ///
    /// [`Error::ReservedMessage`] as above; [`Error::Frame`] if it does not
    /// serialize or is longer than the maximum message length (nothing is
    /// sent; the session goes on); [`Error::Closed`] once the session has
    /// ended.
    ///
    /// # Cancel safety
    ///
    /// Dropped while it waits for room in the queue, the message is not
    /// sent; once the call has returned, it is queued and will be written.
    pub async fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<(), Error> {
        let shared = &self.shared;
        if let Some(reason) = shared.closed_reason() {
            return Err(Error::Closed(reason));
        }
        let line = shared.sender.encode(message)?;
        let text = line_text(&line);
        if node_internal_cmd(text).is_some() {
            return Err(Error::ReservedMessage("a cmd starting with NODE_ is Node's own"));
        }
        if protocol::is_protocol_message(text) {
            return Err(Error::ReservedMessage(
                "it has the shape of an ipc-request protocol message",
            ));
        }
        match shared.sender.send_line(line).await {
            Ok(()) => Ok(()),
            Err(e) => Err(shared.send_error(e).await),
        }
    }

    /// The stream of plain messages from the peer, in order, with an
    /// `Err(Error::Frame(_))` item for each line that could not be read (too
    /// long, not JSON), unless the session could tell it was a request or
    /// the answer to one of ours (then that request fails instead, on
    /// whichever side asked), and an `Err(Error::Decode { .. })` item for a
    /// message serde_json cannot hold as a `Value` (nested more than 128
    /// deep, which Node allows). Returns `None` after the first call: there
    /// is one stream per session. It ends when the session closes. Messages
    /// that arrive before it is taken wait in its buffer; past what the
    /// buffer holds they are dropped, unless the session was set up with
    /// [`SessionBuilder::keep_plain_messages`].
    ///
    /// Once taken, read it steadily, from a task of its own: while its
    /// buffer ([`SessionConfig::message_buffer`] messages,
    /// [`SessionConfig::message_buffer_bytes`] bytes) is full, the session reads
    /// nothing else from the peer, so answers to our own requests wait too.
    /// A loop that awaits a request between two `recv`s stalls for good if
    /// the peer sends more than that many messages meanwhile. (Nothing is
    /// dropped and memory stays bounded; the price is this back-pressure.)
    pub fn messages(&self) -> Option<Messages> {
        let rx = self.shared.messages_rx.lock().unwrap().take()?;
        self.shared.plain_messages_wait.store(true, Ordering::Release);
        Some(Messages { rx })
    }

    /// What the peer advertised in its handshake: in the first handshake
    /// message of the peer's that this side read (a request, or the answer
    /// to ours), for the session's life, though later ones say otherwise
    /// (the peer's tries that timed out before we listened come first, and
    /// `examples/node/ipc_session.js` makes a retry advertise the same).
    /// Before any handshake
    /// message of the peer's has come (the session of a request that a
    /// peer sent without one, [`Request::session`]), a peer that advertised
    /// nothing, as the session then treats it (but for a request past a
    /// full backlog, which such a peer gets refused: see
    /// [`SessionConfig::max_queued_requests`](crate::SessionConfig::max_queued_requests)).
    pub fn peer(&self) -> &PeerInfo {
        static NOTHING_YET: PeerInfo = PeerInfo {
            extensions: Vec::new(),
            advertises_extensions: false,
            takes_errors: false,
            can_cancel: false,
        };
        self.shared.peer.get().unwrap_or(&NOTHING_YET)
    }

    /// Requests of ours waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.shared.table.lock().unwrap().pending.waiting()
    }

    /// How many plain messages of the peer's (and errors of its unreadable
    /// lines, which come on the same stream) were dropped, a warning logged
    /// for each: because nobody had taken [`messages`](Self::messages) yet
    /// and its buffer was full, or because they came after the stream was
    /// taken and then dropped (those still unread in it when it was dropped
    /// went with it, uncounted). None are dropped while a taken stream is
    /// kept (they wait
    /// for room in it), nor in a session set up with
    /// [`SessionBuilder::keep_plain_messages`] once its handshake is done
    /// (before, see there).
    pub fn dropped_messages(&self) -> u64 {
        self.shared.messages_dropped.load(Ordering::Relaxed)
    }

    /// Bytes waiting in the outgoing queue.
    pub fn queued_bytes(&self) -> usize {
        self.shared.sender.queued_bytes()
    }

    /// The byte budget of the outgoing queue (see
    /// [`ChannelConfig::write_queue_bytes`](crate::ChannelConfig::write_queue_bytes)).
    pub fn queue_capacity(&self) -> usize {
        self.shared.sender.queue_capacity()
    }

    /// Closes the session: pending requests fail with
    /// `Error::Closed(CloseReason::Local)`, and those whose lines still
    /// wait in the outgoing queue are taken out of it, never sent; the
    /// rest of what is queued (answers, plain messages, cancels, refusals)
    /// is written, then
    /// the channel is shut so the peer sees it disconnect. A request
    /// already written, or being written, may still run at the peer (which
    /// sees the disconnect: a session of this crate then cancels it). What
    /// the peer sends after the close is read and dropped, until the peer
    /// ends, for at most 1 s once what was queued is written, and not on
    /// once its writing moves by less than 64 KiB in 5 s: a peer that
    /// waits for its own writes before it reads (a session of this crate
    /// whose refusals wait on their budget) can then read our flush, and
    /// our end. (Meanwhile our descriptor stays open: a peer that watches
    /// for it to close rather than reading our end sees it that much
    /// later.)
    pub fn close(&self) {
        self.shared.shut(CloseReason::Local);
    }

    /// Closes the session as [`close`](Self::close) does, and resolves once
    /// what was queued before (but the requests it withdraws) is written
    /// and the channel's write side is
    /// shut (at once if a write had failed). Await it before a program
    /// ends: a runtime that shuts down first drops what is still queued.
    /// It waits for as long as the peer leaves what we wrote unread: bound
    /// it with a timeout.
    pub async fn shutdown(&self) {
        self.close();
        self.shared.sender.finished().await
    }

    /// The runtime the session runs on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.shared.runtime
    }

    /// The deadline of a request that sets none
    /// (`SessionConfig::request_timeout`).
    pub(crate) fn default_request_timeout(&self) -> Option<Duration> {
        self.shared.config.request_timeout
    }

    /// What a request whose deadline `d` has passed fails with, as the
    /// async `request_timeout` does: for the blocking facade, whose own
    /// clock may end such a request first.
    pub(crate) fn deadline_error(&self, d: Duration) -> Error {
        self.shared.deadline_error(d)
    }

    /// The error of a write of ours that failed, if one did: what was
    /// queued then was lost.
    pub(crate) fn write_error(&self) -> Option<CloseReason> {
        self.shared.sender.write_error()
    }

    /// Why the session ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.closed_reason()
    }

    /// Resolves when the session ends, with why.
    pub async fn closed(&self) -> CloseReason {
        let mut phase = self.shared.phase.subscribe();
        let p = phase.wait_for(|p| matches!(p, Phase::Closed(_))).await;
        match p.as_deref() {
            Ok(Phase::Closed(reason)) => reason.clone(),
            _ => CloseReason::Local,
        }
    }
}

impl Shared {
    /// The peer speaks neither `error` nor `cancel` (ipc-request 1.0, or
    /// one that advertised neither): a refusal would reach its caller as a
    /// successful answer, and it has no cancels to hold up. `false` while
    /// its handshake is still unread.
    fn peer_speaks_neither_error_nor_cancel(&self) -> bool {
        self.peer.get().is_some_and(|p| !p.takes_errors && !p.can_cancel)
    }

    /// The peer advertised `error`: failures go back as errors.
    fn peer_takes_errors(&self) -> bool {
        self.peer.get().is_some_and(|p| p.takes_errors)
    }

    /// The peer advertised `cancel`: it may cancel, and we may.
    fn peer_can_cancel(&self) -> bool {
        self.peer.get().is_some_and(|p| p.can_cancel)
    }
}
