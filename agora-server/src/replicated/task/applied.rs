//! What a replicated queue's task does with what its group committed: messages applied
//! to its machine (and its own publishers confirmed), deliveries that ended, and the
//! confirms that waited too long or whose leader changed.

use super::*;

impl Task {
    pub(super) fn apply(&mut self, index: u64, data: &[u8]) {
        match self.machine.apply(index, data) {
            Applied::Enqueued { origin, seq, .. } => {
                // Counted as its body (what an `Ack`'s or a purge's figures give back).
                let size = Op::body_len(data);
                self.shared.restored(1, size, true);
                self.shared.messages_in.fetch_add(1, Relaxed);
                self.shared.bytes_in.fetch_add(size as u64, Relaxed);
                if origin == self.groups.me {
                    if let Some((w, _, _)) = self.waiting.remove(&seq) {
                        let _ = w.try_send(Ok(()));
                    }
                }
            }
            Applied::Duplicate { .. } => {}
            // A message id seen within the queue's latest messages: confirmed, not
            // stored again.
            Applied::Repeated { origin, seq } => {
                self.shared.duplicates.fetch_add(1, Relaxed);
                if origin == self.groups.me {
                    if let Some((w, _, _)) = self.waiting.remove(&seq) {
                        let _ = w.try_send(Ok(()));
                    }
                }
            }
            Applied::Acked {
                id,
                was_there,
                held_by,
                bytes,
            } => {
                if was_there {
                    self.shared.release(1, bytes);
                }
                if held_by.is_some() {
                    self.forget(id);
                }
                self.counts.remove(&id);
            }
            Applied::Purged { ids, bytes } => {
                self.shared.release(ids.len(), bytes);
                for id in ids {
                    self.forget(id);
                    self.counts.remove(&id);
                }
            }
            Applied::Returned { .. } => {}
            Applied::Unknown => log::warn!(
                "{}: entry {index} is no operation this broker knows (from a newer one?); skipped",
                self.shared.dest
            ),
        }
    }

    /// Delivery of message `id` is over (it left the queue).
    fn forget(&mut self, id: u64) {
        if let Some(key) = self.by_id.remove(&id) {
            if self.outstanding.remove(&key).is_some() {
                let cid = key.0;
                if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.cid == cid) {
                    c.out = c.out.saturating_sub(1);
                }
            }
        }
    }

    /// Confirms not heard in time are answered with an error; so are those proposed
    /// in an earlier term once this node has applied an entry of the current one (what
    /// the old leader had committed is applied by then: the rest was most likely lost
    /// with it, and waiting out the timeout would only stall the publisher).
    pub(super) fn expire(&mut self) {
        let dest = &self.shared.dest;
        let term = self.replica.term();
        let settled = self.replica.leader() != 0 && self.replica.applied_term() == term;
        let seen = (self.ticked, term, settled);
        if seen == self.expire_seen {
            return;
        }
        self.expire_seen = seen;
        let now = Instant::now();
        self.waiting.retain(|_, (w, at, proposed)| {
            let why = if settled && *proposed < term {
                format!(
                    "not confirmed: {dest}'s leader changed before it committed the message (it may still be stored: publishing it again may store it twice)"
                )
            } else if now.saturating_duration_since(*at) >= CONFIRM_TIMEOUT {
                format!(
                    "not confirmed within {} s: {dest}'s leader did not commit it in time (it may still be stored: publishing it again may store it twice)",
                    CONFIRM_TIMEOUT.as_secs()
                )
            } else {
                return true;
            };
            let _ = w.try_send(Err(why.into()));
            false
        });
    }
}
