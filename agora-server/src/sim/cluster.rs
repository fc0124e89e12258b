//! The cluster simulation: a replicated queue on three members of one Raft group
//! ([`Replica`](crate::replicated::replica::Replica), raft-rs driven as Agora drives it,
//! each applying the log to its [`Machine`]), a simulated network that drops, delays
//! (and so reorders), duplicates and partitions their messages, writes synced at seeded
//! moments, and members that crash (losing what they wrote and had not synced, and their
//! consumer's deliveries) and restart from their disks. A crash or a cut closes the
//! member's connections, and connections between running members also break now and
//! then while their messages go on: each side hears it, as a broker's link ending, and a
//! follower whose leader's connection closed campaigns early
//! ([`Replica::link_lost`]); the invariant that no message is held by two consumers
//! checks that it never does so while the leader's lease may run.
//!
//! Publishers on every member propose messages (a follower forwards its proposal to the
//! leader); one is **confirmed** once the member that took it applied it (committed by
//! a majority, on their disks): what a broker would answer `PUBACK` to. Each member has
//! a consumer; the member serving (leading under its lease) hands it messages, which it
//! acknowledges or gives back a few steps later. A member that does not serve follows
//! the leader it knows over a link, as one more consumer there, and hands its own
//! consumer what comes (`cluster/relay.rs`).
//!
//! Checked after every step: at most one leader per term; every member applies the
//! same entry at each index (one committed log); no message is handed to a consumer
//! while another one holds it (a delivery is held until it is acknowledged, given back,
//! or made void when its member stops serving or crashes). At the end the network heals,
//! every member comes back, and time runs until the queue is empty everywhere: every
//! confirmed message must have been delivered (at least once, across every failover)
//! (or expired: it waited `TTL` steps undelivered) and acknowledged or moved to the
//! dead-letter queue (a poison message, which every consumer gives back, only that way,
//! once a serving member handed it out `MAX_DELIVERIES` times), and all members must
//! have applied one log.
//!
//! As the broker's simulation, a seed replays exactly: raft-rs's only random draw, its
//! election timeout, is given by the caller (each member's drawn from the seed).

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::Message;

use super::{Failure, Rng};
use relay::{Link, Relayed, LINK};

mod apply;
mod clients;
mod end;
mod relay;
use crate::replicated::machine::{compaction_due, Applied, Machine, Op};
use crate::replicated::replica::{Disk, Out, Replica, Stamp};

/// Members of the simulated group.
const MEMBERS: u64 = 3;
/// Steps of quiet (no faults, everything delivered) at the end, at most: it ends once
/// the queue is empty everywhere.
const QUIET: u64 = 50_000;
/// The leader's lease, in ticks: shorter than the shortest election timeout (6).
const LEASE: u64 = 5;
/// Deliveries a consumer holds at once.
const PREFETCH: usize = 3;
/// Steps a message may wait in the queue (not out with a consumer) before the serving
/// member moves it to the dead-letter queue (as a message TTL, counted from the step it
/// was published at).
const TTL: u64 = 400;
/// A serving member hands a message out this many times at most, then moves it to the
/// dead-letter queue (as `--max-deliveries`).
const MAX_DELIVERIES: u32 = 4;

/// A poison message: every consumer gives it back, so only the dead-letter queue takes
/// it out of the queue.
fn poison(value: u64) -> bool {
    value % 97 == 13 && value != u64::MAX
}
/// Bytes of log entries at which a member compacts (a hundred messages or so, so that
/// members fall behind compactions and get snapshots).
const COMPACT: usize = 2_000;

/// What a cluster run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub steps: u64,
    pub proposed: u64,
    pub confirmed: u64,
    /// Leaders elected (term by term).
    pub leaders: u64,
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub crashes: u64,
    pub partitions: u64,
    /// Connections between two running members that broke (the messages went on).
    pub broken_links: u64,
    /// Proposals refused: no leader known.
    pub refused: u64,
    /// Proposals appended twice (a forwarded one duplicated), enqueued once.
    pub duplicates: u64,
    /// Messages handed to consumers, and of those, ones handed out before.
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub nacked: u64,
    /// Deliveries made void: their member stopped serving or crashed.
    pub voided: u64,
    /// Of the deliveries, those handed to a consumer through its member's relay; and
    /// the links members made to a leader.
    pub relayed: u64,
    pub links: u64,
    /// Logs compacted, snapshots sent by leaders, and restored by members behind.
    pub compactions: u64,
    pub snapshots_sent: u64,
    pub restores: u64,
    /// Messages moved to the dead-letter queue: delivered `MAX_DELIVERIES` times by one
    /// serving member, or rejected by a consumer.
    pub dead_lettered: u64,
    /// Of those, messages that waited `TTL` steps undelivered (message TTL).
    pub expired: u64,
}

