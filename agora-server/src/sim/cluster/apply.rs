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
                        Applied::Unknown => return Err(format!("member {id} applied junk")),
                    }
                }
            }
        }
        Ok(())
    }
}
