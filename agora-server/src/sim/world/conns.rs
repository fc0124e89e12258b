//! Whole publishing connections in the simulated world: a client writes a batch of
//! frames as bytes; the real codec decodes them; the connection's [`Session`] says what
//! must happen ([`Effects`]); the driver here carries that out on the world's queues
//! and topics as `conn` does on the broker's — runs of fire-and-forget publishes held
//! back and handed over together, reservations taken as each publish is read, chains
//! run once per publish, `PUBACK`s once the message is placed. Time moves the
//! connection's ping timer through the session's liveness rule; some clients fall
//! silent and must be given up, the others answer every ping and must never be.
//!
//! What is checked, as it happens (the connection's own rules; the world's invariants
//! hold after every operation as well):
//! - every request with an id gets exactly one answer, in the order sent (a
//!   fire-and-forget `PUB` is answered only when refused);
//! - a connection's publishes are placed in the order it sent them (one its chain drops
//!   goes nowhere, so it has no place in that order), and none is left unplaced once
//!   its bytes are acted on;
//! - nothing is answered (`OK`, `PONG`, `PUBACK`, …) while a publish read before it is
//!   still unplaced: a `PUBACK` means the message, and every one before it, is placed;
//! - a `PUBACK` says `filtered` exactly when the destination's chain dropped it;
//! - a client is given up only after `(max_missed_pings + 1)` ping intervals of
//!   silence, never one that answers, and always one that stays silent that long;
//! - over UDP (some connections are UDP sources): a `SUB` before the source echoed its
//!   token is refused `unverified`, a wrong token changes nothing, the right one
//!   verifies it, and `STATS` and `HELP` are refused `not_permitted`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{
    decode_client, ClientFrame, Connect, Destination, ErrorCode, ErrorReply, Frame, Headers, Kind,
    Publish, ServerFrame,
};

use super::{dest, session_limits, World};
use crate::message::Message;
use crate::mutators::{Chain, Env, Verdict};
use crate::queue::Refused;
use crate::session::{Ask, Effects, Liveness, PubMode, Session, Step, SubHandle};
use crate::topic::TopicRefused;

/// Publishing connections open at once.
const CONNS: usize = 3;
/// The chain the clients set and clear on destinations.
const CHAIN: &str = "threshold header:v >= 3";
/// Topic publisher keys of connections start here (the world's own are below).
const CONN_KEY: u64 = 1000;

/// The simulation's subscription handle: a consumer id. The world's queues never end a
/// subscription on their own here (deletes are told to the session at once).
impl SubHandle for u64 {
    fn ended(&self) -> bool {
        false
    }
}

/// Where a publish goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Queue(usize),
    Topic(usize),
}

/// A publish read and not yet placed: its queue message id, or its topic sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Queue(u64),
    Topic(u64),
}

pub(crate) struct SimConn {
    session: Session<u64>,
    /// The client's own idea of its confirm setting (what it asked for).
    confirm: bool,
    next_rid: u64,
    /// Requests sent with an id, oldest first: the id, and whether an answer is owed
    /// (false: a fire-and-forget publish, answered only if refused).
    owed: VecDeque<(u64, bool)>,
    /// Per request id, what its answer must be when it is a publish: its tag and
    /// whether the chain will drop it.
    expect: Vec<(u64, Tag, bool)>,
    /// Publishes read, not yet placed, in the order sent.
    unplaced: VecDeque<Tag>,
    /// The driver's run of held-back publishes: where to, and what.
    run: Option<(Target, Vec<(Tag, Message)>)>,
    /// Topic messages sent so far.
    topic_seq: u64,
    /// When the client was last heard from, and when its ping timer fires.
    heard: Instant,
    timer: Instant,
    /// Stopped sending and answering: the liveness rule must give it up.
    mute: bool,
    /// A UDP source: the token it must echo, and whether the client has echoed it.
    /// (UDP sources are not pinged; they never fall silent here.)
    udp: Option<(String, bool)>,
    /// Per request id, the answer a rule fixes: `None` an `OK`, `Some(code)` an `ERR`.
    rule: Vec<(u64, Option<ErrorCode>)>,
}

