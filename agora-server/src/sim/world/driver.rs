//! The connection driver of the simulated world: carries out a session's effects on the
//! world's queues and topics as `conn` does on the broker's (runs of fire-and-forget
//! publishes held back and handed over together, reservations taken as each publish is
//! read, chains run once per publish, `PUBACK`s once the message is placed). The
//! clients and their checks are in `conns.rs`.

use std::sync::Arc;

use agora_protocol::bytes::Bytes;
use agora_protocol::{ErrorCode, Kind, Publish, ServerFrame};

use super::conns::{err, fail, Tag, Target};
use super::World;
use crate::message::Message;
use crate::mutators::{Chain, Env, Verdict};
use crate::queue::Refused;
use crate::session::{Ask, PubMode, Step, PUBLISH_RUN};
use crate::topic::TopicRefused;

impl World {
    /// One step; `Some` ends the connection.
    pub(super) fn carry_out(&mut self, id: u64, step: Step<u64>) -> Option<crate::session::End> {
        match step {
            Step::Nothing => {}
            Step::Reply(f) => self.answer(id, f),
            Step::Refuse(rid, r) => self.answer(id, err(rid, r.code)),
            Step::Publish { publish, mode } => self.publish_step(id, publish, mode),
            Step::Ask(Ask::Stats { rid, .. }) => self.answer(
                id,
                ServerFrame::StatsResp {
                    rid,
                    json: Bytes::from_static(b"{}"),
                },
            ),
            Step::Ask(Ask::ChainSet { rid, dest, chain }) => {
                match chain {
                    Some(text) => {
                        let text = std::str::from_utf8(&text).expect("the sim's chain");
                        let chain = Chain::parse(text, &Env::default()).expect("it parses");
                        self.chains.insert(dest, Arc::new(chain));
                    }
                    None => {
                        self.chains.remove(&dest);
                    }
                }
                self.answer(id, ServerFrame::Ok { rid })
            }
            Step::End(end) => return Some(end),
            other => fail(
                &mut self.broken,
                format!("connection {id}: unexpected {other:?}"),
            ),
        }
        None
    }

    /// Where a publish to `dest` goes: `None` for a name the world does not have (one
    /// the session refuses).
    fn target_of(&self, dest: &agora_protocol::Destination) -> Option<Target> {
        match dest.kind {
            Kind::Queue => (0..self.queues.len())
                .find(|q| self.queues[*q].shared.dest == *dest)
                .map(Target::Queue),
            Kind::Topic => (0..self.topics.len())
                .find(|t| self.topics[*t].topic.dest == *dest)
                .map(Target::Topic),
        }
    }

    /// The broker's hot path (`Conn::join`): a publish to the destination of the run
    /// held back joins it without the session's full rule when there is no chain, a
    /// queue has room, and `Session::joins_run` says so. `Some`: not taken, nothing
    /// changed.
    pub(super) fn join_run(&mut self, id: u64, p: Publish) -> Option<Publish> {
        // A request is never held back (as `Conn::join_run`).
        if agora_protocol::reply::reply_to(&p.headers).is_some() {
            return Some(p);
        }
        let c = self.conns.get(&id).expect("acting");
        let target = match (&c.run, self.target_of(&p.dest)) {
            (Some((t, _)), Some(target)) if *t == target && !self.chains.contains_key(&p.dest) => {
                target
            }
            _ => return Some(p),
        };
        let msg = Message {
            headers: p.headers,
            payload: p.payload,
            received: self.now,
        };
        let size = msg.size();
        let reserved = match target {
            Target::Queue(q) => self.queues[q].shared.reserve(size).is_ok(),
            Target::Topic(_) => true,
        };
        let c = self.conns.get_mut(&id).expect("acting");
        if reserved && c.session.joins_run() {
            let tag = Self::tag_of(target, &msg.payload);
            c.unplaced.push_back(tag);
            self.report.joined += 1;
            self.hold(id, target, tag, msg);
            return None;
        }
        if let (true, Target::Queue(q)) = (reserved, target) {
            self.queues[q].shared.unreserve(size);
        }
        Some(Publish {
            rid: p.rid,
            dest: p.dest,
            headers: msg.headers,
            payload: msg.payload,
        })
    }

