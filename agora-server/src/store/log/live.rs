//! What each segment still holds: for every live message, the segment of its latest
//! `Enqueue`; per segment, how many live messages and how many bytes of their records.
//! It decides which segments can go (`Log::reclaim`).

use std::collections::{BTreeMap, HashMap};

use super::Record;
use crate::idhash::IdHash;

/// Where each live message's latest `Enqueue` is, and what each segment still holds:
/// what decides which segments can go.
#[derive(Default)]
pub(super) struct Liveness {
    /// Per queue number, per message id: its segment (first record number), where its
    /// record starts in it and its size, its delivery count as logged.
    pub(super) msgs: HashMap<u32, HashMap<u64, LiveMsg, IdHash>>,
    /// Per segment (first record number): live messages and the bytes of their records.
    pub(super) segs: BTreeMap<u64, (u64, u64)>,
}

#[derive(Clone, Copy)]
pub(super) struct LiveMsg {
    pub(super) seg: u64,
    pub(super) at: u64,
    pub(super) bytes: u64,
    pub(super) count: u32,
}

impl Liveness {
    /// Takes note of a record of `bytes` bytes at byte `at` of the segment starting at
    /// `seg`.
    pub(super) fn track(&mut self, seg: u64, at: u64, r: &Record, bytes: u64) {
        match r {
            Record::Declare { .. } | Record::Chain { .. } | Record::Bindings { .. } => {}
            Record::Enqueue {
                queue, id, count, ..
            } => {
                let prior = self.forget(*queue, *id);
                let count = prior.map_or(*count, |m| m.count.max(*count));
                self.msgs.entry(*queue).or_default().insert(
                    *id,
                    LiveMsg {
                        seg,
                        at,
                        bytes,
                        count,
                    },
                );
                let e = self.segs.entry(seg).or_default();
                e.0 += 1;
                e.1 += bytes;
            }
            Record::Deliver { queue, id, count } => {
                // The latest says (`NACK unseen` lowers a count).
                if let Some(m) = self.msgs.get_mut(queue).and_then(|q| q.get_mut(id)) {
                    m.count = *count;
                }
            }
            Record::Ack { queue, id } => {
                self.forget(*queue, *id);
            }
            Record::Purge { queue } | Record::Delete { queue } => {
                for (_, m) in self.msgs.remove(queue).unwrap_or_default() {
                    self.unlive(m);
                }
            }
        }
    }

    fn forget(&mut self, queue: u32, id: u64) -> Option<LiveMsg> {
        let m = self.msgs.get_mut(&queue)?.remove(&id)?;
        self.unlive(m);
        Some(m)
    }

    fn unlive(&mut self, m: LiveMsg) {
        if let Some(e) = self.segs.get_mut(&m.seg) {
            e.0 -= 1;
            e.1 -= m.bytes;
        }
    }

    /// Live messages and their bytes in the segment starting at `seg`.
    pub(super) fn of(&self, seg: u64) -> (u64, u64) {
        self.segs.get(&seg).copied().unwrap_or_default()
    }

    /// Where live message `id` of `queue` has its latest `Enqueue`, if it is live.
    pub(super) fn locate(&self, queue: u32, id: u64) -> Option<LiveMsg> {
        self.msgs.get(&queue)?.get(&id).copied()
    }

    /// Whether the record is the latest `Enqueue` of a live message in `seg`.
    pub(super) fn is_live_in(&self, seg: u64, queue: u32, id: u64) -> Option<u32> {
        let m = self.msgs.get(&queue)?.get(&id)?;
        (m.seg == seg).then_some(m.count)
    }
}
