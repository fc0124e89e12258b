//! What the queues' tasks do after each batch of commands (dispatch, dead-lettering,
//! giving back what left), and the consumers taking in what they were sent.

use super::{msg_id, Check, World, MAX_DELIVERIES};

impl World {
    /// What the queue tasks do after each batch of commands: dispatch, dead-letter,
    /// give back what left. Then each consumer takes in what it was sent.
    pub(super) fn settle(&mut self) -> Check {
        if let Some(why) = self.broken.take() {
            return Err(why);
        }
        let now = self.now;
        let mut broken = None;
        for q in 0..self.queues.len() {
            let sq = &mut self.queues[q];
            let held = &self.held;
            sq.state.dispatch(now, |c, d| {
                if c.port.gone.get() {
                    return Err(d);
                }
                if held.contains(&c.cid) {
                    broken = Some(format!(
                        "consumer {} was given #{} while held",
                        c.cid, d.did
                    ));
                }
                c.port.got.borrow_mut().push(d);
                Ok(())
            });
            let dead = sq.state.take_dead();
            for (h, reason) in dead {
                self.dead_letter(q, h, reason)?;
            }
        }
        if let Some(why) = broken {
            return Err(why);
        }
        for sq in &mut self.queues {
            sq.rebudget();
            let (n, bytes) = sq.state.take_released();
            sq.shared.release(n, bytes);
        }
        self.receive()
    }

    pub(super) fn dead_letter(&mut self, q: usize, h: crate::queue::Held, reason: &str) -> Check {
        let id = msg_id(&h.msg);
        match reason {
            crate::queue::MAX_DELIVERIES if h.count < MAX_DELIVERIES => {
                return Err(format!("#{id} dead-lettered after {} deliveries", h.count));
            }
            crate::queue::REJECTED => {
                if !self.rejected.remove(&id) {
                    return Err(format!("#{id} dead-lettered as rejected, never NACKed dlq"));
                }
                self.report.rejected += 1;
            }
            crate::queue::EXPIRED => {
                let ttl = self.queues[q].state_ttl();
                if self.now.duration_since(h.enqueued) < ttl {
                    return Err(format!("#{id} expired early"));
                }
            }
            _ => {}
        }
        let Some(d) = self.queues[q].dlq else {
            self.queues[q].state.keep(h);
            return Ok(());
        };
        let mut copy = h.msg.clone();
        let _ = copy
            .headers
            .insert(crate::queue::DEAD_LETTER_REASON, reason);
        match self.queues[d].shared.reserve(copy.size()) {
            Ok(()) => {
                self.queues[d].state.enqueue_dead_letter(copy, self.now);
                self.moved.extend(self.queues[q].state.moved(h.id));
                self.queues[q].state.dead_lettered(h);
                self.report.dead_lettered += 1;
            }
            Err(_) => self.queues[q].state.keep(h),
        }
        Ok(())
    }

    /// Consumers take what their queue pushed: counts must rise by one per delivery.
    pub(super) fn receive(&mut self) -> Check {
        let cids: Vec<u64> = self.consumers.keys().copied().collect();
        for cid in cids {
            let c = self.consumers.get_mut(&cid).expect("listed");
            let got = std::mem::take(&mut *c.port.got.borrow_mut());
            for d in got {
                let id = msg_id(&d.msg);
                // A message held back by `NACK delay=` comes back no sooner.
                if let Some(due) = self.delayed.remove(&id) {
                    if self.now < due {
                        return Err(format!(
                            "#{id} delivered {:?} before its NACK delay was over",
                            due - self.now
                        ));
                    }
                }
                let last = self.counts.get(&id).copied().unwrap_or(0);
                if d.count != last + 1 {
                    return Err(format!(
                        "#{id} delivered with count {} after count {last}",
                        d.count
                    ));
                }
                self.counts.insert(id, d.count);
                self.report.delivered += 1;
                if d.count > 1 {
                    self.report.redelivered += 1;
                }
                match c.auto_ack {
                    true => c.fifo.push_back(id),
                    false => c.held.push((d.did, id)),
                }
            }
            // A consumer the queue dropped (a manual-ack one whose connection is gone)
            // stays here until its unsubscribe, as its connection keeps it.
        }
        Ok(())
    }
}
