//! How a session writes its answers to the peer's requests: encoded for
//! what the peer understands, sent with back-pressure, and let go of in
//! the map of running handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use serde::Serialize;

use super::handler::AnswerState;
use super::{RunningHandler, Shared};
use crate::error::{Error, RemoteError};
use crate::protocol::{self, PeerUid};

impl Shared {
    /// An answer, encoded.
    pub(super) fn encode_response<T: Serialize + ?Sized>(
        &self,
        uid: &PeerUid,
        value: &T,
    ) -> Result<Vec<u8>, Error> {
        self.sender
            .encode_with(|max, out| protocol::encode_response(uid, value, max, out))
    }

    /// An error answer, shaped for what the peer understands. If the error
    /// is too long to send, it goes shortened (see [`shortened`]: its name
    /// and code kept, its data and stack left out, its message cut to a
    /// kilobyte, with a note saying so), and if that is still too long (a
    /// long name or code, or a maximum message length too low even for
    /// that), as a short `ErrorTooLarge` naming it. The last is sent even
    /// past the maximum message length, by as much as the UID and a
    /// kilobyte: the peer's UID came in a line it could write, and an error
    /// is the last answer it can get (else it would wait for ever). A peer
    /// with a limit that low fails its request as too long to read, which
    /// is still an answer. Never past what a Node peer can read, though
    /// (see [`error_answer_bound`]).
    pub(super) fn encode_error(&self, uid: &PeerUid, error: &RemoteError) -> Result<Vec<u8>, Error> {
        let room = uid.as_json().len() + 1024;
        // Encoded within `at_least` bytes, or the maximum if more.
        let encode = |e: &RemoteError, at_least: usize| {
            self.sender.encode_with(|max, out| {
                let bound = error_answer_bound(max, at_least);
                if self.peer_takes_errors() {
                    protocol::encode_error_response(uid, e, bound, out)
                } else {
                    protocol::encode_response(uid, e, bound, out)
                }
            })
        };
        let why = match encode(error, room) {
            Ok(line) => return Ok(line),
            Err(why) => why,
        };
        // Within the maximum only: this one is as long as the handler made
        // its name and code.
        if let Some(Ok(line)) = shortened(error, &why).map(|short| encode(&short, 0)) {
            return Ok(line);
        }
        let name: String = error.name.chars().take(64).collect();
        let small = RemoteError::new(
            "ErrorTooLarge",
            format!("{name}: the error was too large to send ({why})"),
        );
        encode(&small, room)
    }

    /// Sends an answer: straight to the stream when it is the only one
    /// around, through the writer task (one write for many) when more
    /// requests are arriving or other handlers are running.
    ///
    /// The answer to a request of the peer's (`of`) is not written if the
    /// request was refused (the peer's cancel, the session's end) while the
    /// answer waited for room in the write queue: then
    /// [`refusal_error`](Self::refusal_error).
    pub(super) async fn send_answer(&self, line: Vec<u8>, of: Option<&AnswerState>) -> Result<(), Error> {
        let busy = self.more_input.load(Ordering::Relaxed)
            || self.handler_slots.available_permits() + 1 < self.config.max_concurrent_handlers.max(1);
        let refused = || of.is_some_and(AnswerState::is_refused);
        match self.sender.send_line_unless(line, busy, refused).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.refusal_error()),
            Err(e) => Err(self.send_error_now(e)),
        }
    }

    /// Removes `answer`'s entry from the `running` map, if it is still
    /// there: not one a later request with the same UID put there.
    pub(super) fn forget_running(&self, answer: &AnswerState) {
        if !self.peer_can_cancel() {
            return;
        }
        let is_this = |entry: &RunningHandler| std::ptr::eq(Arc::as_ptr(&entry.answer), answer);
        let mut table = self.table.lock().unwrap();
        if let Some((uid, entry)) = table.running.remove_entry(answer.uid()) {
            if is_this(&entry) {
                return;
            }
            table.running.insert(uid, entry);
        }
        table.displaced.remove(&answer.key());
    }
}

/// The bytes of error answers of responders dropped after their handler
/// ended that were queued past the refusal budget, and are not yet written
/// (see [`Shared::send_orphan_answer`]).
#[derive(Default)]
pub(super) struct Overdraft {
    bytes: AtomicUsize,
    /// Told whenever some of it is written (or dropped unwritten).
    repaid: Notify,
}

/// One line's share of the [`Overdraft`], given back when the line goes.
struct OverdraftShare {
    of: Arc<Overdraft>,
    bytes: usize,
}

impl Drop for OverdraftShare {
    fn drop(&mut self) {
        self.of.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.of.repaid.notify_waiters();
    }
}

