//! The queues' journals in the simulated world: every queue is durable, its records go
//! to a log on a simulated disk after each operation, and every so often (and at the
//! end) the log is read back and must hold exactly what the queues hold: each message
//! that is waiting, out at a consumer or chosen for the dead-letter queue, with its
//! delivery count, and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Check, World};
use crate::store::{Log, LogOptions, SimDisk};

/// Operations between readings of the log.
pub(super) const EVERY: u64 = 64;

/// Segments small enough that the sim's runs roll, reclaim and copy forward.
pub(super) fn open_log(disk: &SimDisk) -> Log<SimDisk> {
    let opts = LogOptions {
        segment_bytes: 2048,
        // As the broker's: segments holding ids are kept for the queues' window.
        keep_ids: std::time::Duration::from_secs(120),
    };
    Log::open(Arc::new(disk.clone()), opts)
        .expect("an empty log opens")
        .0
}

impl super::SimQueue {
    /// Tells the budget what moved between memory and the log, as the queue's task
    /// does (`queue::paging`).
    pub(super) fn rebudget(&mut self) {
        let now = self.state.paged();
        self.shared.repaged(self.paged_seen, now);
        self.paged_seen = now;
    }
}

impl World {
    /// Queue `q` writes a journal from now on, under a fresh number for its name.
    pub(super) fn make_durable(&mut self, q: usize) {
        let name = self.queues[q].shared.dest.name.to_string();
        let n = self.log.declare(&name);
        self.queues[q]
            .state
            .journal_as(n, crate::queue::MessageIds::starting_at(1));
        self.queues[q].number = n;
    }

    /// Queue `q` moves waiting messages between memory and the log, as its task does:
    /// it pages out down to a random head, or reads back the oldest paged ones up to a
    /// random number of bytes. Its records are in the log (each operation's are
    /// handed over after it).
    pub(super) fn page(&mut self, q: usize) -> String {
        let bytes = self.rng.below(400) as usize;
        let out = self.rng.chance(50);
        let sq = &mut self.queues[q];
        let what = if out {
            let n = sq.state.page_out(bytes);
            self.report.paged_out += n as u64;
            format!("queue {q}: {n} paged out (head {bytes} B)")
        } else {
            let ids = sq.state.to_read(bytes);
            match self.log.read(sq.number, &ids) {
                Ok(got) => {
                    let n = got.len();
                    self.report.read_back += n as u64;
                    sq.state.paged_in(&ids, got);
                    format!("queue {q}: {n} of {} read back", ids.len())
                }
                Err(e) => {
                    self.broken = Some(format!("queue {q}: the log: {e}"));
                    format!("queue {q}: read back failed")
                }
            }
        };
        sq.rebudget();
        what
    }

    /// Hands every queue's new records to the log, and writes them.
    pub(super) fn journal_to_log(&mut self) -> Check {
        self.log.set_clock(self.now);
        for sq in &mut self.queues {
            for r in sq.state.take_journal() {
                if let crate::store::Record::Enqueue {
                    queue, id, payload, ..
                } = &r
                {
                    self.log_ids.insert((*queue, *id), super::id_of(payload));
                }
                self.log.append(&r);
            }
        }
        for r in std::mem::take(&mut self.moved) {
            self.log.append(&r);
        }
        self.log.write().map_err(|e| format!("the log: {e}"))
    }

    /// Syncs the log, reads it back, and compares it with the queues.
    pub(super) fn check_log(&mut self) -> Check {
        self.log.sync().map_err(|e| format!("the log: {e}"))?;
        let (_, rec) = Log::open(Arc::new(self.disk.synced_copy()), LogOptions::default())
            .map_err(|e| format!("the log does not read back: {e}"))?;
        for sq in &self.queues {
            let name = sq.shared.dest.name.to_string();
            let mut held = BTreeMap::new();
            sq.state.for_each_held(|_, h| {
                held.insert(h.id, h.count);
            });
            sq.state.for_each_paged(|p| {
                held.insert(p.id, p.count);
            });
            let logged: BTreeMap<u64, u32> = rec
                .queues
                .get(&name)
                .map(|msgs| msgs.iter().map(|m| (m.id, m.count)).collect())
                .unwrap_or_default();
            if held != logged {
                return Err(format!(
                    "queue {name}: it holds (id, count) {held:?}, its log {logged:?}"
                ));
            }
            // Every message id the queue remembers would come back after a restart.
            let logged: std::collections::HashSet<&str> = rec
                .seen
                .get(&name)
                .map(|ids| ids.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let mut missing = None;
            sq.state.for_each_seen(|id| {
                if !logged.contains(id) {
                    missing = Some(id.to_owned());
                }
            });
            if let Some(id) = missing {
                return Err(format!(
                    "queue {name}: it remembers message id {id}, its log does not"
                ));
            }
        }
        self.report.log_checks += 1;
        Ok(())
    }
}
