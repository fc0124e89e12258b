//! Consumers on a node that does not lead their queue. Such a node subscribes, over its
//! link to the leader, as one consumer of the queue there (with the link's prefetch);
//! the leader's deliveries to it wait here for this node's consumers, who are given them
//! under delivery ids of their own; their `ACK`s and `NACK`s go back to the leader under
//! the leader's ids.
//!
//! A plain value: the task moves deliveries and answers in and out.
//!
//! When the leader changes, or its term does (the same node leading again after an
//! election: it gave back what it held when it stopped leading), or this node starts
//! leading, or loses its last consumer, what came from the old one is void here: the old
//! leader gave it back when the link's subscription ended or its lead did, and the new
//! leader delivers it again (at least once, as after any failover).

use std::collections::{BTreeMap, HashMap, VecDeque};

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::ClientFrame;

use super::Remote;

/// Where a delivery handed to one of this node's consumers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upstream {
    pub node: u64,
    pub epoch: u64,
    pub did: u64,
}

impl Upstream {
    pub fn of(r: &Remote) -> Upstream {
        Upstream {
            node: r.from,
            epoch: r.epoch,
            did: r.did,
        }
    }
}

/// The deliveries this node takes from its queue's leader.
#[derive(Default)]
pub(crate) struct Relay {
    /// The node they are taken from now, and the term it leads.
    from: Option<u64>,
    term: u64,
    /// Come from it, not yet handed to a consumer.
    waiting: VecDeque<Remote>,
    /// (consumer, its delivery id) → where the delivery came from, until answered.
    out: HashMap<(u64, u64), Upstream>,
}

impl Relay {
    /// Takes deliveries from `from`, leader of `term`, from now on (`None`: from no
    /// node); true when that changed (the node, or its term), and what came before is
    /// then forgotten.
    pub fn follow(&mut self, from: Option<u64>, term: u64) -> bool {
        if self.from == from && (from.is_none() || self.term == term) {
            return false;
        }
        self.from = from;
        self.term = term;
        self.waiting.clear();
        self.out.clear();
        true
    }

    /// A delivery that came over a link: kept when it came from the node followed, in
    /// the term followed (or one it did not say); given back when it did not (it is
    /// void here: the leader delivered it in an earlier term, and voided it when it
    /// stopped leading that one).
    pub fn take(&mut self, r: Remote) -> Option<Remote> {
        if self.from != Some(r.from) || (r.term != 0 && r.term != self.term) {
            return Some(r);
        }
        self.waiting.push_back(r);
        None
    }

    /// The next delivery to hand to a consumer.
    pub fn next(&mut self) -> Option<Remote> {
        self.waiting.pop_front()
    }

    /// Deliveries waiting for a consumer with room.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The delivery `up` names was handed to consumer `cid` as its delivery `did`: it
    /// is outstanding until the consumer answers.
    pub fn handed(&mut self, cid: u64, did: u64, up: Upstream) {
        self.out.insert((cid, did), up);
    }

    /// Consumer `cid` answered its delivery `did`: where it came from, if it is
    /// outstanding.
    pub fn answer(&mut self, cid: u64, did: u64) -> Option<Upstream> {
        self.out.remove(&(cid, did))
    }

    /// Consumer `cid` is gone: its outstanding deliveries, to give back.
    pub fn gone(&mut self, cid: u64) -> Vec<Upstream> {
        let mut back = Vec::new();
        self.out.retain(|&(c, _), up| {
            if c == cid {
                back.push(*up);
            }
            c != cid
        });
        back
    }

    /// Outstanding deliveries, all consumers'.
    pub fn outstanding(&self) -> usize {
        self.out.len()
    }

    /// Consumer `cid`'s outstanding deliveries.
    pub fn held(&self, cid: u64) -> usize {
        self.out.keys().filter(|(c, _)| *c == cid).count()
    }

