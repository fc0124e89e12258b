//! Clients without the right: one that never authenticated, one authenticated as a user
//! with no right on any of the world's destinations, and that user again through the
//! MQTT front door's bridge (whose session owns its user's MQTT session queues,
//! `$mqtt.session.outsider.…`, and nobody else's). Each sends every kind of frame at
//! the world's queues and topics (the third also at other users' session queues, and
//! binds its own to the world's topics, which it may not read); its session must refuse everything that would touch
//! them (`not_authenticated`, `not_permitted`, or the harmless refusals of an `ACK` or
//! `UNSUB` with nothing to act on, or a `PURGE` of a topic) and act only on what changes nothing (pings, `HELP`,
//! `SETACK`, a `CONNECT` without credentials, `STATS` filtered to what it may see,
//! `DISCONNECT`). No step of theirs ever reaches the world, so its invariants, checked
//! after every operation, show they changed nothing.

use std::sync::Arc;

use agora_protocol::bytes::Bytes;
use agora_protocol::{ClientFrame, Connect, ErrorCode, Headers, Publish, ServerFrame, Subscribe};

use super::conns::fail;
use super::{session_limits, World};
use crate::auth::{Pattern, Rights, User};
use crate::session::{Access, Ask, End, Session, Step};

/// The user the outsider is: it may publish and subscribe only where the world has
/// nothing.
fn outsider() -> Arc<User> {
    let elsewhere = || vec![Pattern::parse("queue:elsewhere.>").expect("a pattern")];
    let rights = Rights {
        publish: elsewhere(),
        subscribe: elsewhere(),
        admin: false,
    };
    Arc::new(User::new("outsider", None, Some("CN=outsider"), rights).expect("a user"))
}

/// The three intruders' sessions: unauthenticated, the outsider, and the outsider's
/// MQTT bridge.
pub(super) fn sessions(now: std::time::Instant) -> [Session<u64>; 3] {
    [
        Session::new(session_limits(), now).with_access(Access::Pending),
        Session::new(session_limits(), now).with_access(Access::User(outsider())),
        Session::new(session_limits(), now)
            .with_access(Access::User(outsider()))
            .for_mqtt(),
    ]
}

/// The outsider's own MQTT session queue.
const OWN_SESSION: &str = "$mqtt.session.outsider.dev";

/// Other users' (and the no-user) MQTT session queues.
const OTHER_SESSIONS: [&str; 3] = [
    "$mqtt.session.alice.dev",
    "$mqtt.session._.dev",
    "$mqtt.session.outsider2.dev",
];

impl World {
    /// One frame from one of the intruders, checked against what it may do.
    pub(super) fn intrude(&mut self) -> String {
        let which = self.rng.below(3) as usize;
        let frame = match which == 2 && self.rng.chance(40) {
            true => self.session_queue_frame(),
            false => self.intruder_frame(),
        };
        let what = format!(
            "{} intruder: {}",
            ["unauthenticated", "outsider", "outsider over MQTT"][which],
            frame.command()
        );
        // Only the bridge's own session queue may be subscribed to.
        let own_sub = which == 2
            && matches!(&frame, ClientFrame::Sub(s) if s.dest.name.as_str() == OWN_SESSION);
        let pending = which == 0;
        let command = frame.command();
        let fx = self.intruders[which].on_frame(frame);
        let allowed = match (&fx.step, pending) {
            // CONNECT without credentials is refused the same way.
            (Step::Refuse(_, r), true) => r.code == ErrorCode::NotAuthenticated,
            (Step::Refuse(_, r), false) => matches!(
                r.code,
                ErrorCode::NotPermitted
                    | ErrorCode::BadArgs
                    | ErrorCode::UnknownDelivery
                    | ErrorCode::UnknownSubscription
            ),
            (Step::Reply(ServerFrame::PingResp { .. } | ServerFrame::HelpResp { .. }), _) => true,
            (Step::Reply(ServerFrame::Ok { .. }), false) => {
                matches!(command, "SETACK" | "CONNECT")
            }
            (Step::Ask(Ask::Stats { only: Some(u), .. }), false) => u.name == "outsider",
            (Step::Subscribe { plan: Ok(_), .. }, false) => own_sub,
            (Step::Nothing, _) | (Step::End(End::Disconnect), _) => true,
            _ => false,
        };
        if own_sub && !matches!(fx.step, Step::Subscribe { plan: Ok(_), .. }) {
            let why = format!("{what}: its own session queue was refused: {:?}", fx.step);
            fail(&mut self.broken, why);
        } else if allowed {
            self.report.intruders_refused += u64::from(matches!(fx.step, Step::Refuse(..)));
        } else {
            let why = format!("{what}: an intruder was let do {:?}", fx.step);
            fail(&mut self.broken, why);
        }
        if matches!(fx.step, Step::End(_)) {
            // It left; the next one starts again.
            self.intruders[which] = sessions(self.now).into_iter().nth(which).expect("two");
        }
        what
    }

