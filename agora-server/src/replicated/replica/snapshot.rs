//! Compaction and snapshots: a member forgets the entries it applied once their
//! state is written as a snapshot, and sends that state to members behind what it
//! forgot.

use agora_protocol::bytes::Bytes;
use raft::SnapshotStatus;

use super::{Replica, Writes};

impl Replica {
    /// The index of the last entry applied.
    pub fn applied(&self) -> u64 {
        self.node.raft.raft_log.applied
    }

    /// The index the log was last compacted to, or restored from a snapshot at.
    pub fn compacted(&self) -> u64 {
        self.node.store().base().0
    }

    /// The bytes of the entries kept since the last compaction (or snapshot).
    pub fn log_bytes(&self) -> usize {
        self.node.store().bytes()
    }

    /// Compacts the log up to the last entry applied, whose state is `data` (what
    /// [`Out::Restore`] gives back): returns what the log's file is written anew with
    /// (the snapshot, the entries after it, the hard state). Nothing while writes wait
    /// for a sync, or when nothing was applied since the last compaction. (The broker
    /// takes the state, encodes it elsewhere and calls [`compact_at`](Replica::compact_at).)
    #[cfg(test)]
    pub fn compact(&mut self, data: Vec<u8>) -> Option<Writes> {
        if !self.may_compact() {
            return None;
        }
        self.compact_at(self.applied(), data.into())
    }

    /// Whether the log may be compacted now: not while writes wait for a sync.
    pub fn may_compact(&self) -> bool {
        self.unsynced.number == 0 && self.unsynced.writes.is_empty()
    }

    /// Compacts the log up to entry `index` (applied, and perhaps followed by others
    /// since), whose state is `data`: as [`compact`](Replica::compact), for a state
    /// taken at `index` and encoded meanwhile. Nothing while writes wait for a sync
    /// (try again later with the same data), or when `index` is not after the last
    /// compaction (or a snapshot restored meanwhile), or not applied.
    pub fn compact_at(&mut self, index: u64, data: Bytes) -> Option<Writes> {
        if !self.may_compact() || index > self.applied() {
            return None;
        }
        let store = self.node.mut_store();
        if index <= store.base().0 {
            return None;
        }
        let snap = store.snapshot_at(index, data)?;
        store.compact(index);
        let w = Writes {
            snapshot: Some(snap.clone()),
            entries: store.entries().to_vec(),
            state: Some(store.hard_state.clone()),
        };
        if self.mirror {
            self.disk.compact(snap);
        }
        Some(w)
    }

    /// What a log written anew after a compaction must hold besides its snapshot: every
    /// entry kept now (appended since, or replaced), and the hard state.
    pub fn held_writes(&self) -> Writes {
        let store = self.node.store();
        Writes {
            snapshot: None,
            entries: store.entries().to_vec(),
            state: Some(store.hard_state.clone()),
        }
    }

    /// Whether raft-rs asked for a snapshot to send and none was offered (asking
    /// clears it): the driver offers one.
    pub fn snapshot_wanted(&self) -> bool {
        self.node.store().wanted()
    }

    /// Offers `data`, the state applied so far, as the snapshot to send members
    /// behind the compacted log.
    pub fn offer_snapshot(&mut self, data: Vec<u8>) {
        let index = self.applied();
        self.node.mut_store().offer(index, data);
    }

    /// Drops the snapshot offered (its memory); whether there was one.
    pub fn withdraw_snapshot(&mut self) -> bool {
        self.node.mut_store().withdraw()
    }

    /// Says whether a snapshot sent to `to` left whole (`false`: it did not, and is
    /// sent again later).
    pub fn report_snapshot(&mut self, to: u64, sent: bool) {
        let status = match sent {
            true => SnapshotStatus::Finish,
            false => SnapshotStatus::Failure,
        };
        self.node.report_snapshot(to, status);
    }
}