impl Shared {
    /// Sends the error answer of a responder dropped after its handler
    /// ended (see `AnswerState`), from that responder's destructor, which
    /// cannot wait for room. It counts against the refusals' budget
    /// (`max_unwritten_refusal_bytes`); when that is spent, it goes all the
    /// same, as an overdraft, and until the overdraft is written no handler
    /// starts: the peer's requests wait in the backlog, and past it are
    /// refused, and refusals past the budget stop the reader (see
    /// `Shared::refuse`). So a peer that sends requests and reads nothing
    /// stops being read, whatever the handlers do with their responders,
    /// and what can be queued past the budget is at most one answer per
    /// responder alive when the overdraft began. The reader itself does not
    /// wait for the overdraft: it goes on reading the peer's cancels, its
    /// answers to our requests, and its end (a review saw a reader stopped
    /// here miss the end of a peer that had shut its side down), until the
    /// backlog is full and a refusal waits on the spent budget, as any
    /// refusal does.
    pub(super) fn send_orphan_answer(self: &Arc<Self>, mut line: Vec<u8>) {
        let bytes = self.refusal_share(&mut line);
        let held: Box<dyn Send> = match self.refusals_unwritten.clone().try_acquire_many_owned(bytes) {
            Ok(permit) => Box::new(permit),
            Err(_) => {
                if self.overdraft.bytes.fetch_add(bytes as usize, Ordering::AcqRel) == 0 {
                    // The backlog waits while overdrawn: start it again once
                    // the overdraft is written. One such task per overdraft:
                    // a share added after it saw none left starts the next.
                    let shared = self.clone();
                    self.runtime.spawn(async move {
                        shared.wait_for_overdraft().await;
                        shared.drain_backlog();
                    });
                }
                Box::new(OverdraftShare {
                    of: self.overdraft.clone(),
                    bytes: bytes as usize,
                })
            }
        };
        let _ = self.sender.send_control_holding(line, held);
    }

    /// What `line`, a refusal or an orphan answer, counts for against the
    /// refusals' budget: its length, at least 1 and at most the whole
    /// budget (permits are taken a u32 at a time). Encoded into room sized
    /// for the last line sent, up to 64 KiB, it is first shrunk to fit:
    /// what it holds must be what it counts.
    pub(super) fn refusal_share(&self, line: &mut Vec<u8>) -> u32 {
        line.shrink_to_fit();
        line.len().clamp(1, super::refusal_budget(&self.config)) as u32
    }

    /// True if answers were queued past the refusals' budget and are not
    /// all written yet: no handler starts meanwhile (see
    /// `send_orphan_answer`). One load.
    pub(super) fn overdrawn(&self) -> bool {
        self.overdraft.bytes.load(Ordering::Acquire) > 0
    }

    /// Waits until no answer queued past the refusals' budget is left
    /// unwritten, or the session closes.
    async fn wait_for_overdraft(&self) {
        loop {
            let repaid = self.overdraft.repaid.notified();
            let mut repaid = std::pin::pin!(repaid);
            // Registered before the look: a share given back in between
            // wakes it.
            repaid.as_mut().enable();
            if !self.overdrawn() {
                return;
            }
            tokio::select! {
                _ = repaid => {}
                _ = self.closing.cancelled() => return,
            }
        }
    }
}

/// How much of an error's message goes with it when it is shortened (see
/// [`Shared::encode_error`]).
const SHORTENED_MESSAGE_LEN: usize = 1024;

/// `error` without its data and stack, its message cut to
/// [`SHORTENED_MESSAGE_LEN`] bytes, and a note that says what was left out
/// and `why`: what goes when the whole error is too long to send. `None`
/// if there is nothing to leave out (then its name or code is too long).
fn shortened(error: &RemoteError, why: &Error) -> Option<RemoteError> {
    let mut end = error.message.len().min(SHORTENED_MESSAGE_LEN);
    while !error.message.is_char_boundary(end) {
        end -= 1;
    }
    let left_out: Vec<&str> = [
        (error.data.is_some(), "its data"),
        (error.stack.is_some(), "its stack"),
        (end < error.message.len(), "the rest of its message"),
    ]
    .into_iter()
    .filter_map(|(dropped, what)| dropped.then_some(what))
    .collect();
    let left_out = match left_out.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => return None,
    };
    let kept = &error.message[..end];
    let cut = if end < error.message.len() { "..." } else { "" };
    let space = if kept.is_empty() { "" } else { " " };
    Some(RemoteError {
        name: error.name.clone(),
        message: format!("{kept}{cut}{space}({left_out} not sent: {why})"),
        code: error.code.clone(),
        stack: None,
        data: None,
    })
}

/// How long an error answer may be: the channel's maximum `max`, or
/// `at_least` if that is more, but never past [`NODE_MAX_LINE_LEN`]. The
/// channel caps `max` there; `at_least` (a peer UID and a kilobyte) could
/// lift it back, and Node, given a longer line, throws in its channel code
/// and exits (a review saw it, under a UID of 512 MiB and a maximum of
/// 1 GiB). A UID that long cannot be answered at all: any answer holds it.
///
/// [`NODE_MAX_LINE_LEN`]: crate::frame::NODE_MAX_LINE_LEN
fn error_answer_bound(max: usize, at_least: usize) -> usize {
    max.max(at_least).min(crate::frame::NODE_MAX_LINE_LEN)
}

#[cfg(test)]
mod tests {
    use super::error_answer_bound;
    use crate::frame::NODE_MAX_LINE_LEN;

    #[test]
    fn an_error_answer_may_pass_the_maximum_but_never_what_node_reads() {
        assert_eq!(error_answer_bound(100, 2_000), 2_000);
        assert_eq!(error_answer_bound(5_000, 2_000), 5_000);
        let max = NODE_MAX_LINE_LEN; // as the channel caps it
        assert_eq!(error_answer_bound(max, max - 1_000 + 1_024), max);
        assert_eq!(error_answer_bound(max, usize::MAX), max);
    }
}
