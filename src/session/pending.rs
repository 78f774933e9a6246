//! The guard that keeps the table of pending requests honest.
//!
//! Created before the request is written (as tarpc does): whatever ends the
//! call early (its deadline, the caller dropping the future) drops the
//! guard, which removes the entry, so nothing is left behind, and, if the
//! request had been written and the peer supports it, tells the peer to
//! stop working on it. A request whose line still waits in the channel's
//! queue is taken out of it instead, and the peer never hears of it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::task::{Poll, Waker};

use super::{Answer, Shared};
use crate::channel::LineTicket;
use crate::error::Error;
use crate::frame::Message;
use crate::protocol::MessageOut;

/// Our pending requests, by id. The answer is handed over in a request's
/// entry, under the table's lock, rather than through a oneshot channel
/// (an allocation and its atomics per request: measured, 3% of `bench
/// count burst`).
#[derive(Default)]
pub(super) struct PendingTable {
    slots: PendingMap<Slot>,
    /// How many of `slots` hold an answer their caller has not yet taken:
    /// those no longer wait for the peer (see [`waiting`](Self::waiting)).
    answered: usize,
}

/// A pending request's entry in the table.
enum Slot {
    /// No answer yet; the caller's waker once it has waited.
    Waiting(Option<Waker>),
    /// The answer (or the error that stands for it), for the caller to
    /// take. It stays here when the session closes: an answer that came
    /// is never lost.
    Answered(Answer),
}

impl PendingTable {
    /// Our requests waiting for the peer's answer: those answered but not
    /// yet taken by their callers (about to run) are not counted.
    pub(super) fn waiting(&self) -> usize {
        self.slots.len() - self.answered
    }

    /// Takes the requests still waiting out (for a session that closes),
    /// and returns their callers' wakers; answers that came stay for their
    /// callers.
    pub(super) fn take_waiting(&mut self) -> Vec<Waker> {
        let mut wakers = Vec::new();
        self.slots.retain(|_, slot| match slot {
            Slot::Waiting(waker) => {
                wakers.extend(waker.take());
                false
            }
            Slot::Answered(_) => true,
        });
        wakers
    }

    /// Takes request `id`'s entry out, counting out its answer if it had
    /// one.
    fn remove(&mut self, id: u64) -> Option<Slot> {
        let removed = self.slots.remove(&id);
        if let Some(Slot::Answered(_)) = removed {
            self.answered -= 1;
        }
        removed
    }
}

impl Shared {
    /// True if our request `id` waits for its answer. For an answer that
    /// costs work to build: by the time it is handed over, the caller may
    /// have given up all the same, and `deliver_answer` says so.
    pub(super) fn awaits_answer(&self, id: u64) -> bool {
        let table = self.table.lock().unwrap();
        matches!(table.pending.slots.get(&id), Some(Slot::Waiting(_)))
    }

    /// Hands `answer` to our pending request `id` and wakes its caller;
    /// `false` if no such request waits (given up, or answered already:
    /// the first answer stands).
    pub(super) fn deliver_answer(&self, id: u64, answer: Answer) -> bool {
        let waker = {
            let mut table = self.table.lock().unwrap();
            let pending = &mut table.pending;
            match pending.slots.get_mut(&id) {
                Some(slot @ Slot::Waiting(_)) => {
                    let Slot::Waiting(waker) = std::mem::replace(slot, Slot::Answered(answer)) else {
                        unreachable!("matched as waiting")
                    };
                    pending.answered += 1;
                    waker
                }
                Some(Slot::Answered(_)) | None => return false,
            }
        };
        // Outside the lock: the caller may run at once, on another thread.
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

pub(super) struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
    sent: Sent,
    armed: bool,
}

/// How far the request's line has gone.
enum Sent {
    /// Not handed to the channel: nothing to cancel.
    No,
    /// Handed to the channel's queue; withdrawn with the ticket while it
    /// waits there, cancelled at the peer once it is written.
    Queued(LineTicket),
    /// Handed to the channel with no ticket: written at once, or in part
    /// (the rest then waits for the writer task, and cannot be taken back).
    /// A line the stream took none of is queued, with a ticket: `Queued`.
    Yes,
}

impl<'a> PendingGuard<'a> {
    /// Registers request `id` and says how many are pending with it; fails
    /// if the session has closed, so that no entry is ever added after the
    /// close swept the table (both happen under the table's lock).
    pub(super) fn register(shared: &'a Shared, id: u64) -> Result<(Self, usize), Error> {
        let mut table = shared.table.lock().unwrap();
        if let Some(reason) = &table.closed {
            return Err(Error::Closed(reason.clone()));
        }
        table.pending.slots.insert(id, Slot::Waiting(None));
        let in_flight = table.pending.waiting();
        let guard = PendingGuard {
            shared,
            id,
            sent: Sent::No,
            armed: true,
        };
        Ok((guard, in_flight))
    }

