//! Messages entering a queue: published ones (a repeat of a message id within the
//! window is refused, `seen.rs`), and dead letters from another queue; each is
//! journaled, then waits in memory or, past a durable queue's head, in the log.

use std::time::Instant;

use super::{Held, QueueState};
use crate::message::Message;

impl<P> QueueState<P> {
    /// Adds published messages to the end of the queue, but those repeating a message
    /// id accepted within the window (their reservations are released).
    pub fn enqueue(&mut self, msgs: impl IntoIterator<Item = Message>, now: Instant) {
        for msg in msgs {
            if self.admit(&msg, now) {
                self.enqueue_one(msg, now);
            }
        }
    }

    /// Adds a dead letter from another queue to the end of this one: never refused as a
    /// repeat (it left the other queue already).
    pub fn enqueue_dead_letter(&mut self, msg: Message, now: Instant) {
        self.enqueue_one(msg, now);
    }

    fn enqueue_one(&mut self, msg: Message, now: Instant) {
        self.totals.messages_in += 1;
        self.totals.bytes_in += msg.payload.len() as u64;
        let id = self.journal_enqueue(&msg.headers, &msg.payload);
        if self.enqueue_paged(id, &msg, now) {
            return;
        }
        self.loose += 1;
        self.loose_since.get_or_insert(now);
        self.pending.push_back(Held {
            msg,
            id,
            count: 0,
            enqueued: now,
            avoid: None,
        });
    }
}
