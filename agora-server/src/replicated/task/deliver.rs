//! A replicated queue's consumers on this node: what the serving node hands them, and
//! their answers (`ACK`, `NACK`) turned into the log's `Ack` entries.

use super::*;

pub(super) struct Cons {
    pub(super) spec: Consumer,
    pub(super) held: bool,
    /// Manual-ack deliveries not answered.
    pub(super) out: usize,
    /// Auto-ack deliveries its shipper has not reported written.
    pub(super) inflight: usize,
    pub(super) next_seq: u64,
}

impl Cons {
    fn has_credit(&self) -> bool {
        !self.held && self.out + self.inflight < self.spec.prefetch as usize
    }

    /// Hands `msg` (its `count`th delivery) to this consumer: the delivery id it went
    /// under, or none when its subscription ended (it is held from then on: the
    /// unsubscribe is on the way).
    pub(super) fn hand(&mut self, msg: Message, count: u32) -> Option<u64> {
        let did = match self.spec.auto_ack {
            true => 0,
            false => delivery_id(self.spec.slot, self.next_seq),
        };
        let d = Delivery {
            did,
            count,
            msg,
            charged: 0,
            topic: None,
        };
        if self.spec.port.tx.push(d).is_err() {
            self.held = true;
            return None;
        }
        self.next_seq += 1;
        Some(did)
    }
}

