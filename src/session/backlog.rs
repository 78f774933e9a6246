//! The peer's requests that wait for a handler slot: a backlog bounded by
//! the session (`max_queued_requests`, `max_queued_request_bytes`), from
//! which a cancel takes its request out at once.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::frame::Message;
use crate::protocol::PeerUid;

/// The peer's requests waiting for a handler slot.
///
/// A cancel takes its request out at once, freeing its room: cancels read
/// while there is room keep the backlog from filling with requests nobody
/// waits for any more (they would now be refused needlessly; before
/// refusals, a review found the reader deadlocked there when cancelled
/// requests only left in turn). Hence a map ordered by arrival rather than
/// a queue: taking out the request of a UID is O(log n), not a scan. Once
/// the backlog is full, further requests are refused at once (see
/// `Shared::start_handler`), but for a peer that speaks neither `error`
/// nor `cancel` (ipc-request 1.0), for which the reader waits for room.
#[derive(Default)]
pub(super) struct Backlog {
    /// The waiting requests, by arrival number.
    requests: BTreeMap<u64, (PeerUid, Message)>,
    next_arrival: u64,
    bytes: usize,
    /// The arrival numbers of the waiting requests of each UID, oldest
    /// first: one, unless the peer reuses UIDs too early. A cancel takes
    /// the newest (see `Shared::cancel_request`).
    by_uid: HashMap<PeerUid, Arrivals>,
    /// Set by [`close`](Self::close): nothing is queued any more.
    closed: bool,
}

/// What a waiting request counts for against the backlog's bytes.
pub(super) fn request_size(uid: &PeerUid, payload: &Message) -> usize {
    uid.as_json().len() + payload.get().len()
}

/// The arrival numbers of one UID's waiting requests; one without an
/// allocation.
enum Arrivals {
    One(u64),
    Many(VecDeque<u64>),
}

