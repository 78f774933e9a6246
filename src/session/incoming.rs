//! The reader side of a session: one task reads the channel, answers
//! handshakes, routes answers to the requests waiting for them, starts
//! handlers for the peer's requests (queueing them while every handler slot
//! is busy) and passes plain messages on. When the channel ends it fails
//! every pending request, after everything already in the socket was read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::backlog::request_size;
use super::gone_peer::{
    READER_DONE, child_gone, finish_watching_for_a_hang_up, our_write_failure, with_exit_status,
};
use super::handler::AnswerState;
use super::{PeerInfo, Phase, Request, Responder, RunningHandler, Shared};
use crate::channel::{ChannelReceiver, Parsed, PeerExit};
use crate::error::{CloseReason, Error, RemoteError};
use crate::frame::{FrameError, Message};
use crate::protocol::{self, Inbound, PeerUid, UnreadableLine};

impl Shared {
    fn establish(&self) {
        self.phase.send_if_modified(|p| {
            let first = matches!(p, Phase::Handshaking);
            if first {
                // Inside the watch's lock: set before anyone can see the
                // phase move on, to Established or past it to Closed.
                self.was_established.store(true, Ordering::Release);
                self.keep_plain_messages_from_now();
                *p = Phase::Established;
            }
            first
        });
    }

    /// With `SessionBuilder::keep_plain_messages`: plain messages wait for
    /// room from now on instead of being dropped. Called once the session
    /// is established, or about to be (our answer to the peer's handshake
    /// request is on its way).
    fn keep_plain_messages_from_now(&self) {
        if self.keep_plain_messages {
            self.plain_messages_wait.store(true, Ordering::Release);
        }
    }

    async fn dispatch(self: &Arc<Self>, inbound: Inbound, our_uid: &str) {
        match inbound {
            Inbound::HandshakeRequest { uid, extensions } => {
                let _ = self.peer.set(PeerInfo::new(extensions));
                let answer = |max, out: &mut _| protocol::encode_handshake_response(&uid, max, out);
                let line = match self.sender.encode_with(answer) {
                    Ok(line) => line,
                    // Its UID leaves no room for the rest: unanswerable.
                    Err(e) => return tracing::warn!("could not answer the handshake request {uid}: {e}"),
                };
                let handshaking = matches!(*self.phase.borrow(), Phase::Handshaking);
                if handshaking && !self.answering_handshake.swap(true, Ordering::AcqRel) {
                    // Established once our response is written (2.1 step 4);
                    // wait for that off the reader task (once: further
                    // handshake requests are answered inline below, so a
                    // flood of them cannot pile up tasks).
                    #[cfg(test)]
                    tests::hooks::answer_task_spawned(self, &uid);
                    let shared = self.clone();
                    let task = tokio::spawn(async move {
                        if shared.sender.send_line_written(line).await.is_ok() {
                            #[cfg(test)]
                            tests::hooks::handshake_answer_written(&shared).await;
                            shared.establish();
                        }
                    });
                    *self.handshake_answer.lock().unwrap() = Some(task);
                    // The peer counts itself established once it reads our
                    // answer, and may send plain messages at once; the task
                    // may establish us only after the reader has handled
                    // them. Kept plain messages wait from here on: `setup`
                    // returns once the answer is written, reader or not
                    // (unless the answer cannot be written; see
                    // `SessionBuilder::keep_plain_messages`).
                    self.keep_plain_messages_from_now();
                } else {
                    // A handshake request after the first: answered as a
                    // refusal is, without waiting for room in the write
                    // queue, which would stop the reader while our own
                    // requests fill it. During setup this answer may pass
                    // the first one's, which waits for room in its task: a
                    // peer matches answers by UID (PROTOCOL.md 2.1).
                    self.send_unwaited(line).await;
                }
            }
            Inbound::HandshakeResponse { uid, extensions } => {
                if uid.as_json() == our_uid {
                    let _ = self.peer.set(PeerInfo::new(extensions));
                    self.establish();
                }
            }
            Inbound::Request { uid, payload } => self.start_handler(uid, payload).await,
            Inbound::Response { uid, payload, error } => {
                let delivered = uid.as_ref().is_ok_and(|&id| match error {
                    // Read only for a request that waits: reading copies
                    // the error's fields, up to a line's worth.
                    Some(error) if self.awaits_answer(id) => {
                        let error = protocol::remote_error(&error);
                        self.deliver_answer(id, Err(Box::new(Error::Remote(Box::new(error)))))
                    }
                    Some(_) => false,
                    None => self.deliver_answer(id, Ok(payload)),
                });
                if !delivered {
                    tracing::debug!("answer to a request no longer pending: {uid:?}")
                }
            }
            Inbound::Cancel { uid } => self.cancel_request(&uid),
            Inbound::Plain(msg) => self.deliver(Ok(msg)).await,
        }
    }