    /// The sim's publishes carry their identity: a queue message's id, a topic's seq.
    fn tag_of(target: Target, payload: &[u8]) -> Tag {
        match target {
            Target::Queue(_) => {
                Tag::Queue(u64::from_le_bytes(payload[..8].try_into().expect("an id")))
            }
            Target::Topic(_) => Tag::Topic(u64::from_le_bytes(
                payload[8..16].try_into().expect("a seq"),
            )),
        }
    }

    /// A publish the session let through: its chain, then held back or placed.
    pub(super) fn publish_step(&mut self, id: u64, p: Publish, mode: PubMode) {
        let hold = mode.hold();
        let target = self.target_of(&p.dest).expect("the session let it through");
        let tag = Self::tag_of(target, &p.payload);
        self.conns
            .get_mut(&id)
            .expect("acting")
            .unplaced
            .push_back(tag);
        if mode.is_request() && !self.answered(id, target, tag, p.rid, hold) {
            return;
        }
        let mut msg = Message {
            headers: p.headers,
            payload: p.payload,
            received: self.now,
        };
        if let Some(chain) = self.chains.get(&p.dest).cloned() {
            let verdict = futures_lite::future::block_on(crate::mutators::run_on(&chain, &mut msg));
            if verdict == Verdict::Drop {
                self.report.filtered += 1;
                self.placed(id, tag, p.rid, mode, true);
                return;
            }
        }
        match target {
            Target::Queue(q) => match self.queues[q].shared.reserve(msg.size()) {
                Ok(()) if hold => self.hold(id, target, tag, msg),
                Ok(()) => {
                    self.enqueue(q, [msg]);
                    self.placed(id, tag, p.rid, mode, false);
                }
                Err(Refused::Full(_)) => self.refused(id, tag, p.rid, ErrorCode::QueueFull),
                Err(Refused::Memory(_)) => self.refused(id, tag, p.rid, ErrorCode::MemoryLimit),
                Err(Refused::Retired) => fail(&mut self.broken, "a retired queue".to_owned()),
                Err(Refused::Storage(why) | Refused::StorageFull(why)) => {
                    fail(&mut self.broken, why)
                }
            },
            Target::Topic(_) if hold => self.hold(id, target, tag, msg),
            Target::Topic(t) => match self.topics[t].topic.publish(&msg) {
                Ok(()) => {
                    self.report.topic_published += 1;
                    self.placed(id, tag, p.rid, mode, false);
                }
                Err(TopicRefused::Memory(_)) => {
                    self.refused(id, tag, p.rid, ErrorCode::MemoryLimit)
                }
                Err(TopicRefused::Closed) => fail(&mut self.broken, "a closed topic".to_owned()),
            },
        }
    }

    /// A request: never held back, and refused `no_responders` exactly when nobody
    /// listens on its destination. Whether anyone does, the destination says (a
    /// topic's subscribers and the wildcard subscriptions its name matches; a queue's
    /// consumers) and the world's own record must agree. False: refused.
    fn answered(
        &mut self,
        id: u64,
        target: Target,
        tag: Tag,
        rid: Option<u64>,
        hold: bool,
    ) -> bool {
        if hold {
            fail(
                &mut self.broken,
                format!("connection {id}: a request held back"),
            );
            return false;
        }
        // (says, must say true, may say true): a consumer whose connection dropped
        // without warning may or may not have been noticed by its queue yet.
        let (says, must, may) = match target {
            Target::Topic(t) => {
                let topic = &self.topics[t];
                let own = topic.subs.iter().any(|s| !s.sub.tx.is_closed());
                let wild = self
                    .wild_subs
                    .iter()
                    .any(|w| !w.sub.sub.tx.is_closed() && w.pattern.matches(&topic.topic.dest));
                (topic.topic.listened(), own || wild, own || wild)
            }
            Target::Queue(q) => {
                let mut theirs = self.consumers.values().filter(|c| c.queue == q);
                let may = theirs.clone().next().is_some();
                (
                    self.queues[q].state.consumers() > 0,
                    theirs.any(|c| !c.port.gone.get()),
                    may,
                )
            }
        };
        if (must && !says) || (says && !may) {
            fail(
                &mut self.broken,
                format!("connection {id}: a request's destination listened={says}, the world says it must be {must} and may be {may}"),
            );
            return false;
        }
        if !says {
            self.report.no_responders += 1;
            self.refused(id, tag, rid, ErrorCode::NoResponders);
            return false;
        }
        self.report.requests += 1;
        true
    }

