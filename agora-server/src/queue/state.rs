//! A queue's logic as a plain value: pending messages, each consumer's outstanding
//! deliveries, credit, delivery counts, TTL, ack timeouts and the choice of what goes to
//! the dead-letter queue.
//!
//! It does no I/O, reads no clock and spawns nothing: the time comes in as an argument,
//! a delivery goes out through the `push` function the caller gives [`QueueState::dispatch`],
//! and the bytes a message gives back when it leaves are added up in
//! [`QueueState::take_released`] for the caller to return to the limits and the budget.
//! The task around it (`queue::run`) and the simulation (`crate::sim`) both drive it.
//! It must never hold a message in two places: a message is pending, outstanding at one
//! consumer, waiting to be dead-lettered, or gone.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::blocks::Blocks;
use crate::config::QueueSettings;
use crate::message::{Delivery, Message};

/// Delivery ids are `slot << SLOT_SHIFT | seq`: the connection finds the subscription
/// of an `ACK` from the id alone, and ids are never reused on a connection because
/// neither slots nor sequence numbers are.
pub(crate) const SLOT_SHIFT: u32 = 40;

pub(crate) fn delivery_id(slot: u64, seq: u64) -> u64 {
    (slot << SLOT_SHIFT) | (seq & ((1 << SLOT_SHIFT) - 1))
}

/// A consumer as its queue knows it; `port` is where its deliveries go (the
/// subscription's delivery queue in the broker, a recorder in tests).
pub(crate) struct ConsumerSpec<P> {
    /// Unique in the broker.
    pub cid: u64,
    /// The subscription's id on its connection (for `CANCEL`).
    pub sid: u64,
    /// High bits of this subscription's delivery ids (see [`delivery_id`]).
    pub slot: u64,
    pub prefetch: u32,
    /// The broker's auto-ack mode: a delivery is forgotten once its shipper wrote it.
    pub auto_ack: bool,
    /// Another node of a cluster consuming over its link, for its own consumers (a
    /// replicated queue keeps its deliveries while its leader's lease lapses).
    pub link: bool,
    pub port: P,
}

/// A message in the queue, with what the queue knows of its history.
pub(crate) struct Held {
    pub msg: Message,
    /// Its id in the log (0 in a queue without a journal).
    pub id: u64,
    /// Deliveries so far.
    pub count: u32,
    /// When it entered the queue (for TTL).
    pub enqueued: Instant,
    /// A consumer not to give it to next (the one whose ack timed out), if others can.
    pub avoid: Option<u64>,
}

struct Outstanding {
    held: Held,
    delivered: Instant,
}

struct ConsumerState<P> {
    c: ConsumerSpec<P>,
    next_seq: u64,
    /// Manual ack: delivered, not yet acked, by delivery id.
    unacked: HashMap<u64, Outstanding>,
    /// Auto ack: handed to the shipper, not yet written, in order.
    inflight: VecDeque<Held>,
    /// Its delivery queue refused a delivery (the subscription ended): nothing more is
    /// given to it, and it waits for its last write reports and its unsubscribe.
    closed: bool,
    /// `HOLD`: nothing new is given to it until `RESUME`; what it holds stays its own.
    held: bool,
}

impl<P> ConsumerState<P> {
    fn outstanding(&self) -> usize {
        self.unacked.len() + self.inflight.len()
    }

    fn has_credit(&self) -> bool {
        !self.closed && !self.held && self.outstanding() < self.c.prefetch as usize
    }
}

/// Why a message is dead-lettered (the `agora-dead-letter-reason` header).
pub(crate) const MAX_DELIVERIES: &str = "max_deliveries";
/// See [`MAX_DELIVERIES`].
pub(crate) const EXPIRED: &str = "expired";
/// See [`MAX_DELIVERIES`]: a consumer's `NACK … dlq`.
pub(crate) const REJECTED: &str = "rejected";

/// Where a held message is (see [`QueueState::for_each_held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Pending,
    /// Outstanding at this consumer (`cid`) under this delivery id (0 for auto-ack:
    /// handed to the shipper, not yet written).
    Outstanding(u64, u64),
    /// Chosen for the dead-letter queue, not yet moved.
    Dead,
}

/// Running totals of what went through the queue (published as its figures).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    pub messages_in: u64,
    pub bytes_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
    pub redelivered: u64,
    /// Publishes not stored because they repeated a message id within the window.
    pub duplicates: u64,
}

