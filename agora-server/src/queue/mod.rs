//! Queues: each message to exactly one consumer, kept until it is acknowledged.
//!
//! A queue is a task around a [`QueueState`] (the plain value in `state.rs` that holds
//! its pending messages and each consumer's unacknowledged set, and every rule about
//! them), fed over one bounded channel; the task only moves commands and time in, and
//! deliveries, replies and dead letters out. Publishers send into that channel directly (no
//! hub task); before sending they reserve room in the queue's limits and the broker's
//! memory budget with atomics, so a full queue is refused at the door and nothing
//! accepted is ever dropped. Consumers are fed round-robin, each up to its prefetch. A
//! message leaves the queue only when its consumer acks it (auto-ack: when the shipper
//! has written it), when it is dead-lettered, or when an operator purges or deletes the
//! queue. A `NACK`, an `UNSUB`, an ack timeout or the consumer's connection closing gives
//! its messages back, to the front of the queue, and their next delivery carries a
//! higher delivery count. A message delivered `max_deliveries` times, or waiting longer
//! than the queue's TTL, moves to the dead-letter queue with headers saying why.

mod blocks;
mod shared;
mod state;

use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Instant;

use agora_protocol::{Destination, ErrorCode, ErrorReply, Kind, Name, ServerFrame};
use async_channel::Sender;
use futures_lite::StreamExt;

use crate::budget::Budget;
use crate::config::QueueSettings;
use crate::deliveries::DeliveryTx;
use crate::message::Message;
use crate::shipper::Outbox;
use crate::store::{Append, Kept, Outcome, Record, Stored, WriterHandle};
pub(crate) use shared::{QueueShared, Refused};
pub(crate) use state::{
    delivery_id, Acked, ConsumerSpec, Held, MessageIds, Place, QueueState, COMPACT_AFTER, EXPIRED,
    ID_COST, MAX_DELIVERIES, REJECTED, SLOT_SHIFT,
};

/// Commands a queue task takes.
pub(crate) enum QueueCmd {
    /// A message whose room was reserved by [`QueueShared::reserve`].
    Publish(Message),
    /// A confirmed publish to a durable queue: the sender hears once its record is
    /// where `--fsync` says (or why it never will be), and only then is it confirmed.
    PublishStored(Message, Sender<Outcome>),
    /// A dead letter from another queue: enqueued here, and `ack` (that queue's record
    /// of it leaving, if it is durable) appended after this queue's records of the
    /// batch, so the log never holds the one without the copy before it.
    DeadLetter { msg: Message, ack: Option<Record> },
    /// A run of them, from one connection's read, in order.
    PublishMany(Vec<Message>),
    /// A new consumer.
    Subscribe(Consumer),
    /// `HOLD` (`on`) or `RESUME` of a consumer; `reply` hears once it is in force.
    Hold {
        cid: u64,
        on: bool,
        reply: Sender<()>,
    },
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
        /// A `NACK`'s option (`!ack`): now, after a delay, or to the dead-letter queue.
        how: agora_protocol::Nack,
        reply: Option<Sender<bool>>,
    },
    /// An auto-ack consumer's shipper wrote this many more deliveries.
    Written { cid: u64, n: usize },
    /// Drop every pending message; answers with how many.
    Purge { reply: Sender<usize> },
    /// The first `limit` messages waiting, with their delivery counts, left where they
    /// are (the HTTP console's peek).
    Peek {
        limit: usize,
        reply: Sender<Vec<(Message, u32)>>,
    },
    /// The queue is deleted: tell consumers, drop everything, stop.
    Delete { reply: Sender<usize> },
    /// Answers once everything before it has been handed to the log's writer (a
    /// graceful stop waits for it before closing the log).
    Flush { reply: Sender<()> },
}

/// Where a consumer's deliveries and notices go: the subscription's delivery queue to
/// the shipper (credit bounds it to the prefetch), and the connection's outbox.
pub(crate) struct Port {
    pub tx: DeliveryTx,
    pub outbox: Outbox,
}

/// A consumer as its queue task knows it.
pub(crate) type Consumer = ConsumerSpec<Port>;

