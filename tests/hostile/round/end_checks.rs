//! The checks once the peer went: the session closed, every call of ours
//! ended (with its own answer or a typed error), nothing pending, the
//! message stream ended, our end of the stream came, nothing left queued;
//! and of what we wrote:
//! lines a Node peer reads, no NACK but for a handle, every request of the
//! peer's that must be answered answered exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Ending, Round};

impl Round {
    pub(super) async fn check_the_end(&mut self, waited_for_answers: bool) {
        let holds_up = self.settings.holds_its_reader_up();
        // A session whose reader is held up sees the peer go only by a
        // hang-up on a Unix socket (polled every second, README), which a
        // half-close is not: it is then left open, unchecked.
        let can_end = !holds_up
            || (self.settings.duplex_capacity.is_none() && self.settings.ending != Ending::HalfClose);
        let bound = Duration::from_secs(if holds_up { 12 } else { 5 });
        if !can_end {
            self.report
                .log
                .push("the session is held up by its unread messages: not checked".into());
            self.our_calls
                .lock()
                .unwrap()
                .drain(..)
                .for_each(|call| call.abort());
            return;
        }
        self.check_the_session_closed(bound).await;
        self.check_our_calls_ended(bound).await;
        if let Some(session) = &self.session {
            if session.pending_requests() != 0 {
                let pending = session.pending_requests();
                self.problem(format!("{pending} requests pending after the session closed"));
            }
        }
        if let Some(messages) = self.messages.take() {
            match tokio::time::timeout(Duration::from_secs(5), messages).await {
                Ok(Ok(n)) => self.report.log.push(format!("plain messages: {n}")),
                Ok(Err(e)) => self.problem(format!("the message stream's reader failed: {e}")),
                Err(_) => self.problem("the message stream did not end 5 s after the session closed".into()),
            }
        }
        self.check_our_stream_ended().await;
        self.check_nothing_left_queued().await;
        self.check_what_we_wrote(waited_for_answers && !holds_up);
    }

    async fn check_the_session_closed(&mut self, bound: Duration) {
        let Some(session) = self.session.clone() else {
            return;
        };
        // A peer that stopped reading, then shut its writing side down
        // without closing its end, may have stopped our reader (on the
        // refusals' budget, on room for a line it must queue) before the
        // end of its stream: then the session cannot see that end, and
        // waits with the peer (README, "refusals not yet written"). Such a
        // peer is made to go (its reading half dropped) if the session
        // has not closed by itself; it must close then.
        let stopped_reading = self.settings.stop_reading_after.is_some();
        if self.settings.ending == Ending::HalfClose && stopped_reading {
            if tokio::time::timeout(bound, session.closed()).await.is_ok() {
                return self.report.log.push("closed after the half-close".into());
            }
            self.report
                .log
                .push("not closed after the half-close: the peer goes".into());
            self.peer_reader.abort();
        }
        match tokio::time::timeout(bound, session.closed()).await {
            Ok(reason) => self.report.log.push(format!("closed: {reason}")),
            Err(_) => self.problem(format!(
                "the session was not closed {bound:?} after the peer went (pending {}, queued {})",
                session.pending_requests(),
                session.queued_bytes()
            )),
        }
    }

    /// Each call of ours ended, with its own answer or a typed error (a
    /// call says "PROBLEM" otherwise, see `our_side::start_our_calls`).
    async fn check_our_calls_ended(&mut self, bound: Duration) {
        let calls: Vec<_> = std::mem::take(&mut *self.our_calls.lock().unwrap());
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        // One deadline for all: calls that hang must not take the bound
        // each, past the round's watchdog.
        let deadline = tokio::time::Instant::now() + bound;
        for call in calls {
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(outcome)) if outcome.starts_with("PROBLEM: ") => self.problem(outcome[9..].into()),
                Ok(Ok(outcome)) => *outcomes.entry(outcome).or_default() += 1,
                Ok(Err(e)) => self.problem(format!("a call of ours panicked: {e}")),
                Err(_) => self.problem(format!(
                    "a call of ours did not end {bound:?} after the peer went"
                )),
            }
        }
        self.report.log.push(format!("our calls: {outcomes:?}"));
    }

    /// After a half-close, a peer that still reads gets the end of our
    /// stream once the session closed: nothing keeps our end open.
    async fn check_our_stream_ended(&mut self) {
        if self.settings.ending != Ending::HalfClose || self.settings.holds_its_reader_up() {
            return;
        }
        let reads = self.settings.stop_reading_after.is_none();
        let limit = Duration::from_secs(if reads { 3 } else { 1 });
        if tokio::time::timeout(limit, &mut self.peer_reader).await.is_err() {
            self.peer_reader.abort();
            if reads {
                self.problem("our end of the stream did not come 3 s after the session closed".into());
            }
        }
    }

    /// Once the session closed and the peer's reader is done (read to the
    /// end, or gone), every line's share of the queue's budget was given
    /// back: written, or dropped unwritten. (Within the budget meanwhile
    /// needs no check: `queued_bytes` is what is taken of it.)
    async fn check_nothing_left_queued(&mut self) {
        let Some(session) = self.session.clone() else {
            return;
        };
        self.peer_reader.abort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while session.queued_bytes() != 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if session.queued_bytes() != 0 {
            let queued = session.queued_bytes();
            self.problem(format!(
                "{queued} bytes still queued 5 s after the session closed and the peer went"
            ));
        }
    }

    /// What the peer's reader found wrong with our lines, NACKs nobody
    /// asked for, and answers: more than one to a UID the peer used once
    /// (cancelled or not), and, if it waited for them,
    /// none to a request that must be answered.
    fn check_what_we_wrote(&mut self, all_must_be_answered: bool) {
        let seen = self.seen.clone();
        let seen = seen.lock().unwrap();
        self.report.problems.extend(seen.problems.iter().cloned());
        if seen.nacks > self.peer.handles_offered {
            let (nacks, handles) = (seen.nacks, self.peer.handles_offered);
            self.problem(format!("{nacks} NACKs for {handles} handles offered"));
        }
        for (uid, &n) in &seen.answers {
            if n > 1 && !self.peer.reused.contains(uid) {
                self.problem(format!("request {uid:.80} answered {n} times"));
            }
        }
        if all_must_be_answered {
            let never: Vec<String> = self
                .peer
                .must_be_answered()
                .filter(|uid| !seen.answers.contains_key(*uid))
                .cloned()
                .collect();
            for uid in never {
                self.problem(format!(
                    "request {uid:.80} (UID of {} bytes) never answered",
                    uid.len()
                ));
            }
        }
        let (lines, answers, ours) = (seen.lines, seen.answers.len(), seen.our_requests.len());
        self.report.log.push(format!(
            "we wrote {lines} lines: {answers} answers, {ours} requests"
        ));
        if std::env::var_os("HOSTILE_VERBOSE").is_some() {
            let written = self.peer.written.iter().map(|line| format!("peer> {line}"));
            self.report.log.extend(written);
        }
    }
}
