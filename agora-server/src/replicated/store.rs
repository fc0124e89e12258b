//! What raft-rs reads of a member's log ([`raft::Storage`]): the entries since the last
//! compaction, in memory (they are on disk too, in the member's [`RaftLog`]), the hard
//! state, and the snapshot a leader sends a member that is behind what it compacted.
//!
//! raft-rs's own `MemStorage` forgets the term of the last entry it compacted away (so
//! a leader could not send an append right after its compaction point) and its
//! snapshots carry no data; this is the same, less those two.
//!
//! A snapshot to send is made **on demand**: when raft-rs asks for one and none is
//! offered, the store answers "temporarily unavailable" and notes that one is
//! [`wanted`](Store::wanted); the member's driver then offers the state it has applied
//! ([`Store::offer`]), which raft-rs takes when it tries again (at the next heartbeat's
//! answer). So a queue's messages are copied for a snapshot only while a member needs
//! one.
//!
//! [`RaftLog`]: super::raftlog::RaftLog

use std::cell::Cell;

use agora_protocol::bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{Error, GetEntriesContext, RaftState, Storage, StorageError};

/// A member's log as raft-rs reads it.
#[derive(Default)]
pub(crate) struct Store {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// The index and term of the last entry compacted away (0, 0: none).
    base: (u64, u64),
    /// The entries after `base`, and their data's bytes.
    entries: Vec<Entry>,
    bytes: usize,
    /// A snapshot for members behind `base`.
    offer: Option<Snapshot>,
    /// raft-rs asked for a snapshot and none was offered.
    wanted: Cell<bool>,
}

impl Store {
    /// A store holding `entries` after the entry at `base` (index, term).
    pub fn new(
        hard_state: HardState,
        conf_state: ConfState,
        base: (u64, u64),
        entries: Vec<Entry>,
    ) -> Store {
        let mut s = Store {
            hard_state,
            conf_state,
            base,
            ..Store::default()
        };
        s.append(&entries);
        s
    }

    /// The index and term of the last entry compacted away.
    pub fn base(&self) -> (u64, u64) {
        self.base
    }

    /// The entries after the base.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The bytes of the entries' data.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.base.0, |e| e.index)
    }

    /// Writes `entries` as raft-rs appends them: from the first one's index on, what
    /// was there is replaced (entries at or before the base are skipped: they are in
    /// the snapshot).
    pub fn append(&mut self, entries: &[Entry]) {
        let skip = entries
            .iter()
            .take_while(|e| e.index <= self.base.0)
            .count();
        let entries = &entries[skip..];
        let Some(first) = entries.first() else {
            return;
        };
        let keep = (first.index - self.base.0 - 1) as usize;
        if keep < self.entries.len() {
            self.bytes -= size(&self.entries[keep..]);
            self.entries.truncate(keep);
        }
        self.bytes += size(entries);
        self.entries.extend_from_slice(entries);
    }

    /// Forgets the entries up to `index` (at most the last), keeping its term. An
    /// offered snapshot older than that is dropped (a member given it would be behind
    /// again).
    pub fn compact(&mut self, index: u64) {
        let index = index.min(self.last());
        if index <= self.base.0 {
            return;
        }
        let term = self.term(index).unwrap_or(0);
        let n = (index - self.base.0) as usize;
        self.bytes -= size(&self.entries[..n]);
        self.entries.drain(..n);
        self.base = (index, term);
        if self
            .offer
            .as_ref()
            .is_some_and(|s| s.get_metadata().index < index)
        {
            self.offer = None;
        }
    }

    /// Replaces the log with a snapshot's: nothing after it is kept.
    pub fn restore(&mut self, snap: &Snapshot) {
        let meta = snap.get_metadata();
        self.base = (meta.index, meta.term);
        self.entries.clear();
        self.bytes = 0;
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.offer = None;
    }

    /// Whether raft-rs asked for a snapshot that was not offered (asking clears it).
    pub fn wanted(&self) -> bool {
        self.wanted.replace(false)
    }

    /// A snapshot of `data`, the state applied up to entry `index` (none when that
    /// entry is neither kept nor the base).
    pub fn snapshot_at(&self, index: u64, data: impl Into<Bytes>) -> Option<Snapshot> {
        let term = self.term(index).ok()?;
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        snap.data = data.into();
        Some(snap)
    }

    /// Offers `data`, the state applied up to entry `index`, as the snapshot to send.
    pub fn offer(&mut self, index: u64, data: Vec<u8>) {
        if let Some(snap) = self.snapshot_at(index, data) {
            self.offer = Some(snap);
        }
    }

    /// Drops the offered snapshot (its memory), if any.
    pub fn withdraw(&mut self) -> bool {
        self.offer.take().is_some()
    }
}