/// Header names put on dead-lettered messages.
pub const DEAD_LETTER_FROM: &str = "agora-dead-letter-from";
/// Why it died: `max_deliveries` or `expired`.
pub const DEAD_LETTER_REASON: &str = "agora-dead-letter-reason";
/// How often it was delivered before it died.
pub const DEAD_LETTER_DELIVERIES: &str = "agora-dead-letter-deliveries";

/// The dead-letter resolver handle: finds (or creates) a queue by name for a queue's
/// dead letters. The registry makes it (holding itself weakly, so queues do not keep it
/// alive), so a queue needs none of the registry's types.
pub(crate) type DlqResolver = Arc<
    dyn Fn(
            Destination,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Arc<QueueShared>>> + Send>>
        + Send
        + Sync,
>;

/// What a queue of a broker with a data directory is given.
pub(crate) struct QueueStore {
    /// The log's writer: for the queue's journal, and for the records dead letters
    /// bring from other queues.
    pub writer: WriterHandle,
    /// Its number in the log and the id source, when the queue is durable.
    pub journal: Option<(u32, MessageIds)>,
    /// Its messages the log kept at start (read back as its consumers get there).
    pub kept: Vec<Kept>,
    /// Messages read back whole at start: those of a queue no longer durable.
    pub restore: Vec<Stored>,
    /// The message ids the log held at start, in publish order.
    pub seen: Vec<String>,
}

/// Creates a queue and spawns its task on `rt`.
pub(crate) fn spawn(
    dest: Destination,
    settings: QueueSettings,
    budget: Arc<Budget>,
    dlq: DlqResolver,
    channel: usize,
    rt: &agora_rt::Handle,
    store: Option<QueueStore>,
) -> Arc<QueueShared> {
    let (shared, rx) = QueueShared::new(dest, settings, budget, channel);
    let mut state = QueueState::new(shared.settings.clone());
    let mut number = 0;
    let writer = store.map(|s| {
        if let Some((n, ids)) = s.journal {
            number = n;
            state.journal_as(n, ids);
            shared.durable.store(true, SeqCst);
            let _ = shared.writer.set(s.writer.clone());
        }
        if !s.restore.is_empty() {
            let bytes = s.restore.iter().map(stored_size).sum();
            shared.restored(s.restore.len(), bytes, true);
            state.restore(s.restore, Instant::now());
        }
        if !s.seen.is_empty() {
            state.restore_seen(s.seen, Instant::now());
        }
        if !s.kept.is_empty() {
            let bytes = s.kept.iter().map(|k| k.size).sum();
            shared.restored(s.kept.len(), bytes, false);
            shared.paged.store(s.kept.len(), SeqCst);
            state.restore_paged(s.kept, Instant::now());
        }
        s.writer
    });
    let task = Queue {
        paging: Paging {
            number,
            seen: state.paged(),
            reading: None,
            failed: false,
        },
        state,
        shared: shared.clone(),
        dlq: None,
        resolver: dlq,
        writer,
        waiters: Vec::new(),
        forwarded: Vec::new(),
        flushed: Vec::new(),
        rejected: Vec::new(),
        seen_charged: 0,
    };
    rt.spawn(task.run(rx)).detach();
    shared
}

/// What a message read back from the log counts against its queue's limits.
fn stored_size(m: &Stored) -> usize {
    Message {
        received: Instant::now(),
        headers: m.headers.clone(),
        payload: m.payload.clone(),
    }
    .size()
}

/// The task around a queue's state.
struct Queue {
    state: QueueState<Port>,
    shared: Arc<QueueShared>,
    /// The dead-letter queue, once resolved.
    dlq: Option<Arc<QueueShared>>,
    /// Finds (or creates) the dead-letter queue by name.
    resolver: DlqResolver,
    /// The log's writer, when the broker has a data directory.
    writer: Option<WriterHandle>,
    /// Confirms of this batch's stored publishes, told once its records are stored.
    waiters: Vec<Sender<Outcome>>,
    /// Other queues' records that dead letters brought, appended after this queue's.
    forwarded: Vec<Record>,
    /// Who waits for this batch's records to be handed to the writer.
    flushed: Vec<Sender<()>>,
    /// Replies to `NACK … dlq`, told after the batch's dead letters moved and its
    /// figures were published, so a client that reads `STATS` after its OK sees the
    /// message gone (or kept, when the dead-letter queue could not take it).
    rejected: Vec<(Sender<bool>, bool)>,
    /// What its message ids are counted in the memory budget as.
    seen_charged: usize,
    /// Its backlog kept in the log (`paging.rs`).
    paging: Paging,
}

/// What woke a queue's task.
enum Wake {
    Cmd(Option<QueueCmd>),
    Tick,
    /// Waiting messages are due to be compacted (done by the dispatch after it).
    Compact,
    /// A message held back by `NACK delay=` is due.
    Delayed,
    /// Messages read back from the log.
    Read(Result<Vec<Stored>, std::sync::Arc<str>>),
}

impl Queue {
    async fn run(mut self, rx: crate::chan::Rx<QueueCmd>) {
        // A queue the log kept messages for reads its head back first.
        self.page().await;
        let mut ticker = self.state.tick().map(smol::Timer::interval);
        // Wakes the queue when waiting messages are due to be compacted
        // (`QueueState::compact_waiting`); moved only when that time changes.
        let mut compaction = smol::Timer::never();
        let mut compaction_at = None;
        // Wakes the queue when a message held back by `NACK delay=` is due.
        let mut delayed = smol::Timer::never();
        let mut delayed_at = None;
        'serve: loop {
            // The compaction's timer also forgets message ids past their window.
            let due = match (self.state.compaction_due(), self.state.seen_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if due != compaction_at {
                compaction_at = due;
                compaction = due.map_or_else(smol::Timer::never, smol::Timer::at);
            }
            let due = self.state.delay_due();
            if due != delayed_at {
                delayed_at = due;
                delayed = due.map_or_else(smol::Timer::never, smol::Timer::at);
            }
            let wake = futures_lite::future::or(
                async { Wake::Cmd(rx.recv().await.ok()) },
                futures_lite::future::or(
                    async {
                        match &mut ticker {
                            Some(t) => {
                                t.next().await;
                            }
                            None => futures_lite::future::pending::<()>().await,
                        }
                        Wake::Tick
                    },
                    futures_lite::future::or(
                        async {
                            (&mut compaction).await;
                            Wake::Compact
                        },
                        futures_lite::future::or(
                            async {
                                (&mut delayed).await;
                                Wake::Delayed
                            },
                            self.paging.read_back(),
                        ),
                    ),
                ),
            )
            .await;
            let cmd = match wake {
                Wake::Cmd(cmd) => cmd,
                Wake::Tick => {
                    self.state.timers(Instant::now());
                    self.after_batch().await;
                    continue;
                }
                Wake::Compact => {
                    compaction_at = None;
                    compaction = smol::Timer::never();
                    self.state.expire_seen(Instant::now());
                    self.after_batch().await;
                    continue;
                }
                Wake::Delayed => {
                    delayed_at = None;
                    delayed = smol::Timer::never();
                    self.state.release_delayed(Instant::now());
                    self.after_batch().await;
                    continue;
                }
                Wake::Read(got) => {
                    self.read_back(got);
                    self.after_batch().await;
                    continue;
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
                            break 'serve;
                        }
                    }
                    Err(_) => break,
                }
            }
            self.after_batch().await;
        }
        // What the last batch changed (a deletion, say) goes to the log before the task
        // ends.
        self.store().await;
        self.flushed();
        // Retired (only when idle), deleted, or the broker is gone. Commands sent after
        // the last one taken (an ACK from a consumer that just got its CANCEL) would wait
        // in the channel for as long as a sender lives, and with them the replies their
        // senders wait for: close it, and drop them, so each waiter hears "gone".
        rx.close();
        while rx.try_recv().is_ok() {}
    }

    async fn after_batch(&mut self) {
        // What came in is told before anything is delivered, so a consumer that has a
        // message finds it counted in `STATS` (the rest is told after the dispatch).
        let t = self.state.totals();
        self.shared.messages_in.store(t.messages_in, Relaxed);
        self.shared.bytes_in.store(t.bytes_in, Relaxed);
        let before = self.state.consumers();
        self.state
            .dispatch(Instant::now(), |c, d| c.port.tx.push(d));
        // Consumers whose connection had gone were dropped by dispatch.
        let gone = before - self.state.consumers();
        if gone > 0 {
            self.shared.consumers.fetch_sub(gone, SeqCst);
        }
        let dead = self.state.take_dead();
        if !dead.is_empty() {
            self.dead_letter(dead).await;
        }
        self.give_back_released();
        self.publish_figures();
        for (r, known) in self.rejected.drain(..) {
            let _ = r.try_send(known);
        }
        self.store().await;
        self.page().await;
        self.flushed();
    }

    /// Hands the batch's records to the log's writer, with the confirms that wait for
    /// them. (It waits only while the writer's queue is full.)
    async fn store(&mut self) {
        let Some(writer) = &self.writer else { return };
        let mut records = self.state.take_journal();
        records.append(&mut self.forwarded);
        if records.is_empty() && self.waiters.is_empty() {
            return;
        }
        let done = std::mem::take(&mut self.waiters);
        // A failed writer has told every waiter why, and logged it.
        let _ = writer.append(Append { records, done }).await;
    }
}

