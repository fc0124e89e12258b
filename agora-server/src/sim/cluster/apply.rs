//! What a member does with what its replica hands it: messages to put on the simulated
//! wire (dropped, delayed, duplicated), and committed entries to apply to its machine,
//! checked against the one committed log.

use super::*;

impl Sim {
    /// Puts `out` on the wire or into the member's state machine.
    pub(super) fn handle(&mut self, id: u64, out: Vec<Out>) -> Result<(), String> {
        for o in out {
            match o {
                Out::Send(m, stamp) => {
                    self.report.sent += 1;
                    if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                        // Handed to the wire whole (the broker's pieces are the
                        // link's business): reported sent, lost or not.
                        self.report.snapshots_sent += 1;
                        if let Some(r) = self.members[id as usize - 1].replica.as_mut() {
                            r.report_snapshot(m.to, true);
                        }
                    }
                    if self.faults && self.rng.chance(5) {
                        self.report.dropped += 1;
                        continue;
                    }
                    let delay = if self.faults { self.rng.below(8) } else { 0 };
                    if self.faults && self.rng.chance(2) {
                        self.report.duplicated += 1;
                        let later = self.step + delay + self.rng.below(8);
                        self.wire.push((later, id, m.clone(), stamp));
                    }
                    self.wire.push((self.step + delay, id, m, stamp));
                }
                Out::Restore { index, data } => self.restore(id, index, &data)?,
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
                    match m.machine.apply(index, &data) {
                        Applied::Enqueued { origin, seq, .. } => {
                            if origin == id && m.proposed.remove(&seq) {
                                // Its member applied it: the publisher is confirmed now.
                                self.confirmed.insert(seq);
                                self.report.confirmed += 1;
                            }
                        }
                        Applied::Duplicate { origin, seq } => {
                            if id == 1 {
                                self.report.duplicates += 1;
                            }
                            if origin == id && m.proposed.remove(&seq) {
                                return Err(format!("{seq} was confirmed by its second copy"));
                            }
                        }
                        Applied::Acked {
                            id: mid,
                            held_by: Some(c),
                            ..
                        } if c > LINK => self.settled_on_link(c, mid),
                        Applied::Acked {
                            id: mid,
                            held_by: Some(c),
                            ..
                        } => {
                            // Out again, and acknowledged through an earlier delivery:
                            // this one is over.
                            if c != id {
                                return Err(format!(
                                    "member {id} had message {mid} out with consumer {c}"
                                ));
                            }
                            m.holding.retain(|(h, ..)| *h != mid);
                            self.holders.remove(&mid);
                        }
                        Applied::Acked { .. } | Applied::Purged { .. } => {}
                        // Its members keep no message ids (a value has none).
                        Applied::Repeated { .. } => {
                            return Err(format!("member {id} caught a message id"))
                        }
                        Applied::Returned { .. } => {}
                        Applied::Unknown => return Err(format!("member {id} applied junk")),
                    }
                }
            }
        }
        Ok(())
    }

    /// Member `id` restores the leader's snapshot at `index`: it must be the one
    /// committed log applied up to there.
    fn restore(&mut self, id: u64, index: u64, data: &[u8]) -> Result<(), String> {
        let mut want = Machine::default();
        for (&i, e) in self.log.range(..=index) {
            want.apply(i, e);
        }
        if want.image() != data {
            return Err(format!(
                "member {id} got a snapshot at {index} that is not the committed log's state"
            ));
        }
        self.report.restores += 1;
        self.note(format!("member {id} restores a snapshot at {index}"));
        let m = &mut self.members[id as usize - 1];
        let void = m.machine.restore(data).map_err(|e| e.to_string())?;
        // Had it served still, what its consumer held is void (as when it stops).
        self.void_held(id, &void, "restoring")?;
        let m = &mut self.members[id as usize - 1];
        // Its publishers whose messages the snapshot holds are confirmed now.
        let machine = &m.machine;
        let stored: Vec<u64> = m
            .proposed
            .iter()
            .copied()
            .filter(|&seq| machine.has_seen(id, seq))
            .collect();
        for seq in stored {
            m.proposed.remove(&seq);
            self.confirmed.insert(seq);
            self.report.confirmed += 1;
        }
        Ok(())
    }

    /// Member `id` offers a snapshot when its replica wants one, and compacts its log
    /// once it holds more than `COMPACT` bytes and more than its queue: from a state
    /// taken then and encoded a few steps later (with faults), as the broker's task
    /// takes it and a blocking thread encodes it, the member going on meanwhile.
    pub(super) fn snapshots(&mut self, id: u64) {
        let step = self.step;
        let delay = match self.faults {
            true => self.rng.below(4),
            false => 0,
        };
        let m = &mut self.members[id as usize - 1];
        let Some(r) = m.replica.as_mut() else {
            return;
        };
        if r.snapshot_wanted() {
            r.offer_snapshot(m.machine.image());
        }
        if m.compacting.is_none() && compaction_due(r.log_bytes(), m.machine.bytes(), COMPACT) {
            m.compacting = Some((r.applied(), m.machine.image(), step + delay));
        }
        if m.compacting.as_ref().is_some_and(|c| c.2 <= step) && r.may_compact() {
            let (index, data, _) = m.compacting.take().expect("checked");
            if r.compact_at(index, data.into()).is_some() {
                self.report.compactions += 1;
            }
        }
    }
}
