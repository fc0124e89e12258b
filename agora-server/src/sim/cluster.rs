//! The cluster simulation: three members of one Raft group
//! ([`Replica`](crate::cluster::replica::Replica), raft-rs driven as Agora drives it),
//! a simulated network that drops, delays (and so reorders), duplicates and partitions
//! their messages, writes synced at seeded moments, and members that crash (losing
//! what they wrote and had not synced) and restart from their disks.
//!
//! A proposal counts as **confirmed** once the member that took it as leader applied it
//! (committed by a majority, on their disks): what a broker would answer `PUBACK` to.
//! Checked after every step: at most one leader per term; every member applies the
//! same entry at each index (one committed log). At the end the network heals, every
//! member comes back and time runs until all have applied everything: each confirmed
//! proposal must be there, once.
//!
//! As the broker's simulation, a seed replays exactly: raft-rs's only random draw, its
//! election timeout, is given by the caller (each member's drawn from the seed).

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::Message;

use super::{Failure, Rng};
use crate::cluster::replica::{Disk, Out, Replica};

/// Members of the simulated group.
const MEMBERS: u64 = 3;
/// Steps of quiet (no faults, everything delivered) at the end.
const QUIET: u64 = 2_000;

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
    /// Proposals refused: not the leader.
    pub refused: u64,
}

struct Member {
    replica: Option<Replica>,
    /// Its disk while it is down.
    disk: Disk,
    /// What it applied, by index (its state machine; rebuilt from the log after a
    /// restart).
    applied: BTreeMap<u64, Vec<u8>>,
    /// Proposals it took as leader, not yet applied: (value, index unknown).
    proposed: BTreeSet<u64>,
}

struct Sim {
    rng: Rng,
    step: u64,
    members: Vec<Member>,
    /// In flight: (deliver at step, from, message).
    wire: Vec<(u64, u64, Message)>,
    /// Members cut off from the others until the given step.
    cut: BTreeMap<u64, u64>,
    /// The one committed log: what was applied at each index, by whoever first.
    log: BTreeMap<u64, Vec<u8>>,
    leaders: BTreeMap<u64, u64>,
    confirmed: BTreeSet<u64>,
    next_value: u64,
    report: Report,
    trail: Vec<String>,
    faults: bool,
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

    fn reachable(&self, a: u64, b: u64) -> bool {
        !self.faults || (!self.cut.contains_key(&a) && !self.cut.contains_key(&b))
    }

