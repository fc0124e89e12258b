//! One member of a Raft group (raft-rs's `RawNode`) as a plain value: messages, ticks
//! and proposals in; messages to send and committed entries out; what it writes goes to
//! a [`Disk`] only when told the write is synced, and messages that promise a write
//! (votes, append acknowledgements) leave only then. A crash is dropping the value and
//! making it again from its `Disk`: whatever was written and not synced is gone.
//!
//! This is the unit replicated durable queues will be built on (issue 25): today only
//! the cluster simulation (`crate::sim::cluster`) drives it, to check the way Agora
//! drives raft-rs (asynchronous appends confirmed by a sync, entries applied once
//! persisted) against seeded faults before a queue depends on it.

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

/// What a member has on disk: synced writes only.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub hard_state: HardState,
    /// The log from index 1 (nothing is compacted yet).
    pub entries: Vec<Entry>,
}

impl Disk {
    /// Writes `entries` as raft-rs appends them: from the first one's index on, what
    /// was there is replaced.
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        self.entries
            .truncate(first.index.saturating_sub(1) as usize);
        self.entries.extend_from_slice(entries);
    }
}

/// What a member asks of its driver.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send this message to its `to`.
    Send(Message),
    /// This entry is committed: apply it (`data` as proposed).
    Apply { index: u64, data: Vec<u8> },
}

/// Why a proposal was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Only the leader takes proposals; it is this node, as far as it knows.
    NotLeader(Option<u64>),
}

/// Writes handed out and not yet synced: what they are, and what waits on them.
#[derive(Default)]
struct Unsynced {
    /// The last `Ready` written.
    number: u64,
    hard_state: Option<HardState>,
    entries: Vec<Vec<Entry>>,
    /// Messages that may leave only once these writes are synced.
    held: Vec<Message>,
}

/// A member of one Raft group.
pub(crate) struct Replica {
    node: RawNode<MemStorage>,
    disk: Disk,
    unsynced: Unsynced,
}

