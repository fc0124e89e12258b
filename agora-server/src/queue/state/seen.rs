//! A queue's window of message ids: the `agora-msg-id` of each message it accepted,
//! remembered for `dedup_window` (at most `dedup_ids` of them, the oldest forgotten
//! first), so that a publish repeating one is confirmed again without being stored
//! twice.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::QueueState;
use crate::message::Message;

/// What remembering one id costs the memory budget beyond its length: its two shared
/// handles, its slot in the set and in the order, and the shared allocation's counts.
pub(crate) const ID_COST: usize = 96;

/// The ids, and when each was accepted.
pub(crate) struct Seen {
    window: Duration,
    most: usize,
    ids: HashSet<Arc<str>>,
    /// Oldest first.
    order: VecDeque<(Instant, Arc<str>)>,
    /// What they cost ([`ID_COST`] each, and their lengths).
    bytes: usize,
}

impl Seen {
    pub fn new(window: Duration, most: usize) -> Seen {
        Seen {
            window,
            most,
            ids: HashSet::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// True if `id` is new (it is remembered from now on), false if it is a repeat
    /// within the window.
    pub fn admit(&mut self, id: &str, now: Instant) -> bool {
        self.expire(now);
        if self.window.is_zero() || self.most == 0 {
            return true;
        }
        if self.ids.contains(id) {
            return false;
        }
        let id: Arc<str> = Arc::from(id);
        self.bytes += id.len() + ID_COST;
        self.ids.insert(id.clone());
        self.order.push_back((now, id));
        while self.order.len() > self.most {
            self.forget_oldest();
        }
        true
    }

    /// Forgets the ids accepted a window or more ago.
    pub fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_front() {
            self.ids.remove(&id);
            self.bytes -= id.len() + ID_COST;
        }
    }

    /// When the oldest id is due to be forgotten.
    pub fn due(&self) -> Option<Instant> {
        self.order.front().map(|(at, _)| *at + self.window)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl<P> QueueState<P> {
    /// Whether `msg` may enter: true unless it repeats a message id the queue accepted
    /// within its window; a repeat is counted and its reservation released.
    pub(super) fn admit(&mut self, msg: &Message, now: Instant) -> bool {
        let Some(Ok(id)) = agora_protocol::msg_id::msg_id(&msg.headers) else {
            return true;
        };
        if self.seen.admit(id, now) {
            return true;
        }
        self.totals.duplicates += 1;
        self.release(1, msg.size());
        false
    }

    /// Remembers the message ids the log kept at start, in publish order, as if
    /// accepted `now` (a window counts from the restart).
    pub fn restore_seen(&mut self, ids: Vec<String>, now: Instant) {
        for id in ids {
            self.seen.admit(&id, now);
        }
    }

    /// Forgets the message ids past the window.
    pub fn expire_seen(&mut self, now: Instant) {
        self.seen.expire(now);
    }

    /// When a message id is next due to be forgotten.
    pub fn seen_due(&self) -> Option<Instant> {
        self.seen.due()
    }

    /// Calls `f` with each message id remembered, oldest first.
    pub fn for_each_seen(&self, mut f: impl FnMut(&str)) {
        for (_, id) in &self.seen.order {
            f(id);
        }
    }

    /// Message ids remembered, and what they cost the memory budget.
    pub fn seen(&self) -> (usize, usize) {
        (self.seen.len(), self.seen.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_for_the_window_and_up_to_the_most() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut seen = Seen::new(Duration::from_secs(120), 3);
        assert!(seen.admit("a", t0));
        assert!(!seen.admit("a", t0 + s));
        assert!(seen.admit("b", t0 + s));
        assert!(seen.admit("c", t0 + s));
        assert_eq!(seen.bytes(), 3 * (1 + ID_COST));
        // A fourth pushes out the oldest.
        assert!(seen.admit("d", t0 + 2 * s));
        assert_eq!(seen.len(), 3);
        assert!(seen.admit("a", t0 + 2 * s), "forgotten past the most");
        // Past the window, everything accepted before goes.
        assert_eq!(seen.due(), Some(t0 + s + Duration::from_secs(120)));
        seen.expire(t0 + Duration::from_secs(123));
        assert_eq!((seen.len(), seen.bytes()), (0, 0));
        assert!(seen.admit("b", t0 + Duration::from_secs(123)));
    }

    #[test]
    fn a_zero_window_or_most_remembers_nothing() {
        let t0 = Instant::now();
        for mut seen in [
            Seen::new(Duration::ZERO, 10),
            Seen::new(Duration::from_secs(1), 0),
        ] {
            assert!(seen.admit("a", t0));
            assert!(seen.admit("a", t0));
            assert_eq!((seen.len(), seen.bytes()), (0, 0));
        }
    }
}