struct Member {
    replica: Option<Replica>,
    /// Its disk while it is down.
    disk: Disk,
    /// What it applied, by index (rebuilt from the log after a restart, as its
    /// machine is).
    applied: BTreeMap<u64, Vec<u8>>,
    machine: Machine,
    /// Its publishers' proposals, not yet applied (unconfirmed).
    proposed: BTreeSet<u64>,
    /// Its consumer's deliveries: (id, value, step it answers at).
    holding: Vec<(u64, u64, u64)>,
    /// What its consumer gets from the leader while it does not serve.
    relayed: Relayed,
    /// While it serves: how often it handed out each message (to a consumer or a
    /// link), as the broker counts toward `--max-deliveries`.
    counts: BTreeMap<u64, u32>,
    /// The state taken for a compaction, as the broker's task takes it and a blocking
    /// thread encodes it: (index, image, step it is encoded at); the member goes on
    /// meanwhile.
    compacting: Option<(u64, Vec<u8>, u64)>,
}

struct Sim {
    rng: Rng,
    step: u64,
    members: Vec<Member>,
    /// In flight: (deliver at step, from, message).
    wire: Vec<(u64, u64, Message, Stamp)>,
    /// Members cut off from the others until the given step.
    cut: BTreeMap<u64, u64>,
    /// The one committed log: what was applied at each index, by whoever first.
    log: BTreeMap<u64, Vec<u8>>,
    leaders: BTreeMap<u64, u64>,
    confirmed: BTreeSet<u64>,
    /// Which member's consumer holds each message out.
    holders: BTreeMap<u64, u64>,
    /// Values handed to a consumer at least once.
    delivered: BTreeSet<u64>,
    /// Values moved to the dead-letter queue, and of those, ones that expired.
    dead: BTreeSet<u64>,
    expired: BTreeSet<u64>,
    /// The step each value was first published at (its `Enqueue`'s time).
    born: BTreeMap<u64, u64>,
    /// `Return`s proposed for each message (it came back from a consumer).
    gave_back: BTreeMap<u64, u32>,
    next_value: u64,
    report: Report,
    trail: Vec<String>,
    faults: bool,
    /// Members' links to the leaders they follow, and the last link's epoch.
    links: Vec<Link>,
    epochs: u64,
}

/// A delivery came back from a consumer: its member (which serves) proposes the
/// `Return` (one more toward the delivery limit), counted in `gave_back`, so that no
/// member may count more returns than were proposed.
fn give_back(
    r: &mut Replica,
    gave_back: &mut BTreeMap<u64, u32>,
    mid: u64,
) -> Result<(), crate::replicated::replica::Refused> {
    r.propose(Op::Return { id: mid }.encode())?;
    *gave_back.entry(mid).or_insert(0) += 1;
    Ok(())
}

fn election(rng: &mut Rng, id: u64) -> usize {
    // Distinct per member (6..=11, 13..=18, 20..=25 ticks), so a split vote resolves.
    (6 + 7 * (id - 1) + rng.below(6)) as usize
}

impl Sim {
    fn note(&mut self, what: String) {
        if self.trail.len() == 24 {
            self.trail.remove(0);
        }
        self.trail.push(format!("step {}: {what}", self.step));
    }

    fn fail(&self, seed: u64, what: String) -> Failure {
        failure(seed, self.step, what, self.trail.clone())
    }

    /// Member `id`'s connections to the others closed (it crashed, or was cut off):
    /// each side hears it, as a broker's link ending (a follower whose leader it was
    /// campaigns early).
    fn connections_closed(&mut self, id: u64) {
        for other in 1..=MEMBERS {
            if other == id {
                continue;
            }
            if let Some(r) = self.members[other as usize - 1].replica.as_mut() {
                r.link_lost(id);
            }
            if let Some(r) = self.members[id as usize - 1].replica.as_mut() {
                r.link_lost(other);
            }
        }
    }

    fn reachable(&self, a: u64, b: u64) -> bool {
        !self.faults || (!self.cut.contains_key(&a) && !self.cut.contains_key(&b))
    }

