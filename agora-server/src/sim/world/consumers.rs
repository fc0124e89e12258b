//! The queue consumers of the simulated world: they subscribe through their
//! connection's session, ack and nack what they hold, leave cleanly or vanish, report
//! auto-ack writes; and the operator's purges and deletes.

use std::collections::VecDeque;

use agora_protocol::{AckMode, Subscribe};

use super::{msg_id, session_limits, Port, SimConsumer, World, CLIENTS};
use crate::queue::{Acked, ConsumerSpec, Place};
use crate::session::{Session, SubPlan};

impl World {
    /// A consumer subscribes through its connection's session (on one of the
    /// connections, or a new one), which checks the rules and gives the slot.
    pub(super) fn subscribe(&mut self, q: usize) -> String {
        let cid = self.next_cid;
        self.next_cid += 1;
        let client = match self.clients.len() as u64 {
            n if n < CLIENTS && self.rng.chance(50) => {
                self.clients
                    .insert(cid, Session::new(session_limits(), self.now));
                cid
            }
            0 => {
                self.clients
                    .insert(cid, Session::new(session_limits(), self.now));
                cid
            }
            n => *self
                .clients
                .keys()
                .nth(self.rng.below(n) as usize)
                .expect("n > 0"),
        };
        let request = Subscribe {
            rid: None,
            dest: self.queues[q].shared.dest.clone(),
            sid: cid,
            prefetch: Some(1 + self.rng.below(4) as u32),
            ack: self.rng.chance(30).then_some(AckMode::Auto),
        };
        let session = self.clients.get_mut(&client).expect("picked");
        let plan = match session.plan_subscribe(&request) {
            Ok(plan) => plan,
            Err(r) => {
                self.report.refused += 1;
                return format!("consumer {cid} on {client} refused: {}", r.message);
            }
        };
        let SubPlan::Queue {
            prefetch,
            auto_ack,
            slot,
        } = plan
        else {
            self.broken = Some(format!("a queue subscription planned as {plan:?}"));
            return String::new();
        };
        session.add(cid, plan, cid);
        let port = Port::default();
        self.queues[q].state.subscribe(ConsumerSpec {
            cid,
            sid: cid,
            slot,
            prefetch,
            auto_ack,
            link: false,
            port: port.clone(),
        });
        self.consumers.insert(
            cid,
            SimConsumer {
                queue: q,
                client,
                port,
                auto_ack,
                prefetch,
                held: Vec::new(),
                fifo: VecDeque::new(),
            },
        );
        format!("consumer {cid} on {client} subscribes to queue {q} (prefetch {prefetch}, auto-ack {auto_ack})")
    }

    /// A random consumer that is still connected.
    pub(super) fn pick_consumer(&mut self, pred: impl Fn(&SimConsumer) -> bool) -> Option<u64> {
        self.pick_any(|c| !c.port.gone.get() && pred(c))
    }