    /// This node's link of epoch `epoch` to `node` ended: the leader took back every
    /// delivery it made on it, so they are void here too (waiting, or held by a
    /// consumer, whose answer is then refused). How many consumers held.
    pub fn link_ended(&mut self, node: u64, epoch: u64) -> usize {
        let on = |n: u64, e: u64| n == node && e == epoch;
        self.waiting.retain(|r| !on(r.from, r.epoch));
        let before = self.out.len();
        self.out.retain(|_, up| !on(up.node, up.epoch));
        before - self.out.len()
    }
}

/// Answers to send back upstream, gathered per link (node and epoch) and written once
/// a round; none is dropped while its link lives (one that finds the link's queue full
/// waits for the next round), since a delivery never answered would stay with the
/// link until it ends.
#[derive(Default)]
pub(crate) struct Answers {
    pending: BTreeMap<(u64, u64), BytesMut>,
}

impl Answers {
    /// `ACK` (`ack`) or plain `NACK` of the delivery `up` names.
    pub fn push(&mut self, up: Upstream, ack: bool) {
        match ack {
            true => self.answer(up, None),
            false => self.answer(up, Some(agora_protocol::Nack::Requeue)),
        }
    }

    /// `ACK` (`None`) or `NACK` with its option of the delivery `up` names.
    pub fn answer(&mut self, up: Upstream, nack: Option<agora_protocol::Nack>) {
        let f = match nack {
            None => ClientFrame::Ack {
                rid: None,
                did: up.did,
            },
            Some(how) => ClientFrame::Nack {
                rid: None,
                did: up.did,
                how,
            },
        };
        let b = self.pending.entry((up.node, up.epoch)).or_default();
        agora_protocol::encode(&f, b);
    }

