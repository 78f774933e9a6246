//! The sending half of a channel: a byte-bounded queue, one writer task
//! (`writer/write_task.rs`), and a direct path (`writer/direct.rs`) that
//! skips both when nothing is waiting.
//!
//! Why a direct path: handing every line to the writer task costs a task
//! wake-up per message, which dominates a round trip on a local socket.
//! When the queue is empty and the writer lock is free, the sender writes
//! the line itself with one non-blocking `write`; only what the stream does
//! not take at once goes through the queue.
//!
//! Order: lines of one sender (one task sending one message after another)
//! stay in order. A direct write happens only under the writer lock and only
//! when no line is queued (`queued_lines == 0`, read under that lock); the
//! writer task takes lines off the queue and writes them under the same lock
//! and decrements the count only once they are written (or skipped, when
//! their sender withdrew them: see `withdrawals.rs`). So a line can never
//! overtake one queued before it. A direct write the stream takes nothing
//! of goes to the back of the queue, still under the lock: every line of
//! its sender's before it is written (the count was 0), and its count is
//! in before the lock is let go, so no later line of its sender's can pass
//! it. Lines of different tasks sent at the same time have no defined
//! order, as with any channel.
//!
//! Integrity: a line is never split by another. When the stream takes only
//! part of a direct write, the rest goes to a slot beside the stream, not to
//! the queue (another sender may have queued a line a moment earlier, which
//! would then be written in the middle of this one); whoever next holds the
//! lock writes that rest before anything else. A racing-senders test caught
//! exactly this. A line the stream took nothing of is not split by
//! anything queued before it, so it is queued as any other: there it can
//! still be withdrawn (see `ChannelSender::write_or_queue`).

mod counting;
mod direct;
mod write_task;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use serde::Serialize;
use tokio::io::AsyncWrite;
use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::ChannelConfig;
use super::withdrawals::{LineTicket, Withdrawals};
use crate::error::{CloseReason, Error};
use crate::frame;
use write_task::{WriterGone, write_loop};

/// Lines up to this size are copied into one batch buffer for a single
/// write; larger ones are written from their own buffer.
const COALESCE_LIMIT: usize = 64 * 1024;

type BoxWriter = Box<dyn AsyncWrite + Unpin + Send>;

/// The write half and the rest of a line a direct write could not finish.
struct Stream {
    writer: BoxWriter,
    /// The line and how many of its bytes are already written. Whoever
    /// next holds the lock writes the rest before anything else. It cannot
    /// go through the queue: a line queued by another sender a moment
    /// earlier would then land in the middle of this one.
    partial: Option<(Outgoing, usize)>,
}

/// One line waiting to be written.
struct Outgoing {
    line: Vec<u8>,
    /// The budget this line holds until it has been written (none for the
    /// control lines of `send_control`).
    budget: Option<BudgetShare>,
    /// Told once the line has been written and the stream flushed (on a
    /// socket: handed to the kernel).
    written: Option<oneshot::Sender<()>>,
    /// Lets the sender take the line back while it waits in the queue (see
    /// [`LineTicket`]).
    ticket: Option<LineTicket>,
    /// What the sender bounds such lines with (a semaphore's permit, a
    /// counter's share), let go of when the line is written or dropped (see
    /// `send_control_holding`).
    _held: Option<Box<dyn Send>>,
}

impl Outgoing {
    /// Whether the writer task should write this line: not if its sender
    /// withdrew it. Past this, it cannot be withdrawn.
    fn still_wanted(&self, shared: &SenderShared) -> bool {
        self.ticket
            .as_ref()
            .is_none_or(|ticket| shared.withdrawals.take(ticket))
    }
}

/// Bytes of write budget, taken from the semaphore and forgotten there.
/// The writer task gives a whole batch's shares back in one call (a
/// semaphore release takes its lock: measured 1.4% of a burst when every
/// line released its own permit); a share dropped any other way (written
/// directly, refused, left unwritten when the channel failed) gives itself
/// back, so the count never drifts.
struct BudgetShare {
    budget: Arc<Semaphore>,
    bytes: u32,
}

impl BudgetShare {
    /// The bytes, for the caller to give back with others.
    fn into_bytes(mut self) -> usize {
        std::mem::take(&mut self.bytes) as usize
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.add_permits(self.bytes as usize);
        }
    }
}

enum Command {
    Write(Outgoing),
    /// A direct write left the rest of its line in [`Stream::partial`].
    WritePartial,
    /// Write what is queued before this, then shut the write side down.
    Close,
    /// A sender that counted its line in `queued_lines`, then found the
    /// channel closed, has taken the count back (see `queue`).
    Uncounted,
    /// A direct write failed: write nothing more, shut the write side down.
    Failed,
}

