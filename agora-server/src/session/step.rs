//! What a session says must happen for one decoded frame: the effects its driver (the
//! connection's task, or the simulation) carries out. The session decides every rule
//! it can decide alone — refusals, confirms, the run of publishes held back, which
//! subscription an `ACK` belongs to, the end of the connection — and hands the driver
//! only what needs the broker (routing a message, opening a subscription, asking the
//! registry or a queue), with what to answer once the broker has spoken.

use std::sync::Arc;

use agora_protocol::bytes::Bytes;
use agora_protocol::{
    reply, ClientFrame, Connect, Destination, ErrorCode, Headers, Kind, Nack, Publish, RequestId,
    ServerFrame, StatsPage, Subscribe,
};

use super::{access, refuse, Access, Refusal, Session, SubPlan};
use crate::auth::User;

/// Most fire-and-forget publishes held back in one run before it is handed over.
pub(crate) const PUBLISH_RUN: u32 = 512;

/// A subscription handle as the session keeps it: the broker may end a subscription
/// on its own (`CANCEL`), and the session must see that to free its id.
pub(crate) trait SubHandle {
    /// True once the broker ended it.
    fn ended(&self) -> bool;
}

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client is gone, or can no longer be written to (its outbox closed: the
    /// shipper ended, or the client stopped reading its replies).
    Gone,
    /// The client said `DISCONNECT`.
    Disconnect,
    /// The broker is stopping: a block the connection needs (the registry, a queue's
    /// task) is gone.
    Stopping,
    /// A fatal protocol error (answered with `ERR`): the byte stream cannot be
    /// resynchronised.
    Protocol,
    /// No answer to the broker's pings (TCP), or nothing heard for the UDP idle time.
    Silent,
    /// Holding part of a frame, it waited too long for room in the read budget.
    Starved,
    /// Its credentials were refused (answered `ERR auth_failed`).
    AuthFailed,
    /// It did not authenticate within `--auth-timeout` (answered `ERR timeout`).
    AuthTimeout,
}

impl End {
    /// For the log line of a client that left.
    pub fn reason(self) -> &'static str {
        match self {
            End::Gone => "left",
            End::Disconnect => "DISCONNECT",
            End::Stopping => "the broker is stopping",
            End::Protocol => "protocol error",
            End::Silent => "silent",
            End::Starved => "no room in the read budget",
            End::AuthFailed => "authentication failed",
            End::AuthTimeout => "not authenticated in time",
        }
    }
}

/// A request only the broker can answer (the registry, a queue's task); the session
/// has already checked what it may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `STATS`: the broker's document, with a page of its destinations; only those
    /// `only` may see, when given (a user that is not an admin).
    Stats {
        rid: RequestId,
        page: StatsPage,
        only: Option<Arc<User>>,
    },
    /// `PURGE`: the queue exists (it is never created for this) and is emptied.
    Purge { rid: RequestId, dest: Destination },
    /// `DELETE`.
    Delete { rid: RequestId, dest: Destination },
    /// `BIND` (`on`) or `UNBIND`: a queue and a topic name or pattern, both checked.
    Bind {
        rid: RequestId,
        queue: Destination,
        topic: Destination,
        on: bool,
    },
    /// `CHAIN GET`.
    ChainGet { rid: RequestId, dest: Destination },
    /// `CHAIN SET` (`Some` text) or `CHAIN CLEAR` (`None`).
    ChainSet {
        rid: RequestId,
        dest: Destination,
        chain: Option<Bytes>,
    },
}

/// What one frame asks of the driver.
#[derive(Debug)]
pub(crate) enum Step<S> {
    /// Nothing to send or do (a `PINGRESP`).
    Nothing,
    /// Write this frame.
    Reply(ServerFrame),
    /// Answer `ERR`: the request broke one of the session's rules.
    Refuse(RequestId, Refusal),
    /// Route the message into its destination (its chain first), then answer as
    /// `mode` says ([`PubMode::placed`]) or with the destination's refusal.
    Publish { publish: Publish, mode: PubMode },
    /// Open the subscription as planned; on success [`Session::add`] it and answer
    /// `OK` before any delivery (a refused plan is answered `ERR`). `released`:
    /// subscriptions the broker ended, already out of the session, for the driver to
    /// let go of first.
    Subscribe {
        request: Subscribe,
        plan: Result<SubPlan, Refusal>,
        released: Vec<S>,
    },
    /// The subscription is out of the session: let go of it, then answer `OK`.
    Unsubscribe { rid: RequestId, sid: u64, sub: S },
    /// `HOLD` (`on`) or `RESUME` subscription `sid`, which the session holds; answer
    /// `OK` once it is in force.
    Hold { rid: RequestId, sid: u64, on: bool },
    /// Settle delivery `did` of subscription `sid` (`ack`, or give it back); with a
    /// request id, answer after the queue's verdict.
    Settle {
        rid: RequestId,
        sid: u64,
        did: u64,
        ack: bool,
        /// For a `NACK` (`!ack`): now, later, or to the dead-letter queue.
        how: Nack,
    },
    /// Ask the broker, and answer with what it says.
    Ask(Ask),
    /// Check the password of `CONNECT user=… password=…` (off the executor); on
    /// success [`Session::authenticated`] with the user and the frame, else answer
    /// `ERR auth_failed` and end the connection ([`End::AuthFailed`]).
    Authenticate(Connect),
    /// End the connection.
    End(End),
}

