//! What the rest of the broker sees of a queue: its command channel, its limits
//! (reserved with atomics by publishers before a message enters the channel, so a full
//! queue is refused at the door), its figures, and the handles it gives out (the credit
//! handle of an auto-ack consumer's shipper).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;

use agora_protocol::Destination;

use super::QueueCmd;
use crate::budget::Budget;
use crate::config::QueueSettings;
use crate::deliveries::{Credit, Report};

/// What the rest of the broker sees of a queue: its channel and its figures.
pub(crate) struct QueueShared {
    pub dest: Destination,
    pub tx: crate::chan::Tx<QueueCmd>,
    pub settings: QueueSettings,
    budget: Arc<Budget>,
    /// What each message is charged to the budget beyond its size
    /// ([`budget::per_message`](crate::budget::per_message)).
    per_message: usize,
    /// Messages held (pending + unacked), counted when reserved.
    held: AtomicUsize,
    /// Payload bytes held.
    held_bytes: AtomicUsize,
    pub unacked: AtomicUsize,
    /// Waiting messages kept in the log only (a durable queue's backlog past its head).
    pub paged: AtomicUsize,
    pub consumers: AtomicUsize,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Sampled delivery latency, recorded by consumers' shippers.
    pub latency: crate::metrics::LatencyRef,
    pub redelivered: AtomicU64,
    pub deadlettered: AtomicU64,
    /// Publishes not stored: they repeated a message id within the window.
    pub duplicates: AtomicU64,
    /// Message ids remembered (`agora-msg-id`): a queue that remembers any is not
    /// retired, so its window outlives an idle spell.
    pub remembered: AtomicUsize,
    /// Set when the queue is retired or deleted; publishers then resolve it again.
    pub closed: AtomicBool,
    /// The mutator chain publishers run before reserving room, and its drop count.
    pub chain: crate::mutators::ChainSlot,
    /// Kept in the log: a confirmed publish is answered once its record is stored
    /// (`QueueCmd::PublishStored`). Set before the queue is handed out.
    pub durable: AtomicBool,
    /// The log's writer, for a durable queue: once it has failed, publishes are refused.
    pub writer: std::sync::OnceLock<crate::store::WriterHandle>,
}

