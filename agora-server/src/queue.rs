//! Queues: each message to exactly one consumer, kept until it is acknowledged.
//!
//! A queue is a task that owns its pending messages and each consumer's unacknowledged
//! set, fed over one bounded channel. Publishers send into that channel directly (no
//! hub task); before sending they reserve room in the queue's limits with atomics, so a
//! full queue is refused at the door and nothing accepted is ever dropped. Consumers are
//! fed round-robin, each up to its prefetch. A message leaves the queue only when its
//! consumer acks it (auto-ack: when the shipper has written it); a `NACK`, an `UNSUB`
//! or the consumer's connection closing gives its messages back, to the front of the
//! queue, and their next delivery carries a higher delivery count.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;

use agora_protocol::{Destination, ErrorCode, ErrorReply, Frame};
use async_channel::{Receiver, Sender, TrySendError};

use crate::shipper::{Delivery, Message, Outbox};

/// Commands a queue task takes.
pub(crate) enum QueueCmd {
    /// A message whose room was reserved by [`QueueShared::reserve`].
    Publish(Message),
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
}

/// A consumer as its queue knows it.
pub(crate) struct Consumer {
    /// Unique in the broker.
    pub cid: u64,
    /// High bits of this subscription's delivery ids (see [`delivery_id`]).
    pub slot: u64,
    pub prefetch: u32,
    pub auto_ack: bool,
    /// The subscription's channel to the shipper (capacity = prefetch).
    pub tx: Sender<Delivery>,
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

/// What the rest of the broker sees of a queue: its channel and its figures.
pub(crate) struct QueueShared {
    pub dest: Destination,
    pub tx: Sender<QueueCmd>,
    max_messages: usize,
    max_bytes: usize,
    /// Messages held (pending + unacked), counted when reserved.
    held: AtomicUsize,
    /// Payload bytes held.
    held_bytes: AtomicUsize,
    pub depth: AtomicUsize,
    pub unacked: AtomicUsize,
    pub consumers: AtomicUsize,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub redelivered: AtomicU64,
    /// Set when the queue manager retires the queue; publishers then resolve it again.
    pub closed: AtomicBool,
}

/// Why a publish was not reserved.
pub(crate) enum Refused {
    Full(String),
    Retired,
}

impl QueueShared {
    /// Reserves room for one message of `size` bytes, or says why not.
    pub fn reserve(&self, size: usize) -> Result<(), Refused> {
        let n = self.held.fetch_add(1, SeqCst);
        let b = self.held_bytes.fetch_add(size, SeqCst);
        let full = if n >= self.max_messages {
            Some(format!(
                "queue '{}' is full ({} messages)",
                self.dest.name, self.max_messages
            ))
        } else if b + size > self.max_bytes {
            Some(format!(
                "queue '{}' is full ({} bytes)",
                self.dest.name, self.max_bytes
            ))
        } else {
            None
        };
        if full.is_some() || self.closed.load(SeqCst) {
            self.release(1, size);
            return Err(full.map_or(Refused::Retired, Refused::Full));
        }
        Ok(())
    }

    fn release(&self, n: usize, bytes: usize) {
        self.held.fetch_sub(n, SeqCst);
        self.held_bytes.fetch_sub(bytes, SeqCst);
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
    max_messages: usize,
    max_bytes: usize,
    channel: usize,
) -> Arc<QueueShared> {
    let (tx, rx) = async_channel::bounded(channel);
    let shared = Arc::new(QueueShared {
        dest,
        tx,
        max_messages,
        max_bytes,
        held: AtomicUsize::new(0),
        held_bytes: AtomicUsize::new(0),
        depth: AtomicUsize::new(0),
        unacked: AtomicUsize::new(0),
        consumers: AtomicUsize::new(0),
        messages_in: AtomicU64::new(0),
        messages_out: AtomicU64::new(0),
        redelivered: AtomicU64::new(0),
        closed: AtomicBool::new(false),
    });
    let task = Queue {
        shared: shared.clone(),
        pending: VecDeque::new(),
        consumers: Vec::new(),
        rr: 0,
    };
    smol::spawn(task.run(rx)).detach();
    shared
}

struct Held {
    msg: Message,
    /// Deliveries so far.
    count: u32,
}

struct ConsumerState {
    c: Consumer,
    next_seq: u64,
    /// Manual ack: delivered, not yet acked, by delivery id.
    unacked: HashMap<u64, Held>,
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
}

impl Queue {
    async fn run(mut self, rx: Receiver<QueueCmd>) {
        while let Ok(cmd) = rx.recv().await {
            self.handle(cmd);
            // Take everything already waiting before dispatching once.
            for _ in 0..4096 {
                match rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                }
            }
            self.dispatch();
            self.publish_figures();
        }
        // Retired (only when idle) or the broker is gone: nothing is held.
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