mod dead_letter;
pub(crate) use dead_letter::{dead_letter_copy, dlq_of};
mod figures;
mod handle;
pub(crate) use handle::unknown_delivery;
mod paging;
use paging::Paging;

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue of 10 messages or 1,000 bytes, no timers, and its channel's receiver.
    fn small_queue() -> (Arc<QueueShared>, crate::chan::Rx<QueueCmd>) {
        let settings = QueueSettings {
            max_messages: 10,
            max_bytes: 1000,
            max_deliveries: 0,
            ttl: None,
            ack_timeout: None,
            dead_letter: None,
            durable: true,
            memory_bytes: 1000,
            dedup_window: std::time::Duration::from_secs(120),
            dedup_ids: 100_000,
        };
        let dest = Destination {
            kind: Kind::Queue,
            name: Name::try_from("q").unwrap(),
        };
        QueueShared::new(dest, settings, Budget::new(1000, true), 8)
    }

    /// `STATS` depth counts a confirmed publish at once: it is confirmed when it is in
    /// the queue's channel, before the task has taken it (a test read 2 for 4 once).
    #[test]
    fn depth_counts_confirmed_publishes_still_in_the_channel() {
        let (shared, _rx) = small_queue();
        for _ in 0..4 {
            assert!(shared.reserve(10).is_ok());
        }
        assert_eq!(
            shared.waiting(),
            4,
            "no task has run, and all four are counted"
        );
        shared.unacked.store(1, SeqCst);
        assert_eq!(shared.waiting(), 3, "one is out at a consumer");
    }

    /// A consumer that got its `CANCEL` may `ACK` before the deleted queue's task has
    /// let go of its channel; the connection waits for the answer. It must hear that
    /// the queue is gone, not wait as long as the queue's handle lives (a test failed
    /// once in 20 runs on this, waiting 10 s for the `ERR`).
    #[test]
    fn commands_left_behind_a_delete_are_answered_gone() {
        let (shared, rx) = small_queue();
        let (deleted, deleted_rx) = async_channel::bounded(1);
        let (acked, acked_rx) = async_channel::bounded(1);
        shared
            .tx
            .try_send(QueueCmd::Delete { reply: deleted })
            .unwrap();
        let ack = QueueCmd::Ack {
            cid: 1,
            did: 1,
            ack: true,
            how: agora_protocol::Nack::Requeue,
            reply: Some(acked),
        };
        shared.tx.try_send(ack).unwrap();
        let task = Queue {
            state: QueueState::new(shared.settings.clone()),
            shared: shared.clone(),
            dlq: None,
            resolver: Arc::new(|_| Box::pin(async { None })),
            writer: None,
            waiters: Vec::new(),
            forwarded: Vec::new(),
            flushed: Vec::new(),
            rejected: Vec::new(),
            seen_charged: 0,
            paging: Paging {
                number: 0,
                seen: (0, 0),
                reading: None,
                failed: false,
            },
        };
        futures_lite::future::block_on(task.run(rx));
        assert_eq!(deleted_rx.try_recv(), Ok(0));
        assert_eq!(
            acked_rx.try_recv(),
            Err(async_channel::TryRecvError::Closed)
        );
        assert!(shared.tx.is_closed(), "later sends fail at once");
    }
}
