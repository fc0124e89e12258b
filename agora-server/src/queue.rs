//! Queues: each message to exactly one consumer, kept until it is acknowledged.
//!
//! A queue is a task that owns its pending messages and each consumer's unacknowledged
//! set, fed over one bounded channel. Publishers send into that channel directly (no
//! hub task); before sending they reserve room in the queue's limits and the broker's
//! memory budget with atomics, so a full queue is refused at the door and nothing
//! accepted is ever dropped. Consumers are fed round-robin, each up to its prefetch. A
//! message leaves the queue only when its consumer acks it (auto-ack: when the shipper
//! has written it), when it is dead-lettered, or when an operator purges or deletes the
//! queue. A `NACK`, an `UNSUB`, an ack timeout or the consumer's connection closing gives
//! its messages back, to the front of the queue, and their next delivery carries a
//! higher delivery count. A message delivered `max_deliveries` times, or waiting longer
//! than the queue's TTL, moves to the dead-letter queue with headers saying why.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::{Destination, ErrorCode, ErrorReply, Kind, Name, ServerFrame};
use async_channel::{Receiver, Sender};
use futures_lite::StreamExt;

use crate::budget::Budget;
use crate::config::QueueSettings;
use crate::deliveries::DeliveryTx;
use crate::manager::{Handle, ManagerCmd};
use crate::shipper::{Delivery, Message, Outbox};

/// Commands a queue task takes.
pub(crate) enum QueueCmd {
    /// A message whose room was reserved by [`QueueShared::reserve`].
    Publish(Message),
    /// A run of them, from one connection's read, in order.
    PublishMany(Vec<Message>),
    /// A new consumer.
    Subscribe(Consumer),
    /// A consumer leaves (UNSUB or its connection closed); its messages come back.
    Unsubscribe { cid: u64 },
    /// Done with a delivery (`ack`) or give it back (`!ack`). With `reply`, the queue
    /// answers there whether the delivery was outstanding, and the connection replies
    /// to the client in order; without, only an unknown delivery id is reported, as an
    /// `ERR` without request id.
    Ack {
        cid: u64,
        did: u64,
        ack: bool,
        reply: Option<Sender<bool>>,
    },
    /// An auto-ack consumer's shipper wrote this many more deliveries.
    Written { cid: u64, n: usize },
    /// Drop every pending message; answers with how many.
    Purge { reply: Sender<usize> },
    /// The queue is deleted: tell consumers, drop everything, stop.
    Delete { reply: Sender<usize> },
}

/// A consumer as its queue knows it.
pub(crate) struct Consumer {
    /// Unique in the broker.
    pub cid: u64,
    /// The subscription's id on its connection (for `CANCEL`).
    pub sid: u64,
    /// High bits of this subscription's delivery ids (see [`delivery_id`]).
    pub slot: u64,
    pub prefetch: u32,
    pub auto_ack: bool,
    /// The subscription's delivery queue to the shipper (credit bounds it to the
    /// prefetch).
    pub tx: DeliveryTx,
    /// For replies about acks.
    pub outbox: Outbox,
}

/// Delivery ids are `slot << SLOT_SHIFT | seq`: the connection finds the subscription
/// of an `ACK` from the id alone, and ids are never reused on a connection because
/// neither slots nor sequence numbers are.
pub(crate) const SLOT_SHIFT: u32 = 40;

pub(crate) fn delivery_id(slot: u64, seq: u64) -> u64 {
    (slot << SLOT_SHIFT) | (seq & ((1 << SLOT_SHIFT) - 1))
}

/// Header names put on dead-lettered messages.
pub const DEAD_LETTER_FROM: &str = "agora-dead-letter-from";
/// Why it died: `max_deliveries` or `expired`.
pub const DEAD_LETTER_REASON: &str = "agora-dead-letter-reason";
/// How often it was delivered before it died.
pub const DEAD_LETTER_DELIVERIES: &str = "agora-dead-letter-deliveries";