    fn handle(&mut self, cmd: QueueCmd) {
        match cmd {
            QueueCmd::Publish(msg) => {
                self.shared.messages_in.fetch_add(1, Relaxed);
                self.pending.push_back(Held { msg, count: 0 });
            }
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
                    return;
                };
                let c = &mut self.consumers[i];
                let held = c.unacked.remove(&did);
                let known = held.is_some();
                match reply {
                    Some(r) => {
                        let _ = r.try_send(known);
                    }
                    None if !known => unknown_delivery(&c.c.outbox, did),
                    None => {}
                }
                match held {
                    Some(h) if ack => self.shared.release(1, h.msg.size()),
                    Some(h) => self.pending.push_front(h),
                    None => {}
                }
            }
            QueueCmd::Written { cid, n } => {
                let Some(i) = self.consumer(cid) else { return };
                let c = &mut self.consumers[i];
                let n = n.min(c.inflight.len());
                let bytes: usize = c.inflight.drain(..n).map(|h| h.msg.size()).sum();
                self.shared.release(n, bytes);
            }
            QueueCmd::Purge { reply } => {
                let n = self.pending.len();
                let bytes = self.pending.drain(..).map(|h| h.msg.size()).sum();
                self.shared.release(n, bytes);
                let _ = reply.try_send(n);
            }
        }
    }

    /// Puts a departed consumer's outstanding messages back at the front, in order.
    fn give_back(&mut self, c: ConsumerState) {
        let mut back: Vec<(u64, Held)> = c.unacked.into_iter().collect();
        back.sort_unstable_by_key(|(did, _)| *did);
        let back = c
            .inflight
            .into_iter()
            .chain(back.into_iter().map(|(_, h)| h));
        let mut v: Vec<Held> = back.collect();
        while let Some(h) = v.pop() {
            self.pending.push_front(h);
        }
    }

    /// Feeds consumers round-robin while messages and credit last.
    fn dispatch(&mut self) {
        let mut idle = 0;
        while !self.pending.is_empty() && !self.consumers.is_empty() {
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
            idle = 0;
            let Some(mut h) = self.pending.pop_front() else {
                break;
            };
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
            };
            match c.c.tx.try_send(d) {
                Ok(()) => {
                    c.next_seq += 1;
                    self.shared.messages_out.fetch_add(1, Relaxed);
                    if h.count > 1 {
                        self.shared.redelivered.fetch_add(1, Relaxed);
                    }
                    if c.c.auto_ack {
                        c.inflight.push_back(h);
                    } else {
                        c.unacked.insert(did, h);
                    }
                }
                Err(TrySendError::Full(_)) => {
                    // Its shipper is behind; credit says it should not be. Try others.
                    h.count -= 1;
                    self.pending.push_front(h);
                    idle += 1;
                }
                Err(TrySendError::Closed(_)) => {
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
    }
}

fn unknown_delivery(outbox: &Outbox, did: u64) {
    outbox.notify(&Frame::Err(ErrorReply {
        rid: None,
        code: ErrorCode::UnknownDelivery,
        message: format!("delivery {did} is not outstanding on this subscription"),
    }));
}