    /// Every link's answers, to send: (node, epoch), the frames.
    pub fn take(&mut self) -> Vec<((u64, u64), Bytes)> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(k, b)| (k, b.freeze()))
            .collect()
    }

    /// Answers that could not go yet: sent first next time.
    pub fn keep(&mut self, link: (u64, u64), frames: Bytes) {
        let b = self.pending.entry(link).or_default();
        let later = std::mem::take(b);
        b.extend_from_slice(&frames);
        b.extend_from_slice(&later);
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(from: u64, did: u64) -> Remote {
        Remote {
            from,
            epoch: 1,
            did,
            count: 1,
            term: 0,
            headers: agora_protocol::Headers::new(),
            payload: agora_protocol::bytes::Bytes::from_static(b"m"),
        }
    }

    #[test]
    fn deliveries_from_the_leader_are_handed_out_and_answered_upstream() {
        let mut r = Relay::default();
        // Nothing is taken before a leader is followed.
        assert!(r.take(remote(2, 1)).is_some());
        assert!(r.follow(Some(2), 1));
        assert!(!r.follow(Some(2), 1));
        // The same node leading a later term: what came before is void.
        assert!(r.follow(Some(2), 3));
        assert!(!r.follow(Some(2), 3));
        // A delivery it made in an earlier term, still on its way, is void here.
        let late = Remote {
            term: 2,
            ..remote(2, 9)
        };
        assert!(r.take(late).is_some());
        let now = Remote {
            term: 3,
            ..remote(2, 9)
        };
        assert!(r.take(now).is_none());
        assert_eq!(r.next().map(|d| d.did), Some(9));
        assert!(r.take(remote(2, 10)).is_none());
        assert!(r.take(remote(2, 11)).is_none());
        // From another node: void.
        assert!(r.take(remote(3, 12)).is_some());
        assert_eq!(r.waiting(), 2);
        let a = r.next().unwrap();
        r.handed(7, 1, Upstream::of(&a));
        let b = r.next().unwrap();
        r.handed(8, 1, Upstream::of(&b));
        assert_eq!(r.next(), None);
        assert_eq!(r.outstanding(), 2);
        // Two consumers' same delivery id are two deliveries.
        let up = r.answer(8, 1).unwrap();
        assert_eq!((up.node, up.did), (2, 11));
        assert_eq!(r.answer(8, 1), None);
        assert_eq!(r.answer(7, 1).unwrap().did, 10);
        assert_eq!(r.outstanding(), 0);
    }

    #[test]
    fn a_consumer_gone_gives_back_its_own_deliveries_only() {
        let mut r = Relay::default();
        r.follow(Some(2), 1);
        for did in 1..=3 {
            assert!(r.take(remote(2, did)).is_none());
        }
        let (a, b, c) = (r.next().unwrap(), r.next().unwrap(), r.next().unwrap());
        r.handed(7, 1, Upstream::of(&a));
        r.handed(7, 2, Upstream::of(&b));
        r.handed(8, 1, Upstream::of(&c));
        let mut back: Vec<u64> = r.gone(7).into_iter().map(|u| u.did).collect();
        back.sort();
        assert_eq!(back, vec![1, 2]);
        assert_eq!(r.outstanding(), 1);
        assert_eq!(r.gone(7), vec![]);
        assert_eq!(r.answer(8, 1).unwrap().did, 3);
    }

    #[test]
    fn answers_go_per_link_in_order_and_wait_when_they_cannot_go() {
        let mut a = Answers::default();
        let up = |node, epoch, did| Upstream { node, epoch, did };
        a.push(up(2, 1, 10), true);
        a.push(up(3, 1, 11), false);
        a.push(up(2, 1, 12), true);
        let sent = a.take();
        assert!(a.is_empty());
        let text: Vec<((u64, u64), String)> = sent
            .iter()
            .map(|(k, b)| (*k, String::from_utf8_lossy(b).into_owned()))
            .collect();
        assert_eq!(
            text,
            vec![
                ((2, 1), "ACK 10\r\nACK 12\r\n".to_owned()),
                ((3, 1), "NACK 11\r\n".to_owned()),
            ]
        );
        // Kept ones go first next time.
        a.push(up(2, 1, 13), true);
        a.keep((2, 1), sent[0].1.clone());
        let again = a.take();
        assert_eq!(&again[0].1[..], b"ACK 10\r\nACK 12\r\nACK 13\r\n");
    }

    #[test]
    fn a_link_that_ended_voids_what_came_over_it_only() {
        let mut r = Relay::default();
        r.follow(Some(2), 1);
        let on = |epoch, did| Remote {
            epoch,
            ..remote(2, did)
        };
        // Deliveries 1, 2 and 5 came over the link of epoch 1; 3 and 4 over epoch 2's.
        for (epoch, did) in [(1, 1), (1, 2), (2, 3), (2, 4), (1, 5)] {
            assert!(r.take(on(epoch, did)).is_none());
        }
        for local in 1..=3 {
            let d = r.next().unwrap();
            r.handed(7, local, Upstream::of(&d));
        }
        assert_eq!((r.waiting(), r.held(7)), (2, 3));
        // Epoch 1 ended: the two it held and the one waiting are void.
        assert_eq!(r.link_ended(2, 1), 2);
        assert_eq!((r.answer(7, 1), r.answer(7, 2)), (None, None));
        assert_eq!(r.answer(7, 3).unwrap().did, 3);
        assert_eq!(r.next().unwrap().did, 4);
        assert_eq!(r.next(), None);
        // Another node's link, or one already gone: nothing.
        assert_eq!(r.link_ended(3, 2), 0);
    }

    #[test]
    fn a_new_leader_voids_what_came_from_the_old_one() {
        let mut r = Relay::default();
        r.follow(Some(2), 1);
        assert!(r.take(remote(2, 1)).is_none());
        assert!(r.take(remote(2, 2)).is_none());
        let a = r.next().unwrap();
        r.handed(7, 1, Upstream::of(&a));
        assert!(r.follow(Some(3), 1));
        // Neither the waiting one nor the outstanding one is the new leader's.
        assert_eq!((r.waiting(), r.outstanding()), (0, 0));
        assert_eq!(r.answer(7, 1), None);
        assert!(r.take(remote(2, 3)).is_some());
        assert!(r.take(remote(3, 1)).is_none());
        // Leading (or no consumer left): nothing is taken.
        assert!(r.follow(None, 1));
        assert!(r.take(remote(3, 2)).is_some());
    }
}
