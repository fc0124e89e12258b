//! One member of a Raft group (raft-rs's `RawNode`) as a plain value: messages, ticks
//! and proposals in; messages to send and committed entries out; what it writes goes to
//! a [`Disk`] only when told the write is synced, and messages that promise a write
//! (votes, append acknowledgements) leave only then. A crash is dropping the value and
//! making it again from its `Disk`: whatever was written and not synced is gone.
//!
//! It also keeps the **lease** a replicated queue's leader delivers under
//! ([`Replica::serving`]): every message leaves with a [`Stamp`], the sender's clock
//! (its ticks) and, to the leader it follows, the latest clock reading it had from that
//! leader. A follower that heard from its leader at its reading `s` ignores votes for
//! `election` ticks from then (raft-rs's check-quorum lease); so while a majority
//! (itself included) echoed readings less than `lease` ticks old, with `lease` shorter
//! than every member's election timeout, no other member can be elected, and the leader
//! alone may hand out messages. A member made again after a crash has forgotten whom it
//! heard from, so it ignores votes for its first `lease` ticks.
//!
//! This is the unit replicated durable queues are built on (issue 25): today the
//! cluster simulation (`crate::sim::cluster`) drives it, with a replicated queue's
//! state machine (`replicated::machine`), to check the way Agora drives raft-rs
//! (asynchronous appends confirmed by a sync, entries applied once persisted, the
//! lease) against seeded faults before a broker depends on it.

use std::collections::BTreeMap;

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};
use raft::{Config, RawNode, StateRole};

use super::store::Store;

mod disk;
mod held;
mod lost;
mod snapshot;

pub(crate) use disk::{Disk, Writes};

/// Most bytes of entries one append carries (one entry more when the first alone is
/// larger): a cluster link's frames must be allowed this, plus the largest message.
pub(crate) const MAX_APPEND: usize = 256 << 10;

/// What travels with a message besides raft-rs's fields: the sender's clock when it
/// left, and the latest reading of the receiver's clock the sender had from it (when
/// the receiver is the leader the sender follows, in the same term).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub sent_at: u64,
    pub echo: Option<u64>,
}

/// What a member asks of its driver.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send this message to its `to`, with its stamp.
    Send(Message, Stamp),
    /// This entry is committed: apply it (`data` as proposed).
    Apply { index: u64, data: Vec<u8> },
    /// The leader sent the state applied up to `index` (this member was behind what
    /// it compacted): it replaces what was applied; entries after it follow.
    Restore { index: u64, data: Vec<u8> },
}

/// Why a proposal was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Only the leader takes proposals: a member that knows no leader refuses them (one
    /// that knows its leader forwards them).
    NotLeader(Option<u64>),
}

/// Writes handed out and not yet synced: what they are, and what waits on them.
#[derive(Default)]
struct Unsynced {
    /// The last `Ready` written.
    number: u64,
    hard_state: Option<HardState>,
    /// Entries and restored snapshots, in the order they were written.
    writes: Vec<Write>,
    /// Messages that may leave only once these writes are synced.
    held: Vec<Message>,
    /// Writes handed to a driver by `take_writes`, and whether the hard state was.
    handed: usize,
    state_handed: bool,
}

/// One write of a `Ready`.
enum Write {
    Entries(Vec<Entry>),
    Snapshot(Snapshot),
}

/// A member of one Raft group.
pub(crate) struct Replica {
    node: RawNode<Store>,
    disk: Disk,
    unsynced: Unsynced,
    /// Its clock: ticks since it was made.
    clock: u64,
    /// How many ticks a reading echoed by a follower keeps the lease.
    lease: u64,
    /// Members of the group.
    voters: usize,
    /// Its leader's latest clock reading it stepped a message of (leader, term, reading).
    from_leader: Option<(u64, u64, u64)>,
    /// As leader: each follower's latest echo of its clock, in `heard_term`.
    heard: BTreeMap<u64, u64>,
    heard_term: u64,
    /// The term of the last entry it applied.
    applied_term: u64,
    /// Whether `disk` keeps a copy of what is synced (the simulation's disk).
    mirror: bool,
    /// Its leader, whose link closed and who was not heard from since (`lost.rs`).
    lost: Option<u64>,
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
    /// `lease` (ticks) must be shorter than every member's election timeout.
    pub fn new(
        id: u64,
        voters: &[u64],
        disk: Disk,
        election: usize,
        lease: u64,
    ) -> Result<Replica, String> {
        Replica::with_learners(id, voters, &[], disk, election, lease)
    }

