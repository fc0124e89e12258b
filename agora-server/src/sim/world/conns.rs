//! Whole publishing connections in the simulated world: a client writes a batch of
//! frames as bytes; the real codec decodes them; the connection's [`Session`] says what
//! must happen ([`Effects`]); the driver (`driver.rs`) carries that out on the world's
//! queues and topics as `conn` does on the broker's — runs of fire-and-forget publishes
//! held back and handed over together, reservations taken as each publish is read,
//! chains run once per publish, `PUBACK`s once the message is placed. What the clients
//! send is made in `frames.rs`. Time moves the
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
use std::time::{Duration, Instant};

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_client, ClientFrame, ErrorCode, ErrorReply, ServerFrame};

use super::{session_limits, World};
use crate::message::Message;
use crate::session::{Effects, Liveness, Session, Step, SubHandle};

/// Publishing connections open at once.
const CONNS: usize = 3;
/// The chain the clients set and clear on destinations.
pub(super) const CHAIN: &str = "threshold header:v >= 3";
/// Topic publisher keys of connections start here (the world's own are below).
pub(super) const CONN_KEY: u64 = 1000;

/// The simulation's subscription handle: a consumer id. The world's queues never end a
/// subscription on their own here (deletes are told to the session at once).
impl SubHandle for u64 {
    fn ended(&self) -> bool {
        false
    }
}

/// Where a publish goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Queue(usize),
    Topic(usize),
}

/// A publish read and not yet placed: its queue message id, or its topic sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    Queue(u64),
    Topic(u64),
}

pub(crate) struct SimConn {
    pub(super) session: Session<u64>,
    /// The client's own idea of its confirm setting (what it asked for).
    pub(super) confirm: bool,
    pub(super) next_rid: u64,
    /// Requests sent with an id, oldest first: the id, and whether an answer is owed
    /// (false: a fire-and-forget publish, answered only if refused).
    pub(super) owed: VecDeque<(u64, bool)>,
    /// Per request id, what its answer must be when it is a publish: its tag and
    /// whether the chain will drop it.
    pub(super) expect: Vec<(u64, Tag, bool)>,
    /// Publishes read, not yet placed, in the order sent.
    pub(super) unplaced: VecDeque<Tag>,
    /// The driver's run of held-back publishes: where to, and what.
    pub(super) run: Option<(Target, Vec<(Tag, Message)>)>,
    /// Topic messages sent so far.
    pub(super) topic_seq: u64,
    /// When the client was last heard from, and when its ping timer fires.
    pub(super) heard: Instant,
    pub(super) timer: Instant,
    /// Stopped sending and answering: the liveness rule must give it up.
    pub(super) mute: bool,
    /// A UDP source: the token it must echo, and whether the client has echoed it.
    /// (UDP sources are not pinged; they never fall silent here.)
    pub(super) udp: Option<(String, bool)>,
    /// Per request id, the answer a rule fixes: `None` an `OK`, `Some(code)` an `ERR`.
    pub(super) rule: Vec<(u64, Option<ErrorCode>)>,
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

    /// Decodes the batch and carries out what the session says; true if the
    /// connection ended.
    pub(super) fn act(&mut self, id: u64, mut bytes: BytesMut) -> bool {
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
            // The broker's hot path first, as `Conn::act_on` takes it.
            let frame = match frame {
                ClientFrame::Pub(p) => match self.join_run(id, p) {
                    None => continue,
                    Some(p) => ClientFrame::Pub(p),
                },
                f => f,
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

    /// An answer the connection writes: checked against what its client sent.
    pub(super) fn answer(&mut self, id: u64, f: ServerFrame) {
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

    pub(super) fn leave(&mut self, id: u64, why: &str) {
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
pub(super) fn fail(broken: &mut Option<String>, why: String) {
    broken.get_or_insert(why);
}

pub(super) fn err(rid: Option<u64>, code: ErrorCode) -> ServerFrame {
    ServerFrame::Err(ErrorReply {
        rid,
        code,
        message: String::new(),
    })
}