/// The logger raft-rs is given: its lines go nowhere (the broker logs what matters
/// itself).
fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl Replica {
    /// Member `id` of the group of `voters`, from what `disk` holds (empty: a new
    /// group). Its election timeout is `election` ticks exactly (raft-rs would draw it
    /// from its own random source; the caller draws it, so that a seeded run replays).
    pub fn new(id: u64, voters: &[u64], disk: Disk, election: usize) -> Result<Replica, String> {
        let store = MemStorage::new_with_conf_state(ConfState::from((voters.to_vec(), vec![])));
        {
            let mut w = store.wl();
            w.append(&disk.entries).map_err(|e| e.to_string())?;
            w.set_hardstate(disk.hard_state.clone());
        }
        let config = Config {
            id,
            election_tick: election,
            min_election_tick: election,
            max_election_tick: election + 1,
            heartbeat_tick: 2.min(election.saturating_sub(1)).max(1),
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            ..Config::default()
        };
        config.validate().map_err(|e| e.to_string())?;
        let node = RawNode::new(&config, store, &logger()).map_err(|e| e.to_string())?;
        Ok(Replica {
            node,
            disk,
            unsynced: Unsynced::default(),
        })
    }

    /// One tick of its clock.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// A message from another member. One raft-rs refuses (from an unknown member,
    /// say) is dropped, as a lost message would be.
    pub fn step(&mut self, m: Message) {
        let _ = self.node.step(m);
    }

    /// Proposes `data` to be appended to the group's log.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), Refused> {
        if self.node.raft.state != StateRole::Leader {
            let leader = self.node.raft.leader_id;
            return Err(Refused::NotLeader((leader != 0).then_some(leader)));
        }
        self.node
            .propose(vec![], data)
            .map_err(|_| Refused::NotLeader(None))
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// What it has on disk (synced).
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// Whether writes wait for a sync.
    #[cfg(test)]
    pub fn has_unsynced(&self) -> bool {
        self.unsynced.number > 0
    }

    /// Takes what raft-rs has ready: messages to send now, committed entries to apply,
    /// and writes (entries, hard state) that are written at once and count once
    /// [`synced`](Replica::synced).
    pub fn ready(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        if !self.node.has_ready() {
            return out;
        }
        let mut rd = self.node.ready();
        out.extend(rd.take_messages().into_iter().map(Out::Send));
        let mut applied = None;
        for e in rd.take_committed_entries() {
            applied = Some(e.index);
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                out.push(Out::Apply {
                    index: e.index,
                    data: e.data.to_vec(),
                });
            }
        }
        if !rd.entries().is_empty() {
            // Written (the storage raft-rs reads is the page cache); on disk once synced.
            let _ = self.node.mut_store().wl().append(rd.entries());
            self.unsynced.entries.push(rd.entries().clone());
        }
        if let Some(hs) = rd.hs() {
            self.node.mut_store().wl().set_hardstate(hs.clone());
            self.unsynced.hard_state = Some(hs.clone());
        }
        self.unsynced.held.extend(rd.take_persisted_messages());
        self.unsynced.number = rd.number();
        self.node.advance_append_async(rd);
        if let Some(index) = applied {
            self.node.advance_apply_to(index);
        }
        out
    }

    /// The writes handed out so far are synced: they are on disk, and the messages
    /// that waited on them may leave.
    pub fn synced(&mut self) -> Vec<Out> {
        let u = std::mem::take(&mut self.unsynced);
        for entries in &u.entries {
            self.disk.append(entries);
        }
        if let Some(hs) = u.hard_state {
            self.disk.hard_state = hs;
        }
        if u.number > 0 {
            self.node.on_persist_ready(u.number);
        }
        u.held.into_iter().map(Out::Send).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three members, every message delivered at once, every write synced at once.
    fn settle(rs: &mut [Replica], applied: &mut [Vec<Vec<u8>>]) {
        for _ in 0..100 {
            let mut mail = Vec::new();
            for (i, r) in rs.iter_mut().enumerate() {
                let mut out = r.ready();
                out.extend(r.synced());
                for o in out {
                    match o {
                        Out::Send(m) => mail.push(m),
                        Out::Apply { data, .. } => applied[i].push(data),
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for m in mail {
                rs[m.to as usize - 1].step(m);
            }
        }
    }

    #[test]
    fn a_group_elects_a_leader_and_commits_what_it_proposes_everywhere() {
        let mut rs: Vec<Replica> = (1..=3)
            .map(|id| Replica::new(id, &[1, 2, 3], Disk::default(), 5 + 3 * id as usize).unwrap())
            .collect();
        let mut applied = vec![Vec::new(); 3];
        for _ in 0..20 {
            rs.iter_mut().for_each(Replica::tick);
            settle(&mut rs, &mut applied);
        }
        let leaders: Vec<usize> = (0..3).filter(|&i| rs[i].is_leader()).collect();
        assert_eq!(leaders.len(), 1);
        let l = leaders[0];
        let follower = (l + 1) % 3;
        assert_eq!(
            rs[follower].propose(b"x".to_vec()),
            Err(Refused::NotLeader(Some(l as u64 + 1)))
        );
        for v in 0..10u8 {
            rs[l].propose(vec![v]).unwrap();
        }
        settle(&mut rs, &mut applied);
        let want: Vec<Vec<u8>> = (0..10u8).map(|v| vec![v]).collect();
        for a in &applied {
            assert_eq!(a, &want);
        }
        // Every member has the log on disk: a member made again from its disk alone
        // holds all of it.
        for r in &rs {
            let normal = r
                .disk()
                .entries
                .iter()
                .filter(|e| !e.data.is_empty())
                .count();
            assert_eq!(normal, 10);
        }
    }

    #[test]
    fn a_vote_is_asked_for_only_once_its_term_is_synced() {
        use raft::eraftpb::MessageType::*;
        let mut rs: Vec<Replica> = (1..=3)
            .map(|id| Replica::new(id, &[1, 2, 3], Disk::default(), 3 + 4 * id as usize).unwrap())
            .collect();
        // Member 1 (the shortest timeout) times out and asks for pre-votes (a member
        // that does not lead sends only what its writes so far allow: after a sync).
        // Its peers answer.
        let mut pre = Vec::new();
        for _ in 0..8 {
            rs[0].tick();
            for o in rs[0].ready().into_iter().chain(rs[0].synced()) {
                if let Out::Send(m) = o {
                    pre.push(m);
                }
            }
        }
        assert!(pre.iter().all(|m| m.get_msg_type() == MsgRequestPreVote));
        assert_eq!(pre.len(), 2, "{pre:?}");
        let mut answers = Vec::new();
        for m in pre {
            let to = m.to as usize - 1;
            rs[to].step(m);
            for o in rs[to].ready().into_iter().chain(rs[to].synced()) {
                if let Out::Send(m) = o {
                    answers.push(m);
                }
            }
        }
        for m in answers {
            rs[0].step(m);
        }
        // Now a candidate: its term and vote for itself are written, and the requests
        // for votes wait for the sync.
        let now: Vec<_> = rs[0].ready();
        assert!(rs[0].has_unsynced());
        assert!(
            now.iter()
                .all(|o| !matches!(o, Out::Send(m) if m.get_msg_type() == MsgRequestVote)),
            "{now:?}"
        );
        let term = rs[0].term();
        assert_eq!(
            rs[0].disk().hard_state.term,
            0,
            "not on disk before the sync"
        );
        // A crash here loses the unsynced term: made again from its disk, it is at 0.
        let again = Replica::new(1, &[1, 2, 3], rs[0].disk().clone(), 7).unwrap();
        assert_eq!(again.term(), 0);
        let later = rs[0].synced();
        let votes = later
            .iter()
            .filter(|o| matches!(o, Out::Send(m) if m.get_msg_type() == MsgRequestVote))
            .count();
        assert_eq!(votes, 2);
        assert_eq!(rs[0].disk().hard_state.term, term);
        assert_eq!(rs[0].disk().hard_state.vote, 1);
    }
}