    /// The peer cancelled its request `uid`: a waiting request leaves the
    /// backlog, a running handler is told and its answer refused.
    fn cancel_request(&self, uid: &PeerUid) {
        if !self.peer_can_cancel() {
            // It advertised no `cancel`: nothing of its is in `running`.
            return;
        }
        // Both locks, in the order `drain_backlog` takes them: a request
        // moving from the backlog to a handler is registered as running
        // before the backlog lets go of it, so it is seen in one place or
        // the other, never in neither.
        let mut backlog = self.backlog.lock().unwrap();
        let mut table = self.table.lock().unwrap();
        // A cancel means the newest request with this UID, and one waiting
        // in the backlog is always newer than the one running (the backlog
        // runs oldest first, and a request starts at once only when
        // nothing waits). The peer reuses a UID only once it has the
        // answer, so a request of `uid` waiting came after the running
        // one's answer, and is the one meant; with none waiting, the cancel
        // goes to the handler, the latest of that UID to start (if it has
        // answered, the cancel crossed the answer on the way, and still
        // tells the handler to stop). A peer that reuses a UID too early,
        // which the protocol does not allow, has its cancel taken the same
        // way: its newest request.
        if backlog.cancel(uid) {
            // No reader waits for the room this frees: only a peer that
            // cannot cancel is made to wait (see `start_handler`).
            self.backlog_len.store(backlog.len(), Ordering::Release);
            return;
        }
        let running = table.running.remove(uid);
        drop((table, backlog));
        if let Some(handler) = running {
            handler.refuse();
        }
        // A cancel that finds the request in neither place came after its
        // answer; the peer drops an answer to a cancelled request anyway.
    }

    /// Starts a handler for the peer's request, or queues the request
    /// until a handler slot frees up, or, when the queue is full, refuses
    /// it at once with an `Overloaded` error answer; a peer that speaks
    /// neither `error` nor `cancel` (ipc-request 1.0) is made to wait
    /// instead (we stop reading until there is room: see
    /// `SessionConfig::max_queued_requests`).
    async fn start_handler(self: &Arc<Self>, uid: PeerUid, payload: Message) {
        // The common case: nothing waits, no answer is overdrawn (see
        // `send_orphan_answer`), and a slot is free.
        if self.backlog_len.load(Ordering::Acquire) == 0 && !self.overdrawn() {
            if let Ok(slot) = self.handler_slots.clone().try_acquire_owned() {
                return self.run_handler(uid, payload, slot);
            }
        }
        // Boxed: the reader's future for every line would otherwise carry
        // the state of this rarer path (a wait, a refusal).
        Box::pin(self.queue_or_refuse(uid, payload)).await
    }

    /// [`start_handler`](Self::start_handler) when a handler slot is not
    /// free at once, or requests already wait.
    async fn queue_or_refuse(self: &Arc<Self>, uid: PeerUid, payload: Message) {
        let size = request_size(&uid, &payload);
        loop {
            let space = self.backlog_space.notified();
            {
                let mut backlog = self.backlog.lock().unwrap();
                let fits = backlog.len() < self.config.max_queued_requests.max(1)
                    && (backlog.len() == 0 || backlog.bytes() + size <= self.config.max_queued_request_bytes);
                if fits {
                    backlog.push(uid, payload);
                    self.backlog_len.store(backlog.len(), Ordering::Release);
                    break;
                }
            }
            if !self.peer_speaks_neither_error_nor_cancel() {
                // Refused, not waited for: a reader that stopped here,
                // with this request in hand, would read nothing behind it,
                // neither the cancels that free handler slots nor the
                // answers that handlers calling the peer back wait for, nor
                // the peer's answers to our own requests; two sessions
                // flooding each other, or handlers that wait on the peer,
                // would then stall for good (two reviews showed both).
                tracing::debug!("refused request {uid}: its backlog is full");
                let refusal = RemoteError::new(
                    "Overloaded",
                    "refused unhandled: too many requests wait for a handler",
                );
                return self.refuse(&uid, &refusal).await;
            }
            // A peer without `error` (1.0) would take the refusal for an
            // answer: one without `cancel` either waits until a handler
            // finishes (Node never stops reading, so this cannot close a
            // circle with it, and it has no cancel to hold up behind the
            // wait). One that speaks `cancel` but not `error` (or one not
            // known yet: its handshake is still unread) is refused all the
            // same, its refusal shaped as any failure is for it (the error
            // as the payload): holding its cancels up could stall the
            // handlers that wait for them.
            tokio::select! {
                _ = space => {}
                _ = self.closing.cancelled() => return,
            }
        }
        self.drain_backlog();
    }