    /// The request is on its way to the peer: a later drop cancels it
    /// there, or, while its line waits in the queue under `ticket`, takes
    /// the line back.
    pub(super) fn mark_sent(&mut self, ticket: Option<LineTicket>) {
        self.sent = ticket.map_or(Sent::Yes, Sent::Queued);
    }

    /// Waits for the answer, and takes it (with its entry) out of the
    /// table. An entry found gone was taken by the session's close: the
    /// error is the close's. Either way the guard is disarmed then.
    pub(super) async fn answer(&mut self) -> Result<Message, Error> {
        std::future::poll_fn(|cx| {
            let mut table = self.shared.table.lock().unwrap();
            let answer = match table.pending.slots.get_mut(&self.id) {
                Some(Slot::Waiting(Some(waker))) if waker.will_wake(cx.waker()) => return Poll::Pending,
                Some(Slot::Waiting(waker)) => {
                    let replaced = waker.replace(cx.waker().clone());
                    // Dropped outside the lock: a waker's drop is the
                    // executor's code, which might call back into us.
                    drop(table);
                    drop(replaced);
                    return Poll::Pending;
                }
                Some(Slot::Answered(_)) => match table.pending.remove(self.id) {
                    Some(Slot::Answered(answer)) => answer.map_err(|e| *e),
                    _ => unreachable!("answered"),
                },
                None => {
                    drop(table);
                    Err(self.shared.closed_error())
                }
            };
            self.armed = false;
            Poll::Ready(answer)
        })
        .await
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Race with an answer arriving now: both take the table's lock. An
        // answer that came first is dropped with its entry (outside the
        // lock), and no cancel goes for a request already answered; one
        // that comes after finds no entry, and is dropped by the reader.
        // No entry at all: the close took it.
        let removed = self.shared.table.lock().unwrap().pending.remove(self.id);
        if !matches!(removed, Some(Slot::Waiting(_))) {
            return;
        }
        let sent = match std::mem::replace(&mut self.sent, Sent::No) {
            Sent::No => false,
            // Taken back unwritten: the peer never hears of it, whether it
            // can cancel or not. (Race with the writer task taking the line
            // now: see `LineTicket`.)
            Sent::Queued(ticket) => !self.shared.sender.withdraw(ticket),
            Sent::Yes => true,
        };
        if sent && self.shared.peer_can_cancel() {
            let mut uid = itoa::Buffer::new();
            if let Ok(line) = self
                .shared
                .sender
                .encode(&MessageOut::cancel(uid.format(self.id)))
            {
                // A drop cannot wait for queue space. A cancel is one small
                // line per request whose line was queued, and is queued
                // behind it; the request's slot of `max_in_flight` is free
                // again at this drop, so that cap is no bound here (a
                // review queued 1,436 cancels with a cap of 1). The bound
                // is the requests' own: each held write budget when it was
                // queued, and a cancel is no longer than the smallest
                // request, so the cancels waiting behind requests still in
                // the queue or the socket take at most about the write
                // budget plus the socket buffer again.
                let _ = self.shared.sender.send_control(line);
            }
        }
    }
}

/// The table of our pending requests, keyed by our own ids.
pub(super) type PendingMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Hashes our request ids with one multiplication (Fibonacci hashing)
/// instead of SipHash, which was 3% of a request burst's instructions.
/// SipHash guards against keys chosen to collide; these keys are ours,
/// from a counter. The peer only looks keys up, and a lookup can at most
/// walk what our own keys built.
#[derive(Default)]
pub(super) struct IdHasher(u64);

/// 2^64 divided by the golden ratio, odd: consecutive ids spread over the
/// high bits hashbrown tags buckets with, and stay distinct in the low bits
/// it indexes with.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; this keeps any other use correct.
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(FIBONACCI);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_get_distinct_well_spread_hashes() {
        let hash = |id: u64| {
            let mut h = IdHasher::default();
            h.write_u64(id);
            h.finish()
        };
        let hashes: std::collections::HashSet<u64> = (0..10_000).map(hash).collect();
        assert_eq!(hashes.len(), 10_000);
        // hashbrown's 7-bit tags come from the top bits: all 128 appear.
        let tags: std::collections::HashSet<u64> = (0..10_000).map(|id| hash(id) >> 57).collect();
        assert_eq!(tags.len(), 128);
    }
}
