//! What a request handler gets and how it answers.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::{Session, Shared};
use crate::error::{Error, RemoteError};
use crate::frame::Message;
use crate::protocol::PeerUid;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type HandlerFn = dyn Fn(Request, Responder) -> BoxFuture + Send + Sync;

/// Answers the peer's requests. Build one with [`handler_fn`] (the handler
/// returns its answer) or [`responder_fn`] (the handler answers through a
/// [`Responder`], now or later, from any task).
#[derive(Clone)]
pub struct Handler {
    pub(super) call: Arc<HandlerFn>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

/// A handler that returns its answer: `Ok(value)` is sent as the response,
/// `Err(error)` travels back as a [`RemoteError`] (any `std::error::Error`
/// converts with `?`; `anyhow::Error` and `Box<dyn Error + Send + Sync>`
/// with [`RemoteError::from_dyn`]), and a panic is answered with an error named
/// `HandlerPanicked` carrying the panic message. The session keeps serving
/// in every case. A panic still goes through the process's panic hook
/// first (by default a message on stderr, and a backtrace with
/// `RUST_BACKTRACE`), and the session logs a warning: caught, not hidden.
/// With `panic = "abort"` it ends the process.
///
/// ```no_run
/// # use ipc_request::{handler_fn, Request, RemoteError};
/// let handler = handler_fn(|req: Request| async move {
///     let text: String = req.payload()?;
///     Ok::<_, RemoteError>(format!("(RESPONSE TO {text})"))
/// });
/// ```
pub fn handler_fn<F, Fut, T, E>(f: F) -> Handler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Serialize + Send + Sync + 'static,
    E: Into<RemoteError> + Send + 'static,
{
    let f = Arc::new(f);
    Handler {
        call: Arc::new(move |request, responder| {
            let f = f.clone();
            Box::pin(async move {
                // The user's code (`f`, and the conversion of its error,
                // which may run its `Display`) runs inside catch_unwind and
                // the responder stays out here, so a panic is answered with
                // its message.
                let answer = AssertUnwindSafe(async move { f(request).await.map_err(E::into) })
                    .catch_unwind()
                    .await;
                let answer: Result<T, RemoteError> = answer.unwrap_or_else(|panic| {
                    tracing::warn!("a request handler panicked; the request is answered with an error");
                    Err(panic_error(panic))
                });
                let sent = match answer {
                    // The answer's `Serialize` is the user's code too. A
                    // panic in it gives the responder's claim back as it
                    // unwinds, so the panic can be answered here, with its
                    // message, as one in `f`.
                    Ok(value) => match AssertUnwindSafe(responder.respond(&value)).catch_unwind().await {
                        Ok(sent) => sent,
                        Err(panic) => {
                            tracing::warn!(
                                "a request handler's answer panicked as it was sent (in its Serialize, \
                                 most likely); the request is answered with an error"
                            );
                            responder.fail(panic_error(panic)).await
                        }
                    },
                    Err(error) => responder.fail(error).await,
                };
                if let Err(e) = sent {
                    tracing::debug!("answer not sent: {e}");
                }
            })
        }),
    }
}

/// A handler that answers through its [`Responder`], which it may keep,
/// move to another task and use later. A responder dropped without an
/// answer answers with an error named `ResponderDropped` (or
/// `HandlerPanicked` if it was dropped by a panic), so the caller is never
/// left waiting. A responder dropped while its handler still runs sends
/// that error when the handler ends (it then waits for queue space while
/// the handler still holds its slot, so that a flood of such requests
/// meets back-pressure); to fail the caller at once, call
/// [`Responder::fail`].
pub fn responder_fn<F, Fut>(f: F) -> Handler
where
    F: Fn(Request, Responder) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Handler {
        call: Arc::new(move |request, responder| Box::pin(f(request, responder))),
    }
}

pub(crate) fn panic_error(panic: Box<dyn Any + Send>) -> RemoteError {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the handler panicked".into());
    RemoteError::new("HandlerPanicked", text)
}

/// A request from the peer, as the handler sees it.
pub struct Request {
    pub(super) payload: Message,
    pub(super) cancel: CancellationToken,
    /// The session it came on: for [`session`](Self::session), and for its
    /// `closing` token, taken only when a token is handed out (a clone of
    /// that token takes its lock: measured +1% of a burst).
    pub(super) shared: Arc<Shared>,
    /// For a peer that can cancel: the answer state that keeps the token
    /// handed out by [`cancellation_token`](Self::cancellation_token).
    /// `None` for one that cannot, whose requests' tokens are the
    /// session's children.
    ///
    /// The request's token for a peer that can cancel is the session's
    /// child only once handed out. Made a child for every request, it cost
    /// a lock on the session's token each, measured at 3% of a burst's
    /// instructions; not a child at all, a token handed to other tasks
    /// missed the session's close once the request's entry had gone (its
    /// handler done), and work started with it ran on (a review found it).
    pub(super) hand_out: Option<Arc<AnswerState>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("payload", &self.payload)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Request {
    /// The request data, deserialized; [`Error::DecodeRequest`] if it is
    /// not a `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(self.payload.get()).map_err(Error::decode_request)
    }