    /// As [`new`](Replica::new), in a group that also has `learners`: members that
    /// get the log and apply it but do not vote (nor count toward a majority).
    pub fn with_learners(
        id: u64,
        voters: &[u64],
        learners: &[u64],
        disk: Disk,
        election: usize,
        lease: u64,
    ) -> Result<Replica, String> {
        Replica::drawn(id, voters, learners, disk, (election, 1), lease)
    }

    /// As [`with_learners`](Replica::with_learners), its election timeout drawn again
    /// by raft-rs (from its own random source) at each election, from
    /// `election.0 .. election.0 + election.1` ticks: a live node's, so that two nodes
    /// that drew the same timeout do not split their votes election after election.
    pub fn drawn(
        id: u64,
        voters: &[u64],
        learners: &[u64],
        disk: Disk,
        election: (usize, usize),
        lease: u64,
    ) -> Result<Replica, String> {
        let (election, spread) = (election.0, election.1.max(1));
        if lease as usize >= election {
            return Err(format!(
                "a lease of {lease} ticks is not shorter than the election timeout ({election})"
            ));
        }
        let meta = disk.snapshot.get_metadata();
        let store = Store::new(
            disk.hard_state.clone(),
            ConfState::from((voters.to_vec(), learners.to_vec())),
            (meta.index, meta.term),
            disk.entries.clone(),
        );
        let config = Config {
            id,
            election_tick: election,
            min_election_tick: election,
            max_election_tick: election + spread,
            heartbeat_tick: 2.min(election.saturating_sub(1)).max(1),
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            // Entries an append may carry, in bytes (raft-rs's default, 0, is one entry
            // per message: a follower catching up would get its log one by one).
            max_size_per_msg: MAX_APPEND as u64,
            ..Config::default()
        };
        config.validate().map_err(|e| e.to_string())?;
        let node = RawNode::new(&config, store, &logger()).map_err(|e| e.to_string())?;
        Ok(Replica {
            node,
            disk,
            unsynced: Unsynced::default(),
            clock: 0,
            lease,
            voters: voters.len(),
            from_leader: None,
            heard: BTreeMap::new(),
            heard_term: 0,
            applied_term: 0,
            mirror: true,
            lost: None,
        })
    }

    /// Keeps no copy of what is synced (a driver with a real disk has it there): its
    /// [`disk`](Replica::disk) stays as it was made.
    pub fn unmirrored(mut self) -> Replica {
        self.mirror = false;
        self.disk = Disk::default();
        self
    }

    /// The member it knows leads (0: none).
    pub fn leader(&self) -> u64 {
        self.node.raft.leader_id
    }

    /// The log's last index, and the highest index known committed.
    pub fn indexes(&self) -> (u64, u64) {
        let log = &self.node.raft.raft_log;
        (log.last_index(), log.committed)
    }

