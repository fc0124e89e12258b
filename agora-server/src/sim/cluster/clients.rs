//! The members' own clients: a publisher proposing values, and a consumer that the
//! member hands messages to while it serves.

use super::*;

impl Sim {
    /// Member `id`'s publisher proposes `value`.
    pub(super) fn publish(&mut self, id: u64, value: u64) -> bool {
        let m = &mut self.members[id as usize - 1];
        let Some(r) = m.replica.as_mut() else {
            return false;
        };
        let op = Op::Enqueue {
            origin: id,
            seq: value,
            // Its time is the step (message TTL counts steps here).
            at: self.step.max(1),
            body: value.to_le_bytes().to_vec(),
        };
        match r.propose(op.encode()) {
            Ok(()) => {
                m.proposed.insert(value);
                self.born.entry(value).or_insert(self.step.max(1));
                self.report.proposed += 1;
                true
            }
            Err(_) => {
                self.report.refused += 1;
                false
            }
        }
    }

    /// Member `id` serves or stops; its consumer answers what is due and takes what it
    /// is handed.
    pub(super) fn consume(&mut self, id: u64) -> Result<(), String> {
        let step = self.step;
        let m = &mut self.members[id as usize - 1];
        let Some(r) = m.replica.as_mut() else {
            return Ok(());
        };
        let serving = r.serving();
        let was = m.machine.serving();
        // A lapse in its own term keeps what links hold (`Machine::lapse`).
        let void = match (serving, r.is_leader()) {
            (true, _) => m.machine.serve(true),
            (false, true) => m.machine.lapse(|c| c > LINK),
            (false, false) => m.machine.serve(false),
        };
        if was && !serving {
            // Its links' deliveries are void too: their members learn of it when they
            // follow the next leader.
            let n = self.void_held(id, &void, "stopping")?;
            self.note(format!("member {id} stops serving ({n} deliveries void)"));
            return Ok(());
        }
        if !serving {
            // Its counts start again when it serves again (as the broker's).
            m.counts.clear();
            return Ok(());
        }
        // Now and then the consumer leaves (its connection closes) and comes back.
        if self.faults && !m.holding.is_empty() && self.rng.chance(1) {
            let back = m.machine.gone(id);
            let n = back.len();
            for mid in back {
                give_back(r, &mut self.gave_back, mid)
                    .map_err(|e| format!("member {id} serves and refused a return: {e:?}"))?;
            }
            if n != m.holding.len() {
                return Err(format!(
                    "member {id} took back {n} deliveries, its consumer held {}",
                    m.holding.len()
                ));
            }
            for (mid, ..) in m.holding.drain(..) {
                self.holders.remove(&mid);
            }
        }
        let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut m.holding)
            .into_iter()
            .partition(|(.., at)| *at <= step);
        m.holding = kept;
        for (mid, value, _) in due {
            self.holders.remove(&mid);
            if !poison(value) && self.rng.chance(1) {
                // Rejected: to the dead-letter queue (`NACK … dlq`).
                m.machine
                    .park(id, mid)
                    .map_err(|e| format!("nack dlq of {mid}: {e:?}"))?;
                let op = m.machine.settle_parked(mid).ok_or("parked, not settled")?;
                r.propose(op.encode())
                    .map_err(|e| format!("member {id} serves and refused an ack: {e:?}"))?;
                self.dead.insert(value);
                self.report.dead_lettered += 1;
            } else if poison(value) || self.rng.chance(10) {
                m.machine
                    .nack(id, mid)
                    .map_err(|e| format!("nack of {mid}: {e:?}"))?;
                give_back(r, &mut self.gave_back, mid)
                    .map_err(|e| format!("member {id} serves and refused a return: {e:?}"))?;
                self.report.nacked += 1;
            } else {
                let op = m
                    .machine
                    .ack(id, mid)
                    .map_err(|e| format!("ack of {mid}: {e:?}"))?;
                // A leader takes its own proposals.
                if let Some(op) = op {
                    r.propose(op.encode())
                        .map_err(|e| format!("member {id} serves and refused an ack: {e:?}"))?;
                }
                self.report.acked += 1;
            }
        }
        // Messages that waited `TTL` steps (not out with a consumer) go to the
        // dead-letter queue.
        let m = &mut self.members[id as usize - 1];
        let r = m.replica.as_mut().ok_or("a member that is down serves")?;
        for mid in m.machine.park_expired(step, TTL) {
            let body = m.machine.parked_body(mid).ok_or("parked, no body")?;
            let value = u64::from_le_bytes(body.try_into().map_err(|_| "8 bytes")?);
            let born = self.born.get(&value).copied().unwrap_or(0);
            if step < born + TTL {
                return Err(format!(
                    "member {id} expired value {value} published at step {born}, at step {step}"
                ));
            }
            let op = m.machine.settle_parked(mid).ok_or("parked, not settled")?;
            r.propose(op.encode())
                .map_err(|e| format!("member {id} serves and refused an ack: {e:?}"))?;
            self.dead.insert(value);
            self.expired.insert(value);
            self.report.expired += 1;
        }
        while self.members[id as usize - 1].holding.len() < PREFETCH {
            let Some((mid, body)) = self.next_for(id, id)? else {
                break;
            };
            let m = &mut self.members[id as usize - 1];
            let value = u64::from_le_bytes(body[..].try_into().map_err(|_| "8 bytes")?);
            if let Some(other) = self.holders.insert(mid, id) {
                return Err(format!(
                    "member {id} handed out message {mid} (value {value}) while member \
                     {other}'s consumer held it"
                ));
            }
            self.report.delivered += 1;
            if !self.delivered.insert(value) {
                self.report.redelivered += 1;
            }
            // Most answer within a few steps; a slow one holds a message for longer
            // than a failover takes.
            let slow = self.rng.chance(20);
            let at = step + 1 + self.rng.below(if slow { 150 } else { 12 });
            m.holding.push((mid, value, at));
        }
        Ok(())
    }

    /// Member `id`'s consumer's deliveries are void (`void`: those the member's
    /// machine gave back, with their holders): they must be exactly what it held.
    /// Returns how many.
    pub(super) fn void_held(
        &mut self,
        id: u64,
        void: &[(u64, u64)],
        doing: &str,
    ) -> Result<usize, String> {
        let m = &mut self.members[id as usize - 1];
        let n = m.holding.len();
        let mine = void.iter().filter(|(_, c)| *c == id).count();
        if mine != n {
            return Err(format!(
                "member {id} voided {mine} deliveries {doing}, its consumer held {n}"
            ));
        }
        for (mid, ..) in m.holding.drain(..) {
            self.holders.remove(&mid);
        }
        self.report.voided += n as u64;
        Ok(n)
    }

    /// The next message serving member `id` hands consumer `cid` (its own, or a
    /// link): one it handed out `MAX_DELIVERIES` times already goes to the dead-letter
    /// queue instead (parked, copied, and its `Ack` proposed).
    pub(super) fn next_for(&mut self, id: u64, cid: u64) -> Result<Option<(u64, Vec<u8>)>, String> {
        loop {
            let m = &mut self.members[id as usize - 1];
            let r = m.replica.as_mut().ok_or("a member that is down serves")?;
            let Some((mid, body)) = m.machine.next_for(cid) else {
                return Ok(None);
            };
            let body = body.to_vec();
            // Its deliveries by this member, or the returns the log counts (from
            // earlier leaders) when more.
            let before = m
                .counts
                .get(&mid)
                .copied()
                .unwrap_or(0)
                .max(m.machine.returned(mid));
            if before < MAX_DELIVERIES {
                m.counts.insert(mid, before + 1);
                return Ok(Some((mid, body)));
            }
            // The log never counts more returns than consumers made.
            let made = self.gave_back.get(&mid).copied().unwrap_or(0);
            if m.machine.returned(mid) > made {
                return Err(format!(
                    "member {id} counts {} returns of message {mid}, its consumers made {made}",
                    m.machine.returned(mid)
                ));
            }
            m.machine
                .park(cid, mid)
                .map_err(|e| format!("park of {mid}: {e:?}"))?;
            let op = m.machine.settle_parked(mid).ok_or("parked, not settled")?;
            r.propose(op.encode())
                .map_err(|e| format!("member {id} serves and refused an ack: {e:?}"))?;
            let value = u64::from_le_bytes(body[..].try_into().map_err(|_| "8 bytes")?);
            self.dead.insert(value);
            self.report.dead_lettered += 1;
            self.note(format!(
                "member {id} dead-letters message {mid} (value {value}), handed out {MAX_DELIVERIES} times"
            ));
        }
    }
}
