//! Topic operations of the simulated world: publishers, subscribers that join, fall
//! behind, drain (checking each publisher's order) and leave.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::{message, SimSub, WildSimSub, World, PUBLISHERS, SUBSCRIBER_BUFFER};
use crate::auth::Pattern;
use crate::shipper::Outbox;
use crate::topic::{Subscriber, TopicRefused};

impl World {
    pub(super) fn topic_publish(&mut self, t: usize) -> String {
        let p = self.rng.below(PUBLISHERS as u64) as u8;
        let seq = self.seqs[p as usize];
        let pad = self.rng.below(64) as usize;
        // Now and then the message came over a cluster link (byte 16 says so).
        let from_link = self.rng.below(4) == 0;
        let mut body = (p as u64).to_le_bytes().to_vec();
        body.extend_from_slice(&seq.to_le_bytes());
        body.push(if from_link { b'L' } else { b'.' });
        body.resize(17 + pad, b'.');
        let msg = message(body, self.now);
        match self.topics[t]
            .topic
            .publish_all_as(std::slice::from_ref(&msg), None, from_link)
        {
            Ok(_) => {
                self.seqs[p as usize] += 1;
                self.report.topic_published += 1;
                self.report.from_link += from_link as u64;
                format!(
                    "publisher {p} sends {seq} to topic {t}{}",
                    if from_link { " (over a link)" } else { "" }
                )
            }
            Err(TopicRefused::Memory(_)) => {
                self.report.refused += 1;
                format!("publisher {p} refused on topic {t} (memory)")
            }
            Err(TopicRefused::Closed) => format!("topic {t} closed"),
        }
    }

    /// A wildcard subscription joins the index (`*` and `>` match every topic here, a
    /// name only its own).
    pub(super) fn wild_subscribe(&mut self) -> String {
        let sid = self.next_cid;
        self.next_cid += 1;
        let text = ["topic:*", "topic:>", "topic:events1"][self.rng.below(3) as usize];
        let pattern = Pattern::parse(text).expect("a pattern");
        let link = self.pick_link();
        let (sub, rx) = subscriber(sid, Some(pattern.clone()), link);
        self.wild.subscribe(&pattern, sub.clone());
        self.wild_subs.push(WildSimSub {
            pattern,
            sub: SimSub {
                sub,
                rx,
                last: BTreeMap::new(),
            },
        });
        format!("wildcard subscriber {sid} joins {text}{}", via(link))
    }

    pub(super) fn wild_unsubscribe(&mut self) -> String {
        if self.wild_subs.is_empty() {
            return "no wildcard subscriber".to_owned();
        }
        let i = self.rng.below(self.wild_subs.len() as u64) as usize;
        let w = self.wild_subs.swap_remove(i);
        // Cut off already (slow_consumer) when it is no longer there.
        self.wild.unsubscribe(&w.pattern, &w.sub.sub);
        let left: usize = w.sub.rx.close_and_drain().iter().map(|d| d.charged).sum();
        self.budget.give_back(left);
        format!("wildcard subscriber {} leaves", w.sub.sub.sid)
    }

    /// A wildcard subscriber's shipper writes what it has: each delivery must name a
    /// topic its pattern matches, and each publisher's messages (one sequence across
    /// topics, published one at a time) must arrive in order.
    pub(super) fn wild_drain(&mut self) -> String {
        if self.wild_subs.is_empty() {
            return "no wildcard subscriber to drain".to_owned();
        }
        let i = self.rng.below(self.wild_subs.len() as u64) as usize;
        let w = &mut self.wild_subs[i];
        let mut batch = VecDeque::new();
        let _ = w.sub.rx.take(&mut batch);
        let n = batch.len();
        for d in batch {
            self.budget.give_back(d.charged);
            match &d.topic {
                Some(t) if w.pattern.matches(t) => {}
                other => {
                    self.broken = Some(format!(
                        "wildcard subscriber {} ({}) got a delivery from {other:?}",
                        w.sub.sub.sid, w.pattern
                    ));
                }
            }
            let p = u64::from_le_bytes(d.msg.payload[..8].try_into().expect("16 bytes"));
            let seq = u64::from_le_bytes(d.msg.payload[8..16].try_into().expect("16 bytes"));
            if let Some(why) = link_rule(
                &mut self.link_seen,
                &w.sub.sub,
                &d.msg.payload,
                &mut self.report,
            ) {
                self.broken = Some(why);
            }
            if let Some(&last) = w.sub.last.get(&p) {
                if seq <= last {
                    self.broken = Some(format!(
                        "wildcard subscriber {} got {seq} from publisher {p} after {last}",
                        w.sub.sub.sid
                    ));
                }
            }
            w.sub.last.insert(p, seq);
            self.report.wild_delivered += 1;
        }
        format!("wildcard subscriber {} writes {n}", w.sub.sub.sid)
    }