    /// Answers the peer's request `uid` with `refusal`, from the reader.
    ///
    /// The answer does not wait for room in the write queue, as handlers'
    /// answers do: when our writes stall because the peer is busy while
    /// our own requests fill the queue, waiting here would stop the reader,
    /// and two sessions in that state would wait for each other for ever.
    /// Refusals have a bound of their own instead, in bytes (a refusal
    /// carries the request's UID, which the peer chooses):
    /// `max_unwritten_refusal_bytes` not yet written. Past it the reader
    /// does wait (stops reading), as the peer then reads none of what we
    /// write while it goes on sending, and memory must stay bounded.
    async fn refuse(&self, uid: &PeerUid, refusal: &RemoteError) {
        match self.encode_error(uid, refusal) {
            Ok(line) => self.send_unwaited(line).await,
            Err(e) => tracing::warn!("could not refuse request {uid}: {e}"),
        }
    }

    /// Sends `line`, an answer of the reader's own, under the refusals'
    /// budget, without waiting for room in the write queue (see `refuse`).
    async fn send_unwaited(&self, mut line: Vec<u8>) {
        let unwritten = &self.refusals_unwritten;
        let bytes = self.refusal_share(&mut line);
        let permit = match unwritten.clone().try_acquire_many_owned(bytes) {
            Ok(permit) => permit,
            Err(_) => tokio::select! {
                permit = unwritten.clone().acquire_many_owned(bytes) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = self.closing.cancelled() => return,
            },
        };
        let _ = self.sender.send_control_holding(line, Box::new(permit));
    }

    /// Runs queued requests while handler slots are free. Called after a
    /// request is queued and after a handler task finishes; each side
    /// changes its state before looking at the other's, so no request is
    /// left waiting with a slot free.
    pub(super) fn drain_backlog(self: &Arc<Self>) {
        loop {
            if self.overdrawn() {
                // No handler starts until what went past the refusals'
                // budget is written; a task calls this again then (see
                // `send_orphan_answer`).
                return;
            }
            let Ok(slot) = self.handler_slots.clone().try_acquire_owned() else {
                return;
            };
            let next = {
                let mut backlog = self.backlog.lock().unwrap();
                let next = backlog.pop();
                self.backlog_len.store(backlog.len(), Ordering::Release);
                // Registered while the backlog still holds its lock: see
                // `cancel_request`.
                next.map(|(uid, payload)| (self.register_handler(uid), payload))
            };
            let Some((registered, payload)) = next else { return };
            self.backlog_space.notify_one();
            #[cfg(test)]
            tests::hooks::taken_from_backlog();
            // `None`: the session closed; the request is dropped with it.
            if let Some((state, cancel)) = registered {
                self.start_registered_handler(state, cancel, payload, slot);
            }
        }
    }

    fn run_handler(self: &Arc<Self>, uid: PeerUid, payload: Message, slot: OwnedSemaphorePermit) {
        if let Some((state, cancel)) = self.register_handler(uid) {
            self.start_registered_handler(state, cancel, payload, slot);
        }
    }