/// What the rest of the broker sees of a queue: its channel and its figures.
pub(crate) struct QueueShared {
    pub dest: Destination,
    pub tx: Sender<QueueCmd>,
    pub settings: QueueSettings,
    budget: Arc<Budget>,
    /// Messages held (pending + unacked), counted when reserved.
    held: AtomicUsize,
    /// Payload bytes held.
    held_bytes: AtomicUsize,
    pub depth: AtomicUsize,
    pub unacked: AtomicUsize,
    pub consumers: AtomicUsize,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Sampled delivery latency, recorded by consumers' shippers.
    pub latency: crate::metrics::LatencyRef,
    pub redelivered: AtomicU64,
    pub deadlettered: AtomicU64,
    /// Set when the queue is retired or deleted; publishers then resolve it again.
    pub closed: AtomicBool,
    /// The mutator chain publishers run before reserving room, and its drop count.
    pub chain: crate::mutators::ChainSlot,
}

/// Why a publish was not reserved.
pub(crate) enum Refused {
    Full(String),
    Memory(String),
    Retired,
}

impl QueueShared {
    /// Reserves room for one message of `size` bytes, or says why not.
    pub fn reserve(&self, size: usize) -> Result<(), Refused> {
        let n = self.held.fetch_add(1, SeqCst);
        let b = self.held_bytes.fetch_add(size, SeqCst);
        let s = &self.settings;
        let refused = if n >= s.max_messages {
            Some(Refused::Full(format!(
                "queue '{}' is full ({} messages)",
                self.dest.name, s.max_messages
            )))
        } else if b + size > s.max_bytes {
            Some(Refused::Full(format!(
                "queue '{}' is full ({} bytes)",
                self.dest.name, s.max_bytes
            )))
        } else if self.closed.load(SeqCst) {
            Some(Refused::Retired)
        } else {
            None
        };
        let taken = match refused {
            Some(r) => Err(r),
            None if self.budget.try_take(size) => Ok(()),
            None => Err(Refused::Memory(format!(
                "the broker's memory budget of {} bytes is spent",
                self.budget.limit()
            ))),
        };
        if taken.is_err() {
            // Undo the counts only: the budget took nothing.
            self.held.fetch_sub(1, SeqCst);
            self.held_bytes.fetch_sub(size, SeqCst);
        }
        taken
    }

    /// Gives back what [`reserve`](QueueShared::reserve) took for messages that never
    /// entered the queue (its channel was closed).
    pub fn unreserve(&self, size: usize) {
        self.release(1, size);
    }

    fn release(&self, n: usize, bytes: usize) {
        self.held.fetch_sub(n, SeqCst);
        self.held_bytes.fetch_sub(bytes, SeqCst);
        self.budget.give_back(bytes);
    }

    /// True when the queue holds nothing and nobody consumes it.
    pub fn is_idle(&self) -> bool {
        self.held.load(SeqCst) == 0 && self.consumers.load(SeqCst) == 0
    }

    /// Marks the queue retired if it is idle; publishers that reserved concurrently see
    /// the flag and go elsewhere, or the reservation is seen here and retiring fails.
    pub fn try_retire(&self) -> bool {
        self.closed.store(true, SeqCst);
        if self.is_idle() {
            self.tx.close();
            true
        } else {
            self.closed.store(false, SeqCst);
            false
        }
    }
}

/// Creates a queue and spawns its task.
pub(crate) fn spawn(
    dest: Destination,
    settings: QueueSettings,
    budget: Arc<Budget>,
    manager: async_channel::WeakSender<ManagerCmd>,
    channel: usize,
) -> Arc<QueueShared> {
    // Bounds a burst of publishes (each waits for room, slowing only its publisher);
    // small, because every slot is allocated up front.
    let (tx, rx) = async_channel::bounded(channel.max(1));
    let shared = Arc::new(QueueShared {
        dest,
        tx,
        settings,
        budget,
        held: AtomicUsize::new(0),
        held_bytes: AtomicUsize::new(0),
        depth: AtomicUsize::new(0),
        unacked: AtomicUsize::new(0),
        consumers: AtomicUsize::new(0),
        messages_in: AtomicU64::new(0),
        messages_out: AtomicU64::new(0),
        bytes_in: AtomicU64::new(0),
        bytes_out: AtomicU64::new(0),
        latency: Default::default(),
        redelivered: AtomicU64::new(0),
        deadlettered: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        chain: Default::default(),
    });
    let task = Queue {
        shared: shared.clone(),
        pending: VecDeque::new(),
        consumers: Vec::new(),
        rr: 0,
        dead: Vec::new(),
        dlq: None,
        manager,
    };
    crate::rt::spawn(task.run(rx)).detach();
    shared
}