    pub(super) fn topic_subscribe(&mut self, t: usize) -> String {
        let sid = self.next_cid;
        self.next_cid += 1;
        let link = self.pick_link();
        let (sub, rx) = subscriber(sid, None, link);
        self.topics[t].topic.subscribe(sub.clone());
        self.topics[t].subs.push(SimSub {
            sub,
            rx,
            last: BTreeMap::new(),
        });
        format!("subscriber {sid} joins topic {t}{}", via(link))
    }

    pub(super) fn topic_unsubscribe(&mut self, t: usize) -> String {
        let st = &mut self.topics[t];
        if st.subs.is_empty() {
            return "no topic subscriber".to_owned();
        }
        let i = self.rng.below(st.subs.len() as u64) as usize;
        let s = st.subs.swap_remove(i);
        st.topic.unsubscribe(&s.sub);
        // What it still held goes back as the subscription is dropped.
        let left: usize = s.rx.close_and_drain().iter().map(|d| d.charged).sum();
        self.budget.give_back(left);
        format!("subscriber {} leaves topic {t}", s.sub.sid)
    }

    /// A topic subscriber's shipper writes what it has: order per publisher must hold.
    pub(super) fn topic_drain(&mut self, t: usize) -> String {
        let st = &mut self.topics[t];
        if st.subs.is_empty() {
            return "no topic subscriber to drain".to_owned();
        }
        let i = self.rng.below(st.subs.len() as u64) as usize;
        let s = &mut st.subs[i];
        let mut batch = VecDeque::new();
        let _ = s.rx.take(&mut batch);
        let n = batch.len();
        for d in batch {
            self.budget.give_back(d.charged);
            // The publisher's key (the world's own, or a connection's), then its sequence.
            let p = u64::from_le_bytes(d.msg.payload[..8].try_into().expect("16 bytes"));
            let seq = u64::from_le_bytes(d.msg.payload[8..16].try_into().expect("16 bytes"));
            if let Some(why) = link_rule(
                &mut self.link_seen,
                &s.sub,
                &d.msg.payload,
                &mut self.report,
            ) {
                self.broken = Some(why);
            }
            if let Some(&last) = s.last.get(&p) {
                if seq <= last {
                    self.broken = Some(format!(
                        "subscriber {} got {seq} from publisher {p} after {last}",
                        s.sub.sid
                    ));
                }
            }
            s.last.insert(p, seq);
            self.report.topic_delivered += 1;
        }
        format!("subscriber {} writes {n}", s.sub.sid)
    }

    /// Whose a new subscription is: this node's own clients' (two in three), or one of
    /// two other nodes' links.
    fn pick_link(&mut self) -> Option<u64> {
        match self.rng.below(3) {
            0 => Some(1 + self.rng.below(2)),
            _ => None,
        }
    }
}

fn via(link: Option<u64>) -> String {
    link.map(|l| format!(" (link {l})")).unwrap_or_default()
}

/// The cluster's rules for a delivery to a link's subscription: a message that came
/// over a link is never handed to one, and a link is handed each message once,
/// however many of its subscriptions match. `Some`: the rule broken.
fn link_rule(
    seen: &mut BTreeMap<u64, std::collections::BTreeSet<(u64, u64)>>,
    sub: &Subscriber,
    payload: &[u8],
    report: &mut crate::sim::Report,
) -> Option<String> {
    let link = sub.link?;
    report.link_delivered += 1;
    let p = u64::from_le_bytes(payload[..8].try_into().expect("16 bytes"));
    let seq = u64::from_le_bytes(payload[8..16].try_into().expect("16 bytes"));
    if payload.get(16) == Some(&b'L') {
        return Some(format!(
            "subscriber {} of link {link} was handed {seq} from publisher {p}, which came over a link",
            sub.sid
        ));
    }
    if !seen.entry(link).or_default().insert((p, seq)) {
        return Some(format!(
            "link {link} was handed {seq} from publisher {p} twice (again through subscriber {})",
            sub.sid
        ));
    }
    None
}

/// A simulated topic subscriber (a wildcard one with its pattern), and its deliveries'
/// receiving end; its outbox goes nowhere.
fn subscriber(
    sid: u64,
    pattern: Option<Pattern>,
    link: Option<u64>,
) -> (Arc<Subscriber>, crate::deliveries::DeliveryRx) {
    let (tx, rx) = crate::deliveries::queue();
    let (outbox, _) = Outbox::new(64, usize::MAX, Default::default());
    let sub = Arc::new(Subscriber {
        sid,
        tx,
        cap: SUBSCRIBER_BUFFER,
        outbox,
        dropped: Default::default(),
        pattern,
        link,
        interest: None,
    });
    (sub, rx)
}