    /// The answer state and token of a handler about to start for the
    /// peer's request `uid`, registered in the `running` map when the peer
    /// can cancel; `None` once the session is closed.
    fn register_handler(&self, uid: PeerUid) -> Option<(Arc<AnswerState>, CancellationToken)> {
        // Every handler sees the session end, whatever the peer supports.
        // A peer that can cancel has each handler in the `running` map
        // below, which the close cancels too. For one that cannot, the
        // handler's token is a child of the session's own (a child, so that
        // a handler cancelling its token cannot end the session); children
        // cost a lock on the session's token, measured at 3% of a burst's
        // instructions, so a peer that can cancel does not pay for them,
        // except for a request whose handler hands its token out or waits
        // on `Request::cancelled` (see `Request::hand_out`).
        let cancel = if self.peer_can_cancel() {
            CancellationToken::new()
        } else {
            self.closing.child_token()
        };
        let state = Arc::new(AnswerState::new(uid));
        let mut table = self.table.lock().unwrap();
        if table.closed.is_some() {
            return None;
        }
        if self.peer_can_cancel() {
            let handler = RunningHandler {
                cancel: cancel.clone(),
                answer: state.clone(),
            };
            if let Some(older) = table.running.insert(state.uid().clone(), handler) {
                table.displaced.insert(older.answer.key(), older);
            }
        }
        Some((state, cancel))
    }

    /// Runs the handler of a registered request, holding `slot` until it
    /// ends.
    fn start_registered_handler(
        self: &Arc<Self>,
        state: Arc<AnswerState>,
        cancel: CancellationToken,
        payload: Message,
        slot: OwnedSemaphorePermit,
    ) {
        if state.is_refused() {
            // The peer cancelled it (or the session closed) as it moved from
            // the backlog to here: as a request cancelled while it waited,
            // it does not run. (Its entry is already out of `running`.)
            return;
        }
        let responder = Responder {
            shared: self.clone(),
            cancel: cancel.clone(),
            state: state.clone(),
        };
        let request = Request {
            payload,
            cancel,
            shared: self.clone(),
            hand_out: self.peer_can_cancel().then(|| state.clone()),
        };
        let handler = self.handler.lock().unwrap().clone();
        let shared = self.clone();
        let mut task = Box::pin(async move {
            let _slot = slot;
            // However the task ends (its handler may have answered long
            // before), it lets go of the request's running-map entry.
            let _entry = LetGoOfEntry(&state, &shared);
            let Some(handler) = handler else {
                // Not kept while the refusal waits for room in the queue
                // (a peer that reads nothing makes it wait).
                drop(request);
                let _ = responder
                    .fail(RemoteError::new(
                        "NoHandler",
                        "this side set up its session without a request handler",
                    ))
                    .await;
                return;
            };
            let run = std::panic::AssertUnwindSafe(async move { (handler.call)(request, responder).await });
            if run.catch_unwind().await.is_err() {
                tracing::warn!("a request handler panicked; the request was answered with an error");
            }
            // The answer of a responder dropped unanswered, sent while this
            // task still holds its slot (see AnswerState).
            if let Some(line) = state.handler_finished() {
                let _ = shared.send_answer(line, Some(&state)).await;
            }
        });
        // Run the handler here until it first waits: a handler that answers
        // at once (most do) then costs no task and no wake-up. One that waits
        // continues as its own task. Polling with a no-op waker is sound: the
        // task polls it again with its own waker before anything could wake
        // it. The cost: a handler's synchronous part delays reading; handlers
        // must not block (use spawn_blocking for heavy work).
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if task.as_mut().poll(&mut cx).is_pending() {
            let shared = self.clone();
            tokio::spawn(async move {
                task.await;
                // Its slot is free now: start what waits for one.
                shared.drain_backlog();
            });
        }
    }

