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
    };
    Log::open(Arc::new(disk.clone()), opts)
        .expect("an empty log opens")
        .0
}

impl World {
    /// Queue `q` writes a journal from now on, under a fresh number for its name.
    pub(super) fn make_durable(&mut self, q: usize) {
        let name = self.queues[q].shared.dest.name.to_string();
        let n = self.log.declare(&name);
        self.queues[q]
            .state
            .journal_as(n, crate::queue::MessageIds::starting_at(1));
    }

    /// Hands every queue's new records to the log, and writes them.
    pub(super) fn journal_to_log(&mut self) -> Check {
        for sq in &mut self.queues {
            for r in sq.state.take_journal() {
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
        }
        self.report.log_checks += 1;
        Ok(())
    }
}