/// How a publish is answered once placed, fixed when it is read: a later `SETACK`
/// never changes what an earlier publish is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PubMode {
    /// Fire-and-forget, and it may wait in the run of publishes held back for one
    /// destination.
    Held,
    /// Fire-and-forget, placed at once (runs are off, or it comes back from a run, or
    /// it is a reply to an inbox).
    Forget,
    /// Confirmed: a `PUBACK` once placed.
    Confirm,
    /// A request (it names a reply address, `agora-reply-to`): placed at once, and
    /// refused `no_responders` when nobody listens on its destination; a `PUBACK`
    /// once placed when `confirm`.
    Request { confirm: bool },
}

impl PubMode {
    /// Whether it may wait in a run.
    pub fn hold(self) -> bool {
        self == PubMode::Held
    }

    /// Whether the client waits for a `PUBACK`.
    pub fn confirms(self) -> bool {
        matches!(self, PubMode::Confirm | PubMode::Request { confirm: true })
    }

    /// Whether it is a request, which nobody listening refuses.
    pub fn is_request(self) -> bool {
        matches!(self, PubMode::Request { .. })
    }

    /// The publish is where it goes (`filtered`: its chain dropped it): the `PUBACK`
    /// owed, if any. A refusal is always answered, confirms or not, by the driver.
    pub fn placed(self, rid: RequestId, filtered: bool) -> Option<ServerFrame> {
        self.confirms()
            .then_some(ServerFrame::PubAck { rid, filtered })
    }
}

/// The effects of one frame: first hand over the run of publishes held back
/// (`end_run`), then carry out `step`.
#[derive(Debug)]
pub(crate) struct Effects<S> {
    pub end_run: bool,
    pub step: Step<S>,
}

