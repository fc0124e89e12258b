//! A queue's waiting messages given their own copies of their payloads, so that none
//! keeps a read buffer full of other messages' bytes resident ([`Message::compact`]):
//! at once in a queue with no consumer, else once the oldest has waited
//! [`COMPACT_AFTER`]; and a message a consumer gives back, as it is put back.
//!
//! [`Message::compact`]: crate::message::Message::compact

use std::time::{Duration, Instant};

use super::{Held, QueueState};

/// How long a message may wait in a queue with consumers before its payload is copied
/// out of its read buffer ([`QueueState::compact_waiting`]).
pub(crate) const COMPACT_AFTER: Duration = Duration::from_secs(1);

impl<P> QueueState<P> {
    /// Puts a message a consumer held back at the front of the queue, to wait there
    /// with its own copy of its payload (it was not copied when it went out).
    pub(super) fn put_back(&mut self, mut h: Held) {
        h.msg.compact();
        self.pending.push_front(h);
    }

    /// When [`compact_waiting`](QueueState::compact_waiting) next has work, if the queue
    /// has consumers (without, it has none after a dispatch): for the queue's task to
    /// wake at.
    pub fn compaction_due(&self) -> Option<Instant> {
        if self.loose == 0 || self.pending.is_empty() {
            return None;
        }
        self.loose_since.map(|t| t + COMPACT_AFTER)
    }

    /// Gives the waiting messages that still share their read buffer their own copies
    /// of their payloads ([`Message::compact`]): at once in a queue with no consumer,
    /// else once the oldest has waited [`COMPACT_AFTER`]. Those are the last `loose`
    /// pending ones, or all of them if fewer remain: dispatch only takes from the
    /// front, what it puts back at the front it took in the same call, and messages put
    /// back by consumers are copied as they are.
    ///
    /// A message that waits long would keep a whole buffer of others' bytes resident.
    /// With consumers that keep up, messages leave in order, and their buffers with
    /// them, before they are a second old; copying each one that waited at all cost a
    /// backlogged queue with acknowledging consumers 5–13 % of its throughput (book:
    /// Operations, "Memory").
    pub fn compact_waiting(&mut self, now: Instant) {
        if self.pending.is_empty() {
            self.loose = 0;
            self.loose_since = None;
            return;
        }
        let due = self.consumers.is_empty()
            || self
                .loose_since
                .is_some_and(|t| now.saturating_duration_since(t) >= COMPACT_AFTER);
        if !due {
            return;
        }
        let k = std::mem::take(&mut self.loose).min(self.pending.len());
        self.loose_since = None;
        for h in self.pending.iter_mut().rev().take(k) {
            h.msg.compact();
        }
    }
}
