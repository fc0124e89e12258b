//! The end of a cluster simulation's run: the network heals, every member comes back,
//! and time runs (at most [`QUIET`] steps) until the queue is empty everywhere; then
//! what must hold of the whole run: every confirmed message delivered (or expired),
//! every poison one dead-lettered, and one log applied by all.

use super::*;

impl Sim {
    /// Runs the quiet end and the final checks of seed `seed`'s run of `steps` steps.
    pub(super) fn end(mut self, seed: u64, steps: u64, voters: &[u64]) -> Result<Report, Failure> {
        // The end: every member back, nothing lost on the wire, time until all agree.
        self.faults = false;
        let cut: Vec<u64> = self.cut.keys().copied().collect();
        self.cut.clear();
        for id in cut {
            self.end_links_of(id);
        }
        for id in 1..=MEMBERS {
            if !self.up(id) {
                let e = election(&mut self.rng, id);
                let m = &mut self.members[id as usize - 1];
                m.replica = Some(
                    Replica::new(id, voters, m.disk.clone(), e, LEASE)
                        .map_err(|what| failure(seed, steps, what, Vec::new()))?,
                );
                m.applied.clear();
                m.machine =
                    machine_of(&m.disk).map_err(|what| failure(seed, steps, what, Vec::new()))?;
            }
        }
        // A last message once a leader is there, so that everything before it commits (a
        // leader commits its predecessors' entries only with one of its own term); proposed
        // again now and then until it is confirmed, as a publisher would (the first leader
        // found may be one about to learn it was deposed).
        let mut sealed = false;
        for i in 0..QUIET {
            self.tick().map_err(|what| self.fail(seed, what))?;
            if sealed
                && self.delivered.contains(&u64::MAX)
                && self.members.iter().all(|m| m.machine.depth() == 0)
            {
                break;
            }
            if !self.confirmed.contains(&u64::MAX) && i % 100 == 0 {
                if let Some(id) = (1..=MEMBERS).find(|&id| {
                    self.members[id as usize - 1]
                        .replica
                        .as_ref()
                        .is_some_and(Replica::is_leader)
                }) {
                    sealed |= self.publish(id, u64::MAX);
                }
            }
        }
        let step = self.step;
        let fail = |what: String| failure(seed, step, what, self.trail.clone());
        if !sealed {
            return Err(fail("no leader in the quiet end".to_owned()));
        }
        if !self.delivered.contains(&u64::MAX) {
            let members: Vec<String> = self
                .members
                .iter()
                .map(|m| {
                    let r = m.replica.as_ref().expect("up");
                    format!(
                        "leader {} serving {} term {} depth {} applied {}",
                        r.is_leader(),
                        r.serving(),
                        r.term(),
                        m.machine.depth(),
                        m.applied.len()
                    )
                })
                .collect();
            return Err(fail(format!(
                "the last message was never delivered ({})",
                members.join("; ")
            )));
        }
        // Delivered, or expired into the dead-letter queue before it could be.
        if let Some(lost) = self
            .confirmed
            .iter()
            .find(|v| !self.delivered.contains(v) && !self.expired.contains(v))
        {
            return Err(fail(format!(
                "confirmed message {lost} was never delivered, nor expired"
            )));
        }
        // A poison message leaves only through the dead-letter queue; with the queue
        // empty, each confirmed one is there.
        if let Some(stuck) = self
            .confirmed
            .iter()
            .find(|&&v| poison(v) && !self.dead.contains(&v))
        {
            return Err(fail(format!(
                "confirmed poison message {stuck} left the queue, not to the dead-letter queue"
            )));
        }
        for (i, m) in self.members.iter().enumerate() {
            if m.machine.depth() != 0 {
                return Err(fail(format!(
                    "member {}'s queue still holds {} messages at the end",
                    i + 1,
                    m.machine.depth()
                )));
            }
            // Each applied the one committed log (checked at every entry); entries a
            // snapshot or a restart skipped are in the state, which must be the same.
            let last = |m: &Member| m.applied.last_key_value().map(|(k, _)| *k);
            if last(m) != last(&self.members[0])
                || m.machine.image() != self.members[0].machine.image()
            {
                return Err(fail(format!(
                    "members 1 and {} applied different logs",
                    i + 1
                )));
            }
        }
        self.report.steps = self.step;
        Ok(self.report)
    }
}