impl<S: SubHandle> Session<S> {
    /// Takes one decoded frame; says what must happen. Anything that answers, or
    /// changes what later publishes mean, first ends the run of publishes held back,
    /// so replies and deliveries keep the order the client sent in.
    pub fn on_frame(&mut self, frame: ClientFrame) -> Effects<S> {
        if let Some(r) = self.access.gate(&frame) {
            return Effects {
                end_run: self.take_run(),
                step: Step::Refuse(frame.request_id(), r),
            };
        }
        if let ClientFrame::Pub(publish) = frame {
            return self.on_publish(publish);
        }
        let end_run = self.take_run();
        let step = match frame {
            ClientFrame::Pub(_) => unreachable!("handled above"),
            ClientFrame::Ack { rid, did } => self.settle(rid, did, true, Nack::Requeue),
            ClientFrame::Nack { rid, did, how } => self.settle(rid, did, false, how),
            ClientFrame::Sub(request) => {
                // Subscriptions the broker ended (CANCEL) free their ids and places.
                let released = self.take_ended(S::ended);
                let plan = self.plan_subscribe(&request);
                match plan {
                    Err(r) if released.is_empty() => Step::Refuse(request.rid, r),
                    plan => Step::Subscribe {
                        request,
                        plan,
                        released,
                    },
                }
            }
            ClientFrame::Unsub { rid, sid } => match self.remove(sid) {
                Some(sub) => Step::Unsubscribe { rid, sid, sub },
                None => Step::Refuse(
                    rid,
                    Refusal {
                        code: ErrorCode::UnknownSubscription,
                        message: format!("no subscription {sid} on this connection"),
                    },
                ),
            },
            ClientFrame::Hold { rid, sid } => self.hold(rid, sid, true),
            ClientFrame::Resume { rid, sid } => self.hold(rid, sid, false),
            ClientFrame::SetAck { rid, on } => {
                self.confirm = on;
                Step::Reply(ServerFrame::Ok { rid })
            }
            ClientFrame::Connect(c) => self.on_connect(c),
            ClientFrame::Stats { rid, page } => match self.check_large_answer("STATS") {
                Ok(()) => Step::Ask(Ask::Stats {
                    rid,
                    page,
                    only: match self.access.sees_all() {
                        true => None,
                        false => self.access.user().cloned(),
                    },
                }),
                Err(r) => Step::Refuse(rid, r),
            },
            ClientFrame::Help { rid } => match self.check_large_answer("HELP") {
                Ok(()) => Step::Reply(ServerFrame::HelpResp {
                    rid,
                    text: Bytes::from(agora_protocol::help_text()),
                }),
                Err(r) => Step::Refuse(rid, r),
            },
            ClientFrame::PingReq { rid } => Step::Reply(ServerFrame::PingResp { rid }),
            ClientFrame::PingResp { .. } => Step::Nothing,
            ClientFrame::Disconnect => Step::End(End::Disconnect),
            ClientFrame::Purge { rid, dest } => {
                match Self::check_purge(&dest)
                    .and_then(|()| self.access.check_admin("purge", &dest))
                {
                    Ok(()) => Step::Ask(Ask::Purge { rid, dest }),
                    Err(r) => Step::Refuse(rid, r),
                }
            }
            ClientFrame::Delete { rid, dest } => {
                let checked = match self.owns(&dest) {
                    true => Ok(()),
                    false => Self::check_reserved(&dest)
                        .and_then(|()| self.access.check_admin("delete", &dest)),
                };
                match checked {
                    Ok(()) => Step::Ask(Ask::Delete { rid, dest }),
                    Err(r) => Step::Refuse(rid, r),
                }
            }
            ClientFrame::Bind { rid, queue, topic } => self.bind(rid, queue, topic, true),
            ClientFrame::Unbind { rid, queue, topic } => self.bind(rid, queue, topic, false),
            ClientFrame::ChainGet { rid, dest } => match self.access.check_see(&dest) {
                Ok(()) => Step::Ask(Ask::ChainGet { rid, dest }),
                Err(r) => Step::Refuse(rid, r),
            },
            ClientFrame::ChainSet { rid, dest, chain } => self.chain_set(rid, dest, Some(chain)),
            ClientFrame::ChainClear { rid, dest } => self.chain_set(rid, dest, None),
        };
        Effects { end_run, step }
    }

    /// `CONNECT`: with users configured, credentials are checked by the driver
    /// ([`Step::Authenticate`]); without them, a client that has not authenticated is
    /// told it must.
    fn on_connect(&mut self, c: Connect) -> Step<S> {
        let rid = c.rid;
        let credentials = c.user.is_some() || c.password.is_some();
        let refused = |code, message: String| Step::Refuse(rid, Refusal { code, message });
        if let Err(r) = self.check_version(&c) {
            return Step::Refuse(rid, r);
        }
        match (&self.access, credentials) {
            // No users: credentials mean nothing here, and are ignored.
            (Access::Open, _) | (Access::User(_), false) => {}
            (Access::Pending, true) if c.user.is_none() || c.password.is_none() => {
                return refused(
                    ErrorCode::BadArgs,
                    "CONNECT needs both user= and password=".to_owned(),
                )
            }
            (Access::Pending, true) => return Step::Authenticate(c),
            (Access::Pending, false) => {
                return refused(
                    ErrorCode::NotAuthenticated,
                    "this broker requires CONNECT user=<name> password=<percent-encoded>"
                        .to_owned(),
                )
            }
            (Access::User(u), true) => {
                let why = format!("already authenticated as {}", u.name);
                return refused(ErrorCode::BadArgs, why);
            }
            (Access::Anonymous(_), true) => {
                return refused(
                    ErrorCode::NotPermitted,
                    "no credentials over UDP (clear text)".to_owned(),
                )
            }
            (Access::Anonymous(_), false) if c.confirm == Some(true) => {
                return refused(
                    ErrorCode::NotPermitted,
                    "no confirms over anonymous UDP".to_owned(),
                )
            }
            (Access::Anonymous(_), false) => {}
        }
        match self.connect(c) {
            Ok(()) => Step::Reply(ServerFrame::Ok { rid }),
            Err(r) => Step::Refuse(rid, r),
        }
    }