impl Task {
    /// A consumer's `ACK` (`nack` none) or `NACK` of delivery `did`: whether it was
    /// outstanding. A `NACK` with a delay parks the message for that long (while this
    /// node serves: a new leader has it at once); one to the dead-letter queue parks it
    /// until its copy is there ([`dead_letter`](Task::dead_letter)); `unseen` does not
    /// count the delivery.
    pub(super) fn answer(
        &mut self,
        cid: u64,
        did: u64,
        nack: Option<agora_protocol::Nack>,
    ) -> bool {
        let Some(id) = self.outstanding.remove(&(cid, did)) else {
            return self.answer_relayed(cid, did, nack);
        };
        self.by_id.remove(&id);
        if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.cid == cid) {
            c.out = c.out.saturating_sub(1);
        }
        match nack {
            None => {}
            Some(agora_protocol::Nack::Delay(d)) => {
                if self.machine.park(cid, id).is_err() {
                    return false;
                }
                self.parked.push((Instant::now() + d, id));
                self.came_back(id);
                return true;
            }
            Some(agora_protocol::Nack::DeadLetter) => {
                if self.machine.park(cid, id).is_err() {
                    return false;
                }
                self.dead.push((id, REJECTED, Instant::now()));
                return true;
            }
            Some(agora_protocol::Nack::Unseen) => {
                if let Some(n) = self.counts.get_mut(&id) {
                    *n = n.saturating_sub(1);
                }
                return self.machine.nack(cid, id).is_ok();
            }
            Some(agora_protocol::Nack::Requeue) => {
                if self.machine.nack(cid, id).is_err() {
                    return false;
                }
                self.came_back(id);
                return true;
            }
        }
        match self.machine.ack(cid, id) {
            Ok(Some(op)) => {
                // While serving this node leads: it takes its own proposal. (One lost
                // with a lost lead leaves the message to be delivered again.)
                let _ = self.replica.propose(op.encode());
                true
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Message `id`'s deliveries so far: this node's, or the returns its log counts
    /// (from earlier leaders) when more.
    pub(super) fn deliveries(&self, id: u64) -> u32 {
        let here = self.counts.get(&id).copied().unwrap_or(0);
        here.max(self.machine.returned(id))
    }

    /// Message `id` came back from a consumer while this node serves: its `Return` is
    /// proposed, so that the next node to serve counts it too.
    pub(super) fn came_back(&mut self, id: u64) {
        let _ = self.replica.propose(Op::Return { id }.encode());
    }

    /// The next consumer with room for a delivery, round-robin; none once each was
    /// looked at since the last one found (`idle` counts them; reset it once one was
    /// handed something).
    pub(super) fn next_with_credit(&mut self, idle: &mut usize) -> Option<usize> {
        while *idle < self.consumers.len() {
            self.rr %= self.consumers.len();
            let i = self.rr;
            self.rr += 1;
            if self.consumers[i].has_credit() {
                return Some(i);
            }
            *idle += 1;
        }
        None
    }

    /// Counts a delivery of `bytes` bytes, its `count`th, in the queue's figures.
    pub(super) fn counted_out(&self, bytes: u64, count: u32) {
        self.shared.messages_out.fetch_add(1, Relaxed);
        self.shared.bytes_out.fetch_add(bytes, Relaxed);
        if count > 1 {
            self.shared.redelivered.fetch_add(1, Relaxed);
        }
    }

    /// Deliveries made void (this node stopped serving): their ids no longer answer.
    pub(super) fn void(&mut self, void: &[(u64, u64)]) {
        for (id, _) in void {
            if let Some(key) = self.by_id.remove(id) {
                self.outstanding.remove(&key);
            }
            self.counts.remove(id);
        }
        for c in &mut self.consumers {
            let cid = c.spec.cid;
            c.out = self.outstanding.keys().filter(|k| k.0 == cid).count();
        }
        self.shared.unacked.store(self.outstanding.len(), Relaxed);
    }

    /// Once a tick: messages parked by a `NACK`'s delay whose time came are free again;
    /// and with `--ack-timeout`, deliveries this node made that were not answered in
    /// time are taken back: their messages are handed out again, round-robin (to the
    /// same consumer, when it has room and its turn comes), and a late answer is
    /// `unknown_delivery`.
    pub(super) fn take_back_late(&mut self) {
        if self.late_checked == self.ticked {
            return;
        }
        self.late_checked = self.ticked;
        let now = Instant::now();
        let timeout = self.shared.settings.ack_timeout.unwrap_or(Duration::MAX);
        let outstanding = &self.outstanding;
        let mut late = Vec::new();
        self.handed_at.retain(|key, at| {
            if !outstanding.contains_key(key) {
                return false;
            }
            if now.saturating_duration_since(*at) >= timeout {
                late.push(*key);
                return false;
            }
            true
        });
        // With a TTL, messages waiting longer go to the dead-letter queue (counted from
        // when they were published, by the clock of the node they were published on).
        if let Some(ttl) = self.shared.settings.ttl {
            let ttl_ms = (ttl.as_millis() as u64).max(1);
            for id in self.machine.park_expired(commands::unix_ms(), ttl_ms) {
                self.dead.push((id, EXPIRED, now));
            }
        }
        // Parked messages whose delay ran out may be handed out again.
        if !self.parked.is_empty() {
            let machine = &mut self.machine;
            self.parked.retain(|&(due, id)| {
                if due > now {
                    return true;
                }
                machine.unpark(id);
                false
            });
        }
        for (cid, did) in late {
            let Some(id) = self.outstanding.remove(&(cid, did)) else {
                continue;
            };
            self.by_id.remove(&id);
            if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.cid == cid) {
                c.out = c.out.saturating_sub(1);
            }
            if self.machine.nack(cid, id).is_ok() {
                self.came_back(id);
            }
        }
        self.shared
            .unacked
            .store(self.outstanding.len() + self.relay.outstanding(), Relaxed);
    }

    /// Starts or stops serving as the lease says, and hands messages out.
    pub(super) fn dispatch(&mut self) {
        let serving = self.failed.is_none() && self.replica.serving();
        let was = self.machine.serving();
        let leads = self.failed.is_none() && self.replica.is_leader();
        let void = match (serving, leads) {
            (true, _) => self.machine.serve(true),
            // Its lease lapsed in its own term: other nodes' links keep what they hold
            // (see `Machine::lapse`).
            (false, true) => {
                let links: Vec<u64> = self
                    .consumers
                    .iter()
                    .filter(|c| c.spec.link)
                    .map(|c| c.spec.cid)
                    .collect();
                self.machine.lapse(|c| links.contains(&c))
            }
            (false, false) => self.machine.serve(false),
        };
        if was != serving {
            match serving {
                true => log::info!(
                    "{}: this node leads it (term {})",
                    self.shared.dest,
                    self.replica.term()
                ),
                false => log::info!(
                    "{}: this node no longer serves it ({} deliveries made void)",
                    self.shared.dest,
                    void.len()
                ),
            }
        }
        if !void.is_empty() {
            self.void(&void);
        }
        self.relay_out();
        if !serving || self.consumers.is_empty() {
            return;
        }
        let now = Instant::now();
        // What a link's deliveries carry, formatted once a round.
        let term = self.replica.term().to_string();
        let max = self.shared.settings.max_deliveries;
        let mut idle = 0;
        while let Some(i) = self.next_with_credit(&mut idle) {
            let cid = self.consumers[i].spec.cid;
            let Some((id, body)) = self.machine.next_for(cid) else {
                break;
            };
            idle = 0;
            let decoded = decode_message(body, now);
            let before = self.deliveries(id);
            if max > 0 && before >= max {
                // Delivered as often as it may be: to the dead-letter queue instead.
                let _ = self.machine.park(cid, id);
                self.dead.push((id, MAX_DELIVERIES, now));
                continue;
            }
            let Some(mut msg) = decoded else {
                // Not a message this broker wrote: acknowledged, so it does not block.
                log::warn!("{}: message {id} cannot be read; dropped", self.shared.dest);
                if let Ok(Some(op)) = self.machine.ack(cid, id) {
                    let _ = self.replica.propose(op.encode());
                }
                continue;
            };
            let count = before + 1;
            self.counts.insert(id, count);
            let bytes = msg.payload.len() as u64;
            if self.consumers[i].spec.link {
                // The node it goes to takes it only while it follows this term.
                let _ = msg.headers.insert(super::super::TERM_HEADER, &term);
            }
            let Some(did) = self.consumers[i].hand(msg, count) else {
                let _ = self.machine.nack(cid, id);
                continue;
            };
            self.counted_out(bytes, count);
            let c = &mut self.consumers[i];
            if c.spec.auto_ack {
                c.inflight += 1;
                if let Ok(Some(op)) = self.machine.ack(cid, id) {
                    let _ = self.replica.propose(op.encode());
                }
            } else {
                c.out += 1;
                self.outstanding.insert((cid, did), id);
                self.by_id.insert(id, (cid, did));
                if self.shared.settings.ack_timeout.is_some() {
                    self.handed_at.insert((cid, did), now);
                }
            }
        }
        self.shared.unacked.store(self.outstanding.len(), Relaxed);
    }
}
