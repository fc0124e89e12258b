//! What a member has on disk, and what a driver writes there.

use raft::eraftpb::{Entry, HardState, Snapshot};

/// What a member has on disk: synced writes only.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub hard_state: HardState,
    /// The state applied up to its index (index 0: none; the log is then from 1).
    pub snapshot: Snapshot,
    /// The log after the snapshot.
    pub entries: Vec<Entry>,
}

impl Disk {
    /// The index entries start after.
    pub(crate) fn base(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// Writes `entries` as raft-rs appends them: from the first one's index on, what
    /// was there is replaced (those at or before the snapshot are in it).
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        let base = self.base();
        let skip = entries.iter().take_while(|e| e.index <= base).count();
        let entries = &entries[skip..];
        let Some(first) = entries.first() else {
            return;
        };
        self.entries
            .truncate(first.index.saturating_sub(base + 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Replaces the log with a snapshot (a leader's: nothing else is kept).
    pub(crate) fn restore(&mut self, snap: Snapshot) {
        self.snapshot = snap;
        self.entries.clear();
    }

    /// The log up to the snapshot's index is the snapshot now (this member's own
    /// compaction: the entries after it stay).
    pub(crate) fn compact(&mut self, snap: Snapshot) {
        let index = snap.get_metadata().index;
        self.entries.retain(|e| e.index > index);
        self.snapshot = snap;
    }
}

/// What a driver with a real disk writes (then syncs, then calls
/// [`Replica::synced`]).
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// A snapshot the log restarts from (with `state` then always given): the file is
    /// written anew.
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub state: Option<HardState>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.state.is_none()
    }
}