/// Why a publish was not reserved.
pub(crate) enum Refused {
    Full(String),
    Memory(String),
    Retired,
    /// A durable queue whose log can no longer store (the writer failed).
    Storage(String),
    /// A durable queue whose log is full (`--max-disk`, or the disk nearly so).
    StorageFull(String),
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
            self.writer.get().and_then(|w| match w.failure() {
                Some(why) => Some(Refused::Storage(format!("not stored: {why}"))),
                None => w
                    .full()
                    .map(|why| Refused::StorageFull(format!("not stored: {why}"))),
            })
        };
        let taken = match refused {
            Some(r) => Err(r),
            // A durable queue pages what it cannot keep in memory to the log: the
            // budget counts it until then, and never refuses it.
            None if self.durable.load(Relaxed) => {
                self.budget.take(size + self.per_message);
                Ok(())
            }
            None if self.budget.try_take(size + self.per_message) => Ok(()),
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

    /// Counts messages the log kept at start, whatever the queue's limits say: nothing
    /// stored is dropped. Past a limit, publishes are refused until consumers make
    /// room. Those `in_memory` are counted in the memory budget too (whatever it says);
    /// the others wait in the log until read back.
    pub fn restored(&self, n: usize, bytes: usize, in_memory: bool) {
        self.held.fetch_add(n, SeqCst);
        self.held_bytes.fetch_add(bytes, SeqCst);
        if in_memory {
            self.budget.take(bytes + n * self.per_message);
        }
    }

    /// The broker's memory budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The queue's paged messages went from `before` to `now` (messages, bytes): the
    /// budget counts only what is in memory, so what was paged out is given back to
    /// it, and what was read back (or purged, then released) is taken again.
    pub fn repaged(&self, before: (usize, usize), now: (usize, usize)) {
        let cost = |(n, bytes): (usize, usize)| bytes + n * self.per_message;
        let (was, is) = (cost(before), cost(now));
        if is > was {
            self.budget.give_back(is - was);
        } else {
            self.budget.take(was - is);
        }
    }

    /// Gives back what [`reserve`](QueueShared::reserve) took for messages that never
    /// entered the queue (its channel was closed).
    pub fn unreserve(&self, size: usize) {
        self.release(1, size);
    }

    /// A queue's shared half and the receiving end of its command channel, of
    /// `channel` commands: [`spawn`] runs the queue's task on it; the simulation
    /// reserves through it and drives a [`QueueState`] itself.
    pub fn new(
        dest: Destination,
        settings: QueueSettings,
        budget: Arc<Budget>,
        channel: usize,
    ) -> (Arc<QueueShared>, crate::chan::Rx<QueueCmd>) {
        // Bounds a burst of commands (each sender waits for room, slowing only its
        // connection); its slots are allocated as it fills (`chan`), so an idle queue
        // holds none.
        let (tx, rx) = crate::chan::bounded(channel);
        let shared = Arc::new(QueueShared {
            per_message: crate::budget::per_message(&dest),
            dest,
            tx,
            settings,
            budget,
            held: AtomicUsize::new(0),
            held_bytes: AtomicUsize::new(0),
            unacked: AtomicUsize::new(0),
            paged: AtomicUsize::new(0),
            consumers: AtomicUsize::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            latency: Default::default(),
            redelivered: AtomicU64::new(0),
            deadlettered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            remembered: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            chain: Default::default(),
            durable: AtomicBool::new(false),
            writer: std::sync::OnceLock::new(),
        });
        (shared, rx)
    }

    /// The credit handle for auto-ack consumer `cid`'s shipper.
    pub fn credit(&self, cid: u64) -> Credit {
        let tx = self.tx.clone();
        Credit::new(move |r| {
            let tx = tx.clone();
            Box::pin(async move {
                let cmd = match r {
                    Report::Written(n) => QueueCmd::Written { cid, n },
                    Report::Stopped => QueueCmd::Unsubscribe { cid },
                };
                let _ = tx.send(cmd).await;
            })
        })
    }

    /// Messages waiting for a consumer (`STATS` depth): everything accepted and not yet
    /// gone, less what consumers hold. Counted from the reservation, so a publish is
    /// in it once its `PUBACK` is sent, even before the queue's task has taken it from
    /// the channel (the task publishes `unacked` after each batch; in between, the
    /// figure may be off by what that batch delivered).
    pub fn waiting(&self) -> usize {
        self.held
            .load(SeqCst)
            .saturating_sub(self.unacked.load(Relaxed))
    }

    /// Messages and bytes reserved and not yet released.
    pub fn held(&self) -> (usize, usize) {
        (self.held.load(SeqCst), self.held_bytes.load(SeqCst))
    }

    /// A deleted queue gives back everything reserved, messages still in its channel
    /// included.
    pub fn release_all(&self) {
        let n = self.held.swap(0, SeqCst);
        let bytes = self.held_bytes.swap(0, SeqCst);
        self.budget.give_back(bytes + n * self.per_message);
    }

    /// Gives back what left the queue: `n` messages of `bytes` (their sizes) to its
    /// limits, and what they were charged to the memory budget.
    pub fn release(&self, n: usize, bytes: usize) {
        self.held.fetch_sub(n, SeqCst);
        self.held_bytes.fetch_sub(bytes, SeqCst);
        self.budget.give_back(bytes + n * self.per_message);
    }

    /// True when the queue holds nothing and nobody consumes it.
    pub fn is_idle(&self) -> bool {
        self.held.load(SeqCst) == 0 && self.consumers.load(SeqCst) == 0
    }

    /// Marks the queue retired if it is idle; publishers that reserved concurrently see
    /// the flag and go elsewhere, or the reservation is seen here and retiring fails.
    pub fn try_retire(&self) -> bool {
        self.closed.store(true, SeqCst);
        if self.is_idle() && self.remembered.load(SeqCst) == 0 {
            self.tx.close();
            true
        } else {
            self.closed.store(false, SeqCst);
            false
        }
    }
}
