//! Consumers on members that do not lead ([`Relay`], as `replicated::relay` runs it on
//! a node): each such member follows the leader it knows over a link, on which the
//! leader hands it messages as to one more consumer ([`LINK`] plus the member's id),
//! and its consumer's answers go back.
//!
//! A link's traffic is ordered and is held, not lost, while a member at either end is
//! cut off (TCP's). A link ends at both ends at once when a member at either end
//! crashes, or when a cut either end was caught in heals (the cluster test's proxy
//! closes those connections): the leader takes back what the link held, the member
//! voids what came over it. A member that follows another leader (or none) voids what it
//! holds at once; its old leader takes back the link's deliveries when the unsubscribe
//! reaches it.

use super::*;
use crate::replicated::relay::{Relay, Upstream};
use crate::replicated::Remote;

/// A link's consumer id in a leader's machine: this plus the member's id.
pub(super) const LINK: u64 = 100;
/// Deliveries a link holds at once (its subscription's prefetch).
const LINK_PREFETCH: usize = 4;

/// A member's link to the leader it follows.
pub(super) struct Link {
    from: u64,
    to: u64,
    epoch: u64,
    /// Deliveries on their way to `from`: (due step, message id, body, the leader's
    /// term then).
    down: Vec<(u64, u64, Vec<u8>, u64)>,
    /// Answers on their way to `to`: (due step, message id, acknowledged).
    up: Vec<(u64, u64, bool)>,
    /// `from` unsubscribed: the link ends once that reaches `to`.
    closing: bool,
}

/// What a member's consumer holds that came through its relay.
#[derive(Default)]
pub(super) struct Relayed {
    pub relay: Relay,
    /// (its delivery id, message id, value, step it answers at, link epoch).
    pub holding: Vec<(u64, u64, u64, u64, u64)>,
    next_did: u64,
}

impl Sim {
    fn delay(&mut self) -> u64 {
        self.step + 1 + self.rng.below(4)
    }

    /// Voids what member `n`'s consumer holds through its relay (of link epoch `epoch`
    /// only, or all).
    fn void_relayed(&mut self, n: u64, epoch: Option<u64>) {
        let r = &mut self.members[n as usize - 1].relayed;
        let (void, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut r.holding)
            .into_iter()
            .partition(|h| epoch.is_none_or(|e| h.4 == e));
        r.holding = kept;
        for (_, mid, ..) in void {
            self.holders.remove(&mid);
            self.report.voided += 1;
        }
    }

    /// Link `i` ends at both ends.
    fn end_link(&mut self, i: usize) {
        let l = self.links.remove(i);
        let leader = &mut self.members[l.to as usize - 1];
        if let Some(r) = leader.replica.as_mut() {
            // What the link held came back (a proposal refused when the member no
            // longer leads: its deliveries were void anyway).
            for mid in leader.machine.gone(LINK + l.from) {
                let _ = give_back(r, &mut self.gave_back, mid);
            }
        }
        if self.up(l.from) {
            self.members[l.from as usize - 1]
                .relayed
                .relay
                .link_ended(l.to, l.epoch);
            self.void_relayed(l.from, Some(l.epoch));
        }
    }

    /// Every link with member `id` at either end ends (it crashed, or a cut it was in
    /// healed).
    pub(super) fn end_links_of(&mut self, id: u64) {
        while let Some(i) = self.links.iter().position(|l| l.from == id || l.to == id) {
            self.end_link(i);
        }
    }

    /// One step of every relay: whom each member follows, what each link carries, and
    /// each member's consumer's share.
    pub(super) fn relays(&mut self) -> Result<(), String> {
        for n in 1..=MEMBERS {
            let m = &self.members[n as usize - 1];
            let Some(r) = m.replica.as_ref() else {
                continue;
            };
            let leader = r.leader();
            let follow = (!m.machine.serving() && leader != 0 && leader != n).then_some(leader);
            let term = r.term();
            if self.members[n as usize - 1]
                .relayed
                .relay
                .follow(follow, term)
            {
                self.void_relayed(n, None);
                // A link to the same node in a later term stays (as a node's link's
                // subscription does): what the leader delivered in the earlier term
                // may still be on it.
                for l in self
                    .links
                    .iter_mut()
                    .filter(|l| l.from == n && Some(l.to) != follow)
                {
                    l.closing = true;
                }
            }
            // A link ended (a crash, a cut healed) is made again, as a node links
            // again and its link subscribes again.
            let linked = self.links.iter().any(|l| l.from == n && !l.closing);
            if let (Some(to), false) = (follow, linked) {
                self.epochs += 1;
                self.report.links += 1;
                self.links.push(Link {
                    from: n,
                    to,
                    epoch: self.epochs,
                    down: Vec::new(),
                    up: Vec::new(),
                    closing: false,
                });
            }
        }
        let mut i = 0;
        while i < self.links.len() {
            let (n, to) = (self.links[i].from, self.links[i].to);
            // Down (it may be followed on what it said before it crashed): the link
            // waits to connect.
            if !self.reachable(n, to) || !self.up(to) {
                i += 1;
                continue;
            }
            if self.links[i].closing {
                self.end_link(i);
                continue;
            }
            self.carry(i)?;
            i += 1;
        }
        for n in 1..=MEMBERS {
            if self.up(n) {
                self.relayed_consumer(n)?;
            }
        }
        Ok(())
    }