    /// Holds a fire-and-forget publish in the run, ending a run for elsewhere first.
    pub(super) fn hold(&mut self, id: u64, target: Target, tag: Tag, msg: Message) {
        let c = self.conns.get_mut(&id).expect("acting");
        match &mut c.run {
            Some((t, msgs)) if *t == target => {
                msgs.push((tag, msg));
                if msgs.len() > PUBLISH_RUN as usize {
                    fail(
                        &mut self.broken,
                        format!("connection {id}: a run of {} publishes held", msgs.len()),
                    );
                }
            }
            _ => {
                self.end_run(id);
                let c = self.conns.get_mut(&id).expect("acting");
                c.run = Some((target, vec![(tag, msg)]));
            }
        }
    }

    /// Hands the held-back run over: a queue takes it as one batch (its room was
    /// reserved as each was read); a topic fans it out at once, or one by one if the
    /// budget cannot take it all.
    pub(super) fn end_run(&mut self, id: u64) {
        let Some((target, msgs)) = self.conns.get_mut(&id).and_then(|c| c.run.take()) else {
            return;
        };
        let tags: Vec<Tag> = msgs.iter().map(|(t, _)| *t).collect();
        match target {
            Target::Queue(q) => {
                self.enqueue(q, msgs.into_iter().map(|(_, m)| m));
                for tag in tags {
                    self.placed(id, tag, None, PubMode::Forget, false);
                }
            }
            Target::Topic(t) => {
                let all: Vec<Message> = msgs.iter().map(|(_, m)| m.clone()).collect();
                if self.topics[t].topic.publish_all(&all).is_ok() {
                    self.report.topic_published += all.len() as u64;
                    for tag in tags {
                        self.placed(id, tag, None, PubMode::Forget, false);
                    }
                    return;
                }
                for (tag, m) in msgs {
                    match self.topics[t].topic.publish(&m) {
                        Ok(()) => {
                            self.report.topic_published += 1;
                            self.placed(id, tag, None, PubMode::Forget, false);
                        }
                        Err(_) => self.refused(id, tag, None, ErrorCode::MemoryLimit),
                    }
                }
            }
        }
    }

    pub(super) fn enqueue(&mut self, q: usize, msgs: impl IntoIterator<Item = Message>) {
        let msgs: Vec<Message> = msgs.into_iter().collect();
        for m in &msgs {
            self.live.insert(super::msg_id(m));
            self.report.published += 1;
        }
        self.queues[q].state.enqueue(msgs, self.now);
    }

    /// A publish is placed (or filtered): it must be the oldest unplaced one of its
    /// connection; its mode, fixed when it was read, says whether a `PUBACK` is owed.
    pub(super) fn placed(
        &mut self,
        id: u64,
        tag: Tag,
        rid: Option<u64>,
        mode: PubMode,
        filtered: bool,
    ) {
        let c = self.conns.get_mut(&id).expect("acting");
        if filtered {
            // Dropped by its chain: it goes nowhere, so it has no place in the order
            // (its PUBACK, if owed, is still checked to come after all before it).
            c.unplaced.retain(|t| *t != tag);
        } else if c.unplaced.front() != Some(&tag) {
            fail(
                &mut self.broken,
                format!(
                    "connection {id}: {tag:?} placed before {:?}, sent earlier",
                    c.unplaced.front()
                ),
            );
            return;
        } else {
            c.unplaced.pop_front();
        }
        if let Some(ack) = mode.placed(rid, filtered) {
            self.report.confirmed += 1;
            self.answer(id, ack);
        }
    }

    /// A publish refused by its destination: answered at once, whatever its place.
    pub(super) fn refused(&mut self, id: u64, tag: Tag, rid: Option<u64>, code: ErrorCode) {
        self.report.refused += 1;
        let c = self.conns.get_mut(&id).expect("acting");
        c.unplaced.retain(|t| *t != tag);
        self.answer(id, err(rid, code));
    }
}
