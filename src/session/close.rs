//! Ending a session, once (`Shared::shut`: every pending request failed,
//! running handlers refused, the channel closed), the errors that tell a
//! caller the session has ended, and what the reader does after a local
//! close (`drain_while_flushing`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Phase, Shared};
use crate::channel::{ChannelReceiver, Parsed};
use crate::error::{CloseReason, Error};

impl Shared {
    pub(super) fn closed_reason(&self) -> Option<CloseReason> {
        self.table.lock().unwrap().closed.clone()
    }

    pub(super) fn closed_error(&self) -> Error {
        Error::Closed(self.closed_reason().unwrap_or(CloseReason::PeerClosed))
    }

    /// The error for a failed send, as it stands: why the session ended if
    /// it has, else what the channel said (a write error, say). What the
    /// reader's own sends get: it must not wait for itself.
    pub(super) fn send_error_now(&self, channel_error: Error) -> Error {
        match self.closed_reason() {
            Some(reason) => Error::Closed(reason),
            None => channel_error,
        }
    }

    /// Why an answer to a refused request is not written: the session's
    /// end if it has ended (the larger news), else the peer's cancel.
    pub(super) fn refusal_error(&self) -> Error {
        match self.closed_reason() {
            Some(reason) => Error::Closed(reason),
            None => Error::Cancelled,
        }
    }

    /// Ends the session once: records why, fails every pending request,
    /// cancels running handlers, stops the reader and closes the channel.
    pub(super) fn shut(&self, reason: CloseReason) {
        let (pending, running, displaced) = {
            // Poisoned only by a panic elsewhere, which is exactly when the
            // session must still close.
            let mut table = self
                .table
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if table.closed.is_some() {
                return;
            }
            table.closed = Some(reason.clone());
            // Before any caller is told its request failed: a request
            // whose line still waits in the queue is then never sent (the
            // writer drains the queue before it shuts the stream down, for
            // the answers and messages in it). A caller told `Closed` may
            // so count on the peer not running it, but for a line already
            // on its way (see `ChannelSender::withdraw`, and the close
            // below).
            self.sender.withdraw_all();
            (
                table.pending.take_waiting(),
                std::mem::take(&mut table.running),
                std::mem::take(&mut table.displaced),
            )
        };
        // The peer's requests waiting for a handler will never run; their
        // payloads (up to `max_queued_request_bytes`) must not live on for
        // as long as a handle does. Closed, not only emptied: the reader
        // does not know of the close until `closing` below, and a request it
        // reads meanwhile would be queued behind this and stay (a review
        // found hundreds so). (After the table's lock: the backlog's is
        // taken first everywhere else.)
        let backlog = self
            .backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .close();
        self.backlog_len.store(0, Ordering::Release);
        drop(backlog);
        // Closed for new lines before any caller is told its request
        // failed: a request sending at this moment is then refused, or
        // was written before (its send checks and writes in one step
        // under the writer's lock, and its caller reads the failure only
        // after that step). What is queued (answers, plain messages) is
        // still written.
        self.sender.close();
        // A disconnect or a clean exit is the normal end, not a crash.
        match &reason {
            CloseReason::Local | CloseReason::PeerClosed | CloseReason::RuntimeShutDown => {
                tracing::debug!("session closed: {reason}")
            }
            CloseReason::ChildExited(status) if status.success() => {
                tracing::debug!("session closed: {reason}")
            }
            _ => tracing::warn!("session ended: {reason}"),
        }
        // Their callers find their entries gone, and are told the reason
        // recorded above (see `PendingGuard::answer`).
        for waker in pending {
            waker.wake();
        }
        for handler in running.into_values().chain(displaced.into_values()) {
            handler.refuse();
        }
        self.in_flight.close();
        self.handler_slots.close();
        self.messages_tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        self.phase.send_replace(Phase::Closed(reason));
        self.closing.cancel();
        // Last, and outside the lock: the handler's drop may run anything
        // it owns, such as a handle on this session whose own drop closes
        // it (found closed, it returns at once).
        let handler = self
            .handler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(handler);
    }
}

/// How long a closed session goes on reading after its flush is done, for
/// a peer that neither ends nor stops sending (see [`drain_while_flushing`]).
/// A peer held up writing to us needs only the moment it takes to write
/// and read our end; a peer that would notice our end only when our
/// descriptor closes (a hang-up) notices it this much later.
const DRAIN_AFTER_FLUSH: Duration = Duration::from_secs(1);

/// How long a closed session goes on reading while its flush does not move
/// (see [`drain_while_flushing`]), checked every [`DRAIN_PROGRESS_CHECK`].
const DRAIN_WITHOUT_PROGRESS: Duration = Duration::from_secs(5);

/// How often a draining session looks whether its flush moves.
const DRAIN_PROGRESS_CHECK: Duration = Duration::from_secs(1);

/// What a flush must move within [`DRAIN_WITHOUT_PROGRESS`] to count as
/// moving (about 13 KB/s): a peer that takes a byte now and then while it
/// floods us must not keep a closed session reading it for months (a
/// review's peer took one byte every 2 s).
const DRAIN_MIN_PROGRESS: u64 = 64 * 1024;

/// After our own close: reads what the peer still sends, and drops it
/// unread, so that a peer whose own reader waits for its writes to us (a
/// session of this crate whose refusals wait on their budget) can read
/// our flush, and our end behind it. A reader that stopped at the close
/// left both waiting for good, our flush for the peer to read, the peer
/// for us to read (an audit's finding); one that stopped when the flush
/// was done still left the peer's writes stuck, our end behind them (a
/// review's tests).
///
/// It reads until the peer ends (or a read fails), but no longer than
/// [`DRAIN_AFTER_FLUSH`] once the flush is done, nor on once the stream
/// has taken less than [`DRAIN_MIN_PROGRESS`] of it in
/// [`DRAIN_WITHOUT_PROGRESS`] (to within a [`DRAIN_PROGRESS_CHECK`];
/// counted in bytes, as a long line moves in part: a review's slow reader
/// took 10 s for one): a peer that reads (next to) nothing
/// even as we read its writes is not held up by us, and one that floods
/// us after our close must not keep this task reading for ever (a review
/// saw 45 MB read so). Nothing read is parsed, delivered or answered; the
/// read buffer is all the memory it takes (up to a line's maximum, for a
/// long line).
pub(super) async fn drain_while_flushing(mut receiver: ChannelReceiver, shared: &Shared) {
    let drain = async {
        loop {
            match receiver.recv_with(|_| Ok(Parsed::NotNodes(()))).await {
                Ok(Some(())) | Err(Error::Frame(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    let mut drain = std::pin::pin!(drain);
    let mut flushed = std::pin::pin!(shared.sender.finished());
    // Bytes written when the flush last moved by DRAIN_MIN_PROGRESS, and
    // for how long it has not since.
    let mut mark = shared.sender.bytes_written();
    let mut still = Duration::ZERO;
    loop {
        tokio::select! {
            _ = &mut drain => return,
            _ = &mut flushed => break,
            _ = tokio::time::sleep(DRAIN_PROGRESS_CHECK) => {
                let now = shared.sender.bytes_written();
                if now - mark >= DRAIN_MIN_PROGRESS {
                    (mark, still) = (now, Duration::ZERO);
                } else {
                    still += DRAIN_PROGRESS_CHECK;
                    if still >= DRAIN_WITHOUT_PROGRESS {
                        return;
                    }
                }
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN_AFTER_FLUSH, drain).await;
}