    /// What link `i` (both ends up and reachable) carries this step.
    fn carry(&mut self, i: usize) -> Result<(), String> {
        let step = self.step;
        let (n, to, epoch) = (self.links[i].from, self.links[i].to, self.links[i].epoch);
        let cid = LINK + n;
        // Answers that reached the leader.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links[i].up)
            .into_iter()
            .partition(|(at, ..)| *at <= step);
        self.links[i].up = later;
        let leader = &mut self.members[to as usize - 1];
        let r = leader
            .replica
            .as_mut()
            .ok_or("a link to a member that is down")?;
        for (_, mid, ack) in due {
            if !ack {
                if leader.machine.nack(cid, mid).is_ok() {
                    let _ = give_back(r, &mut self.gave_back, mid);
                }
            } else if let Ok(Some(op)) = leader.machine.ack(cid, mid) {
                // One lost with a lost lead leaves the message to be delivered again.
                let _ = r.propose(op.encode());
            }
        }
        // The leader hands the link what it has room for.
        let term = r.term();
        while self.members[to as usize - 1].machine.held_by(cid) < LINK_PREFETCH {
            let Some((mid, body)) = self.next_for(to, cid)? else {
                break;
            };
            // Now and then a stalled connection: a delivery late by up to 300 steps,
            // long enough for its leader to lose the lead and win it again.
            let late = match self.rng.chance(1) {
                true => self.rng.below(300),
                false => self.rng.below(4),
            };
            let at = self.step + 1 + late;
            self.links[i].down.push((at, mid, body, term));
        }
        // Deliveries that reached the member.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links[i].down)
            .into_iter()
            .partition(|(at, ..)| *at <= step);
        self.links[i].down = later;
        for (_, mid, body, term) in due {
            let remote = Remote {
                from: to,
                epoch,
                did: mid,
                count: 1,
                term,
                headers: agora_protocol::Headers::new(),
                payload: body.into(),
            };
            if self.members[n as usize - 1]
                .relayed
                .relay
                .take(remote)
                .is_some()
            {
                let at = self.delay();
                self.links[i].up.push((at, mid, false));
            }
        }
        Ok(())
    }

    /// Member `n`'s consumer answers what is due of what came through its relay, and
    /// takes more within its prefetch.
    fn relayed_consumer(&mut self, n: u64) -> Result<(), String> {
        let step = self.step;
        let m = &mut self.members[n as usize - 1];
        let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut m.relayed.holding)
            .into_iter()
            .partition(|h| h.3 <= step);
        m.relayed.holding = kept;
        for (did, mid, value, ..) in due {
            self.holders.remove(&mid);
            let ack = !poison(value) && !self.rng.chance(10);
            let Some(up) = self.members[n as usize - 1].relayed.relay.answer(n, did) else {
                return Err(format!(
                    "member {n}'s relay lost delivery {did} (message {mid}) its consumer held"
                ));
            };
            match ack {
                true => self.report.acked += 1,
                false => self.report.nacked += 1,
            }
            let at = self.delay();
            if let Some(l) = self
                .links
                .iter_mut()
                .find(|l| (l.from, l.to, l.epoch) == (n, up.node, up.epoch))
            {
                l.up.push((at, up.did, ack));
            }
        }
        loop {
            let m = &mut self.members[n as usize - 1];
            if m.holding.len() + m.relayed.holding.len() >= PREFETCH {
                break;
            }
            let Some(r) = m.relayed.relay.next() else {
                break;
            };
            m.relayed.next_did += 1;
            let did = m.relayed.next_did;
            let up = Upstream::of(&r);
            m.relayed.relay.handed(n, did, up);
            let value =
                u64::from_le_bytes(r.payload[..].try_into().map_err(|_| "8 bytes".to_owned())?);
            if let Some(other) = self.holders.insert(up.did, n) {
                return Err(format!(
                    "member {n} handed out message {} (value {value}) through its relay while \
                     member {other}'s consumer held it",
                    up.did
                ));
            }
            self.report.delivered += 1;
            self.report.relayed += 1;
            if !self.delivered.insert(value) {
                self.report.redelivered += 1;
            }
            let slow = self.rng.chance(20);
            let at = step + 1 + self.rng.below(if slow { 150 } else { 12 });
            self.members[n as usize - 1]
                .relayed
                .holding
                .push((did, up.did, value, at, up.epoch));
        }
        Ok(())
    }

    /// A message acknowledged through an earlier delivery while out again with link
    /// consumer `cid`: over for the member's consumer that holds it.
    pub(super) fn settled_on_link(&mut self, cid: u64, mid: u64) {
        let n = cid - LINK;
        self.members[n as usize - 1]
            .relayed
            .holding
            .retain(|h| h.1 != mid);
        self.holders.remove(&mid);
    }
}