    /// The request data as raw JSON text.
    pub fn raw_payload(&self) -> &RawValue {
        &self.payload
    }

    /// The session this request came on: to call the peer back while
    /// handling it, or to send it plain messages. A handle like any other
    /// (cheap; it does not keep the session from closing).
    pub fn session(&self) -> Session {
        Session {
            shared: self.shared.clone(),
        }
    }

    /// True once the peer cancelled this request (`cancel` extension) or
    /// the channel closed, when an answer would not be written; also once
    /// the handler cancelled its [`cancellation_token`](Self::cancellation_token)
    /// itself, which does not stop its answer.
    pub fn is_cancelled(&self) -> bool {
        if self.cancel.is_cancelled() {
            return true;
        }
        if self.hand_out.is_none() {
            return false;
        }
        // The session's close reaches the request's own token only while
        // the handler runs (see `hand_out`); a request kept past that asks
        // the session, as `cancelled` hears it.
        self.handed_out().is_some_and(CancellationToken::is_cancelled) || self.shared.closing.is_cancelled()
    }

    /// Resolves when the request is cancelled; select on it to stop work.
    pub async fn cancelled(&self) {
        if self.hand_out.is_none() {
            return self.cancel.cancelled().await;
        }
        // The handed-out token also hears the session's close, and the
        // handler's own cancel of it. Made here if it was not yet: a child
        // of the session's token, whose lock a burst of handlers that all
        // wait on this share (see `hand_out`).
        let handed_out = self.cancellation_token();
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = handed_out.cancelled() => {}
        }
    }

    /// A token that is cancelled with this request (the peer's cancel, the
    /// session's close, before or after the answer), to hand to other
    /// tasks. Cancelling it yourself stops whatever watches it, but not the
    /// answer: the caller still gets what the responder sends, or the error
    /// its drop sends.
    pub fn cancellation_token(&self) -> CancellationToken {
        let Some(hand_out) = &self.hand_out else {
            return self.cancel.clone();
        };
        let token = hand_out
            .handed_out
            .get_or_init(|| self.shared.closing.child_token())
            .clone();
        // A cancel before the token existed: `RunningHandler::refuse`
        // cancels the request's token, then the handed-out one if there is
        // one yet; one of the two sees the other.
        if self.cancel.is_cancelled() {
            token.cancel();
        }
        token
    }

    /// The token handed out, if it was.
    fn handed_out(&self) -> Option<&CancellationToken> {
        self.hand_out.as_ref()?.handed_out.get()
    }
}

/// Answers one request, once. Send it anywhere; answer from any task.
pub struct Responder {
    pub(super) shared: Arc<Shared>,
    pub(super) cancel: CancellationToken,
    pub(super) state: Arc<AnswerState>,
}

/// What a responder and the task running its handler share, so that the
/// error answer of a responder dropped unanswered goes out with back-pressure
/// whenever possible.
///
/// A destructor cannot wait for queue space. If the handler is still running
/// when its responder is dropped (the usual case: the handler returned or
/// panicked without answering), the answer is left here and the handler's
/// task sends it, waiting for space while it still holds its handler slot:
/// a peer that floods us with requests and reads nothing then meets a full
/// queue and a stopped reader, not growing memory. Only a responder that
/// outlived its handler (moved elsewhere, then dropped) queues its answer
/// without waiting, within a budget shared with refusals, past which no
/// handler starts (see `Shared::send_orphan_answer`): a handler that hands
/// every responder to a task that drops it at once would otherwise answer
/// a peer that reads nothing into a queue without end (a review queued
/// 100,000 so).
///
/// The request's entry in the session's map of running handlers (peers
/// that can cancel, see `run_handler`) is held by two: the handler's task,
/// which may wait on `Request::cancelled` after the answer went (the
/// session's close must still reach it), and the answer, since a responder
/// can outlive its handler and must still hear the peer's cancel. The last
/// of the two to let go removes the entry.
pub(super) struct AnswerState {
    uid: PeerUid,
    answered: AtomicBool,
    /// HANDLER_RUNNING, HANDLER_DONE or ORPHANED.
    phase: AtomicU8,
    orphan: Mutex<Option<Vec<u8>>>,
    /// Holders of the running-map entry left: 2, then 1, then 0.
    entry_holders: AtomicU8,
    /// The peer cancelled the request or the session closed: no answer
    /// is written. (The token alone cannot say so: the handler may cancel
    /// it itself, which must not cost its caller the answer.)
    refused: AtomicBool,
    /// An answer was claimed and nothing was written (refused, or the
    /// channel gone): a later answer is told the same, not that one was
    /// given.
    nothing_written: AtomicBool,
    /// The token [`Request::cancellation_token`] handed out, for a peer
    /// that can cancel (see `Request::hand_out`).
    handed_out: OnceLock<CancellationToken>,
}

