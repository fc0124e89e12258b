//! Clients without the right: one that never authenticated, one authenticated as a user
//! with no right on any of the world's destinations. Each sends every kind of frame at
//! the world's queues and topics; its session must refuse everything that would touch
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

/// The two intruders' sessions: unauthenticated, and the outsider.
pub(super) fn sessions(now: std::time::Instant) -> [Session<u64>; 2] {
    [
        Session::new(session_limits(), now).with_access(Access::Pending),
        Session::new(session_limits(), now).with_access(Access::User(outsider())),
    ]
}

impl World {
    /// One frame from one of the intruders, checked against what it may do.
    pub(super) fn intrude(&mut self) -> String {
        let which = self.rng.below(2) as usize;
        let frame = self.intruder_frame();
        let what = format!(
            "{} intruder: {}",
            ["unauthenticated", "outsider"][which],
            frame.command()
        );
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
            (Step::Nothing, _) | (Step::End(End::Disconnect), _) => true,
            _ => false,
        };
        if allowed {
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