    /// As leader: how far each other member's log matches its own.
    pub fn matched(&self) -> Vec<(u64, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let me = self.node.raft.id;
        let mut v: Vec<(u64, u64)> = self
            .node
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, p)| (*id, p.matched))
            .collect();
        v.sort();
        v
    }

    /// One tick of its clock.
    pub fn tick(&mut self) {
        self.clock += 1;
        self.node.tick();
        self.campaign_early();
    }

    /// A message from another member, with its stamp. One raft-rs refuses (from an
    /// unknown member, say) is dropped, as a lost message would be; so are votes asked
    /// for in its first `lease` ticks (a lease it gave before a crash may still run).
    pub fn step(&mut self, m: Message, stamp: Stamp) {
        use MessageType::*;
        let kind = m.get_msg_type();
        if self.clock < self.lease && matches!(kind, MsgRequestVote | MsgRequestPreVote) {
            return;
        }
        let (from, term) = (m.from, m.term);
        if self.is_leader() && term == self.term() {
            if self.heard_term != term {
                self.heard.clear();
                self.heard_term = term;
            }
            // Only a follower's answer to this leader's appends and heartbeats echoes
            // this leader's clock. A (pre-)vote's term is the one its sender asks for,
            // not its own: a member cut off from an earlier term may ask for this very
            // term, with an echo of the clock of this member's life before a restart
            // (ahead of its clock now); taken, that echo would keep the lease fresh
            // for as long as this member's clock takes to catch up.
            if let (Some(e), MsgAppendResponse | MsgHeartbeatResponse) = (stamp.echo, kind) {
                if e <= self.clock {
                    let h = self.heard.entry(from).or_insert(e);
                    *h = (*h).max(e);
                }
            }
        }
        let _ = self.node.step(m);
        let raft = &self.node.raft;
        if matches!(kind, MsgAppend | MsgHeartbeat | MsgSnapshot)
            && raft.state == StateRole::Follower
            && raft.leader_id == from
            && raft.term == term
        {
            let s = match self.from_leader {
                Some((l, t, s)) if l == from && t == term => s.max(stamp.sent_at),
                _ => stamp.sent_at,
            };
            self.from_leader = Some((from, term, s));
            if self.lost == Some(from) {
                self.lost = None;
            }
        }
    }

    /// Proposes `data` to be appended to the group's log: taken by the leader, or
    /// forwarded to it by a member that knows it (a forwarded proposal may be lost, or
    /// appended twice when the network duplicates it: what is applied says which).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), Refused> {
        let leader = self.node.raft.leader_id;
        if self.node.raft.state != StateRole::Leader && leader == 0 {
            return Err(Refused::NotLeader(None));
        }
        self.node
            .propose(vec![], data)
            .map_err(|_| Refused::NotLeader((leader != 0).then_some(leader)))
    }

    /// Whether it leads under a lease and has applied an entry of its own term (so
    /// everything committed before it is applied too): what a replicated queue's
    /// leader must be to hand out messages.
    pub fn serving(&self) -> bool {
        if !self.is_leader() || self.applied_term != self.term() || self.heard_term != self.term() {
            return false;
        }
        let fresh = self
            .heard
            .values()
            .filter(|&&e| self.clock.saturating_sub(e) < self.lease)
            .count();
        fresh + 1 > self.voters / 2
    }

    /// The stamp of a message leaving now.
    fn stamp(&self, m: &Message) -> Stamp {
        let echo = match self.from_leader {
            Some((l, t, s)) if l == m.to && t == self.term() => Some(s),
            _ => None,
        };
        Stamp {
            sent_at: self.clock,
            echo,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The term of the last entry applied here.
    pub fn applied_term(&self) -> u64 {
        self.applied_term
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
        for m in rd.take_messages() {
            let stamp = self.stamp(&m);
            out.push(Out::Send(m, stamp));
        }
        if !rd.snapshot().is_empty() {
            // Behind what the leader compacted: its state replaces this member's log.
            let snap = rd.snapshot().clone();
            let meta = snap.get_metadata();
            self.applied_term = meta.term;
            self.node.mut_store().restore(&snap);
            out.push(Out::Restore {
                index: meta.index,
                data: snap.data.to_vec(),
            });
            self.unsynced.writes.push(Write::Snapshot(snap));
            self.unsynced.state_handed = false;
            self.unsynced.hard_state = Some(self.node.store().hard_state.clone());
        }
        let mut applied = None;
        for e in rd.take_committed_entries() {
            applied = Some(e.index);
            self.applied_term = e.term;
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                out.push(Out::Apply {
                    index: e.index,
                    data: e.data.to_vec(),
                });
            }
        }
        if !rd.entries().is_empty() {
            // Written (the storage raft-rs reads is the page cache); on disk once synced.
            self.node.mut_store().append(rd.entries());
            self.unsynced
                .writes
                .push(Write::Entries(rd.entries().clone()));
        }
        if let Some(hs) = rd.hs() {
            self.node.mut_store().hard_state = hs.clone();
            self.unsynced.hard_state = Some(hs.clone());
            self.unsynced.state_handed = false;
        }
        self.unsynced.held.extend(rd.take_persisted_messages());
        self.unsynced.number = rd.number();
        self.node.advance_append_async(rd);
        if let Some(index) = applied {
            self.node.advance_apply_to(index);
        }
        out
    }

    /// The writes [`ready`](Replica::ready) made since the last call: what a driver
    /// with a real disk writes (then syncs, then calls [`synced`](Replica::synced)).
    pub fn take_writes(&mut self) -> Writes {
        let u = &mut self.unsynced;
        let mut w = Writes::default();
        for x in &u.writes[u.handed..] {
            match x {
                Write::Entries(e) => {
                    if let Some(first) = e.first() {
                        w.entries.retain(|x| x.index < first.index);
                    }
                    w.entries.extend_from_slice(e);
                }
                Write::Snapshot(s) => {
                    w.snapshot = Some(s.clone());
                    w.entries.clear();
                }
            }
        }
        u.handed = u.writes.len();
        w.state = match (&u.hard_state, u.state_handed) {
            (Some(hs), false) => Some(hs.clone()),
            _ => None,
        };
        if w.snapshot.is_some() {
            w.state = Some(self.node.store().hard_state.clone());
        }
        u.state_handed = true;
        w
    }

    /// The writes handed out so far are synced: they are on disk, and the messages
    /// that waited on them may leave.
    pub fn synced(&mut self) -> Vec<Out> {
        let u = std::mem::take(&mut self.unsynced);
        let mut restored = None;
        for w in u.writes {
            match w {
                Write::Entries(e) if self.mirror => self.disk.append(&e),
                Write::Entries(_) => {}
                Write::Snapshot(s) => {
                    restored = Some(s.get_metadata().index);
                    if self.mirror {
                        self.disk.restore(s);
                    }
                }
            }
        }
        if self.mirror {
            if let Some(hs) = u.hard_state {
                self.disk.hard_state = hs;
            }
        }
        if u.number > 0 {
            self.node.on_persist_ready(u.number);
        }
        if let Some(index) = restored {
            // Its state is what was restored (the snapshot is on disk now).
            if index > self.node.raft.raft_log.applied {
                self.node.advance_apply_to(index);
            }
        }
        held::latest_answers(u.held)
            .into_iter()
            .map(|m| {
                let stamp = self.stamp(&m);
                Out::Send(m, stamp)
            })
            .collect()
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
                        Out::Send(m, st) => mail.push((m, st)),
                        Out::Apply { data, .. } => applied[i].push(data),
                        Out::Restore { .. } => panic!("nothing was compacted"),
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for (m, st) in mail {
                rs[m.to as usize - 1].step(m, st);
            }
        }
    }

    #[test]
    fn a_group_elects_a_leader_and_commits_what_it_proposes_everywhere() {
        let mut rs: Vec<Replica> = (1..=3)
            .map(|id| {
                Replica::new(id, &[1, 2, 3], Disk::default(), 5 + 3 * id as usize, 3).unwrap()
            })
            .collect();
        assert_eq!(
            rs[0].propose(vec![0]),
            Err(Refused::NotLeader(None)),
            "no leader known yet"
        );
        let mut applied = vec![Vec::new(); 3];
        for _ in 0..20 {
            rs.iter_mut().for_each(Replica::tick);
            settle(&mut rs, &mut applied);
        }
        let leaders: Vec<usize> = (0..3).filter(|&i| rs[i].is_leader()).collect();
        assert_eq!(leaders.len(), 1);
        let l = leaders[0];
        // A follower forwards what it is given to its leader.
        let follower = (l + 1) % 3;
        assert_eq!(rs[follower].propose(vec![0]), Ok(()));
        settle(&mut rs, &mut applied);
        for v in 1..10u8 {
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
            .map(|id| {
                Replica::new(id, &[1, 2, 3], Disk::default(), 3 + 4 * id as usize, 2).unwrap()
            })
            .collect();
        // The others' first ticks, in which they ignore votes (they may have given a
        // lease before a crash).
        for r in &mut rs[1..] {
            r.tick();
            r.tick();
        }
        // Member 1 (the shortest timeout) times out and asks for pre-votes (a member
        // that does not lead sends only what its writes so far allow: after a sync).
        // Its peers answer.
        let mut pre = Vec::new();
        for _ in 0..8 {
            rs[0].tick();
            for o in rs[0].ready().into_iter().chain(rs[0].synced()) {
                if let Out::Send(m, st) = o {
                    pre.push((m, st));
                }
            }
        }
        assert!(pre
            .iter()
            .all(|(m, _)| m.get_msg_type() == MsgRequestPreVote));
        assert_eq!(pre.len(), 2, "{pre:?}");
        let mut answers = Vec::new();
        for (m, st) in pre {
            let to = m.to as usize - 1;
            rs[to].step(m, st);
            for o in rs[to].ready().into_iter().chain(rs[to].synced()) {
                if let Out::Send(m, st) = o {
                    answers.push((m, st));
                }
            }
        }
        for (m, st) in answers {
            rs[0].step(m, st);
        }
        // Now a candidate: its term and vote for itself are written, and the requests
        // for votes wait for the sync.
        let now: Vec<_> = rs[0].ready();
        assert!(rs[0].has_unsynced());
        assert!(
            now.iter()
                .all(|o| !matches!(o, Out::Send(m, _) if m.get_msg_type() == MsgRequestVote)),
            "{now:?}"
        );
        let term = rs[0].term();
        assert_eq!(
            rs[0].disk().hard_state.term,
            0,
            "not on disk before the sync"
        );
        // A crash here loses the unsynced term: made again from its disk, it is at 0.
        let again = Replica::new(1, &[1, 2, 3], rs[0].disk().clone(), 7, 2).unwrap();
        assert_eq!(again.term(), 0);
        let later = rs[0].synced();
        let votes = later
            .iter()
            .filter(|o| matches!(o, Out::Send(m, _) if m.get_msg_type() == MsgRequestVote))
            .count();
        assert_eq!(votes, 2);
        assert_eq!(rs[0].disk().hard_state.term, term);
        assert_eq!(rs[0].disk().hard_state.vote, 1);
    }

    /// One tick for every member, then messages delivered (those from or to `cut`
    /// dropped) and writes synced until nothing moves.
    pub(super) fn tick_all(rs: &mut [Replica], cut: Option<usize>) {
        rs.iter_mut().for_each(Replica::tick);
        for _ in 0..100 {
            let mut mail = Vec::new();
            for (i, r) in rs.iter_mut().enumerate() {
                let mut out = r.ready();
                out.extend(r.synced());
                for o in out {
                    if let Out::Send(m, st) = o {
                        if cut != Some(i) && cut != Some(m.to as usize - 1) {
                            mail.push((m, st));
                        }
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for (m, st) in mail {
                rs[m.to as usize - 1].step(m, st);
            }
        }
    }

    /// Three members (lease 5 ticks) after 30 ticks, and the index of their leader.
    fn elected() -> (Vec<Replica>, usize) {
        let mut rs: Vec<Replica> = (1..=3)
            .map(|id| {
                Replica::new(id, &[1, 2, 3], Disk::default(), 6 + 4 * id as usize, 5).unwrap()
            })
            .collect();
        for _ in 0..30 {
            tick_all(&mut rs, None);
        }
        let l = (0..3).find(|&i| rs[i].is_leader()).expect("a leader");
        (rs, l)
    }

    #[test]
    fn a_leader_cut_off_stops_serving_before_another_is_elected() {
        let (mut rs, l) = elected();
        assert!(rs[l].serving(), "a leader heard by its followers serves");
        assert!((0..3).filter(|&i| i != l).all(|i| !rs[i].serving()));
        let mut stopped = None;
        for t in 1..=60 {
            tick_all(&mut rs, Some(l));
            if !rs[l].serving() && stopped.is_none() {
                stopped = Some(t);
            }
            if let Some(n) = (0..3).find(|&i| i != l && rs[i].is_leader()) {
                let stopped = stopped.expect("the old leader stopped serving first");
                assert!(stopped <= 5, "within its lease: {stopped}");
                assert!(t > stopped, "{t} {stopped}");
                assert!(
                    rs[l].is_leader(),
                    "raft-rs still has it lead: the lease matters"
                );
                // The new one serves once its first entry is applied and it is heard.
                tick_all(&mut rs, Some(l));
                assert!(rs[n].serving());
                return;
            }
        }
        panic!("nobody else was elected");
    }

    #[test]
    fn only_answers_to_its_appends_echo_a_leaders_clock() {
        use raft::eraftpb::MessageType::*;
        let (mut rs, l) = elected();
        let (me, term) = (l as u64 + 1, rs[l].term());
        let other = if l == 0 { 2 } else { 1 };
        let from = |kind, echo| {
            let mut m = Message::default();
            m.set_msg_type(kind);
            m.from = other;
            m.to = me;
            m.term = term;
            let stamp = Stamp {
                sent_at: 1,
                echo: Some(echo),
            };
            (m, stamp)
        };
        // Cut off, a pre-vote for this term echoing a reading ahead of its clock (its
        // life before a restart), and an append's answer from the future, must not keep
        // it serving.
        let ahead = rs[l].clock + 1000;
        for _ in 0..10 {
            rs[l].tick();
            let (m, s) = from(MsgRequestPreVote, ahead);
            rs[l].step(m, s);
            let (m, s) = from(MsgHeartbeatResponse, ahead);
            rs[l].step(m, s);
        }
        assert!(rs[l].is_leader() && !rs[l].serving());
        // An answer to its heartbeat echoing its clock now does count.
        let (m, s) = from(MsgHeartbeatResponse, rs[l].clock);
        rs[l].step(m, s);
        assert!(rs[l].serving());
    }

    #[test]
    fn a_state_taken_earlier_compacts_the_log_to_its_own_index() {
        let (mut rs, l) = elected();
        for v in 0..10u8 {
            rs[l].propose(vec![v; 100]).unwrap();
            tick_all(&mut rs, None);
        }
        // The state is taken here, and encoded while the member goes on.
        let taken = rs[l].applied();
        let state = taken.to_string().into_bytes();
        for v in 10..20u8 {
            rs[l].propose(vec![v; 100]).unwrap();
            tick_all(&mut rs, None);
        }
        let applied = rs[l].applied();
        assert!(applied >= taken + 10, "{taken} {applied}");
        assert!(rs[l].may_compact());
        // Not yet applied: refused.
        assert!(rs[l]
            .compact_at(applied + 1, state.clone().into())
            .is_none());
        let w = rs[l]
            .compact_at(taken, state.clone().into())
            .expect("compacted");
        let snap = w.snapshot.as_ref().unwrap();
        assert_eq!(snap.get_metadata().index, taken);
        assert_eq!(&snap.data[..], &state[..]);
        // The entries after it are kept, in the log and in what is written anew.
        assert_eq!(w.entries.first().map(|e| e.index), Some(taken + 1));
        assert_eq!(w.entries.last().map(|e| e.index), Some(applied));
        assert_eq!(rs[l].compacted(), taken);
        assert_eq!(rs[l].disk().base(), taken, "mirrored");
        assert!(rs[l].log_bytes() >= 1000);
        // Not after the last compaction: refused.
        assert!(rs[l].compact_at(taken, state.into()).is_none());
        // And the group goes on from there.
        rs[l].propose(vec![99; 100]).unwrap();
        tick_all(&mut rs, None);
        assert_eq!(rs[l].applied(), applied + 1);
    }

    #[test]
    fn a_member_behind_the_compacted_log_gets_the_leaders_snapshot() {
        use raft::eraftpb::MessageType::MsgSnapshot;
        let (mut rs, l) = elected();
        let behind = (l + 1) % 3;
        for v in 0..30u8 {
            rs[l].propose(vec![v; 100]).unwrap();
            tick_all(&mut rs, Some(behind));
        }
        // Every member up compacts; a state is its applied index, as text.
        let state = |r: &Replica| r.applied().to_string().into_bytes();
        for i in (0..3).filter(|&i| i != behind) {
            let before = rs[i].log_bytes();
            let s = state(&rs[i]);
            let w = rs[i].compact(s).expect("compacted");
            let index = w.snapshot.as_ref().unwrap().get_metadata().index;
            assert_eq!(index, rs[i].applied());
            assert!(w.entries.is_empty() && w.state.is_some());
            assert!(before >= 3000 && rs[i].log_bytes() == 0, "{before}");
            assert_eq!(rs[i].disk().base(), index, "mirrored");
            let s = state(&rs[i]);
            assert!(rs[i].compact(s).is_none(), "nothing new");
        }
        let index = rs[l].applied();
        // Healed: the leader wants a snapshot for it, is offered one, and sends it.
        let mut restored = Vec::new();
        let mut sent = 0;
        for _ in 0..30 {
            rs.iter_mut().for_each(Replica::tick);
            for _ in 0..100 {
                let mut mail = Vec::new();
                for (i, r) in rs.iter_mut().enumerate() {
                    if r.snapshot_wanted() {
                        let s = state(r);
                        r.offer_snapshot(s);
                    }
                    let mut out = r.ready();
                    out.extend(r.synced());
                    for o in out {
                        match o {
                            Out::Send(m, st) => {
                                if m.get_msg_type() == MsgSnapshot {
                                    sent += 1;
                                    r.report_snapshot(m.to, true);
                                }
                                mail.push((m, st));
                            }
                            Out::Restore { index, data } => restored.push((i, index, data)),
                            Out::Apply { .. } => {}
                        }
                    }
                }
                if mail.is_empty() {
                    break;
                }
                for (m, st) in mail {
                    rs[m.to as usize - 1].step(m, st);
                }
            }
        }
        assert_eq!(sent, 1);
        assert_eq!(
            restored,
            vec![(behind, index, index.to_string().into_bytes())]
        );
        assert_eq!(rs[behind].applied(), index);
        // It is in step again: what comes next is applied there too.
        rs[l].propose(b"after".to_vec()).unwrap();
        tick_all(&mut rs, None);
        assert_eq!(rs[behind].applied(), rs[l].applied());
        // Made again from its disk, it starts from the snapshot.
        let d = rs[behind].disk().clone();
        assert_eq!(d.base(), index);
        let again = Replica::new(behind as u64 + 1, &[1, 2, 3], d, 20, 5).unwrap();
        assert_eq!(again.applied(), index);
    }

    #[test]
    fn a_member_ignores_votes_for_its_first_lease_ticks() {
        use raft::eraftpb::MessageType::MsgRequestVote;
        let mut r = Replica::new(2, &[1, 2, 3], Disk::default(), 10, 4).unwrap();
        let ask = || {
            let mut m = Message::default();
            m.set_msg_type(MsgRequestVote);
            m.from = 1;
            m.to = 2;
            m.term = 5;
            m
        };
        let answered = |r: &mut Replica| {
            let mut out = r.ready();
            out.extend(r.synced());
            out.iter()
                .any(|o| matches!(o, Out::Send(m, _) if m.to == 1))
        };
        for _ in 0..3 {
            r.tick();
        }
        r.step(ask(), Stamp::default());
        assert!(!answered(&mut r), "ignored at tick 3");
        assert_eq!(r.term(), 0);
        r.tick();
        r.step(ask(), Stamp::default());
        assert!(answered(&mut r), "answered at tick 4");
        assert_eq!(r.term(), 5);
    }
}
