//! A `NACK` with an option: a message held back for a while (`delay=`), sent to the
//! dead letters (`dlq`), or given back uncounted (`unseen`).

use std::time::Instant;

use super::{Acked, QueueState, REJECTED};

impl<P> QueueState<P> {
    /// `NACK` of a delivery, as `how` says: back to the front now (as
    /// [`ack`](QueueState::ack) with `false`), back at `now` + the delay (meanwhile no
    /// consumer gets it; it counts in the depth), or to the dead-letter list
    /// ([`REJECTED`]).
    pub fn nack(&mut self, cid: u64, did: u64, how: agora_protocol::Nack, now: Instant) -> Acked {
        use agora_protocol::Nack;
        let Some(i) = self.index(cid) else {
            return Acked::Unknown;
        };
        let Some(o) = self.consumers[i].unacked.remove(&did) else {
            return Acked::Unknown;
        };
        match how {
            Nack::Requeue => self.put_back(o.held),
            Nack::Delay(d) => {
                let mut h = o.held;
                // It waits, as a message put back does, with its own payload.
                h.msg.compact();
                self.delayed.push((now + d, h));
            }
            Nack::DeadLetter => self.dead.push((o.held, REJECTED)),
            Nack::Unseen => {
                // Not an attempt: the delivery count goes back to what it was.
                let mut h = o.held;
                h.count = h.count.saturating_sub(1);
                // The log says so too: its latest `Deliver` is the count.
                if let Some(j) = &mut self.journal {
                    j.deliver(h.id, h.count);
                }
                self.put_back(h);
            }
        }
        Acked::Done
    }

    /// When the first message held back by `NACK delay=` is due.
    pub fn delay_due(&self) -> Option<Instant> {
        self.delayed.iter().map(|(at, _)| *at).min()
    }

    /// Puts the messages held back by `NACK delay=` that are due at `now` back at the
    /// front of the queue, the earliest first.
    pub fn release_delayed(&mut self, now: Instant) {
        if self.delayed.is_empty() {
            return;
        }
        let (mut due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.delayed = wait;
        // The latest is put back first, so the earliest ends at the front.
        due.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        for (_, h) in due {
            self.put_back(h);
        }
    }
}
