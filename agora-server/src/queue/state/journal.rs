//! A durable queue's journal: each change to its messages, as the log's records
//! ([`Record`]), for the queue's task to hand to the log's writer after each batch.
//! A queue without a journal (memory-only) pays nothing but a branch.
//!
//! What is written when: a publish is an `Enqueue` (with the message's id, given here);
//! a delivery a `Deliver` with its count (so a restart raises the count of what was out
//! at a consumer); an acknowledgement, a write report of an auto-ack consumer and each
//! purged message an `Ack`; a deletion a `Delete`. A dead-lettered message's `Ack` is
//! handed to the dead-letter queue ([`QueueState::moved`]), which appends it after its
//! own `Enqueue` of the copy: a crash keeps a prefix of the log, so never the `Ack`
//! without the copy. A `NACK`, a
//! consumer leaving and an ack timeout write nothing: the message is still in the
//! queue, and its count was written when it went out. (Purge writes an `Ack` per
//! message, not the log's `Purge`: a purge drops only what waits, not what is out at
//! consumers.)

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;

use super::QueueState;
use crate::store::Record;

/// Where message ids come from: one counter for every durable queue of a broker, so
/// an id is unique in the log whatever queue it is in, and a queue removed when idle and
/// made again never reuses one.
#[derive(Clone, Debug, Default)]
pub(crate) struct MessageIds(Arc<AtomicU64>);

impl MessageIds {
    /// Ids from `next` on.
    pub fn starting_at(next: u64) -> MessageIds {
        MessageIds(Arc::new(AtomicU64::new(next)))
    }

    fn take(&self) -> u64 {
        self.0.fetch_add(1, Relaxed)
    }

    /// Ids continue after `id` at least.
    pub(super) fn past(&self, id: u64) {
        self.0.fetch_max(id + 1, Relaxed);
    }
}

/// The records not yet taken, and where ids come from.
pub(crate) struct Journal {
    /// The queue's number in the log.
    queue: u32,
    pub(super) ids: MessageIds,
    records: Vec<Record>,
}

impl Journal {
    /// Message `id` went out, `count` times so far.
    pub(super) fn deliver(&mut self, id: u64, count: u32) {
        self.records.push(Record::Deliver {
            queue: self.queue,
            id,
            count,
        });
    }
}

impl<P> QueueState<P> {
    /// Makes the queue durable: from now on each change to its messages is also a
    /// record under number `queue`, and message ids come from `ids`.
    pub fn journal_as(&mut self, queue: u32, ids: MessageIds) {
        self.journal = Some(Journal {
            queue,
            ids,
            records: Vec::new(),
        });
    }

    /// Whether changes are journaled (the queue is durable).
    pub fn journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// Puts back messages read from the log at start, in id order, each waiting with
    /// the delivery count logged for it (its next delivery is counted one higher: a
    /// redelivery). Writes nothing: they are in the log already. Ids continue after the
    /// highest.
    pub fn restore(&mut self, msgs: Vec<crate::store::Stored>, now: std::time::Instant) {
        for m in msgs {
            if let Some(j) = &self.journal {
                j.ids.past(m.id);
            }
            let msg = crate::message::Message {
                headers: m.headers,
                payload: m.payload,
                received: now,
            };
            self.totals.messages_in += 1;
            self.totals.bytes_in += msg.payload.len() as u64;
            // Read from the log: its own allocation already, nothing to compact.
            self.pending.push_back(super::Held {
                msg,
                id: m.id,
                count: m.count,
                enqueued: now,
                avoid: None,
            });
        }
    }

    /// The records of the changes since the last call, in order.
    pub fn take_journal(&mut self) -> Vec<Record> {
        self.journal
            .as_mut()
            .map(|j| std::mem::take(&mut j.records))
            .unwrap_or_default()
    }

    /// The id for a message entering the queue, and its `Enqueue`; 0 without a journal.
    pub(super) fn journal_enqueue(&mut self, headers: &Headers, payload: &Bytes) -> u64 {
        let Some(j) = &mut self.journal else {
            return 0;
        };
        let id = j.ids.take();
        j.records.push(Record::Enqueue {
            queue: j.queue,
            id,
            count: 0,
            headers: headers.clone(),
            payload: payload.clone(),
        });
        id
    }

    /// Message `id` left the queue.
    pub(super) fn journal_ack(&mut self, id: u64) {
        if let Some(j) = &mut self.journal {
            j.records.push(Record::Ack { queue: j.queue, id });
        }
    }

    /// The record saying message `id` left this queue for the dead-letter queue, to be
    /// appended after the copy's `Enqueue` there; `None` without a journal.
    pub fn moved(&self, id: u64) -> Option<Record> {
        let j = self.journal.as_ref()?;
        Some(Record::Ack { queue: j.queue, id })
    }

    /// The queue is gone.
    pub(super) fn journal_delete(&mut self) {
        if let Some(j) = &mut self.journal {
            j.records.push(Record::Delete { queue: j.queue });
        }
    }
}