    /// A frame at an MQTT session queue: another user's (anything), or the outsider's
    /// own (a subscription, or a binding to one of the world's topics).
    fn session_queue_frame(&mut self) -> ClientFrame {
        let rid = Some(self.rng.below(1000));
        let t = self.rng.below(self.topics.len() as u64) as usize;
        let topic = self.topics[t].topic.dest.clone();
        let other = OTHER_SESSIONS[self.rng.below(OTHER_SESSIONS.len() as u64) as usize];
        let queue = |n: &str| agora_protocol::Destination::queue(n).expect("a name");
        let sid = 1_000_000 + self.rng.below(1000);
        let sub = |dest| {
            ClientFrame::Sub(Subscribe {
                rid,
                dest,
                sid,
                prefetch: None,
                ack: None,
            })
        };
        match self.rng.below(6) {
            0 => sub(queue(other)),
            1 => ClientFrame::Delete {
                rid,
                dest: queue(other),
            },
            2 => ClientFrame::Bind {
                rid,
                queue: queue(other),
                topic,
            },
            3 => ClientFrame::Purge {
                rid,
                dest: queue(other),
            },
            4 => ClientFrame::Bind {
                rid,
                queue: queue(OWN_SESSION),
                topic,
            },
            _ => sub(queue(OWN_SESSION)),
        }
    }

    fn intruder_frame(&mut self) -> ClientFrame {
        let q = self.rng.below(self.queues.len() as u64) as usize;
        let t = self.rng.below(self.topics.len() as u64) as usize;
        let dest = match self.rng.chance(50) {
            true => self.queues[q].shared.dest.clone(),
            false => self.topics[t].topic.dest.clone(),
        };
        let rid = Some(self.rng.below(1000));
        let n = self.rng.below(1000);
        match self.rng.below(16) {
            0..=3 => ClientFrame::Pub(Publish {
                rid,
                dest,
                headers: Headers::new(),
                payload: Bytes::from_static(b"intruder"),
            }),
            4 => ClientFrame::Sub(Subscribe {
                rid,
                dest,
                sid: n,
                prefetch: None,
                ack: None,
            }),
            5 => ClientFrame::Unsub { rid, sid: n },
            6 => ClientFrame::Ack { rid, did: n },
            7 => ClientFrame::Nack {
                rid,
                did: n,
                how: agora_protocol::Nack::Requeue,
            },
            8 => ClientFrame::SetAck {
                rid,
                on: self.rng.chance(50),
            },
            9 => ClientFrame::Stats {
                rid,
                page: Default::default(),
            },
            10 => ClientFrame::Purge { rid, dest },
            11 => ClientFrame::Delete { rid, dest },
            12 => ClientFrame::ChainGet { rid, dest },
            13 => match self.rng.chance(50) {
                true => ClientFrame::ChainSet {
                    rid,
                    dest,
                    chain: Bytes::from_static(b"sample 2"),
                },
                false => ClientFrame::ChainClear { rid, dest },
            },
            14 if self.rng.chance(30) => match self.queues.is_empty() {
                true => ClientFrame::Disconnect,
                false => ClientFrame::Bind {
                    rid,
                    queue: self.queues[q].shared.dest.clone(),
                    topic: self.topics[t].topic.dest.clone(),
                },
            },
            14 => match self.rng.below(3) {
                0 => ClientFrame::PingReq { rid },
                1 => ClientFrame::Help { rid },
                _ => ClientFrame::PingResp { rid: None },
            },
            _ => match self.rng.chance(90) {
                true => ClientFrame::Connect(Connect {
                    rid,
                    name: Some("intruder".to_owned()),
                    confirm: Some(self.rng.chance(50)),
                    ..Connect::default()
                }),
                false => ClientFrame::Disconnect,
            },
        }
    }
}