const HANDLER_RUNNING: u8 = 0;
const HANDLER_DONE: u8 = 1;
const ORPHANED: u8 = 2;

impl AnswerState {
    pub(super) fn new(uid: PeerUid) -> Self {
        AnswerState {
            uid,
            answered: AtomicBool::new(false),
            phase: AtomicU8::new(HANDLER_RUNNING),
            orphan: Mutex::new(None),
            entry_holders: AtomicU8::new(2),
            refused: AtomicBool::new(false),
            nothing_written: AtomicBool::new(false),
            handed_out: OnceLock::new(),
        }
    }

    /// The request's UID.
    pub(super) fn uid(&self) -> &PeerUid {
        &self.uid
    }

    /// What tells this state from every other alive: its address (it lives
    /// in an `Arc`, and the table's entry holds one for as long as it is
    /// keyed by this).
    pub(super) fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// See `refused`. Called before the handler's token is cancelled.
    pub(super) fn refuse(&self) {
        self.refused.store(true, Ordering::Release);
    }

    /// Cancels the token handed out, if one was. Called after the
    /// handler's token is cancelled (see `Request::cancellation_token`).
    pub(super) fn cancel_handed_out(&self) {
        if let Some(token) = self.handed_out.get() {
            token.cancel();
        }
    }

    /// See `refused`.
    pub(super) fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// One holder of the running-map entry lets go (see the type's docs):
    /// the handler's task once, when it ends, and the answer once, when it
    /// is final. The last removes the entry.
    pub(super) fn let_go_of_entry(&self, shared: &Shared) {
        if self.entry_holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.forget_running(self);
        }
    }

    /// Called by the handler's task once the handler has finished: the
    /// answer a dropped responder left for it to send, if any.
    pub(super) fn handler_finished(&self) -> Option<Vec<u8>> {
        if self.phase.swap(HANDLER_DONE, Ordering::AcqRel) != ORPHANED {
            return None;
        }
        let line = self.orphan.lock().unwrap().take();
        // The peer may have cancelled the request since the responder was
        // dropped: it then expects no answer, and may already have reused
        // the UID for a request this error would answer.
        line.filter(|_| !self.is_refused())
    }

    /// Leaves `line` for the handler's task; gives it back if that task
    /// has already finished.
    fn leave(&self, line: Vec<u8>) -> Option<Vec<u8>> {
        *self.orphan.lock().unwrap() = Some(line);
        match self
            .phase
            .compare_exchange(HANDLER_RUNNING, ORPHANED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => None,
            Err(_) => self.orphan.lock().unwrap().take(),
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("uid", &self.state.uid).finish()
    }
}