    fn on_publish(&mut self, publish: Publish) -> Effects<S> {
        match self.publish_rule(&publish.dest, &publish.headers) {
            Ok((end_run, mode)) => Effects {
                end_run,
                step: Step::Publish { publish, mode },
            },
            Err((end_run, r)) => Effects {
                end_run,
                step: Step::Refuse(publish.rid, r),
            },
        }
    }
    fn settle(&mut self, rid: RequestId, did: u64, ack: bool, how: Nack) -> Step<S> {
        match self.sid_for_delivery(did) {
            Some(sid) => Step::Settle {
                rid,
                sid,
                did,
                ack,
                how,
            },
            None => Step::Refuse(
                rid,
                Refusal {
                    code: ErrorCode::UnknownDelivery,
                    message: format!("delivery {did} is not outstanding on this connection"),
                },
            ),
        }
    }

    fn chain_set(&self, rid: RequestId, dest: Destination, chain: Option<Bytes>) -> Step<S> {
        let what = match chain {
            Some(_) => "set the chain of",
            None => "clear the chain of",
        };
        match Self::check_reserved(&dest).and_then(|()| self.access.check_admin(what, &dest)) {
            Ok(()) => Step::Ask(Ask::ChainSet { rid, dest, chain }),
            Err(r) => Step::Refuse(rid, r),
        }
    }
}

impl<S> Session<S> {
    /// `BIND` and `UNBIND`: a queue, then a topic name or pattern, neither of them the
    /// broker's; admins only, once users exist.
    fn bind<T>(&self, rid: RequestId, queue: Destination, topic: Destination, on: bool) -> Step<T> {
        let what = if on { "bind" } else { "unbind" };
        let checked = match (queue.kind, topic.kind) {
            // A name with an empty token is a topic's name but no pattern's: it could
            // never match a binding.
            (Kind::Queue, Kind::Topic) if topic.name.as_str().split('.').any(str::is_empty) => {
                refuse(
                    ErrorCode::BadName,
                    format!("{topic}: a binding's topic has no empty token (a dot at either end, or two in a row)"),
                )
            }
            // An MQTT session's own queue: bound to what its user may read.
            (Kind::Queue, Kind::Topic) if self.owns(&queue) => Self::check_reserved(&topic)
                .and_then(|()| self.access.check_subscribe(&topic)),
            (Kind::Queue, Kind::Topic) => Self::check_reserved(&queue)
                .and_then(|()| Self::check_reserved(&topic))
                .and_then(|()| self.access.check_admin(what, &queue)),
            _ => refuse(
                ErrorCode::BadArgs,
                format!(
                    "{} takes a queue, then a topic or pattern",
                    what.to_uppercase()
                ),
            ),
        };
        match checked {
            Ok(()) => Step::Ask(Ask::Bind {
                rid,
                queue,
                topic,
                on,
            }),
            Err(r) => Step::Refuse(rid, r),
        }
    }

    /// What [`on_frame`](Session::on_frame) decides for a `PUB` to `dest` with
    /// `headers`, without taking the message: whether to hand the run over first, and
    /// the publish's mode; or its refusal (after handing the run over, if `true`). The
    /// connection's task calls it directly on its hot path, so a message is not moved
    /// through a `Step`.
    ///
    /// A publish naming a reply address (`agora-reply-to`) is a request: the address
    /// must be one topic, this connection's own inbox or a topic the client may
    /// subscribe to. A publish to an inbox address (`$inbox.<nonce>[.…]`) is a reply:
    /// any authenticated client may send one, whatever its rights (knowing the
    /// unguessable address is the right to answer).
    #[inline]
    pub fn publish_rule(
        &mut self,
        dest: &Destination,
        headers: &Headers,
    ) -> Result<(bool, PubMode), (bool, Refusal)> {
        let reply = dest.kind == Kind::Topic && reply::is_inbox(dest.name.as_str());
        let checked = match reply {
            true => self.check_reply(dest),
            false => Self::check_reserved(dest)
                .and_then(|()| self.access.check_publish(dest, &mut self.allowed)),
        };
        let request = checked
            .and_then(|()| check_msg_id(headers))
            .and_then(|()| self.check_request(headers));
        let request = match request {
            Ok(r) => r,
            Err(r) => return Err((self.take_run(), r)),
        };
        let mode = match (self.confirm, self.limits.publish_runs) {
            (confirm, _) if request => PubMode::Request { confirm },
            (true, _) => PubMode::Confirm,
            (false, _) if reply => PubMode::Forget,
            (false, true) => PubMode::Held,
            (false, false) => PubMode::Forget,
        };
        let end_run = match mode.hold() {
            // A full run is handed over before this one starts the next.
            true if self.run >= PUBLISH_RUN => {
                self.run = 1;
                true
            }
            true => {
                self.run += 1;
                false
            }
            false => self.take_run(),
        };
        Ok((end_run, mode))
    }

