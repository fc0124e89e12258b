//! A queue's timers (TTL, ack timeout) and its messages on their way to the
//! dead-letter queue: chosen here, moved by the queue's task, and kept (never dropped)
//! when the dead-letter queue cannot take them.

use std::time::Instant;

use super::{Held, Pending, QueueState, EXPIRED};

impl<P> QueueState<P> {
    /// Expires pending messages past their TTL and takes back deliveries past the ack
    /// timeout.
    pub fn timers(&mut self, now: Instant) {
        if let Some(ttl) = self.settings.ttl {
            let mut keep = Pending::default();
            for h in self.pending.take_all() {
                if now.saturating_duration_since(h.enqueued) >= ttl {
                    self.dead.push((h, EXPIRED));
                } else {
                    keep.push_back(h);
                }
            }
            self.pending = keep;
        }
        if let Some(timeout) = self.settings.ack_timeout {
            let mut back = Vec::new();
            for c in &mut self.consumers {
                let late: Vec<u64> = c
                    .unacked
                    .iter()
                    .filter(|(_, o)| now.saturating_duration_since(o.delivered) >= timeout)
                    .map(|(did, _)| *did)
                    .collect();
                for did in late {
                    if let Some(mut o) = c.unacked.remove(&did) {
                        o.held.avoid = Some(c.c.cid);
                        back.push((did, o.held));
                    }
                }
            }
            back.sort_unstable_by_key(|(did, _)| std::cmp::Reverse(*did));
            for (_, h) in back {
                self.put_back(h);
            }
        }
    }

    /// The messages chosen for the dead-letter queue since the last call, with why.
    /// Each must come back as [`dead_lettered`](QueueState::dead_lettered) (it reached
    /// the dead-letter queue) or [`keep`](QueueState::keep) (it could not).
    pub fn take_dead(&mut self) -> Vec<(Held, &'static str)> {
        std::mem::take(&mut self.dead)
    }

    /// A message from [`take_dead`](QueueState::take_dead) is in the dead-letter queue:
    /// it leaves this one. Its `Ack` is not journaled here: it goes with the
    /// dead-letter queue's `Enqueue` of the copy ([`moved`](QueueState::moved)), so the
    /// log never has the one without the other before it.
    pub fn dead_lettered(&mut self, h: Held) {
        self.release(1, h.msg.size());
    }

    /// A message from [`take_dead`](QueueState::take_dead) could not be dead-lettered:
    /// it stays, at the back, and is tried again later. Never dropped. It waits with
    /// its own copy of its payload, as a message put back does; and since
    /// `compact_waiting` copies the last `loose` pending messages, it is counted among
    /// them, so that the newly published ones before it are still covered.
    pub fn keep(&mut self, mut h: Held) {
        h.msg.compact();
        self.pending.push_back(h);
        if self.loose > 0 {
            self.loose += 1;
        }
    }
}