/// The outcome of an `ACK` or `NACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acked {
    /// The delivery was outstanding at that consumer and is settled.
    Done,
    /// No such consumer, or the delivery is not outstanding at it.
    Unknown,
}

/// See the module documentation.
pub(crate) struct QueueState<P> {
    settings: QueueSettings,
    /// Waiting messages in memory, oldest first.
    pending: Pending,
    /// A durable queue's waiting messages after those, kept in the log only
    /// (`paging.rs`).
    paged: VecDeque<Paged>,
    /// Their bytes.
    paged_bytes: usize,
    /// At least as many messages as there are at the back of `pending` whose payloads
    /// are not yet their own ([`Message::compact`]): those enqueued since the last
    /// compaction.
    loose: usize,
    /// When the oldest of them was enqueued.
    loose_since: Option<Instant>,
    consumers: Vec<ConsumerState<P>>,
    /// Round-robin position.
    rr: usize,
    /// Messages to move to the dead-letter queue, with the reason.
    dead: Vec<(Held, &'static str)>,
    /// Messages given back by `NACK delay=`, with when they are due back in `pending`.
    delayed: Vec<(Instant, Held)>,
    /// Messages and bytes that left the queue since the last [`take_released`].
    ///
    /// [`take_released`]: QueueState::take_released
    released: (usize, usize),
    totals: Totals,
    /// A durable queue's changes, as log records (`journal.rs`).
    journal: Option<journal::Journal>,
    /// The message ids accepted within the window (`seen.rs`).
    seen: seen::Seen,
}

impl<P> QueueState<P> {
    pub fn new(settings: QueueSettings) -> Self {
        QueueState {
            pending: Pending::default(),
            paged: VecDeque::new(),
            paged_bytes: 0,
            loose: 0,
            loose_since: None,
            consumers: Vec::new(),
            rr: 0,
            dead: Vec::new(),
            delayed: Vec::new(),
            released: (0, 0),
            totals: Totals::default(),
            journal: None,
            seen: seen::Seen::new(settings.dedup_window, settings.dedup_ids),
            settings,
        }
    }

    /// Messages waiting for a consumer (the broker's `STATS` counts them from the
    /// reservations instead, so a confirmed publish still in the channel counts too).
    #[cfg(test)]
    pub fn depth(&self) -> usize {
        self.pending.len() + self.paged.len() + self.delayed.len()
    }

    /// Deliveries outstanding at consumers (unacked, or not yet written for auto-ack).
    pub fn unacked(&self) -> usize {
        self.consumers.iter().map(ConsumerState::outstanding).sum()
    }