fn size(entries: &[Entry]) -> usize {
    entries.iter().map(|e| e.data.len() + e.context.len()).sum()
}

impl Storage for Store {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.base.0 {
            return Err(Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(Error::Store(StorageError::Unavailable));
        }
        let at = |i: u64| (i - self.base.0 - 1) as usize;
        let mut v = self.entries[at(low)..at(high)].to_vec();
        raft::util::limit_size(&mut v, max_size.into());
        Ok(v)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.base.0 {
            return Ok(self.base.1);
        }
        if idx < self.base.0 {
            return Err(Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.base.0 - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.base.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match &self.offer {
            Some(s) if s.get_metadata().index >= request_index.max(self.base.0) => Ok(s.clone()),
            _ => {
                self.wanted.set(true);
                Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn compaction_keeps_the_term_of_the_last_entry_it_forgot() {
        let mut s = Store::new(
            HardState::default(),
            ConfState::default(),
            (0, 0),
            (1..=5).map(|i| entry(1 + i / 3, i)).collect(),
        );
        s.compact(3);
        assert_eq!(s.first_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 2, "the compacted entry's term");
        assert!(matches!(
            s.term(2),
            Err(Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            Storage::entries(&s, 3, 5, None, GetEntriesContext::empty(false)),
            Err(Error::Store(StorageError::Compacted))
        ));
        let got = Storage::entries(&s, 4, 6, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![4, 5]);
        // A later append replaces from its first index on; compacted ones are skipped.
        s.append(&[entry(2, 3), entry(3, 5), entry(3, 6)]);
        assert_eq!(s.last_index().unwrap(), 6);
        assert_eq!(s.term(5).unwrap(), 3);
        assert_eq!(s.term(4).unwrap(), 2);
    }

    #[test]
    fn a_snapshot_is_offered_on_demand_and_a_restore_replaces_the_log() {
        let mut s = Store::new(
            HardState::default(),
            ConfState::from((vec![1, 2, 3], vec![])),
            (0, 0),
            (1..=4).map(|i| entry(1, i)).collect(),
        );
        s.compact(2);
        assert!(matches!(
            s.snapshot(0, 2),
            Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable))
        ));
        assert!(s.wanted() && !s.wanted(), "asked once, cleared by asking");
        s.offer(4, b"state".to_vec());
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!(
            (snap.get_metadata().index, snap.get_metadata().term),
            (4, 1)
        );
        assert_eq!(&snap.data[..], b"state");
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        // Compacting past the offer drops it.
        s.append(&[entry(2, 5), entry(2, 6)]);
        s.compact(5);
        assert!(s.snapshot(0, 2).is_err());
        // Another member restores it: nothing else is kept.
        let mut t = Store::new(
            HardState::default(),
            ConfState::default(),
            (0, 0),
            vec![entry(1, 1)],
        );
        t.restore(&snap);
        assert_eq!((t.first_index().unwrap(), t.last_index().unwrap()), (5, 4));
        assert_eq!(t.term(4).unwrap(), 1);
        assert_eq!(t.hard_state.commit, 4);
        assert_eq!(t.conf_state.voters, vec![1, 2, 3]);
    }
}