    /// Puts `out` on the wire or into the member's state machine.
    fn handle(&mut self, id: u64, out: Vec<Out>) -> Result<(), String> {
        for o in out {
            match o {
                Out::Send(m) => {
                    self.report.sent += 1;
                    if self.faults && self.rng.chance(5) {
                        self.report.dropped += 1;
                        continue;
                    }
                    let delay = if self.faults { self.rng.below(8) } else { 0 };
                    if self.faults && self.rng.chance(2) {
                        self.report.duplicated += 1;
                        let later = self.step + delay + self.rng.below(8);
                        self.wire.push((later, id, m.clone()));
                    }
                    self.wire.push((self.step + delay, id, m));
                }
                Out::Apply { index, data } => {
                    match self.log.get(&index) {
                        Some(d) if *d != data => {
                            return Err(format!(
                                "member {id} applied {data:?} at {index}, where {d:?} was applied"
                            ))
                        }
                        Some(_) => {}
                        None => {
                            self.log.insert(index, data.clone());
                        }
                    }
                    let m = &mut self.members[id as usize - 1];
                    if let Some(prev) = m.applied.insert(index, data.clone()) {
                        return Err(format!(
                            "member {id} applied index {index} twice ({prev:?})"
                        ));
                    }
                    let value = u64::from_le_bytes(data[..8].try_into().map_err(|_| "8 bytes")?);
                    if m.proposed.remove(&value) {
                        // Its leader applied it: the client would get its confirm now.
                        self.confirmed.insert(value);
                        self.report.confirmed += 1;
                    }
                }
            }
        }
        Ok(())
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
                self.report.crashes += 1;
                self.note(format!("member {id} crashes"));
            }
            // A restart of a member that is down.
            for id in 1..=MEMBERS {
                if !self.up(id) && self.rng.chance(2) {
                    let e = election(&mut self.rng, id);
                    let m = &mut self.members[id as usize - 1];
                    let voters: Vec<u64> = (1..=MEMBERS).collect();
                    m.replica = Some(Replica::new(id, &voters, m.disk.clone(), e)?);
                    m.applied.clear();
                    self.note(format!("member {id} restarts from its disk"));
                }
            }
            // A partition: one member cut off for a while.
            if self.cut.is_empty() && self.rng.chance(1) && self.rng.chance(30) {
                let id = 1 + self.rng.below(MEMBERS);
                let until = step + 20 + self.rng.below(200);
                self.cut.insert(id, until);
                self.report.partitions += 1;
                self.note(format!("member {id} cut off until step {until}"));
            }
            self.cut.retain(|_, until| *until > step);
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
        for (_, from, m) in due {
            let to = m.to;
            if !self.reachable(from, to) {
                self.report.dropped += 1;
                continue;
            }
            if let Some(r) = self.members[to as usize - 1].replica.as_mut() {
                r.step(m);
            }
        }
        // A proposal, to whoever leads.
        if self.faults && self.rng.chance(30) {
            let value = self.next_value;
            self.next_value += 1;
            let id = 1 + self.rng.below(MEMBERS);
            let m = &mut self.members[id as usize - 1];
            if let Some(r) = m.replica.as_mut() {
                let mut data = value.to_le_bytes().to_vec();
                data.extend_from_slice(b" a message");
                match r.propose(data) {
                    Ok(()) => {
                        m.proposed.insert(value);
                        self.report.proposed += 1;
                    }
                    Err(_) => self.report.refused += 1,
                }
            }
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
        }
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
        let r = Replica::new(id, &voters, Disk::default(), e)
            .map_err(|what| failure(seed, 0, what, Vec::new()))?;
        members.push(Member {
            replica: Some(r),
            disk: Disk::default(),
            applied: BTreeMap::new(),
            proposed: BTreeSet::new(),
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
        next_value: 0,
        report: Report::default(),
        trail: Vec::new(),
        faults: true,
    };
    for _ in 0..steps {
        sim.tick().map_err(|what| sim.fail(seed, what))?;
    }
    // The end: every member back, nothing lost on the wire, time until all agree.
    sim.faults = false;
    sim.cut.clear();
    for id in 1..=MEMBERS {
        if !sim.up(id) {
            let e = election(&mut sim.rng, id);
            let m = &mut sim.members[id as usize - 1];
            m.replica = Some(
                Replica::new(id, &voters, m.disk.clone(), e)
                    .map_err(|what| failure(seed, steps, what, Vec::new()))?,
            );
            m.applied.clear();
        }
    }
    // A last proposal once a leader is there, so that everything before it commits
    // (a leader commits its predecessors' entries only with one of its own term).
    let mut sealed = false;
    for _ in 0..QUIET {
        sim.tick().map_err(|what| sim.fail(seed, what))?;
        if !sealed {
            if let Some(m) = sim
                .members
                .iter_mut()
                .find(|m| m.replica.as_ref().is_some_and(Replica::is_leader))
            {
                let value = u64::MAX;
                let mut data = value.to_le_bytes().to_vec();
                data.extend_from_slice(b" the end");
                if m.replica.as_mut().expect("up").propose(data).is_ok() {
                    sealed = true;
                }
            }
        }
    }
    let step = sim.step;
    let fail = |what: String| failure(seed, step, what, sim.trail.clone());
    if !sealed {
        return Err(fail("no leader in the quiet end".to_owned()));
    }
    for (i, m) in sim.members.iter().enumerate() {
        let values: Vec<u64> = m
            .applied
            .values()
            .map(|d| u64::from_le_bytes(d[..8].try_into().expect("8 bytes")))
            .collect();
        if values.last() != Some(&u64::MAX) {
            return Err(fail(format!(
                "member {} did not apply everything in the quiet end ({} entries)",
                i + 1,
                values.len()
            )));
        }
        let set: BTreeSet<u64> = values.iter().copied().collect();
        if set.len() != values.len() {
            return Err(fail(format!("member {} applied a value twice", i + 1)));
        }
        if let Some(lost) = sim.confirmed.iter().find(|v| !set.contains(v)) {
            return Err(fail(format!(
                "confirmed proposal {lost} is not in member {}'s log",
                i + 1
            )));
        }
        if m.applied != sim.members[0].applied {
            return Err(fail(format!(
                "members 1 and {} applied different logs",
                i + 1
            )));
        }
    }
    sim.report.steps = sim.step;
    Ok(sim.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_seeds_keep_every_confirmed_proposal_and_one_log() {
        for seed in 1..=10 {
            let r = run(seed, 5_000).unwrap_or_else(|f| panic!("{f}"));
            assert!(r.confirmed > 0 && r.leaders > 1, "{r:?}");
            assert!(r.crashes > 0 || r.partitions > 0, "{r:?}");
        }
    }
}