    pub fn consumers(&self) -> usize {
        self.consumers.len()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// How often the caller should call [`timers`](QueueState::timers), if the queue
    /// has any: a tenth of the shortest, between 5 ms and 1 s.
    pub fn tick(&self) -> Option<Duration> {
        let s = &self.settings;
        let shortest = match (s.ttl, s.ack_timeout) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some((shortest / 10).clamp(Duration::from_millis(5), Duration::from_secs(1)))
    }

    /// Messages and bytes that left the queue (acked, written in auto-ack mode, purged,
    /// dead-lettered) since the last call: what the caller gives back to the queue's
    /// limits and the memory budget.
    pub fn take_released(&mut self) -> (usize, usize) {
        std::mem::take(&mut self.released)
    }

    fn release(&mut self, n: usize, bytes: usize) {
        self.released.0 += n;
        self.released.1 += bytes;
    }

    /// The consumer `cid`, if it is here.
    pub fn consumer(&self, cid: u64) -> Option<&ConsumerSpec<P>> {
        self.consumers.iter().map(|c| &c.c).find(|c| c.cid == cid)
    }

    fn index(&self, cid: u64) -> Option<usize> {
        self.consumers.iter().position(|c| c.c.cid == cid)
    }

    pub fn subscribe(&mut self, c: ConsumerSpec<P>) {
        self.consumers.push(ConsumerState {
            c,
            next_seq: 1,
            unacked: HashMap::new(),
            inflight: VecDeque::new(),
            closed: false,
            held: false,
        });
    }

    /// A consumer leaves: its outstanding messages go back to the front, in order.
    /// Returns its spec, or `None` if it was not here.
    /// `HOLD` (`on`) or `RESUME` of consumer `cid`: while held it is given nothing
    /// new; its outstanding deliveries stay its own, to settle.
    pub fn hold(&mut self, cid: u64, on: bool) {
        if let Some(i) = self.index(cid) {
            self.consumers[i].held = on;
        }
    }

    /// Whether consumer `cid` is held.
    #[cfg(test)]
    pub fn is_held(&self, cid: u64) -> bool {
        self.index(cid).is_some_and(|i| self.consumers[i].held)
    }

    pub fn unsubscribe(&mut self, cid: u64) -> Option<ConsumerSpec<P>> {
        let i = self.index(cid)?;
        let c = self.consumers.remove(i);
        Some(self.give_back(c))
    }

    /// `ACK` (`ack`) or `NACK` (`!ack`, back to the front) of a delivery.
    pub fn ack(&mut self, cid: u64, did: u64, ack: bool) -> Acked {
        let Some(i) = self.index(cid) else {
            return Acked::Unknown;
        };
        match self.consumers[i].unacked.remove(&did) {
            Some(o) if ack => {
                self.journal_ack(o.held.id);
                self.release(1, o.held.msg.size());
            }
            Some(o) => self.put_back(o.held),
            None => return Acked::Unknown,
        }
        Acked::Done
    }

    /// An auto-ack consumer's shipper wrote `n` more of its deliveries: they are done.
    pub fn written(&mut self, cid: u64, n: usize) {
        let Some(i) = self.index(cid) else { return };
        let c = &mut self.consumers[i];
        let n = n.min(c.inflight.len());
        let done: Vec<(u64, usize)> = c
            .inflight
            .drain(..n)
            .map(|h| (h.id, h.msg.size()))
            .collect();
        for &(id, _) in &done {
            self.journal_ack(id);
        }
        self.release(n, done.iter().map(|(_, b)| b).sum());
    }

    /// Drops every waiting message, in memory or paged; returns how many.
    /// The first `limit` messages waiting in memory, oldest first, with their delivery
    /// counts; nothing is taken.
    pub fn peek(&self, limit: usize) -> Vec<(Message, u32)> {
        self.pending
            .iter()
            .take(limit)
            .map(|h| (h.msg.clone(), h.count))
            .collect()
    }

    pub fn purge(&mut self) -> usize {
        self.loose = 0;
        self.loose_since = None;
        let paged = self.drop_paged();
        let n = self.pending.len() + self.delayed.len();
        let gone: Vec<(u64, usize)> = self
            .pending
            .take_all()
            .chain(
                std::mem::take(&mut self.delayed)
                    .into_iter()
                    .map(|(_, h)| h),
            )
            .map(|h| (h.id, h.msg.size()))
            .collect();
        for &(id, _) in &gone {
            self.journal_ack(id);
        }
        self.release(n, gone.iter().map(|(_, b)| b).sum());
        n + paged
    }

    /// Drops everything, pending and outstanding; returns how many messages that was
    /// and the consumers, for the caller to tell them.
    pub fn delete(&mut self) -> (usize, Vec<ConsumerSpec<P>>) {
        let mut n = self.purge();
        let mut gone = Vec::new();
        for c in std::mem::take(&mut self.consumers) {
            let bytes: usize = c.unacked.values().map(|o| o.held.msg.size()).sum::<usize>()
                + c.inflight.iter().map(|h| h.msg.size()).sum::<usize>();
            let held = c.outstanding();
            self.release(held, bytes);
            n += held;
            gone.push(c.c);
        }
        let dead: Vec<_> = std::mem::take(&mut self.dead);
        let bytes = dead.iter().map(|(h, _)| h.msg.size()).sum();
        self.release(dead.len(), bytes);
        n += dead.len();
        self.journal_delete();
        (n, gone)
    }

    /// Puts a departed consumer's outstanding messages back at the front, in order.
    fn give_back(&mut self, c: ConsumerState<P>) -> ConsumerSpec<P> {
        let mut back: Vec<(u64, Outstanding)> = c.unacked.into_iter().collect();
        back.sort_unstable_by_key(|(did, _)| *did);
        let mut v: Vec<Held> = c
            .inflight
            .into_iter()
            .chain(back.into_iter().map(|(_, o)| o.held))
            .collect();
        while let Some(h) = v.pop() {
            self.put_back(h);
        }
        c.c
    }

    /// Feeds consumers round-robin while messages and credit last. `push` hands a
    /// delivery to a consumer's port; when it gives the delivery back, the consumer is
    /// gone (its connection closed) and is removed here at once, its messages back in
    /// the queue. Messages delivered `max_deliveries` times go to the dead-letter list.
    pub fn dispatch(
        &mut self,
        now: Instant,
        mut push: impl FnMut(&ConsumerSpec<P>, Delivery) -> Result<(), Delivery>,
    ) {
        let max = self.settings.max_deliveries;
        let mut idle = 0;
        while !self.pending.is_empty() && !self.consumers.is_empty() {
            if let Some(front) = self.pending.front() {
                if max > 0 && front.count >= max {
                    if let Some(h) = self.pending.pop_front() {
                        self.dead.push((h, MAX_DELIVERIES));
                    }
                    continue;
                }
            }
            if idle >= self.consumers.len() {
                break;
            }
            self.rr %= self.consumers.len();
            let i = self.rr;
            self.rr += 1;
            if !self.consumers[i].has_credit() {
                idle += 1;
                continue;
            }
            let Some(mut h) = self.pending.pop_front() else {
                break;
            };
            // Prefer not to hand a timed-out message straight back to the same consumer.
            if h.avoid == Some(self.consumers[i].c.cid)
                && self
                    .consumers
                    .iter()
                    .any(|c| c.c.cid != h.avoid.unwrap_or(0) && c.has_credit())
            {
                self.pending.push_front(h);
                continue;
            }
            idle = 0;
            h.avoid = None;
            h.count += 1;
            let c = &mut self.consumers[i];
            let did = match c.c.auto_ack {
                true => 0,
                false => delivery_id(c.c.slot, c.next_seq),
            };
            let d = Delivery {
                did,
                count: h.count,
                msg: h.msg.clone(),
                charged: 0,
                topic: None,
            };
            match push(&c.c, d) {
                Ok(()) => {
                    if let Some(j) = &mut self.journal {
                        j.deliver(h.id, h.count);
                    }
                    c.next_seq += 1;
                    self.totals.messages_out += 1;
                    self.totals.bytes_out += h.msg.payload.len() as u64;
                    if h.count > 1 {
                        self.totals.redelivered += 1;
                    }
                    if c.c.auto_ack {
                        c.inflight.push_back(h);
                    } else {
                        let o = Outstanding {
                            held: h,
                            delivered: now,
                        };
                        c.unacked.insert(did, o);
                    }
                }
                Err(_) => {
                    // The subscription ended (UNSUB, or its connection is gone); its
                    // unsubscribe is on the way.
                    h.count -= 1;
                    self.pending.push_front(h);
                    if c.c.auto_ack {
                        // Its shipper may have written deliveries it has not reported
                        // yet: giving them back now would deliver them twice. They leave
                        // with its write reports; the rest come back with the
                        // unsubscribe, which always follows (from the shipper after its
                        // last report, or from the connection's teardown).
                        c.closed = true;
                        continue;
                    }
                    // Manual ack: nothing it holds is settled by writing; back at once.
                    let c = self.consumers.remove(i);
                    self.give_back(c);
                }
            }
        }
        // Exhausted messages are dead-lettered even with no consumer (looked for only
        // when one may be there: a scan of every waiting message on each dispatch made
        // 50,000 confirmed publishes of 16 B to a queue of 150,000 with no consumer take
        // 2.5 s instead of 0.7).
        if self.consumers.is_empty() && max > 0 && self.pending.top_count() >= max {
            let mut keep = Pending::default();
            for h in self.pending.take_all() {
                if h.count >= max {
                    self.dead.push((h, MAX_DELIVERIES));
                } else {
                    keep.push_back(h);
                }
            }
            self.pending = keep;
        }
        self.compact_waiting(now);
    }
}

mod compact;
mod dead;
mod delay;
mod enqueue;
mod held;
mod journal;
mod paging;
mod seen;
pub(crate) use compact::COMPACT_AFTER;
pub(crate) use journal::MessageIds;
pub(crate) use paging::Paged;
use paging::Pending;
pub(crate) use seen::ID_COST;

#[cfg(test)]
#[path = "state_paging_tests.rs"]
mod paging_tests;
#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
