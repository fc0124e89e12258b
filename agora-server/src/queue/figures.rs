//! What a queue's task tells the rest of the broker after each batch: who waited for
//! the batch to reach the writer, what left the queue (given back to its limits and the
//! memory budget, its message ids' cost included), and its figures for `STATS`.

use super::*;

impl Queue {
    /// Tells whoever asked (`QueueCmd::Flush`) that the batch went to the writer.
    pub(super) fn flushed(&mut self) {
        for f in self.flushed.drain(..) {
            let _ = f.try_send(());
        }
    }

    /// Returns what left the queue to its limits and the memory budget.
    pub(super) fn give_back_released(&mut self) {
        // First what moved between memory and the log, so that the budget never
        // counts below zero (a purged paged message is taken back, then released).
        self.rebudget();
        let (n, bytes) = self.state.take_released();
        if n > 0 || bytes > 0 {
            self.shared.release(n, bytes);
        }
        let (ids, cost) = self.state.seen();
        if cost != self.seen_charged {
            // Taken whatever the budget says: a publish it refused never got here.
            match cost > self.seen_charged {
                true => self.shared.budget().take(cost - self.seen_charged),
                false => self.shared.budget().give_back(self.seen_charged - cost),
            }
            self.seen_charged = cost;
            self.shared.remembered.store(ids, SeqCst);
        }
    }

    pub(super) fn publish_figures(&self) {
        let s = &self.shared;
        let t = self.state.totals();
        s.unacked.store(self.state.unacked(), Relaxed);
        s.paged.store(self.state.paged().0, Relaxed);
        s.messages_in.store(t.messages_in, Relaxed);
        s.bytes_in.store(t.bytes_in, Relaxed);
        s.messages_out.store(t.messages_out, Relaxed);
        s.bytes_out.store(t.bytes_out, Relaxed);
        s.redelivered.store(t.redelivered, Relaxed);
        s.duplicates.store(t.duplicates, Relaxed);
    }
}