struct SenderShared {
    /// The write half. Whoever writes (the writer task, or a sender on the
    /// direct path) holds this lock for the whole line, so lines never mix.
    writer: tokio::sync::Mutex<Stream>,
    /// Lines queued and not yet written (see the module docs on order).
    queued_lines: AtomicUsize,
    /// Bytes the stream has taken, ever (see [`ChannelSender::bytes_written`]).
    bytes_written: Arc<AtomicU64>,
    /// Length of the last line encoded, to size the next buffer.
    last_line_len: AtomicUsize,
    budget: Arc<Semaphore>,
    budget_total: usize,
    max_len: usize,
    closed: Mutex<Option<CloseReason>>,
    /// `closed.is_some()`, readable on every send without the lock
    /// (measured: locking it per queued line cost a quarter of a burst's
    /// throughput).
    is_closed: AtomicBool,
    /// The failed write's error, once a write has failed (`closed` may
    /// say `Local` already: a failure while `close` drains the queue; a
    /// writer task that panicked, or was dropped before it was done
    /// writing, counts as one: see `WriterGone`), and
    /// the one task waiting for it (see [`ChannelSender::poll_write_failed`]).
    /// Not a `Notify` or a token: the receiver looks each time it finds
    /// nothing to read, and those take a lock per poll, where this takes a
    /// few atomic operations.
    write_error: OnceLock<CloseReason>,
    write_failure_waker: AtomicWaker,
    /// Cancelled when the writer task ends, however it ends (its future
    /// finished or was dropped with its runtime): see
    /// [`ChannelSender::finished`].
    finished: CancellationToken,
    /// Queued lines that may still be taken back (see [`LineTicket`]).
    withdrawals: Withdrawals,
}

/// The sending half of a channel; clones share one queue and one writer.
/// When the last clone is dropped, the writer task writes what is queued,
/// shuts the write side down (the peer sees end of stream) and ends. The
/// channel's [`ChannelReceiver`](super::ChannelReceiver) holds a clone too
/// (it refuses the handles Node sends, and watches for failed writes): to
/// end the write side while reading on, call [`close`](Self::close).
#[derive(Clone)]
pub struct ChannelSender {
    shared: Arc<SenderShared>,
    // Unbounded as a channel, bounded in bytes by `budget`: every line but
    // the small control lines of `send_control` holds permits for its size.
    // Only the handles hold it (not the writer task), so the queue closes
    // when the last handle goes.
    tx: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for ChannelSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSender")
            .field("queued_bytes", &self.queued_bytes())
            .field("queue_capacity", &self.shared.budget_total)
            .field("closed", &*self.shared.closed.lock().unwrap())
            .finish_non_exhaustive()
    }
}