struct Held {
    msg: Message,
    /// Deliveries so far.
    count: u32,
    /// When it entered the queue (for TTL).
    enqueued: Instant,
    /// A consumer not to give it to next (the one whose ack timed out), if others can.
    avoid: Option<u64>,
}

struct Outstanding {
    held: Held,
    delivered: Instant,
}

struct ConsumerState {
    c: Consumer,
    next_seq: u64,
    /// Manual ack: delivered, not yet acked, by delivery id.
    unacked: HashMap<u64, Outstanding>,
    /// Auto ack: handed to the shipper, not yet written, in order.
    inflight: VecDeque<Held>,
}

impl ConsumerState {
    fn outstanding(&self) -> usize {
        self.unacked.len() + self.inflight.len()
    }

    fn has_credit(&self) -> bool {
        self.outstanding() < self.c.prefetch as usize
    }
}

struct Queue {
    shared: Arc<QueueShared>,
    pending: VecDeque<Held>,
    consumers: Vec<ConsumerState>,
    /// Round-robin position.
    rr: usize,
    /// Messages to move to the dead-letter queue after this batch, with the reason.
    dead: Vec<(Held, &'static str)>,
    /// The dead-letter queue, once resolved.
    dlq: Option<Arc<QueueShared>>,
    /// To resolve the dead-letter queue; weak so queues do not keep the manager alive.
    manager: async_channel::WeakSender<ManagerCmd>,
}

impl Queue {
    /// How often timers (TTL, ack timeout) are checked, if the queue has any.
    fn tick(&self) -> Option<Duration> {
        let s = &self.shared.settings;
        let shortest = match (s.ttl, s.ack_timeout) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some((shortest / 10).clamp(Duration::from_millis(5), Duration::from_secs(1)))
    }

