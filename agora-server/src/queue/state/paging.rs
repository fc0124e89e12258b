//! A durable queue's backlog past its head: kept in the log, not in memory, and read
//! back as consumers get there.
//!
//! The waiting messages are the in-memory head (`pending`, its bytes counted) followed
//! by the paged ones (`paged`: id, delivery count, size and arrival time each, about 40
//! bytes; the payload is only in the log). While any message is paged, new ones join
//! the paged tail, so order holds. The queue's task decides when to page out (the head
//! is past its bytes, or the broker's memory budget is under pressure) and when to read
//! back (the head has drained below half), and asks the log's writer for the records;
//! this value only moves messages between the two halves. Only a journaled queue pages,
//! and only messages whose `Enqueue` has gone to the writer.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Blocks, Held, QueueState};
use crate::budget::BOOKKEEPING;
use crate::message::Message;
use crate::store::{Kept, Stored};

/// The most messages one read back asks for.
pub(crate) const MAX_READ: usize = 4096;

/// The waiting messages in memory, in order, with what they cost (each message's
/// `Message::size` and the budget's [`BOOKKEEPING`]: what holding it costs), and the
/// highest delivery count among those pushed since the last [`take_all`].
///
/// [`take_all`]: Pending::take_all
#[derive(Default)]
pub(crate) struct Pending {
    q: Blocks<Held>,
    cost: usize,
    top_count: u32,
}

fn cost(h: &Held) -> usize {
    h.msg.size() + BOOKKEEPING
}

impl Pending {
    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// What its messages cost in memory.
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// At least the highest delivery count in it (counts are not lowered as messages
    /// leave): no message in it has been delivered more often.
    pub fn top_count(&self) -> u32 {
        self.top_count
    }

    pub fn front(&self) -> Option<&Held> {
        self.q.front()
    }

    pub fn push_back(&mut self, h: Held) {
        self.cost += cost(&h);
        self.top_count = self.top_count.max(h.count);
        self.q.push_back(h);
    }

    pub fn push_front(&mut self, h: Held) {
        self.cost += cost(&h);
        self.top_count = self.top_count.max(h.count);
        self.q.push_front(h);
    }

    pub fn pop_front(&mut self) -> Option<Held> {
        let h = self.q.pop_front()?;
        self.cost -= cost(&h);
        Some(h)
    }

    pub fn pop_back(&mut self) -> Option<Held> {
        let h = self.q.pop_back()?;
        self.cost -= cost(&h);
        Some(h)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Held> {
        self.q.iter()
    }

    /// For changes that keep each message's size (compaction copies a payload, it does
    /// not change it).
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Held> {
        self.q.iter_mut()
    }

    pub fn take_all(&mut self) -> impl Iterator<Item = Held> {
        self.cost = 0;
        self.top_count = 0;
        self.q.take_all()
    }
}

/// A waiting message kept in the log only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paged {
    pub id: u64,
    /// Deliveries so far.
    pub count: u32,
    /// What it counts against byte limits.
    pub size: usize,
    /// When it entered the queue (for TTL, which applies once it is read back).
    pub enqueued: Instant,
}

impl<P> QueueState<P> {
    /// Messages waiting in the log only, and their bytes.
    pub fn paged(&self) -> (usize, usize) {
        (self.paged.len(), self.paged_bytes)
    }

    /// What the waiting messages in memory cost: their sizes, and the budget's
    /// bookkeeping for each (so a head of small messages holds fewer of them).
    pub fn head_cost(&self) -> usize {
        self.pending.cost()
    }

    /// Moves waiting messages, newest first, out of memory (their records are in the
    /// log) until the head costs at most `keep` bytes ([`head_cost`]). Only a
    /// journaled queue pages. Returns how many went.
    ///
    /// [`head_cost`]: QueueState::head_cost
    pub fn page_out(&mut self, keep: usize) -> usize {
        if self.journal.is_none() {
            return 0;
        }
        let mut n = 0;
        while self.pending.cost() > keep {
            let Some(h) = self.pending.pop_back() else {
                break;
            };
            let size = h.msg.size();
            self.paged_bytes += size;
            self.paged.push_front(Paged {
                id: h.id,
                count: h.count,
                size,
                enqueued: h.enqueued,
            });
            n += 1;
        }
        self.loose = self.loose.min(self.pending.len());
        if self.loose == 0 {
            self.loose_since = None;
        }
        n
    }