impl World {
    /// A client writes a batch of frames (or opens a connection, or falls silent).
    pub(super) fn conn_send(&mut self) -> String {
        let talking: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.mute)
            .map(|(id, _)| *id)
            .collect();
        if self.conns.len() < CONNS && (talking.is_empty() || self.rng.chance(10)) {
            let id = self.next_cid;
            self.next_cid += 1;
            let udp = self.rng.chance(30).then(|| format!("{:016x}", id));
            let session = match &udp {
                Some(token) => Session::new(session_limits(), self.now).over_udp(token.clone()),
                None => Session::new(session_limits(), self.now),
            };
            let conn = SimConn {
                session,
                confirm: false,
                next_rid: 1,
                owed: VecDeque::new(),
                expect: Vec::new(),
                unplaced: VecDeque::new(),
                run: None,
                topic_seq: 0,
                heard: self.now,
                timer: self.now + session_limits().ping_interval,
                mute: false,
                udp: udp.map(|t| (t, false)),
                rule: Vec::new(),
            };
            self.conns.insert(id, conn);
            return format!("connection {id} opens");
        }
        if talking.is_empty() {
            return "no connection to talk on".to_owned();
        }
        let id = talking[self.rng.below(talking.len() as u64) as usize];
        if self.rng.chance(3) && self.conns[&id].udp.is_none() {
            self.conns.get_mut(&id).expect("talking").mute = true;
            return format!("connection {id} falls silent");
        }
        let (bytes, what) = self.batch(id);
        let ended = self.act(id, bytes);
        format!(
            "connection {id} sends {what}{}",
            if ended { ", ends" } else { "" }
        )
    }

    /// A random batch of frames from connection `id`, encoded; and what it holds.
    fn batch(&mut self, id: u64) -> (BytesMut, String) {
        let mut out = BytesMut::new();
        let mut what = Vec::new();
        let n = 1 + self.rng.below(8);
        for i in 0..n {
            let roll = self.rng.below(100);
            let c = self.conns.get_mut(&id).expect("sending");
            let rid = match self.rng.chance(50) {
                true => {
                    c.next_rid += 1;
                    Some(c.next_rid)
                }
                false => None,
            };
            let frame = match roll {
                0..=64 => {
                    let (frame, w) = self.publish_frame(id, rid);
                    what.push(w);
                    frame
                }
                65..=72 => {
                    let on = self.rng.chance(50);
                    what.push(format!("SETACK {on}"));
                    ClientFrame::SetAck { rid, on }
                }
                73..=77 => {
                    let on = self.rng.chance(50);
                    what.push(format!("CONNECT confirm={on}"));
                    ClientFrame::Connect(Connect {
                        rid,
                        name: None,
                        proto: None,
                        confirm: Some(on),
                        token: None,
                    })
                }
                78..=82 => {
                    what.push("PING".to_owned());
                    ClientFrame::PingReq { rid }
                }
                83..=85 => {
                    what.push("STATS".to_owned());
                    ClientFrame::Stats {
                        rid,
                        page: Default::default(),
                    }
                }
                86..=88 if c.udp.is_some() => {
                    // The UDP rules: no subscription before the token is echoed, a
                    // wrong token changes nothing, large answers refused.
                    c.next_rid += 1;
                    let r = c.next_rid;
                    let (token, verified) = c.udp.clone().expect("udp");
                    let (frame, rule, w) = match self.rng.below(4) {
                        0 if !verified => (
                            ClientFrame::Sub(agora_protocol::Subscribe {
                                rid: Some(r),
                                dest: dest(Kind::Topic, "events0"),
                                sid: 7,
                                prefetch: None,
                                ack: None,
                            }),
                            Some(ErrorCode::Unverified),
                            "SUB before proving",
                        ),
                        1 => (
                            ClientFrame::Connect(Connect {
                                rid: Some(r),
                                token: Some(token),
                                ..Connect::default()
                            }),
                            None,
                            "CONNECT with its token",
                        ),
                        2 => (
                            ClientFrame::Connect(Connect {
                                rid: Some(r),
                                token: Some("0".repeat(16)),
                                ..Connect::default()
                            }),
                            Some(ErrorCode::Unverified),
                            "CONNECT with a wrong token",
                        ),
                        _ => (
                            ClientFrame::Help { rid: Some(r) },
                            Some(ErrorCode::NotPermitted),
                            "HELP over UDP",
                        ),
                    };
                    if matches!(&frame, ClientFrame::Connect(k) if k.token.as_ref() == c.udp.as_ref().map(|u| &u.0))
                    {
                        c.udp.as_mut().expect("udp").1 = true;
                    }
                    c.rule.push((r, rule));
                    c.owed.push_back((r, true));
                    what.push(w.to_owned());
                    frame.encode(&mut out);
                    continue;
                }
                86..=88 => {
                    what.push("UNSUB of nothing".to_owned());
                    ClientFrame::Unsub { rid, sid: 999 }
                }
                89..=90 => {
                    what.push("ACK of nothing".to_owned());
                    ClientFrame::Ack { rid, did: 1 << 40 }
                }
                91..=95 => {
                    let d = self.chain_target();
                    let set = self.rng.chance(50);
                    what.push(format!("CHAIN {} {d}", if set { "SET" } else { "CLEAR" }));
                    // The client's model of the chains, as they will be when this
                    // frame is acted on (the session keeps the order).
                    match set {
                        true => self.chain_model.insert(d.clone()),
                        false => self.chain_model.remove(&d),
                    };
                    match set {
                        true => ClientFrame::ChainSet {
                            rid,
                            dest: d,
                            chain: Bytes::from_static(CHAIN.as_bytes()),
                        },
                        false => ClientFrame::ChainClear { rid, dest: d },
                    }
                }
                _ if i == n - 1 => {
                    what.push("DISCONNECT".to_owned());
                    ClientFrame::Disconnect
                }
                _ => {
                    what.push("PONG".to_owned());
                    ClientFrame::PingResp { rid: None }
                }
            };
            let c = self.conns.get_mut(&id).expect("sending");
            match &frame {
                ClientFrame::SetAck { on, .. } => c.confirm = *on,
                ClientFrame::Connect(Connect {
                    confirm: Some(on), ..
                }) => c.confirm = *on,
                _ => {}
            }
            if let (Some(r), ClientFrame::Stats { .. }, Some(_)) = (rid, &frame, &c.udp) {
                c.rule.push((r, Some(ErrorCode::NotPermitted)));
            }
            if let Some(r) = rid {
                let owed = match &frame {
                    ClientFrame::Pub(_) => c.confirm,
                    ClientFrame::PingResp { .. } | ClientFrame::Disconnect => false,
                    _ => true,
                };
                if !matches!(
                    frame,
                    ClientFrame::PingResp { .. } | ClientFrame::Disconnect
                ) {
                    c.owed.push_back((r, owed));
                }
            }
            frame.encode(&mut out);
        }
        (out, what.join(", "))
    }

    fn chain_target(&mut self) -> Destination {
        match self.rng.below(2) {
            0 => self.queues[2].shared.dest.clone(),
            _ => self.topics[1].topic.dest.clone(),
        }
    }

    /// A `PUB` to a work queue or a topic (now and then to a reserved name), with the
    /// header the sim's chain tests; notes what the answer must be.
    fn publish_frame(&mut self, id: u64, rid: Option<u64>) -> (ClientFrame, String) {
        let v = self.rng.below(6);
        let mut headers = Headers::default();
        headers.insert("v", &v.to_string()).expect("a valid header");
        let pad = self.rng.below(80) as usize;
        let (d, tag, body) = match self.rng.below(10) {
            0 => (dest(Kind::Queue, "$sys.x"), None, vec![0; 8]),
            1..=5 => {
                let q = (self.rng.below(2) * 2) as usize;
                let mid = self.next_id;
                self.next_id += 1;
                let mut body = mid.to_le_bytes().to_vec();
                body.resize(8 + pad, b'.');
                (
                    self.queues[q].shared.dest.clone(),
                    Some(Tag::Queue(mid)),
                    body,
                )
            }
            _ => {
                let t = self.rng.below(2) as usize;
                let c = self.conns.get_mut(&id).expect("sending");
                let seq = c.topic_seq;
                c.topic_seq += 1;
                let mut body = (CONN_KEY + id).to_le_bytes().to_vec();
                body.extend_from_slice(&seq.to_le_bytes());
                body.resize(16 + pad, b'.');
                (
                    self.topics[t].topic.dest.clone(),
                    Some(Tag::Topic(seq)),
                    body,
                )
            }
        };
        let what = format!("PUB {d} v={v}");
        if let (Some(tag), Some(r)) = (tag, rid) {
            let filtered = v < 3 && self.chain_model.contains(&d);
            let c = self.conns.get_mut(&id).expect("sending");
            c.expect.push((r, tag, filtered));
        }
        let frame = ClientFrame::Pub(Publish {
            rid,
            dest: d,
            headers,
            payload: Bytes::from(body),
        });
        (frame, what)
    }

    /// Decodes the batch and carries out what the session says; true if the
    /// connection ended.
    fn act(&mut self, id: u64, mut bytes: BytesMut) -> bool {
        let now = self.now;
        let c = self.conns.get_mut(&id).expect("acting");
        c.session.heard(now);
        c.heard = now;
        loop {
            let frame = match decode_client(&mut bytes) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    fail(
                        &mut self.broken,
                        format!("connection {id}: the codec refused: {e}"),
                    );
                    return false;
                }
            };
            let c = self.conns.get_mut(&id).expect("acting");
            let Effects { end_run, step } = c.session.on_frame(frame);
            if end_run {
                self.end_run(id);
            }
            if let Some(end) = self.carry_out(id, step) {
                self.end_run(id);
                self.leave(id, end.reason());
                return true;
            }
        }
        let c = self.conns.get_mut(&id).expect("acting");
        if c.session.bytes_done() {
            self.end_run(id);
        }
        let c = self.conns.get_mut(&id).expect("acting");
        if let Some(t) = c.unplaced.front() {
            fail(
                &mut self.broken,
                format!("connection {id}: {t:?} unplaced after its bytes"),
            );
        }
        if let Some((r, _)) = c.owed.iter().find(|(_, owed)| *owed) {
            fail(
                &mut self.broken,
                format!("connection {id}: request #{r} never answered"),
            );
        }
        if let Some((_, verified)) = &c.udp {
            if c.session.verified() != *verified {
                fail(
                    &mut self.broken,
                    format!(
                        "connection {id}: the session says verified={}, its client {verified}",
                        c.session.verified()
                    ),
                );
            }
        }
        c.owed.clear();
        c.expect.clear();
        c.rule.clear();
        false
    }

    /// One step; `Some` ends the connection.
    fn carry_out(&mut self, id: u64, step: Step<u64>) -> Option<crate::session::End> {
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

    /// A publish the session let through: its chain, then held back or placed.
    fn publish_step(&mut self, id: u64, p: Publish, mode: PubMode) {
        let hold = mode.hold();
        let target = match p.dest.kind {
            Kind::Queue => Target::Queue(
                (0..self.queues.len())
                    .find(|q| self.queues[*q].shared.dest == p.dest)
                    .expect("a work queue"),
            ),
            Kind::Topic => Target::Topic(
                (0..self.topics.len())
                    .find(|t| self.topics[*t].topic.dest == p.dest)
                    .expect("a topic"),
            ),
        };
        let tag = match target {
            Target::Queue(_) => Tag::Queue(u64::from_le_bytes(
                p.payload[..8].try_into().expect("an id"),
            )),
            Target::Topic(_) => Tag::Topic(u64::from_le_bytes(
                p.payload[8..16].try_into().expect("a seq"),
            )),
        };
        self.conns
            .get_mut(&id)
            .expect("acting")
            .unplaced
            .push_back(tag);
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

    /// Holds a fire-and-forget publish in the run, ending a run for elsewhere first.
    fn hold(&mut self, id: u64, target: Target, tag: Tag, msg: Message) {
        let c = self.conns.get_mut(&id).expect("acting");
        match &mut c.run {
            Some((t, msgs)) if *t == target => msgs.push((tag, msg)),
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
    fn end_run(&mut self, id: u64) {
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

    fn enqueue(&mut self, q: usize, msgs: impl IntoIterator<Item = Message>) {
        let msgs: Vec<Message> = msgs.into_iter().collect();
        for m in &msgs {
            self.live.insert(super::msg_id(m));
            self.report.published += 1;
        }
        self.queues[q].state.enqueue(msgs, self.now);
    }

    /// A publish is placed (or filtered): it must be the oldest unplaced one of its
    /// connection; its mode, fixed when it was read, says whether a `PUBACK` is owed.
    fn placed(&mut self, id: u64, tag: Tag, rid: Option<u64>, mode: PubMode, filtered: bool) {
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
    fn refused(&mut self, id: u64, tag: Tag, rid: Option<u64>, code: ErrorCode) {
        self.report.refused += 1;
        let c = self.conns.get_mut(&id).expect("acting");
        c.unplaced.retain(|t| *t != tag);
        self.answer(id, err(rid, code));
    }

    /// An answer the connection writes: checked against what its client sent.
    fn answer(&mut self, id: u64, f: ServerFrame) {
        let c = self.conns.get_mut(&id).expect("acting");
        let (rid, is_err) = match &f {
            ServerFrame::Ok { rid }
            | ServerFrame::PingResp { rid }
            | ServerFrame::StatsResp { rid, .. }
            | ServerFrame::PubAck { rid, .. } => (*rid, false),
            ServerFrame::Err(e) => (e.rid, true),
            other => {
                fail(
                    &mut self.broken,
                    format!("connection {id}: answered {other:?}"),
                );
                return;
            }
        };
        if !is_err && !c.unplaced.is_empty() {
            fail(
                &mut self.broken,
                format!(
                    "connection {id}: answered {f:?} with {:?} still unplaced",
                    c.unplaced
                ),
            );
            return;
        }
        if let ServerFrame::PubAck { rid, filtered } = &f {
            let want = c.expect.iter().find(|(r, ..)| Some(*r) == *rid);
            if let Some((_, _, should)) = want {
                if should != filtered {
                    fail(&mut self.broken, format!(
                        "connection {id}: PUBACK #{rid:?} filtered={filtered}, the chain says {should}"
                    ));
                    return;
                }
            }
        }
        let Some(r) = rid else { return };
        if let Some(i) = c.rule.iter().position(|(q, _)| *q == r) {
            let (_, want) = c.rule.swap_remove(i);
            let got = match &f {
                ServerFrame::Err(e) => Some(e.code),
                _ => None,
            };
            if got != want {
                fail(
                    &mut self.broken,
                    format!("connection {id}: #{r} answered {f:?}, the rule says {want:?}"),
                );
                return;
            }
        }
        loop {
            match c.owed.pop_front() {
                Some((o, _)) if o == r => return,
                // Skipped: only a fire-and-forget publish may go unanswered.
                Some((o, false)) if o < r => continue,
                other => {
                    fail(
                        &mut self.broken,
                        format!("connection {id}: answer #{r} ({f:?}) when {other:?} was next"),
                    );
                    return;
                }
            }
        }
    }

    fn leave(&mut self, id: u64, why: &str) {
        if let Some(c) = self.conns.remove(&id) {
            if !c.unplaced.is_empty() {
                fail(
                    &mut self.broken,
                    format!(
                        "connection {id} ended ({why}) with {:?} unplaced",
                        c.unplaced
                    ),
                );
            }
        }
        self.report.conns_ended += 1;
    }

    /// Time passed: each connection's ping timer fires as often as it would have,
    /// through the session's liveness rule.
    pub(super) fn conn_timers(&mut self) {
        let every = session_limits().ping_interval;
        let max = session_limits().max_missed_pings;
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            for _ in 0..1000 {
                let now = self.now;
                let Some(c) = self.conns.get_mut(&id) else {
                    break;
                };
                // UDP sources are not pinged (an idle timeout forgets them instead).
                if c.timer > now || c.udp.is_some() {
                    break;
                }
                let at = c.timer;
                match c.session.ping_due(at) {
                    Liveness::Wait(left) => c.timer = at + left,
                    Liveness::Ping => {
                        self.report.pings += 1;
                        c.timer = at + every;
                        if !c.mute {
                            // It answers at once.
                            c.session.heard(at);
                            c.heard = at;
                            let fx = c.session.on_frame(ClientFrame::PingResp { rid: None });
                            if fx.end_run || !matches!(fx.step, Step::Nothing) {
                                fail(&mut self.broken, format!("PINGRESP on {id} gave {fx:?}"));
                            }
                        }
                    }
                    Liveness::GiveUp(n) => {
                        let quiet = at.saturating_duration_since(c.heard);
                        if !c.mute || quiet < every * (max + 1) || n != max {
                            fail(
                                &mut self.broken,
                                format!(
                                    "connection {id} given up after {quiet:?} silent (mute: {})",
                                    c.mute
                                ),
                            );
                        }
                        self.report.silent += 1;
                        self.leave(id, "silent");
                    }
                }
            }
            if let Some(c) = self.conns.get(&id).filter(|c| c.udp.is_none()) {
                let quiet = self.now.saturating_duration_since(c.heard);
                if quiet >= every * (max + 1) + Duration::from_millis(1) {
                    fail(
                        &mut self.broken,
                        format!("connection {id} silent for {quiet:?} and still kept"),
                    );
                }
            }
        }
    }
}

/// Notes a broken rule; the first one seen is the one reported.
fn fail(broken: &mut Option<String>, why: String) {
    broken.get_or_insert(why);
}

fn err(rid: Option<u64>, code: ErrorCode) -> ServerFrame {
    ServerFrame::Err(ErrorReply {
        rid,
        code,
        message: String::new(),
    })
}
