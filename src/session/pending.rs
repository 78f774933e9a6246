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

use tokio::sync::oneshot;

use super::Shared;
use crate::channel::LineTicket;
use crate::error::Error;
use crate::protocol::MessageOut;

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
    Yes,
}

impl<'a> PendingGuard<'a> {
    /// Registers request `id` and says how many are pending with it; fails
    /// if the session has closed, so that no entry is ever added after the
    /// close swept the table (both happen under the table's lock).
    pub(super) fn register(
        shared: &'a Shared,
        id: u64,
        tx: oneshot::Sender<super::Answer>,
    ) -> Result<(Self, usize), Error> {
        let mut table = shared.table.lock().unwrap();
        if let Some(reason) = &table.closed {
            return Err(Error::Closed(reason.clone()));
        }
        table.pending.insert(id, tx);
        let in_flight = table.pending.len();
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

    /// The answer (or the close) has arrived: the entry is gone already.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Race with an answer arriving now: whoever removes the entry
        // first wins. If the reader got it, the answer is simply dropped
        // and no cancel is sent for a request that is already answered.
        let removed = self
            .shared
            .table
            .lock()
            .unwrap()
            .pending
            .remove(&self.id)
            .is_some();
        if !removed {
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
