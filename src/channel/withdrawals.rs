//! Taking a queued line back before the writer task writes it: the claim
//! checks of
//! [`ChannelSender::send_withdrawable_line`](super::ChannelSender::send_withdrawable_line)
//! and the record the two sides agree through.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// A queued line's claim check, for taking it back while it waits: a line
/// withdrawn is never written, and one the sender is told was taken is
/// written (unless the channel fails first, when what is queued is lost).
///
/// For requests: one whose caller gave up (its deadline, a dropped future)
/// while its line still waited behind others is then never sent, rather
/// than sent and cancelled at once. A peer that reads slowly is the one
/// whose callers time out, and it would otherwise get all of those
/// requests, and a cancel for each, when it catches up. The writer takes a
/// line when it copies it into its batch (or, for a line too large to
/// batch, once the batch before it is written), so what it has taken for
/// one write (under 128 KiB of small lines, or one large line) goes out
/// (unless the channel fails); everything behind that can still be
/// withdrawn, but for a line queued out of number order (see
/// [`Withdrawals`]). A withdrawn line stays in the queue, holding its
/// budget, until the writer task reaches and drops it: giving the budget
/// back at once would let lines that time out pile up in the queue past
/// its bound while the peer reads nothing.
///
/// A ticket is a number from a counter, not a shared flag per line: a flag
/// is an allocation per queued request (measured with `bench count burst`:
/// +4.0% instructions; the numbers cost +1.1%). How the two sides agree is
/// in [`Withdrawals`].
///
/// Neither `Copy` nor `Clone`: [`Withdrawals::withdraw`] uses it up, since a
/// second call, once the writer task has skipped the line, would answer
/// "taken".
#[derive(Debug)]
pub(crate) struct LineTicket(u64);

impl LineTicket {
    /// A second ticket for the same line: the one the line itself carries
    /// to the writer task, which only ever takes with it.
    pub(super) fn same_number(&self) -> LineTicket {
        LineTicket(self.0)
    }
}

/// The writer task's and the senders' shared record of which ticketed lines
/// may still be withdrawn.
///
/// The writer task, taking a ticketed line, first raises `taken_up_to` to
/// its number, then, if any withdrawal is pending, looks the number up in
/// `withdrawn` (and skips the line if it is there). A sender withdrawing
/// puts the number in `withdrawn` and counts it in `pending` (under the
/// lock), then reads `taken_up_to`: at or past the number, the line counts
/// as taken, and the number comes out again. Each side writes, then reads
/// what the other writes, all `SeqCst`: if the sender read `taken_up_to`
/// below its number, the writer's raise came after the sender's count, so
/// the writer sees `pending` above 0, takes the lock (after the sender let
/// go of it) and finds the number. (`pending` changes only under the lock,
/// so there it equals the set's size.)
///
/// Tickets are numbered as lines are queued, but two senders may queue in
/// the other order than they drew their numbers, so a line may be taken
/// after one with a higher number. `taken_up_to` is a maximum, and a line
/// below it that is still queued counts as taken: it is written, and its
/// request cancelled. That errs the safe way; a line counted as still
/// queued is never one already taken.
#[derive(Default)]
pub(super) struct Withdrawals {
    next: AtomicU64,
    taken_up_to: AtomicU64,
    /// Withdrawn lines not reached yet by the writer task. Bounded by the
    /// queue: a number goes in only for a line that is in it, and comes
    /// out when the writer task reaches that line (or with the channel).
    withdrawn: Mutex<HashSet<u64>>,
    /// `withdrawn.len()`, for the writer task to skip the lock when none;
    /// one more, for good, once `all_withdrawn` is set.
    pending: AtomicUsize,
    /// Every line not taken yet is withdrawn (see
    /// [`withdraw_all`](Self::withdraw_all)). Set under the lock.
    all_withdrawn: AtomicBool,
}