    /// Puts an entering message at the paged tail if there is one (true), so that it
    /// waits after the older paged ones; its record is in the journal.
    pub(super) fn enqueue_paged(&mut self, id: u64, msg: &Message, now: Instant) -> bool {
        if self.paged.is_empty() {
            return false;
        }
        let size = msg.size();
        self.paged_bytes += size;
        self.paged.push_back(Paged {
            id,
            count: 0,
            size,
            enqueued: now,
        });
        true
    }

    /// The ids of the messages to read back next: the oldest paged ones, costing up to
    /// `room` bytes in the head (at least one) and at most [`MAX_READ`] messages.
    pub fn to_read(&self, room: usize) -> Vec<u64> {
        let mut cost = 0;
        let mut ids = Vec::new();
        for p in self.paged.iter().take(MAX_READ) {
            let c = p.size + BOOKKEEPING;
            if !ids.is_empty() && cost + c > room {
                break;
            }
            cost += c;
            ids.push(p.id);
        }
        ids
    }

    /// Messages read back from the log for the ids `asked` ([`to_read`]): each that is
    /// still the oldest paged one joins the in-memory head. One no longer paged (purged
    /// meanwhile, or paged again in front of it) is left where it is. One the log no
    /// longer has (never expected: it is live until acknowledged) is reported and
    /// counted out.
    ///
    /// [`to_read`]: QueueState::to_read
    pub fn paged_in(&mut self, asked: &[u64], got: Vec<Stored>) {
        let mut got = got.into_iter().peekable();
        for &id in asked {
            let read = got.next_if(|m| m.id == id);
            if self.paged.front().is_none_or(|p| p.id != id) {
                continue;
            }
            let Some(p) = self.paged.pop_front() else {
                break;
            };
            self.paged_bytes -= p.size;
            let Some(m) = read else {
                log::error!("message {id} is not in the log any more; it is counted out");
                self.release(1, p.size);
                continue;
            };
            let msg = Message {
                headers: m.headers,
                payload: m.payload,
                received: p.enqueued,
            };
            // Its own allocation already; but `compact_waiting` copies the last `loose`
            // pending messages, so it is counted among them (as `keep` does), for the
            // messages before it to stay covered.
            if self.loose > 0 {
                self.loose += 1;
            }
            self.pending.push_back(Held {
                msg,
                id,
                count: p.count.max(m.count),
                enqueued: p.enqueued,
                avoid: None,
            });
        }
    }

    /// Puts back messages the log kept at start, in id order, each waiting with the
    /// delivery count logged for it (its next delivery is counted one higher: a
    /// redelivery), all paged: the queue's task reads its head back. Writes nothing:
    /// they are in the log already. Ids continue after the highest.
    pub fn restore_paged(&mut self, kept: Vec<Kept>, now: Instant) {
        for k in kept {
            if let Some(j) = &self.journal {
                j.ids.past(k.id);
            }
            self.totals.messages_in += 1;
            self.totals.bytes_in += k.size as u64;
            self.paged_bytes += k.size;
            self.paged.push_back(Paged {
                id: k.id,
                count: k.count,
                size: k.size,
                enqueued: now,
            });
        }
    }

    /// Drops the paged messages (a purge or a deletion): their `Ack`s go to the
    /// journal, and they count as released. Returns how many.
    pub(super) fn drop_paged(&mut self) -> usize {
        let gone: VecDeque<Paged> = std::mem::take(&mut self.paged);
        let bytes = std::mem::take(&mut self.paged_bytes);
        for p in &gone {
            self.journal_ack(p.id);
        }
        self.release(gone.len(), bytes);
        gone.len()
    }

    /// Calls `f` with every paged message (what the simulation checks its invariants
    /// on, with [`for_each_held`](QueueState::for_each_held)).
    pub fn for_each_paged(&self, f: impl FnMut(&Paged)) {
        self.paged.iter().for_each(f);
    }
}