impl Backlog {
    /// Queues a request; not once the backlog is closed, as nothing would
    /// take it out again.
    pub(super) fn push(&mut self, uid: PeerUid, payload: Message) {
        if self.closed {
            tracing::debug!("dropped request {uid}: the session closed as it was read");
            return;
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.bytes += request_size(&uid, &payload);
        match self.by_uid.entry(uid.clone()) {
            Entry::Vacant(entry) => {
                entry.insert(Arrivals::One(arrival));
            }
            Entry::Occupied(mut entry) => {
                let arrivals = entry.get_mut();
                if let Arrivals::One(first) = *arrivals {
                    *arrivals = Arrivals::Many(VecDeque::from([first]));
                }
                if let Arrivals::Many(all) = arrivals {
                    all.push_back(arrival);
                }
            }
        }
        self.requests.insert(arrival, (uid, payload));
    }

    /// Takes every waiting request out, for good: the session closed, so
    /// none will run, and a request pushed later (one the reader read while
    /// the close ran) is dropped, not kept for as long as a handle lives.
    pub(super) fn close(&mut self) -> Backlog {
        let waiting = std::mem::take(self);
        self.closed = true;
        waiting
    }

    /// How many bytes the waiting requests count for (see [`request_size`]).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many requests wait.
    pub(super) fn len(&self) -> usize {
        self.requests.len()
    }

    /// The next request to handle.
    pub(super) fn pop(&mut self) -> Option<(PeerUid, Message)> {
        let (_, (uid, payload)) = self.requests.pop_first()?;
        self.bytes -= request_size(&uid, &payload);
        // The oldest request of all is the oldest of its UID.
        self.take_arrival(&uid, VecDeque::pop_front);
        Some((uid, payload))
    }

    /// Takes the newest waiting request of `uid` out (the peer expects no
    /// answer to it); false if none waits. Only a peer that reuses a UID
    /// before it has the answer has more than one waiting; its map of
    /// pending requests by UID then holds the newest, so that is the one
    /// its cancel means.
    pub(super) fn cancel(&mut self, uid: &PeerUid) -> bool {
        let Some(arrival) = self.take_arrival(uid, VecDeque::pop_back) else {
            return false;
        };
        if let Some((uid, payload)) = self.requests.remove(&arrival) {
            self.bytes -= request_size(&uid, &payload);
            tracing::debug!("dropped request {uid}: the peer cancelled it while it waited");
        }
        true
    }

    /// Takes one arrival number of `uid` out of `by_uid`: the one `pick`
    /// takes when there are several.
    fn take_arrival(&mut self, uid: &PeerUid, pick: fn(&mut VecDeque<u64>) -> Option<u64>) -> Option<u64> {
        let arrivals = self.by_uid.get_mut(uid)?;
        let taken = match arrivals {
            Arrivals::One(only) => {
                let only = *only;
                self.by_uid.remove(uid);
                return Some(only);
            }
            Arrivals::Many(all) => pick(all),
        };
        if matches!(arrivals, Arrivals::Many(all) if all.is_empty()) {
            self.by_uid.remove(uid);
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn uid(uid: &str) -> PeerUid {
        PeerUid::plain(uid)
    }

    fn queue(uids: &[&str]) -> Backlog {
        let mut backlog = Backlog::default();
        for (i, uid) in uids.iter().enumerate() {
            let payload = serde_json::value::RawValue::from_string(i.to_string()).unwrap();
            backlog.push(self::uid(uid), payload);
        }
        backlog
    }

    fn drain(backlog: &mut Backlog) -> Vec<String> {
        std::iter::from_fn(|| {
            backlog
                .pop()
                .map(|(uid, payload)| format!("{uid}{}", payload.get()))
        })
        .collect()
    }

    #[test]
    fn cancelled_requests_leave_the_backlog_at_once_and_everything_is_counted_out() {
        let mut backlog = queue(&["a", "b", "a", "c"]);
        assert!(backlog.cancel(&uid("a")), "an a waits");
        assert!(backlog.cancel(&uid("c")));
        assert!(!backlog.cancel(&uid("x")), "not waiting: nothing to cancel");
        assert_eq!(backlog.len(), 2, "their room is free at once");
        assert_eq!(
            drain(&mut backlog),
            ["a0", "b1"],
            "a cancel of a reused UID means its newest request"
        );
        assert_eq!(backlog.bytes, 0);
        assert!(backlog.by_uid.is_empty() && backlog.requests.is_empty());
    }

    #[test]
    fn a_cancel_counts_for_one_waiting_request_at_most() {
        let mut backlog = queue(&["a", "a"]);
        let cancelled: Vec<bool> = (0..5).map(|_| backlog.cancel(&uid("a"))).collect();
        assert_eq!(cancelled, [true, true, false, false, false]);
        assert!(drain(&mut backlog).is_empty());
        let mut backlog = queue(&["a"]);
        assert!(backlog.cancel(&uid("a")));
        assert!(!backlog.cancel(&uid("a")));
        backlog.push(
            uid("a"),
            serde_json::value::RawValue::from_string("9".into()).unwrap(),
        );
        assert_eq!(
            drain(&mut backlog),
            ["a9"],
            "only one of the two cancels was for a waiting request"
        );
        assert!(backlog.by_uid.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Step {
        Push(usize),
        Pop,
        Cancel(usize),
        Close,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            5 => (0..3usize).prop_map(Step::Push),
            2 => Just(Step::Pop),
            2 => (0..3usize).prop_map(Step::Cancel),
            1 => Just(Step::Close),
        ]
    }

    proptest::proptest! {
        /// Any order of pushes, pops, cancels and closes, with UIDs reused,
        /// against a model (a list in arrival order: a pop takes the first,
        /// a cancel the last of its UID, a close all; nothing is pushed once
        /// closed): what comes out, and the counts and the index by UID
        /// after every step (a review's check, made a property).
        #[test]
        fn every_order_of_steps_keeps_the_backlog_as_its_model(steps in proptest::collection::vec(step(), 1..40)) {
            let names = ["a", "b", "c"];
            let mut backlog = Backlog::default();
            let mut model: Vec<(PeerUid, String)> = Vec::new();
            let mut closed = false;
            for (n, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Push(name) => {
                        let payload = format!("\"{}\"", "x".repeat(n % 5) + &n.to_string());
                        backlog.push(uid(names[name]), RawValue::from_string(payload.clone()).unwrap());
                        if !closed {
                            model.push((uid(names[name]), payload));
                        }
                    }
                    Step::Pop => {
                        let got = backlog.pop().map(|(uid, payload)| (uid, payload.get().to_owned()));
                        let want = (!model.is_empty()).then(|| model.remove(0));
                        assert_eq!(got, want);
                    }
                    Step::Cancel(name) => {
                        let newest = model.iter().rposition(|(uid, _)| *uid == self::uid(names[name]));
                        assert_eq!(backlog.cancel(&uid(names[name])), newest.is_some());
                        if let Some(at) = newest {
                            model.remove(at);
                        }
                    }
                    Step::Close => {
                        let mut waiting = backlog.close();
                        closed = true;
                        assert_eq!(drain(&mut waiting).len(), model.len());
                        assert_eq!(waiting.bytes, 0);
                        model.clear();
                    }
                }
                let bytes: usize = model.iter().map(|(uid, payload)| uid.as_json().len() + payload.len()).sum();
                assert_eq!((backlog.bytes(), backlog.len()), (bytes, model.len()));
                let mut indexed = 0;
                for (uid, arrivals) in &backlog.by_uid {
                    let arrivals: Vec<u64> = match arrivals {
                        Arrivals::One(only) => vec![*only],
                        Arrivals::Many(all) => all.iter().copied().collect(),
                    };
                    assert!(!arrivals.is_empty() && arrivals.is_sorted(), "{arrivals:?}");
                    for arrival in &arrivals {
                        assert_eq!(&backlog.requests[arrival].0, uid);
                    }
                    indexed += arrivals.len();
                }
                assert_eq!(indexed, model.len());
            }
        }
    }
}
