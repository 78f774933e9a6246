//! Ending a session, once (`Shared::shut`: every pending request failed,
//! running handlers refused, the channel closed), and the errors that tell
//! a caller the session has ended.

use std::sync::atomic::Ordering;

use super::{Phase, Shared};
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
            CloseReason::Local | CloseReason::PeerClosed => tracing::debug!("session closed: {reason}"),
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
        for handler in running.into_values().chain(displaced) {
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