    /// A line that could not be read (too long, or not JSON) that was the
    /// answer to one of our requests fails that request with the error; one
    /// that was a request of the peer is answered with an error. Without
    /// this both would wait for ever: Node has no length limit, so a Node
    /// peer may well send a line too long, and a peer of another make a
    /// payload that is not JSON. Either is known by its envelope, which
    /// comes first (see [`protocol::unreadable_line`]). True if the line was
    /// either (it is then not a plain message's error).
    ///
    /// The error answer goes as any refusal does (see [`refuse`](Self::refuse)):
    /// a peer that sends such requests and reads nothing is slowed down (we
    /// stop reading), not answered into a queue without end.
    async fn answer_unreadable_line(&self, error: &FrameError, head: &[u8]) -> bool {
        let name = match error {
            FrameError::TooLong { .. } => "RequestTooLong",
            FrameError::InvalidJson { .. } => "RequestUnreadable",
            FrameError::Encode { .. } => return false,
        };
        match protocol::unreadable_line(head) {
            Some(UnreadableLine::Response(uid)) => {
                let answer = || Err(Box::new(Error::Frame(error.clone())));
                if !uid.as_ref().is_ok_and(|&id| self.deliver_answer(id, answer())) {
                    tracing::debug!("unreadable answer to a request no longer pending: {uid:?}")
                }
                true
            }
            Some(UnreadableLine::Request(uid)) => {
                let refusal =
                    RemoteError::new(name, format!("the peer could not read this request: {error}"));
                // Sent even past a maximum length too small for it (see
                // `encode_error`): else the peer would wait for ever.
                self.refuse(&uid, &refusal).await;
                true
            }
            None => false,
        }
    }

    /// Buffers a plain message (or the error of a line) for
    /// `Session::messages`, within its count and its byte budget: dropped
    /// with a warning if the stream was not taken (nor kept, see
    /// `SessionBuilder::keep_plain_messages`) and either is spent, waited
    /// for (the reader stops) if it was.
    async fn deliver(&self, item: Result<Message, Error>) {
        let Some(tx) = self.messages_tx.lock().unwrap().clone() else {
            return;
        };
        let bytes = match &item {
            Ok(message) => message.get().len().clamp(1, self.message_bytes_total),
            Err(_) => 0,
        };
        let budget = &self.message_bytes;
        if self.plain_messages_wait.load(Ordering::Acquire) {
            // False only if the stream was taken and then dropped: the
            // message goes nowhere, and is counted as dropped.
            let delivered = async {
                let permit = match bytes {
                    0 => None,
                    n => match budget.clone().acquire_many_owned(n as u32).await {
                        Ok(permit) => Some(permit),
                        Err(_) => return true, // closed: the session is ending
                    },
                };
                tx.send((item, permit)).await.is_ok()
            };
            tokio::select! {
                delivered = delivered => if !delivered {
                    self.messages_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("plain message dropped: the stream of Session::messages() was dropped");
                },
                _ = self.closing.cancelled() => {}
            }
            return;
        }
        let permit = match bytes {
            0 => Ok(None),
            n => budget.clone().try_acquire_many_owned(n as u32).map(Some),
        };
        let buffered = permit.map(|permit| tx.try_send((item, permit)));
        if !matches!(buffered, Ok(Ok(()))) {
            self.messages_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("plain message dropped: nobody took Session::messages() and its buffer is full");
        }
    }
}