    /// A reply to an inbox address: from a client that is someone (not before
    /// authentication, not anonymous UDP), to an address under an inbox.
    fn check_reply(&self, dest: &Destination) -> Result<(), Refusal> {
        match self.access {
            Access::Open | Access::User(_) => {}
            Access::Pending => return Err(access::not_authenticated("PUB")),
            Access::Anonymous(_) => return Self::check_reserved(dest),
        }
        match reply::inbox_of(dest.name.as_str()) {
            Some(_) => Ok(()),
            None => refuse(
                ErrorCode::BadName,
                format!("{dest} names no inbox: replies go to $inbox.<nonce>[.<anything>]"),
            ),
        }
    }

    /// Whether `headers` make a publish a request (true), and if so whether its reply
    /// address may be used.
    #[inline]
    fn check_request(&self, headers: &Headers) -> Result<bool, Refusal> {
        let to = match reply::reply_to(headers) {
            None => return Ok(false),
            Some(Ok(to)) => to,
            Some(Err(why)) => return refuse(ErrorCode::BadArgs, why),
        };
        if self.link {
            // The node the request was published on checked its address.
            return Ok(true);
        }
        if let Some(inbox) = reply::inbox_of(to.name.as_str()) {
            return match self.inbox.as_deref() == Some(inbox) {
                true => Ok(true),
                false => refuse(
                    ErrorCode::NotPermitted,
                    format!(
                        "{} names another connection's inbox: a request may name only this connection's own ({})",
                        reply::REPLY_TO,
                        self.inbox.as_deref().unwrap_or("none over UDP")
                    ),
                ),
            };
        }
        Self::check_reserved(&to)?;
        self.access.check_subscribe(&to).map_err(|r| Refusal {
            code: r.code,
            message: format!("{}: {}", reply::REPLY_TO, r.message),
        })?;
        Ok(true)
    }

    /// A `PUB` to the destination of the run held back, with nothing else between: true,
    /// and counted, when it joins that run; what [`publish_rule`](Session::publish_rule)
    /// would say (held, nothing handed over first) without looking at the name again,
    /// which passed the rules when the run began. False: ask `publish_rule`.
    #[inline]
    pub fn joins_run(&mut self) -> bool {
        if self.run == 0 || self.run >= PUBLISH_RUN || self.confirm || !self.limits.publish_runs {
            return false;
        }
        self.run += 1;
        true
    }

    /// The driver checked the credentials of `c` and they are `user`'s: the client is
    /// that user from now on, and the rest of its `CONNECT` applies. The answer to send.
    pub fn authenticated(&mut self, user: Arc<User>, c: Connect) -> ServerFrame {
        let rid = c.rid;
        self.access = Access::User(user);
        self.allowed.clear();
        match self.connect(c) {
            Ok(()) => ServerFrame::Ok { rid },
            // The version was checked before the password; nothing else refuses.
            Err(r) => ServerFrame::Err(agora_protocol::ErrorReply {
                rid,
                code: r.code,
                message: r.message,
            }),
        }
    }

    /// The bytes at hand are all decoded: true if a run of publishes is held back and
    /// must be handed over now.
    pub fn bytes_done(&mut self) -> bool {
        self.take_run()
    }

    fn take_run(&mut self) -> bool {
        std::mem::take(&mut self.run) > 0
    }
}

/// A publish's `agora-msg-id`, if it has one, must be one id of at most 256 bytes.
#[inline]
fn check_msg_id(headers: &Headers) -> Result<(), Refusal> {
    match agora_protocol::msg_id::msg_id(headers) {
        Some(Err(why)) => refuse(ErrorCode::BadArgs, why),
        _ => Ok(()),
    }
}

impl<S> Session<S> {
    /// `HOLD` (`on`) or `RESUME` of subscription `sid`.
    fn hold(&self, rid: RequestId, sid: u64, on: bool) -> Step<S> {
        match self.sub(sid) {
            Some(_) => Step::Hold { rid, sid, on },
            None => Step::Refuse(
                rid,
                Refusal {
                    code: ErrorCode::UnknownSubscription,
                    message: format!("no subscription {sid} on this connection"),
                },
            ),
        }
    }
}
