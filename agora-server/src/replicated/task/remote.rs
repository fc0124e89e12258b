//! A replicated queue's consumers on a node that does not lead it: the node takes the
//! leader's deliveries over its link ([`Relay`](super::Relay)) and hands them to them.

use super::*;
use crate::replicated::Sent;

impl Task {
    /// Follows the leader while this node has consumers and does not lead, and hands
    /// them what the leader delivered.
    pub(super) fn relay_out(&mut self) {
        let leader = self.replica.leader();
        let from = (self.failed.is_none()
            && !self.machine.serving()
            && !self.consumers.is_empty()
            && leader != 0
            && leader != self.groups.me)
            .then_some(leader);
        if self.relay.follow(from, self.replica.term()) {
            self.groups.consume(&self.name, from);
            // What came from the node followed before is void: its room is free again.
            for c in &mut self.consumers {
                let cid = c.spec.cid;
                c.out = self.outstanding.keys().filter(|k| k.0 == cid).count();
            }
            match from {
                Some(n) => log::info!(
                    "{}: this node's consumers take its messages from node {n}, its leader",
                    self.shared.dest
                ),
                None => log::debug!(
                    "{}: this node's consumers take its messages from no other node",
                    self.shared.dest
                ),
            }
        }
        let now = Instant::now();
        let mut idle = 0;
        while self.relay.waiting() > 0 {
            let Some(i) = self.next_with_credit(&mut idle) else {
                break;
            };
            idle = 0;
            let Some(r) = self.relay.next() else { break };
            let up = Upstream::of(&r);
            let (bytes, count) = (r.payload.len() as u64, r.count);
            let msg = Message {
                headers: r.headers,
                payload: r.payload,
                received: now,
            };
            let Some(did) = self.consumers[i].hand(msg, count) else {
                self.answers.push(up, false);
                continue;
            };
            self.counted_out(bytes, count);
            let c = &mut self.consumers[i];
            let cid = c.spec.cid;
            if c.spec.auto_ack {
                c.inflight += 1;
                self.answers.push(up, true);
            } else {
                c.out += 1;
                self.relay.handed(cid, did, up);
            }
        }
        if !self.machine.serving() {
            self.shared.unacked.store(self.relay.outstanding(), Relaxed);
        }
    }

    /// A consumer's answer to a delivery that came from the leader (`None`: `ACK`; a
    /// `NACK` with its option): sent back there, as it was; whether it was outstanding.
    pub(super) fn answer_relayed(
        &mut self,
        cid: u64,
        did: u64,
        nack: Option<agora_protocol::Nack>,
    ) -> bool {
        let Some(up) = self.relay.answer(cid, did) else {
            return false;
        };
        if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.cid == cid) {
            c.out = c.out.saturating_sub(1);
        }
        self.answers.answer(up, nack);
        true
    }

    /// Writes the answers gathered this round on their links; those whose link's queue
    /// is full wait for the next round, those whose link ended are dropped (that link
    /// took their deliveries with it: the leader gives them again).
    pub(super) fn send_answers(&mut self) {
        if self.answers.is_empty() {
            return;
        }
        for ((node, epoch), frames) in self.answers.take() {
            if self.groups.send_frames(node, epoch, frames.clone()) == Sent::Full {
                self.answers.keep((node, epoch), frames);
            }
        }
    }
}