    fn up(&self, id: u64) -> bool {
        self.members[id as usize - 1].replica.is_some()
    }

    /// One step: faults, time, deliveries, proposals, readies and syncs.
    fn tick(&mut self) -> Result<(), String> {
        self.step += 1;
        let step = self.step;
        if self.faults {
            // A crash: everything not synced is lost.
            let down = (1..=MEMBERS).filter(|&i| !self.up(i)).count();
            if down == 0 && self.rng.chance(1) && self.rng.chance(20) {
                let id = 1 + self.rng.below(MEMBERS);
                let m = &mut self.members[id as usize - 1];
                let r = m.replica.take().expect("up");
                m.disk = r.disk().clone();
                m.proposed.clear();
                m.compacting = None;
                for (mid, ..) in m.holding.drain(..) {
                    self.holders.remove(&mid);
                    self.report.voided += 1;
                }
                for (_, mid, ..) in std::mem::take(&mut m.relayed).holding {
                    self.holders.remove(&mid);
                    self.report.voided += 1;
                }
                self.end_links_of(id);
                self.connections_closed(id);
                self.report.crashes += 1;
                self.note(format!("member {id} crashes"));
            }
            // A restart of a member that is down.
            for id in 1..=MEMBERS {
                if !self.up(id) && self.rng.chance(2) {
                    let e = election(&mut self.rng, id);
                    let m = &mut self.members[id as usize - 1];
                    let voters: Vec<u64> = (1..=MEMBERS).collect();
                    m.replica = Some(Replica::new(id, &voters, m.disk.clone(), e, LEASE)?);
                    m.applied.clear();
                    m.machine = machine_of(&m.disk)?;
                    self.note(format!("member {id} restarts from its disk"));
                }
            }
            // A connection between two members that breaks while both run (and is made
            // again at once): each hears it, the messages go on.
            if self.rng.chance(1) && self.rng.chance(10) {
                let a = 1 + self.rng.below(MEMBERS);
                let b = 1 + (a + self.rng.below(MEMBERS - 1)) % MEMBERS;
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(r) = self.members[x as usize - 1].replica.as_mut() {
                        r.link_lost(y);
                    }
                }
                self.report.broken_links += 1;
            }
            // A partition: one member cut off for a while.
            if self.cut.is_empty() && self.rng.chance(1) && self.rng.chance(30) {
                let id = 1 + self.rng.below(MEMBERS);
                let until = step + 20 + self.rng.below(200);
                self.cut.insert(id, until);
                self.connections_closed(id);
                self.report.partitions += 1;
                self.note(format!("member {id} cut off until step {until}"));
            }
            let healed: Vec<u64> = self
                .cut
                .iter()
                .filter(|(_, until)| **until <= step)
                .map(|(id, _)| *id)
                .collect();
            self.cut.retain(|_, until| *until > step);
            for id in healed {
                self.end_links_of(id);
            }
        }
        // Time.
        if step.is_multiple_of(2) {
            for m in self.members.iter_mut() {
                if let Some(r) = m.replica.as_mut() {
                    r.tick();
                }
            }
        }
        // Deliveries due.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wire)
            .into_iter()
            .partition(|(at, ..)| *at <= step);
        self.wire = later;
        for (_, from, m, stamp) in due {
            let to = m.to;
            if !self.reachable(from, to) {
                self.report.dropped += 1;
                continue;
            }
            if let Some(r) = self.members[to as usize - 1].replica.as_mut() {
                r.step(m, stamp);
            }
        }
        // A publish, on any member.
        if self.faults && self.rng.chance(30) {
            let value = self.next_value;
            self.next_value += 1;
            let id = 1 + self.rng.below(MEMBERS);
            self.publish(id, value);
        }
        // Readies, and syncs now and then (always, when quiet).
        for id in 1..=MEMBERS {
            let out = match self.members[id as usize - 1].replica.as_mut() {
                Some(r) => r.ready(),
                None => continue,
            };
            self.handle(id, out)?;
            let sync = !self.faults || self.rng.chance(50);
            let out = match self.members[id as usize - 1].replica.as_mut() {
                Some(r) if sync => r.synced(),
                _ => continue,
            };
            self.handle(id, out)?;
            self.snapshots(id);
        }
        for id in 1..=MEMBERS {
            self.consume(id)?;
        }
        self.relays()?;
        // At most one leader per term.
        for id in 1..=MEMBERS {
            if let Some(r) = self.members[id as usize - 1].replica.as_ref() {
                if r.is_leader() {
                    match self.leaders.insert(r.term(), id) {
                        Some(other) if other != id => {
                            return Err(format!(
                                "members {other} and {id} both lead term {}",
                                r.term()
                            ))
                        }
                        Some(_) => {}
                        None => {
                            self.report.leaders += 1;
                            self.note(format!("member {id} leads term {}", r.term()));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A member's machine as its disk has it: its snapshot's state (the entries after it
/// are applied again as its replica hands them out).
fn machine_of(disk: &Disk) -> Result<Machine, String> {
    let mut m = Machine::default();
    if disk.base() > 0 {
        m.restore(&disk.snapshot.data)
            .map_err(|e| format!("a snapshot on disk: {e}"))?;
    }
    Ok(m)
}

fn failure(seed: u64, op: u64, what: String, trail: Vec<String>) -> Failure {
    Failure {
        seed,
        op,
        what,
        trail,
        cluster: true,
    }
}

/// Runs one seeded cluster simulation of `steps` steps, then the quiet end. A panic in
/// raft-rs (its own checks of what it was fed) is a failure of the run, with its seed.
pub fn run(seed: u64, steps: u64) -> Result<Report, Failure> {
    std::panic::catch_unwind(|| run_seed(seed, steps)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".to_owned());
        Err(failure(
            seed,
            steps,
            format!("raft-rs panicked: {what}"),
            Vec::new(),
        ))
    })
}

fn run_seed(seed: u64, steps: u64) -> Result<Report, Failure> {
    let mut rng = Rng::new(seed);
    let voters: Vec<u64> = (1..=MEMBERS).collect();
    let mut members = Vec::new();
    for id in 1..=MEMBERS {
        let e = election(&mut rng, id);
        let r = Replica::new(id, &voters, Disk::default(), e, LEASE)
            .map_err(|what| failure(seed, 0, what, Vec::new()))?;
        members.push(Member {
            replica: Some(r),
            disk: Disk::default(),
            applied: BTreeMap::new(),
            machine: Machine::default(),
            proposed: BTreeSet::new(),
            holding: Vec::new(),
            relayed: Relayed::default(),
            counts: BTreeMap::new(),
            compacting: None,
        });
    }
    let mut sim = Sim {
        rng,
        step: 0,
        members,
        wire: Vec::new(),
        cut: BTreeMap::new(),
        log: BTreeMap::new(),
        leaders: BTreeMap::new(),
        confirmed: BTreeSet::new(),
        holders: BTreeMap::new(),
        delivered: BTreeSet::new(),
        dead: BTreeSet::new(),
        expired: BTreeSet::new(),
        born: BTreeMap::new(),
        gave_back: BTreeMap::new(),
        next_value: 0,
        report: Report::default(),
        trail: Vec::new(),
        faults: true,
        links: Vec::new(),
        epochs: 0,
    };
    for _ in 0..steps {
        sim.tick().map_err(|what| sim.fail(seed, what))?;
    }
    sim.end(seed, steps, &voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_seeds_keep_every_confirmed_message_and_one_log() {
        let mut all = Report::default();
        // Ten seeds among which some expire messages (a queue left without a leader
        // long enough: rarer since followers campaign as soon as their leader's link
        // closes).
        for seed in 15..=24 {
            let r = run(seed, 5_000).unwrap_or_else(|f| panic!("{f}"));
            all.compactions += r.compactions;
            all.snapshots_sent += r.snapshots_sent;
            all.restores += r.restores;
            assert!(r.confirmed > 0 && r.leaders > 1, "{r:?}");
            assert!(r.crashes > 0 || r.partitions > 0, "{r:?}");
            assert!(r.acked >= r.confirmed && r.nacked > 0, "{r:?}");
            assert!(r.relayed > 0 && r.links > 1, "{r:?}");
            all.dead_lettered += r.dead_lettered;
            all.expired += r.expired;
            all.broken_links += r.broken_links;
        }
        // Ten seeds compact, and send and restore snapshots, and dead-letter.
        assert!(
            all.compactions > 0 && all.snapshots_sent > 0 && all.restores > 0,
            "{all:?}"
        );
        assert!(
            all.dead_lettered > all.expired && all.expired > 0,
            "{all:?}"
        );
        assert!(all.broken_links > 0, "{all:?}");
    }
}