impl ChannelSender {
    /// Takes the write half and spawns the writer task.
    pub(super) fn start<W: AsyncWrite + Unpin + Send + 'static>(writer: W, config: &ChannelConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        // A budget past 4 GiB means nothing (see the constant).
        let budget_total = config.write_queue_bytes.clamp(1, super::MOST_BUDGET_BYTES);
        let bytes_written = Arc::new(AtomicU64::new(0));
        let writer = counting::CountingWriter {
            inner: writer,
            written: bytes_written.clone(),
        };
        let shared = Arc::new(SenderShared {
            writer: tokio::sync::Mutex::new(Stream {
                writer: Box::new(writer),
                partial: None,
            }),
            queued_lines: AtomicUsize::new(0),
            bytes_written,
            last_line_len: AtomicUsize::new(0),
            budget: Arc::new(Semaphore::new(budget_total)),
            budget_total,
            // Never past what a Node peer can read (see the constant).
            max_len: config.max_message_len.min(frame::NODE_MAX_LINE_LEN),
            closed: Mutex::new(None),
            is_closed: AtomicBool::new(false),
            write_error: OnceLock::new(),
            write_failure_waker: AtomicWaker::new(),
            finished: CancellationToken::new(),
            withdrawals: Withdrawals::default(),
        });
        // Made here, not in the task: a task dropped before its first poll
        // (its runtime shut down) must end the channel too.
        let gone = WriterGone {
            shared: shared.clone(),
            rx: Some(rx),
            done_writing: false,
        };
        tokio::spawn(write_loop(gone));
        ChannelSender { shared, tx }
    }

    /// Encodes `value` as one line and sends it, waiting while the queue is
    /// full. Fails with [`Error::Frame`] (nothing sent) if it does not encode
    /// or is longer than the maximum message length,
    /// [`Error::ReservedMessage`] (nothing sent) if a Node peer would take it
    /// for one of its own internal messages (an object whose `cmd` starts
    /// with `NODE_`: PROTOCOL.md 1.3, such a line can crash it), and with
    /// [`Error::Closed`] once the channel is closed.
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let line = self.encode(value)?;
        if super::node_internal_cmd(line_text(&line)).is_some() {
            return Err(Error::ReservedMessage("a cmd starting with NODE_ is Node's own"));
        }
        self.send_line(line).await
    }

    /// Encodes one message as a line, checking the maximum length.
    pub(crate) fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, Error> {
        self.encode_with(|max_len, out| frame::encode(value, max_len, out))
    }

    /// Encodes one line with `write(max_len, out)`, a [`frame`] encoder.
    pub(crate) fn encode_with(
        &self,
        write: impl FnOnce(usize, &mut Vec<u8>) -> Result<(), frame::FrameError>,
    ) -> Result<Vec<u8>, Error> {
        // Start at the size of the last line: growing a Vec from empty
        // costs several reallocations per message.
        let hint = self.shared.last_line_len.load(Ordering::Relaxed);
        let mut line = Vec::with_capacity(hint.clamp(64, COALESCE_LIMIT));
        write(self.shared.max_len, &mut line)?;
        self.shared.last_line_len.store(line.len(), Ordering::Relaxed);
        Ok(line)
    }

    /// Sends an encoded line, waiting for budget; written straight to the
    /// stream when nothing is queued (lowest latency).
    pub(crate) async fn send_line(&self, line: Vec<u8>) -> Result<(), Error> {
        self.send_line_inner(line, None, Path::Direct, false, || false)
            .await
            .map(drop)
    }

    /// Sends a request's line: straight to the stream when nothing is
    /// queued, or, `batched` (more lines are coming at once), through the
    /// writer task, so that they share one write call. A line that waits in
    /// the queue comes with a ticket that takes it back for as long as it
    /// waits there (`None`: written already, or in part, the rest waiting
    /// for the writer task; a line the stream took nothing of is queued).
    pub(crate) async fn send_withdrawable_line(
        &self,
        line: Vec<u8>,
        batched: bool,
    ) -> Result<Option<LineTicket>, Error> {
        let path = if batched { Path::Queue } else { Path::Direct };
        match self.send_line_inner(line, None, path, true, || false).await? {
            Handed::Sent(ticket) => Ok(ticket),
            // Not reached: nothing above says the line is unwanted.
            Handed::NotWanted => Ok(None),
        }
    }

    /// [`send_line`](Self::send_line) (or, `batched`, through the writer
    /// task), unless `withdrawn` says, once the line has room, that it is
    /// no longer wanted: then nothing is sent, and `Ok(false)`. For an
    /// answer whose request the peer may cancel while the answer waits for
    /// room (a peer that reads slowly is one that times out and cancels). A
    /// line that got its room before is sent: it was on its way when the
    /// cancel came.
    pub(crate) async fn send_line_unless(
        &self,
        line: Vec<u8>,
        batched: bool,
        withdrawn: impl FnOnce() -> bool,
    ) -> Result<bool, Error> {
        let path = if batched { Path::Queue } else { Path::Direct };
        let handed = self.send_line_inner(line, None, path, false, withdrawn).await?;
        Ok(matches!(handed, Handed::Sent(_)))
    }

    /// Sends an encoded line and resolves once it has been written and
    /// flushed (for a stream that buffers).
    pub(crate) async fn send_line_written(&self, line: Vec<u8>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send_line_inner(line, Some(tx), Path::Direct, false, || false)
            .await?;
        rx.await.map_err(|_| self.closed_error())
    }

    /// Sends `line` once it has room, unless `withdrawn` then says it is no
    /// longer wanted. With `ticket`, a line that goes to the queue carries
    /// a [`LineTicket`], returned.
    async fn send_line_inner(
        &self,
        line: Vec<u8>,
        written: Option<oneshot::Sender<()>>,
        path: Path,
        ticket: bool,
        withdrawn: impl FnOnce() -> bool,
    ) -> Result<Handed, Error> {
        let want = line.len().clamp(1, self.shared.budget_total);
        // Budget first, even on the direct path: a sender must never wait
        // for budget while holding the writer lock (the writer task frees
        // budget under that lock).
        //
        // try_acquire first: when budget is there (almost always), taking it
        // must not spend the task's cooperative budget. A task driving
        // thousands of requests at once (join_all) otherwise runs out of
        // budget on every poll and goes quadratic. It cannot starve a waiter:
        // released permits go to queued waiters first.
        let budget = &self.shared.budget;
        match budget.try_acquire_many(want as u32) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(self.closed_error()),
            // Boxed, as the request future's own wait for a slot: the wait
            // node would otherwise make every request future larger.
            Err(TryAcquireError::NoPermits) => Box::pin(budget.acquire_many(want as u32))
                .await
                .map_err(|_| self.closed_error())?
                .forget(),
        }
        if withdrawn() {
            budget.add_permits(want);
            return Ok(Handed::NotWanted);
        }
        let out = Outgoing {
            line,
            budget: Some(BudgetShare {
                budget: budget.clone(),
                bytes: want as u32,
            }),
            written,
            ticket: None,
            _held: None,
        };
        match path {
            Path::Direct => self.write_or_queue(out, ticket),
            Path::Queue => self.queue_with(out, ticket),
        }
        .map(Handed::Sent)
    }

    /// Queues a small line without waiting for budget, for a caller that
    /// runs in a destructor and cannot wait: a cancel (one per request line
    /// queued before it, each of which took budget: see the request guard's
    /// drop).
    pub(crate) fn send_control(&self, line: Vec<u8>) -> Result<(), Error> {
        self.send_control_inner(line, None)
    }

    /// [`send_control`](Self::send_control) for a line the caller bounds
    /// itself: `held` (its share of the caller's bound) is dropped once the
    /// line has been written (or dropped unwritten). For the refusals the
    /// session's reader sends, which must not wait for the byte budget (see
    /// `Shared::refuse`), and the error answers of responders dropped after
    /// their handler ended (see `Shared::send_orphan_answer`).
    pub(crate) fn send_control_holding(&self, line: Vec<u8>, held: Box<dyn Send>) -> Result<(), Error> {
        self.send_control_inner(line, Some(held))
    }

    fn send_control_inner(&self, line: Vec<u8>, held: Option<Box<dyn Send>>) -> Result<(), Error> {
        let out = Outgoing {
            line,
            budget: None,
            written: None,
            ticket: None,
            _held: held,
        };
        self.write_or_queue(out, false).map(drop)
    }

    /// [`queue`](Self::queue), the line carrying a new ticket if `ticket`.
    fn queue_with(&self, mut out: Outgoing, ticket: bool) -> Result<Option<LineTicket>, Error> {
        let Some(ticket) = ticket.then(|| self.shared.withdrawals.ticket()) else {
            return self.queue(out).map(|()| None);
        };
        // A withdrawn line is counted out as if written (see `finish`): so
        // none may have a waiter to tell it was written.
        debug_assert!(out.written.is_none(), "a withdrawable line with a waiter");
        // The sender's copy of the number; the line carries the other.
        let ours = ticket.same_number();
        out.ticket = Some(ticket);
        self.queue(out).map(|()| Some(ours))
    }

    /// Takes a queued line back if the writer task has not taken it yet:
    /// then it is never written (`true`; nor is one the channel dropped
    /// unwritten when it failed). `false`: it is written, or being written,
    /// or counted as such (see [`Withdrawals`]). The ticket is used up.
    pub(crate) fn withdraw(&self, ticket: LineTicket) -> bool {
        self.shared.withdrawals.withdraw(ticket)
    }

    /// Whether lines wait to be written (in the queue, or the rest of one
    /// a direct write left). Never once a write has failed: what was queued
    /// then is lost, not waiting (and stays counted in `queued_lines`, which
    /// only the writer's own path reads after that).
    #[cfg(test)]
    pub(crate) fn has_unwritten(&self) -> bool {
        self.shared.queued_lines.load(Ordering::Acquire) > 0 && self.shared.write_error.get().is_none()
    }

    /// Takes back every ticketed line the writer task has not taken yet,
    /// and every one queued from now on: for a session about to tell every
    /// caller that its request failed (see `Shared::shut`). Lines without
    /// a ticket (answers, plain messages) are still written.
    pub(crate) fn withdraw_all(&self) {
        self.shared.withdrawals.withdraw_all()
    }

    fn queue(&self, out: Outgoing) -> Result<(), Error> {
        // After a close or a failed write nothing more is written: say so
        // rather than accept a line that would be dropped.
        //
        // The race with `close`: a send that passes this check just before
        // `close` sets the flag queues its line after the Close command.
        // The line is counted first and the flag read after, both SeqCst;
        // `close` stores the flag (SeqCst) before it sends Close, and the
        // writer task reads the count (SeqCst) after receiving it, so that
        // store comes before that read (the queue orders them). Then either
        // this send sees the flag and takes its count back, or its count is
        // there when the writer task reads it, and the task waits for the
        // line (see `write_loop`). Every send that says Ok is written.
        self.shared.queued_lines.fetch_add(1, Ordering::SeqCst);
        if self.shared.is_closed.load(Ordering::SeqCst) {
            self.shared.queued_lines.fetch_sub(1, Ordering::AcqRel);
            let _ = self.tx.send(Command::Uncounted);
            return Err(self.closed_error());
        }
        self.tx.send(Command::Write(out)).map_err(|_| {
            self.shared.queued_lines.fetch_sub(1, Ordering::AcqRel);
            self.closed_error()
        })
    }

    /// Writes everything queued so far, then shuts the write side down (the
    /// peer sees end of stream). Later sends fail with [`Error::Closed`]; a
    /// send racing this call either fails or is written: none says Ok for
    /// a line the peer will not get.
    pub fn close(&self) {
        self.shared.set_closed(CloseReason::Local);
        let _ = self.tx.send(Command::Close);
    }

    /// Resolves once the writer task has ended: after [`close`](Self::close)
    /// (or the last handle's drop), once everything queued before it is
    /// written and the write side shut down; at once after a failed write.
    /// It waits for as long as the peer leaves what we wrote unread: bound
    /// it with a timeout.
    pub async fn finished(&self) {
        self.shared.finished.cancelled().await
    }

    /// `Ready`, with the write's error, once a write has failed: the lines
    /// queued then are lost, and nothing more will be written. Never after
    /// a clean close. Registers `cx` to be woken by the failure; one task at
    /// a time (the channel's receiver, see
    /// [`ChannelReceiver::recv`](super::ChannelReceiver::recv)): a second
    /// would take the first one's wake-up.
    pub(crate) fn poll_write_failed(&self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let shared = &self.shared;
        if let Some(reason) = shared.write_error.get() {
            return Poll::Ready(reason.clone());
        }
        shared.write_failure_waker.register(cx.waker());
        // Looked at again after registering: a failure between the two
        // looks woke nobody.
        match shared.write_error.get() {
            Some(reason) => Poll::Ready(reason.clone()),
            None => Poll::Pending,
        }
    }

    /// The error of the write that failed, if one did.
    pub(crate) fn write_error(&self) -> Option<CloseReason> {
        self.shared.write_error.get().cloned()
    }

    /// Bytes the stream has taken so far, whatever they were: only goes up,
    /// with every write call that takes some, so a caller can tell whether
    /// writing moves, even within one long line (what is left in the queue
    /// changes only once a whole batch or line is written: a review's test
    /// took a slow flush for a stalled one so).
    pub(crate) fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Relaxed)
    }

    /// Bytes currently queued and not yet written (control lines aside).
    pub fn queued_bytes(&self) -> usize {
        let available = self.shared.budget.available_permits();
        debug_assert!(available <= self.shared.budget_total, "budget released twice");
        self.shared.budget_total.saturating_sub(available)
    }

    /// The size of the outgoing byte budget.
    pub fn queue_capacity(&self) -> usize {
        self.shared.budget_total
    }

    fn closed_error(&self) -> Error {
        Error::Closed(
            self.shared
                .closed
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(CloseReason::PeerClosed),
        )
    }
}

/// The JSON text of an encoded line (without its newline). Encoded lines
/// are UTF-8; an empty text never matches anything it is checked for.
pub(crate) fn line_text(line: &[u8]) -> &str {
    std::str::from_utf8(line.strip_suffix(b"\n").unwrap_or(line)).unwrap_or("")
}

/// What became of a line handed to `send_line_inner`.
enum Handed {
    /// Its `withdrawn` said it was no longer wanted: not sent.
    NotWanted,
    /// Written, or queued (with its ticket, if one was asked for).
    Sent(Option<LineTicket>),
}

#[derive(Clone, Copy)]
enum Path {
    /// Straight to the stream if nothing is queued.
    Direct,
    /// Through the writer task.
    Queue,
}

impl SenderShared {
    fn set_closed(&self, reason: CloseReason) {
        let mut closed = self.closed.lock().unwrap();
        if closed.is_none() {
            *closed = Some(reason);
        }
        // SeqCst: see `ChannelSender::queue`.
        self.is_closed.store(true, Ordering::SeqCst);
        drop(closed);
        // Wake every sender waiting for budget: they fail with Closed.
        self.budget.close();
    }
}
