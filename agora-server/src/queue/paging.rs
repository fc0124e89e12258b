//! The queue task's side of a durable queue's paging (the rules on the messages are in
//! `state/paging.rs`): after each batch, it pages waiting messages out of memory past
//! the queue's head (`memory_bytes`, or [`FLOOR`] while the broker's memory budget is
//! more than half spent), or, once the head is down to half, asks the log's writer for
//! the next ones back; and it tells the memory budget what moved, since the budget
//! counts only what is in memory.

use super::*;

/// The head a durable queue keeps while the broker's memory budget is more than half
/// spent: enough to keep its consumers fed.
pub(crate) const FLOOR: usize = 256 * 1024;

type ReadReply = Result<Vec<Stored>, Arc<str>>;

/// What the task knows of its paging.
pub(super) struct Paging {
    /// The queue's number in the log.
    pub number: u32,
    /// Paged messages and bytes, as the budget was last told.
    pub seen: (usize, usize),
    /// The read in flight: the ids asked for, and where the answer comes.
    pub reading: Option<(Vec<u64>, async_channel::Receiver<ReadReply>)>,
    /// A read failed: nothing more is read back (the log has failed; the broker stops).
    pub failed: bool,
}

impl Paging {
    /// The answer of the read in flight; pending for ever without one.
    pub async fn read_back(&self) -> Wake {
        match &self.reading {
            Some((_, rx)) => Wake::Read(
                rx.recv()
                    .await
                    .unwrap_or_else(|_| Err(Arc::from("the log's writer has stopped"))),
            ),
            None => futures_lite::future::pending().await,
        }
    }
}

impl Queue {
    /// Tells the memory budget what moved between memory and the log since it last
    /// heard (a paged message is not counted in it).
    pub(super) fn rebudget(&mut self) {
        let now = self.state.paged();
        if now != self.paging.seen {
            self.shared.repaged(self.paging.seen, now);
            self.shared.paged.store(now.0, Relaxed);
            self.paging.seen = now;
        }
    }

    /// Pages out what waits in memory past the head, or asks for the next paged
    /// messages once the head is at half or less (one read at a time).
    pub(super) async fn page(&mut self) {
        if !self.state.journaled() || self.paging.failed {
            return;
        }
        let Some(writer) = &self.writer else { return };
        let budget = self.shared.budget();
        let pressure = budget.enabled() && budget.used() > budget.limit() / 2;
        let head = self.shared.settings.memory_bytes;
        let keep = if pressure { head.min(FLOOR) } else { head };
        let pending = self.state.head_cost();
        if pending > keep {
            self.state.page_out(keep);
            self.rebudget();
        } else if self.paging.reading.is_none() && self.state.paged().0 > 0 && pending <= keep / 2 {
            let ids = self.state.to_read(keep - pending);
            let rx = writer.read(self.paging.number, ids.clone()).await;
            self.paging.reading = Some((ids, rx));
        }
    }

    /// Takes the answer of the read in flight.
    pub(super) fn read_back(&mut self, got: ReadReply) {
        let Some((asked, _)) = self.paging.reading.take() else {
            return;
        };
        match got {
            Ok(msgs) => {
                self.state.paged_in(&asked, msgs);
                self.rebudget();
            }
            Err(why) => {
                log::error!(
                    "{}: its messages in the log cannot be read back: {why}",
                    self.shared.dest
                );
                self.paging.failed = true;
            }
        }
    }
}