impl Withdrawals {
    pub(super) fn ticket(&self) -> LineTicket {
        // From 1: 0 is below every number, as `taken_up_to` starts.
        LineTicket(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The sender's side: see
    /// [`ChannelSender::withdraw`](super::ChannelSender::withdraw).
    pub(super) fn withdraw(&self, ticket: LineTicket) -> bool {
        let mut withdrawn = self.withdrawn.lock().unwrap();
        // Each ticket is withdrawn at most once (it is used up), so the
        // number is new to the set; were it not, `pending` would stay one
        // above the set's size, and every take would look it up.
        let new = withdrawn.insert(ticket.0);
        debug_assert!(new, "ticket {} withdrawn twice", ticket.0);
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.taken_up_to.load(Ordering::SeqCst) >= ticket.0 {
            withdrawn.remove(&ticket.0);
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Withdraws every ticketed line not taken yet, and every one queued
    /// from now on: for a session that has told all its callers that their
    /// requests failed. A line the writer task took before is written, as
    /// with [`withdraw`](Self::withdraw). The same pairing as there: the
    /// flag is set, and `pending` raised (for good: the writer task looks
    /// at the flag from then on), before the writer's next read of
    /// `pending`, or the line was taken.
    pub(super) fn withdraw_all(&self) {
        let _withdrawn = self.withdrawn.lock().unwrap();
        if !self.all_withdrawn.swap(true, Ordering::SeqCst) {
            self.pending.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The writer task's side: `true` if the line is still wanted; from
    /// now on it can no longer be withdrawn.
    pub(super) fn take(&self, ticket: &LineTicket) -> bool {
        self.taken_up_to.fetch_max(ticket.0, Ordering::SeqCst);
        if self.pending.load(Ordering::SeqCst) == 0 {
            return true;
        }
        let mut withdrawn = self.withdrawn.lock().unwrap();
        if withdrawn.remove(&ticket.0) {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        !self.all_withdrawn.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_not_taken_is_withdrawn_and_then_skipped() {
        let record = Withdrawals::default();
        let (one, two) = (record.ticket(), record.ticket());
        let two_again = LineTicket(two.0);
        assert!(record.withdraw(two));
        assert!(record.take(&one), "one was not withdrawn");
        assert!(!record.take(&two_again), "two was withdrawn: skipped");
        assert_eq!(record.pending.load(Ordering::SeqCst), 0);
        assert!(record.withdrawn.lock().unwrap().is_empty());
    }

    #[test]
    fn after_withdraw_all_no_line_not_taken_is_wanted() {
        let record = Withdrawals::default();
        let (one, two, three) = (record.ticket(), record.ticket(), record.ticket());
        assert!(record.take(&one));
        record.withdraw_all();
        record.withdraw_all();
        assert!(!record.take(&LineTicket(two.0)), "two was queued: skipped");
        // One withdrawn on its own too: skipped once, its number gone.
        assert!(record.withdraw(three));
        assert!(!record.take(&LineTicket(3)));
        assert!(record.withdrawn.lock().unwrap().is_empty());
        // And one queued later.
        assert!(!record.take(&record.ticket()));
        assert!(!record.withdraw(one), "one was taken before");
    }

    #[test]
    fn a_line_taken_is_not_withdrawn() {
        let record = Withdrawals::default();
        let one = record.ticket();
        assert!(record.take(&one));
        assert!(!record.withdraw(one), "one was taken");
        assert_eq!(record.pending.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn lines_taken_out_of_number_order_count_as_taken() {
        // Two senders drew 5 and 6 and queued 6 first: the writer takes 6,
        // then 5. Neither may count as still queued afterwards, whatever
        // the order of the takes (a plain store of the last number taken,
        // instead of the maximum, would say 6 is still queued).
        let record = Withdrawals::default();
        let tickets: Vec<LineTicket> = (0..6).map(|_| record.ticket()).collect();
        let [.., five, six] = &tickets[..] else {
            unreachable!()
        };
        assert!(record.take(six));
        assert!(record.take(five));
        assert!(!record.withdraw(LineTicket(six.0)), "six was taken");
        assert!(!record.withdraw(LineTicket(five.0)), "five was taken");
        // And one below the maximum, still queued, errs the safe way: it
        // counts as taken (it is written, and its request cancelled).
        assert!(!record.withdraw(LineTicket(tickets[0].0)));
    }
}