    /// A random consumer, connected or not (its shipper may still be at work).
    pub(super) fn pick_any(&mut self, pred: impl Fn(&SimConsumer) -> bool) -> Option<u64> {
        let ids: Vec<u64> = self
            .consumers
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(cid, _)| *cid)
            .collect();
        (!ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize])
    }

    /// `ACK` (`ack`) or `NACK` of a delivery a consumer holds. The queue must settle it
    /// exactly when it still has it outstanding at that consumer (an ack timeout may
    /// have taken it back).
    /// `HOLD` or `RESUME` of a random consumer: while held, its queue must give it
    /// nothing new (checked at each dispatch); what it holds it may still settle.
    pub(super) fn toggle_hold(&mut self) -> String {
        let Some(cid) = self.pick_consumer(|_| true) else {
            return "no consumer to hold".to_owned();
        };
        let q = self.consumers[&cid].queue;
        let on = !self.held.contains(&cid);
        self.queues[q].state.hold(cid, on);
        if on {
            self.held.insert(cid);
            self.report.holds += 1;
            format!("consumer {cid} held")
        } else {
            self.held.remove(&cid);
            format!("consumer {cid} resumed")
        }
    }

    pub(super) fn settle_one(&mut self, ack: bool) -> String {
        let Some(cid) = self.pick_consumer(|c| !c.held.is_empty()) else {
            return "no delivery to settle".to_owned();
        };
        let c = self.consumers.get_mut(&cid).expect("picked");
        let i = self.rng.below(c.held.len() as u64) as usize;
        let (did, id) = c.held.swap_remove(i);
        // The connection routes the ACK by the delivery id's slot: it must find the
        // subscription the delivery was made to, while that one is active.
        let routed = self
            .clients
            .get(&c.client)
            .and_then(|s| s.for_delivery(did));
        if routed != Some(&cid) {
            self.broken = Some(format!("delivery {did} of {cid} routes to {routed:?}"));
        }
        let sq = &mut self.queues[c.queue];
        let mut outstanding = false;
        sq.state
            .for_each_held(|p, _| outstanding |= p == Place::Outstanding(cid, did));
        // A NACK now, later, or to the dead letters.
        let how = match (ack, self.rng.below(20)) {
            (true, _) => agora_protocol::Nack::Requeue,
            (false, 0..=11) => agora_protocol::Nack::Requeue,
            (false, 12..=16) => agora_protocol::Nack::Delay(std::time::Duration::from_millis(
                1 + self.rng.below(3000),
            )),
            (false, 17) => agora_protocol::Nack::Unseen,
            (false, _) => agora_protocol::Nack::DeadLetter,
        };
        let got = match ack {
            true => sq.state.ack(cid, did, true),
            false => sq.state.nack(cid, did, how, self.now),
        };
        if got == Acked::Done {
            match how {
                agora_protocol::Nack::Delay(d) => {
                    self.delayed.insert(id, self.now + d);
                    self.report.nack_delayed += 1;
                }
                agora_protocol::Nack::DeadLetter if !ack => {
                    self.rejected.insert(id);
                }
                // Not an attempt: the next delivery carries the same count again.
                agora_protocol::Nack::Unseen => {
                    if let Some(c) = self.counts.get_mut(&id) {
                        *c = c.saturating_sub(1);
                    }
                    self.report.unseen += 1;
                }
                _ => {}
            }
        }
        let word = match (ack, how) {
            (true, _) => "ack".to_owned(),
            (false, agora_protocol::Nack::Requeue) => "nack".to_owned(),
            (false, how) => format!("nack ({how:?})"),
        };
        let expect = if outstanding {
            Acked::Done
        } else {
            Acked::Unknown
        };
        if got != expect {
            self.broken = Some(format!(
                "{word} of #{id} by {cid} gave {got:?}, expected {expect:?}"
            ));
        }
        if ack && got == Acked::Done {
            self.live.remove(&id);
            self.report.acked += 1;
        }
        format!("consumer {cid} {word}s #{id}: {got:?}")
    }

    /// A consumer leaves: cleanly (`UNSUB`), or its connection drops without warning
    /// and the queue hears of it later (or first notices on its next delivery).
    pub(super) fn unsubscribe(&mut self, abrupt: bool) -> String {
        if abrupt {
            let Some(cid) = self.pick_consumer(|_| true) else {
                return "no consumer to disconnect".to_owned();
            };
            self.consumers[&cid].port.gone.set(true);
            self.report.disconnects += 1;
            return format!("consumer {cid} disconnects without warning");
        }
        // A clean unsubscribe, or the late one of a disconnected consumer.
        let ids: Vec<u64> = self.consumers.keys().copied().collect();
        if ids.is_empty() {
            return "no consumer to unsubscribe".to_owned();
        }
        let cid = ids[self.rng.below(ids.len() as u64) as usize];
        let c = self.consumers.remove(&cid).expect("listed");
        self.leave_session(&c, cid);
        let known = self.queues[c.queue].state.unsubscribe(cid).is_some();
        format!("consumer {cid} unsubscribes (queue knew it: {known})")
    }

    /// The subscription leaves its connection's session, which must have had it; a
    /// connection with no subscriptions left closes.
    pub(super) fn leave_session(&mut self, c: &SimConsumer, cid: u64) {
        let Some(session) = self.clients.get_mut(&c.client) else {
            self.broken = Some(format!("consumer {cid}'s connection {} is gone", c.client));
            return;
        };
        if session.remove(cid) != Some(cid) {
            self.broken = Some(format!("the session of {} did not hold {cid}", c.client));
        }
        if session.is_idle() {
            self.clients.remove(&c.client);
        }
    }

    /// An auto-ack consumer's shipper reports deliveries written.
    pub(super) fn written(&mut self) -> String {
        // A shipper reports what it wrote even after its subscription ended (on UNSUB it
        // reports, then stops): the queue must not have given those back meanwhile.
        let Some(cid) = self.pick_any(|c| c.auto_ack && !c.fifo.is_empty()) else {
            return "nothing written".to_owned();
        };
        let c = self.consumers.get_mut(&cid).expect("picked");
        let n = 1 + self.rng.below(c.fifo.len() as u64) as usize;
        for id in c.fifo.drain(..n) {
            self.live.remove(&id);
        }
        self.queues[c.queue].state.written(cid, n);
        format!("consumer {cid}: {n} written")
    }

    pub(super) fn purge(&mut self, q: usize) -> String {
        let sq = &mut self.queues[q];
        let mut pending = Vec::new();
        sq.state.for_each_held(|p, h| {
            if p == Place::Pending {
                pending.push(msg_id(&h.msg));
            }
        });
        let number = sq.number;
        sq.state
            .for_each_paged(|p| pending.extend(self.log_ids.get(&(number, p.id))));
        let n = sq.state.purge();
        for id in pending {
            self.live.remove(&id);
        }
        self.report.purged += n as u64;
        format!("purge queue {q}: {n}")
    }

    /// Deletes a work queue: its consumers are told and forgotten, its messages dropped,
    /// and the next publish finds a new, empty queue of the same name.
    pub(super) fn delete(&mut self, q: usize) -> String {
        let mut held = Vec::new();
        self.queues[q]
            .state
            .for_each_held(|_, h| held.push(msg_id(&h.msg)));
        let number = self.queues[q].number;
        self.queues[q]
            .state
            .for_each_paged(|p| held.extend(self.log_ids.get(&(number, p.id))));
        let (n, gone) = self.queues[q].state.delete();
        self.queues[q].rebudget();
        let (released, bytes) = self.queues[q].state.take_released();
        self.queues[q].shared.release(released, bytes);
        for c in gone {
            if let Some(sc) = self.consumers.remove(&c.cid) {
                self.leave_session(&sc, c.cid);
            }
        }
        for id in &held {
            self.live.remove(id);
        }
        self.report.deleted += n as u64;
        let name = self.queues[q].shared.dest.name.to_string();
        let dlq = self.queues[q].dlq;
        // Its records (the Delete) go before the new queue's declaration.
        for r in self.queues[q].state.take_journal() {
            self.log.append(&r);
        }
        self.queues[q] = self.new_queue(&name, dlq);
        self.make_durable(q);
        // A new queue remembers no ids.
        self.retries.retain(|(at, ..)| *at != q);
        format!("delete queue {q}: {n} dropped")
    }
}