impl Responder {
    /// Sends `value` as the answer. Fails with [`Error::AlreadyAnswered`]
    /// on a second answer, [`Error::Cancelled`] if the peer cancelled the
    /// request (nothing is written; so is every later answer: none was
    /// given), [`Error::Frame`] if the answer does not
    /// encode or is too long (the peer then gets an error answer instead),
    /// and [`Error::Closed`] if the channel is gone (also when the peer had
    /// cancelled the request before: the session's end is the larger news).
    /// An answer whose write met a gone peer's broken pipe before the
    /// session ended is told so (`CloseReason::Io`) at once, where a
    /// request waits to be told how the session ended: an answer has
    /// nobody left to reach either way.
    ///
    /// # Cancel safety
    ///
    /// Dropped before its answer was queued (a timeout around it while the
    /// outgoing queue is full), it sends nothing and the request stays
    /// unanswered: a later `respond` or `fail` may answer it, or the
    /// responder's drop answers `ResponderDropped`. Once queued, the answer
    /// is written.
    pub async fn respond<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let claim = self.claim()?;
        let sent = async {
            match self.shared.encode_response(&self.state.uid, value) {
                Ok(line) => self.shared.send_answer(line, Some(&self.state)).await,
                Err(e) => {
                    let error = RemoteError::new("ResponseNotSent", e.to_string());
                    let line = self.shared.encode_error(&self.state.uid, &error)?;
                    self.shared.send_answer(line, Some(&self.state)).await?;
                    Err(e)
                }
            }
        }
        .await;
        // Finished, sent or not: only a drop before this gives it back.
        claim.keep_after(&sent);
        sent
    }

    /// Answers with an error. To a peer with the `error` extension it
    /// travels as an error; to an ipc-request 1.0 peer, as a plain response
    /// whose payload is the error object (PROTOCOL.md section 3).
    pub async fn fail(&self, error: RemoteError) -> Result<(), Error> {
        let claim = self.claim()?;
        let sent = async {
            let line = self.shared.encode_error(&self.state.uid, &error)?;
            self.shared.send_answer(line, Some(&self.state)).await
        }
        .await;
        claim.keep_after(&sent);
        sent
    }

    /// True once an answer was given (or refused because of a cancel).
    pub fn is_answered(&self) -> bool {
        self.state.answered.load(Ordering::Acquire)
    }

    /// True once the peer cancelled the request or the channel closed: an
    /// answer would not be written. (A token the handler cancelled itself
    /// does not count here; see [`Request::cancellation_token`].)
    pub fn is_cancelled(&self) -> bool {
        self.answer_refused()
    }

    /// The peer cancelled the request or the session closed: nothing this
    /// responder sends would be written. A token the handler cancelled
    /// itself does not count. Only a cancelled token is looked into
    /// further, so the usual answer pays one look at its token.
    fn answer_refused(&self) -> bool {
        self.cancel.is_cancelled()
            && (self.state.refused.load(Ordering::Acquire) || self.shared.closing.is_cancelled())
    }

    /// Marks the request answered, or says why it cannot be. The claim is
    /// given back if the answering future is dropped before its line was
    /// accepted (a caller's timeout around `respond` while the queue is
    /// full): the responder's drop then answers with an error, instead of
    /// the peer waiting for an answer that never went.
    ///
    /// The answer lets go of the request's entry in the session's map of
    /// running handlers only once the claim is kept (see [`AnswerState`]),
    /// so a claim given back still hears the peer's cancel and the
    /// session's close.
    fn claim(&self) -> Result<Claim<'_>, Error> {
        if self.state.answered.swap(true, Ordering::AcqRel) {
            // Said again to whoever tries once more after a refusal: no
            // answer went, and none can.
            if self.state.nothing_written.load(Ordering::Acquire) {
                return Err(self.shared.refusal_error());
            }
            return Err(Error::AlreadyAnswered);
        }
        if self.answer_refused() {
            self.state.nothing_written.store(true, Ordering::Release);
            self.state.let_go_of_entry(&self.shared);
            // The session's end explains more than the token it cancelled.
            // Its reason is set before any handler is refused (`shut`).
            return Err(self.shared.refusal_error());
        }
        Ok(Claim {
            responder: self,
            kept: false,
        })
    }
}

/// A responder's claim to answer, given back unless kept.
struct Claim<'a> {
    responder: &'a Responder,
    kept: bool,
}

impl Claim<'_> {
    /// The answer was sent, or failed for good with `sent`'s error: the
    /// claim stands.
    fn keep_after(self, sent: &Result<(), Error>) {
        // Refused while it waited for room, or the channel went: nothing
        // was written. (An answer too long, or that did not encode, was
        // replaced by an error answer, which was.)
        if matches!(sent, Err(Error::Cancelled | Error::Closed(_))) {
            self.responder
                .state
                .nothing_written
                .store(true, Ordering::Release);
        }
        self.keep();
    }

    /// The answer was sent, or failed for good: the claim stands.
    fn keep(mut self) {
        self.kept = true;
        let responder = self.responder;
        responder.state.let_go_of_entry(&responder.shared);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.responder.state.answered.store(false, Ordering::Release);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.state.answered.swap(true, Ordering::AcqRel) {
            return;
        }
        self.state.let_go_of_entry(&self.shared);
        if self.answer_refused() {
            return;
        }
        let error = if std::thread::panicking() {
            RemoteError::new("HandlerPanicked", "the handler panicked before answering")
        } else {
            RemoteError::new("ResponderDropped", "the handler finished without answering")
        };
        // See AnswerState: the handler's task sends it if it can.
        match self.shared.encode_error(&self.state.uid, &error) {
            Ok(line) => {
                if let Some(line) = self.state.leave(line) {
                    self.shared.send_orphan_answer(line);
                }
            }
            Err(e) => tracing::warn!("could not answer request {}: {e}", self.state.uid),
        }
    }
}