pub(super) async fn read_loop(
    shared: Arc<Shared>,
    mut receiver: ChannelReceiver,
    peer_exit: Option<PeerExit>,
    our_uid: String,
) {
    let grace = shared.config.exit_grace;
    let mut child_gone = std::pin::pin!(child_gone(peer_exit.clone(), grace));
    let hang_up_probe = receiver.hang_up_probe();
    let mut lines_read = 0u64;
    // Made once, not per line: a fresh one registers with the token's
    // `Notify` on its first poll and takes itself out again on its drop,
    // each under the `Notify`'s lock (callgrind: 4% of `count burst`, as a
    // branch of a `select!` made anew for every line). It is polled only
    // when there is nothing to read; before that, a look at the token
    // says whether the session has closed, as that `select!`, biased with
    // it first, did.
    let mut closing = std::pin::pin!(shared.closing.cancelled());
    let reason = loop {
        // Reading comes before the child's exit: what the child wrote
        // before it died is read and delivered before the session ends
        // for it.
        let woke = {
            let mut recv = std::pin::pin!(receiver.recv_with(|line| {
                protocol::parse_inbound_line(line).map(|(inbound, exact)| {
                    if exact {
                        Parsed::NotNodes(inbound)
                    } else {
                        Parsed::Unchecked(inbound)
                    }
                })
            }));
            std::future::poll_fn(|cx| {
                if shared.closing.is_cancelled() {
                    return Poll::Ready(ReaderWoke::Closing);
                }
                if let Poll::Ready(next) = recv.as_mut().poll(cx) {
                    return Poll::Ready(ReaderWoke::Read(next));
                }
                if closing.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(ReaderWoke::Closing);
                }
                child_gone.as_mut().poll(cx).map(ReaderWoke::ChildExited)
            })
            .await
        };
        let next = match woke {
            ReaderWoke::Closing => return super::close::drain_while_flushing(receiver, &shared).await,
            ReaderWoke::Read(next) => next,
            ReaderWoke::ChildExited(status) => break CloseReason::ChildExited(status),
        };
        // A plain store (one writer): read by the task that ends a session
        // whose reader is held up.
        lines_read += 1;
        shared.lines_read.store(lines_read, Ordering::Relaxed);
        match next {
            Ok(Some(inbound)) => {
                shared
                    .more_input
                    .store(receiver.buffered_bytes() > 0, Ordering::Relaxed);
                // Pinned where it is made: moved into a wrapper, the
                // future was copied once more per line (+3% instructions).
                let mut dispatch = std::pin::pin!(shared.dispatch(inbound, &our_uid));
                if dispatch.as_mut().now_or_never().is_none() {
                    finish_watching_for_a_hang_up(dispatch, &shared, hang_up_probe.as_ref()).await
                }
            }
            Ok(None) => break CloseReason::PeerClosed,
            Err(Error::Frame(e)) => {
                tracing::warn!("skipped a line from the peer: {e}");
                let bad_line_head = receiver.bad_line_head();
                let mut dispatch = std::pin::pin!(async {
                    if !shared.answer_unreadable_line(&e, bad_line_head).await {
                        shared.deliver(Err(Error::Frame(e))).await;
                    }
                });
                if dispatch.as_mut().now_or_never().is_none() {
                    finish_watching_for_a_hang_up(dispatch, &shared, hang_up_probe.as_ref()).await
                }
            }
            Err(Error::Closed(reason)) => break reason,
            Err(other) => break CloseReason::Io(Arc::new(std::io::Error::other(other.to_string()))),
        }
    };
    shared.lines_read.store(READER_DONE, Ordering::Relaxed);
    // Why the channel ended, for a request whose deadline passes while the
    // session waits below (see `Shared::deadline_error`).
    let _ = shared
        .reader_ended
        .set(our_write_failure(&shared).unwrap_or_else(|| reason.clone()));
    let answer_task = shared.handshake_answer.lock().unwrap().take();
    if let Some(task) = answer_task.filter(|_| !shared.was_established.load(Ordering::Acquire)) {
        // The peer may have read our answer to its handshake request and
        // left at once: its end reaches this reader before the task that
        // waited for the answer to be written has run again. By then we
        // are established (2.1 step 4), and `setup` must hand the session
        // back, closed, not fail (a review saw a child's setup fail 1 to
        // 19 times in 300 so). So the task finishes first: at once if the
        // answer is written; an answer still waiting for room (a peer that
        // reads nothing) is given up after a grace.
        #[cfg(test)]
        tests::hooks::reader_waits_for_the_handshake_answer(&shared);
        let _ = tokio::time::timeout(HANDSHAKE_ANSWER_GRACE, task).await;
    }
    let reason = match our_write_failure(&shared) {
        // Why the channel ended, whatever the peer did once our side shut
        // down (closed its end; exited, as a Node child does when its
        // channel closes): the caller needs to hear of the failure.
        Some(failure) => failure,
        None => with_exit_status(reason, peer_exit, grace).await,
    };
    shared.shut(reason);
}

/// What the reader's wait for its next line ended with.
enum ReaderWoke<T> {
    /// The session is closing (closed on our side).
    Closing,
    /// The channel's next line, its end, or its error.
    Read(T),
    /// The child we own exited, and its grace is over.
    ChildExited(std::process::ExitStatus),
}

/// How long a reader that met the end of the channel during the handshake
/// waits for our answer to the peer's handshake request to be written.
const HANDSHAKE_ANSWER_GRACE: Duration = Duration::from_millis(200);

/// Lets go of the handler task's hold on its request's entry in the map of
/// running handlers (see [`AnswerState`]) when dropped.
struct LetGoOfEntry<'a>(&'a AnswerState, &'a Shared);

impl Drop for LetGoOfEntry<'_> {
    fn drop(&mut self) {
        self.0.let_go_of_entry(self.1);
    }
}

#[cfg(test)]
mod tests;