    async fn run(mut self, rx: Receiver<QueueCmd>) {
        let mut ticker = self.tick().map(smol::Timer::interval);
        loop {
            let cmd = match &mut ticker {
                None => rx.recv().await.ok(),
                Some(t) => {
                    let tick = async {
                        t.next().await;
                        None
                    };
                    match futures_lite::future::or(async { Some(rx.recv().await) }, tick).await {
                        Some(Ok(cmd)) => Some(cmd),
                        Some(Err(_)) => None,
                        None => {
                            self.timers(Instant::now());
                            self.after_batch().await;
                            continue;
                        }
                    }
                }
            };
            let Some(cmd) = cmd else { break };
            if self.handle(cmd) {
                break;
            }
            // Take everything already waiting before dispatching once.
            for _ in 0..4096 {
                match rx.try_recv() {
                    Ok(cmd) => {
                        if self.handle(cmd) {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            self.after_batch().await;
        }
        // Retired (only when idle), deleted, or the broker is gone.
    }

    async fn after_batch(&mut self) {
        self.dispatch();
        if !self.dead.is_empty() {
            self.dead_letter().await;
        }
        self.publish_figures();
    }

    fn publish_figures(&self) {
        let s = &self.shared;
        s.depth.store(self.pending.len(), Relaxed);
        s.unacked.store(
            self.consumers.iter().map(ConsumerState::outstanding).sum(),
            Relaxed,
        );
    }

    fn consumer(&mut self, cid: u64) -> Option<usize> {
        self.consumers.iter().position(|c| c.c.cid == cid)
    }

    /// Adds published messages to the end of the queue.
    fn enqueue(&mut self, msgs: impl Iterator<Item = Message>) {
        let now = Instant::now();
        let (mut n, mut bytes) = (0, 0);
        for msg in msgs {
            n += 1;
            bytes += msg.payload.len() as u64;
            self.pending.push_back(Held {
                msg,
                count: 0,
                enqueued: now,
                avoid: None,
            });
        }
        self.shared.messages_in.fetch_add(n, Relaxed);
        self.shared.bytes_in.fetch_add(bytes, Relaxed);
    }

    /// Handles one command; true when the queue must stop.
    fn handle(&mut self, cmd: QueueCmd) -> bool {
        match cmd {
            QueueCmd::Publish(msg) => self.enqueue(std::iter::once(msg)),
            QueueCmd::PublishMany(msgs) => self.enqueue(msgs.into_iter()),
            QueueCmd::Subscribe(c) => self.consumers.push(ConsumerState {
                c,
                next_seq: 1,
                unacked: HashMap::new(),
                inflight: VecDeque::new(),
            }),
            QueueCmd::Unsubscribe { cid } => {
                if let Some(i) = self.consumer(cid) {
                    let c = self.consumers.remove(i);
                    self.shared.consumers.fetch_sub(1, SeqCst);
                    self.give_back(c);
                }
            }
            QueueCmd::Ack {
                cid,
                did,
                ack,
                reply,
            } => {
                let Some(i) = self.consumer(cid) else {
                    if let Some(r) = reply {
                        let _ = r.try_send(false);
                    }
                    return false;
                };
                let c = &mut self.consumers[i];
                let out = c.unacked.remove(&did);
                let known = out.is_some();
                match reply {
                    Some(r) => {
                        let _ = r.try_send(known);
                    }
                    None if !known => unknown_delivery(&c.c.outbox, did),
                    None => {}
                }
                match out {
                    Some(o) if ack => self.shared.release(1, o.held.msg.size()),
                    Some(o) => self.pending.push_front(o.held),
                    None => {}
                }
            }
            QueueCmd::Written { cid, n } => {
                let Some(i) = self.consumer(cid) else {
                    return false;
                };
                let c = &mut self.consumers[i];
                let n = n.min(c.inflight.len());
                let bytes: usize = c.inflight.drain(..n).map(|h| h.msg.size()).sum();
                self.shared.release(n, bytes);
            }
            QueueCmd::Purge { reply } => {
                let n = self.purge();
                let _ = reply.try_send(n);
            }
            QueueCmd::Delete { reply } => {
                self.shared.closed.store(true, SeqCst);
                let mut n = self.purge();
                for c in self.consumers.drain(..) {
                    let held = c.outstanding();
                    n += held;
                    c.c.outbox.cancel(
                        c.c.sid,
                        ErrorCode::UnknownDestination,
                        format!("{} was deleted", self.shared.dest),
                    );
                    c.c.tx.close();
                    self.shared.consumers.fetch_sub(1, SeqCst);
                }
                self.shared.held.store(0, SeqCst);
                self.shared
                    .budget
                    .give_back(self.shared.held_bytes.swap(0, SeqCst));
                self.publish_figures();
                let _ = reply.try_send(n);
                return true;
            }
        }
        false
    }

    fn purge(&mut self) -> usize {
        let n = self.pending.len();
        let bytes = self.pending.drain(..).map(|h| h.msg.size()).sum();
        self.shared.release(n, bytes);
        n
    }

    /// Puts a departed consumer's outstanding messages back at the front, in order.
    fn give_back(&mut self, c: ConsumerState) {
        let mut back: Vec<(u64, Outstanding)> = c.unacked.into_iter().collect();
        back.sort_unstable_by_key(|(did, _)| *did);
        let mut v: Vec<Held> = c
            .inflight
            .into_iter()
            .chain(back.into_iter().map(|(_, o)| o.held))
            .collect();
        while let Some(h) = v.pop() {
            self.pending.push_front(h);
        }
    }

    /// Expires pending messages past their TTL and takes back deliveries past the ack
    /// timeout.
    fn timers(&mut self, now: Instant) {
        let s = &self.shared.settings;
        if let Some(ttl) = s.ttl {
            let mut keep = VecDeque::with_capacity(self.pending.len());
            for h in self.pending.drain(..) {
                if now.duration_since(h.enqueued) >= ttl {
                    self.dead.push((h, "expired"));
                } else {
                    keep.push_back(h);
                }
            }
            self.pending = keep;
        }
        if let Some(timeout) = s.ack_timeout {
            let mut back = Vec::new();
            for c in &mut self.consumers {
                let late: Vec<u64> = c
                    .unacked
                    .iter()
                    .filter(|(_, o)| now.duration_since(o.delivered) >= timeout)
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
                self.pending.push_front(h);
            }
        }
    }

    /// Feeds consumers round-robin while messages and credit last.
    fn dispatch(&mut self) {
        let max = self.shared.settings.max_deliveries;
        let mut idle = 0;
        while !self.pending.is_empty() && !self.consumers.is_empty() {
            if let Some(front) = self.pending.front() {
                if max > 0 && front.count >= max {
                    if let Some(h) = self.pending.pop_front() {
                        self.dead.push((h, "max_deliveries"));
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
            let seq = c.next_seq;
            let did = if c.c.auto_ack {
                0
            } else {
                delivery_id(c.c.slot, seq)
            };
            let d = Delivery {
                did,
                count: h.count,
                msg: h.msg.clone(),
                charged: 0,
            };
            match c.c.tx.push(d) {
                Ok(()) => {
                    c.next_seq += 1;
                    self.shared.messages_out.fetch_add(1, Relaxed);
                    self.shared
                        .bytes_out
                        .fetch_add(h.msg.payload.len() as u64, Relaxed);
                    if h.count > 1 {
                        self.shared.redelivered.fetch_add(1, Relaxed);
                    }
                    if c.c.auto_ack {
                        c.inflight.push_back(h);
                    } else {
                        c.unacked.insert(
                            did,
                            Outstanding {
                                held: h,
                                delivered: Instant::now(),
                            },
                        );
                    }
                }
                Err(_) => {
                    // The connection is gone; its Unsubscribe is on the way, but do not
                    // wait for it.
                    h.count -= 1;
                    self.pending.push_front(h);
                    let c = self.consumers.remove(i);
                    self.shared.consumers.fetch_sub(1, SeqCst);
                    self.give_back(c);
                }
            }
        }
        // Expired or exhausted messages are dead-lettered even with no consumer.
        if self.consumers.is_empty() && max > 0 {
            let mut keep = VecDeque::with_capacity(self.pending.len());
            for h in self.pending.drain(..) {
                if h.count >= max {
                    self.dead.push((h, "max_deliveries"));
                } else {
                    keep.push_back(h);
                }
            }
            self.pending = keep;
        }
    }

    /// The dead-letter queue's name: configured, or `<queue>.dlq`.
    fn dlq_name(&self) -> Option<Name> {
        let own = self.shared.dest.name.as_str();
        let name = match &self.shared.settings.dead_letter {
            Some(n) => Name::try_from(n.as_str()).ok(),
            None => Name::try_from(format!("{own}.dlq")).ok(),
        }?;
        // A queue is never its own dead-letter queue (it would wait on itself).
        (name.as_str() != own).then_some(name)
    }

    /// Moves `self.dead` to the dead-letter queue. A message the dead-letter queue
    /// cannot take (full, or no valid name) stays here, at the back, and is tried again
    /// later: never dropped.
    async fn dead_letter(&mut self) {
        if self.dlq.as_ref().is_none_or(|q| q.closed.load(SeqCst)) {
            self.dlq = self.resolve_dlq().await;
        }
        let dead = std::mem::take(&mut self.dead);
        let from = self.shared.dest.to_string();
        for (h, reason) in dead {
            let Some(dlq) = &self.dlq else {
                log::warn!("{from}: no dead-letter queue; keeping a message that {reason}");
                self.pending.push_back(h);
                continue;
            };
            let mut msg = h.msg.clone();
            let _ = msg.headers.insert(DEAD_LETTER_FROM, &from);
            let _ = msg.headers.insert(DEAD_LETTER_REASON, reason);
            let _ = msg
                .headers
                .insert(DEAD_LETTER_DELIVERIES, &h.count.to_string());
            let size = msg.size();
            match dlq.reserve(size) {
                Ok(()) => {
                    if dlq.tx.send(QueueCmd::Publish(msg)).await.is_ok() {
                        self.shared.release(1, h.msg.size());
                        self.shared.deadlettered.fetch_add(1, Relaxed);
                        log::trace!("{from}: dead-lettered a message ({reason})");
                    } else {
                        dlq.unreserve(size);
                        self.pending.push_back(h);
                    }
                }
                Err(_) => {
                    log::warn!(
                        "{from}: dead-letter queue {} refused a message; keeping it",
                        dlq.dest
                    );
                    self.pending.push_back(h);
                }
            }
        }
    }

    async fn resolve_dlq(&self) -> Option<Arc<QueueShared>> {
        let name = self.dlq_name()?;
        let manager = self.manager.upgrade()?;
        let (tx, rx) = async_channel::bounded(1);
        let dest = Destination {
            kind: Kind::Queue,
            name,
        };
        manager
            .send(ManagerCmd::Resolve { dest, reply: tx })
            .await
            .ok()?;
        match rx.recv().await.ok()? {
            Ok(Handle::Queue(q)) => Some(q),
            _ => None,
        }
    }
}

fn unknown_delivery(outbox: &Outbox, did: u64) {
    outbox.notify(&ServerFrame::Err(ErrorReply {
        rid: None,
        code: ErrorCode::UnknownDelivery,
        message: format!("delivery {did} is not outstanding on this subscription"),
    }));
}
