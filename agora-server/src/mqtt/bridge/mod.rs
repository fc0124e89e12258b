//! The MQTT bridge: one MQTT connection's state, as a plain value.
//!
//! It turns MQTT packets from the client into the native frames the broker's own
//! session acts on, and the broker's frames into MQTT packets, so that MQTT enters the
//! broker through the same session, permissions and destinations as every native
//! client (DESIGN.md: a transport is a driver around the session, never a second copy
//! of its logic). What it keeps is only what MQTT needs and Agora does not: packet ids,
//! the filter behind each subscription id, the will, the client's retained messages
//! and persistent sessions (shared by every MQTT connection, in [`MqttState`]).
//!
//! `on_packet` and `on_frame` append what must be sent each way to an [`Out`]; the
//! task around it (`super::conn`) moves bytes and time and nothing else.

mod broker;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use agora_protocol::bytes::Bytes;
use agora_protocol::mqtt::topic::{
    filter_to_agora, from_agora, session_queue, to_agora, TopicError,
};
use agora_protocol::mqtt::{reason, Connect, Filter, Packet, Props, Publish, QoS, Reply, Version};
use agora_protocol::{
    ClientFrame, Connect as NativeConnect, Destination, Headers, Password, Subscribe,
};

use super::retained::Kept;
use super::state::MqttState;

/// The request id of the native `CONNECT`.
const CONNECT_RID: u64 = 1;

/// Deliveries of a persistent session's queue unacknowledged at once.
const SESSION_PREFETCH: u32 = 100;

/// The header that carries MQTT 5 correlation data, in hex.
pub(crate) const CORRELATION: &str = "mqtt-correlation-data";
/// The header that carries MQTT 5's content type.
pub(crate) const CONTENT_TYPE: &str = "content-type";

/// What one step asks of the task.
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// Native frames for the broker's session, in order.
    pub broker: Vec<ClientFrame>,
    /// MQTT packets for the client, in order.
    pub client: Vec<Reply>,
    /// End the connection (after sending the above), saying why in the log.
    pub close: Option<String>,
}

impl Out {
    fn close(&mut self, why: impl Into<String>) {
        if self.close.is_none() {
            self.close = Some(why.into());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read yet.
    New,
    /// `CONNECT` passed on; its answer not back.
    Connecting,
    Open,
    Closed,
}

/// What a native request id was for.
#[derive(Debug)]
enum Pending {
    Connect,
    /// A publish: QoS 1 answers the client; a retained one is kept once accepted.
    Publish {
        pkid: Option<u16>,
        retain: Option<(String, Kept)>,
    },
    /// The persistent session's queue subscription: refused, the connection ends.
    Session,
    /// Something whose refusal is only logged.
    Quiet(&'static str),
    /// One native subscription (or, for a persistent session's QoS 1 filter, binding)
    /// of filter `index` of `SUBSCRIBE` `pkid`. `parent`: the `a` of `a/#`, which a
    /// user allowed `a.>` but not `a` may go without.
    Sub {
        pkid: u16,
        index: usize,
        sid: u64,
        parent: bool,
    },
}

/// A `SUBSCRIBE` waiting for its native answers.
#[derive(Debug)]
struct SubAck {
    codes: Vec<u8>,
    waiting: usize,
    /// Per filter, in order.
    filters: Vec<Asked>,
}

/// One filter of a `SUBSCRIBE` waiting for its answers.
#[derive(Debug)]
struct Asked {
    filter: String,
    /// The QoS granted.
    qos: QoS,
    /// Its native subscriptions: (sid, pattern); sid 0 for a filter subscribed before.
    natives: Vec<(u64, String)>,
    /// Bound to the persistent session's queue rather than subscribed.
    bound: bool,
}

/// An MQTT subscription as the bridge keeps it.
#[derive(Debug)]
struct Sub {
    qos: QoS,
    sids: Vec<u64>,
    /// The patterns bound to the persistent session's queue (a QoS 1 filter of a
    /// persistent session; `sids` is then empty).
    bound: Vec<String>,
}

/// A persistent session.
#[derive(Debug)]
struct Persist {
    /// Its queue, `$mqtt.session.<user>.<client id>`.
    queue: String,
    /// The native subscription to it.
    sid: u64,
    /// Seconds kept once the client is gone, as asked (capped once connected).
    expiry: u32,
}

/// One MQTT connection's state.
pub(crate) struct Bridge {
    state: State,
    version: Version,
    client_id: String,
    keep_alive: u16,
    will: Option<agora_protocol::mqtt::Will>,
    assigned: bool,
    next_rid: u64,
    next_sid: u64,
    next_pkid: u16,
    pending: HashMap<u64, Pending>,
    subacks: HashMap<u16, SubAck>,
    subs: HashMap<String, Sub>,
    /// Native subscription id -> (filter, granted QoS).
    by_sid: HashMap<u64, (String, QoS)>,
    /// QoS 1 publishes to the client not yet acknowledged.
    inflight: HashSet<u16>,
    /// A number unique to this connection in the broker, for an assigned client id.
    number: u64,
    /// The last Agora name delivered and its MQTT topic: a stream of messages to one
    /// topic maps its name once.
    last_name: (String, String),
    /// Users are configured: a session's queue is named by its user.
    users: bool,
    /// The user a TLS client certificate names.
    cert_user: Option<String>,
    /// `CONNECT` asked for a clean start.
    clean: bool,
    /// The name a persistent session of this client id has (whether it asked for one
    /// or not: a clean start ends it).
    session_name: Option<String>,
    /// The persistent session, when `CONNECT` asked for one.
    session: Option<Persist>,
    /// Packet id -> native delivery id, for the session queue's QoS 1 deliveries.
    acks: HashMap<u16, u64>,
}

/// The most QoS 1 publishes to a client unacknowledged at once; past it, deliveries go
/// at QoS 0.
pub(crate) const MAX_INFLIGHT: usize = 1024;

impl Bridge {
    /// A new connection's bridge; `number` makes an assigned client id unique.
    pub(crate) fn new(number: u64) -> Bridge {
        Bridge {
            state: State::New,
            version: Version::V311,
            client_id: String::new(),
            keep_alive: 0,
            will: None,
            assigned: false,
            next_rid: CONNECT_RID + 1,
            next_sid: 1,
            next_pkid: 1,
            pending: HashMap::new(),
            subacks: HashMap::new(),
            subs: HashMap::new(),
            by_sid: HashMap::new(),
            inflight: HashSet::new(),
            number,
            last_name: (String::new(), String::new()),
            users: false,
            cert_user: None,
            clean: true,
            session_name: None,
            session: None,
            acks: HashMap::new(),
        }
    }

    /// A bridge of a broker with users (`users`), whose client a TLS certificate names
    /// `cert_user`: a persistent session's queue is named by that user.
    pub(crate) fn with_users(mut self, users: bool, cert_user: Option<String>) -> Bridge {
        self.users = users;
        self.cert_user = cert_user;
        self
    }

    /// The persistent session's queue, when the client has one.
    pub(crate) fn session_queue(&self) -> Option<&str> {
        self.session.as_ref().map(|p| p.queue.as_str())
    }

    /// The protocol version, once `CONNECT` is read (3.1.1 before).
    pub(crate) fn version(&self) -> Option<Version> {
        match self.state {
            State::New => None,
            _ => Some(self.version),
        }
    }

    /// The keep-alive the client asked for, in seconds (0: none).
    pub(crate) fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// The client id (assigned when the client sent none).
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client id, once a `CONNECT` named it and was not refused.
    pub(crate) fn holding(&self) -> Option<&str> {
        match self.state {
            State::Connecting | State::Open => Some(&self.client_id),
            State::New | State::Closed => None,
        }
    }

    fn rid(&mut self, p: Pending) -> u64 {
        let rid = self.next_rid;
        self.next_rid += 1;
        self.pending.insert(rid, p);
        rid
    }

    fn v5(&self) -> bool {
        self.version == Version::V5
    }

    /// Refuses what the client did: MQTT 5 is told `code` in a `DISCONNECT`; a 3.1.1
    /// client, which has no way to be told, is disconnected.
    fn refuse(&mut self, code: u8, why: impl Into<String>, out: &mut Out) {
        let why = why.into();
        if self.v5() {
            out.client.push(Reply::Disconnect(
                code,
                Props {
                    reason: Some(why.clone()),
                    ..Props::default()
                },
            ));
        }
        self.state = State::Closed;
        out.close(why);
    }

    /// Acts on one packet from the client.
    pub(crate) fn on_packet(&mut self, p: Packet, retained: &MqttState, out: &mut Out) {
        if self.state == State::Closed {
            return;
        }
        match p {
            Packet::Connect(c) => self.connect(*c, retained, out),
            Packet::Publish(p) => self.publish(p, retained, out),
            Packet::PubAck(pkid, _) => {
                self.inflight.remove(&pkid);
                if let Some(did) = self.acks.remove(&pkid) {
                    out.broker.push(ClientFrame::Ack { rid: None, did });
                }
            }
            Packet::PubRec(..) | Packet::PubRel(..) | Packet::PubComp(..) => self.refuse(
                reason::PROTOCOL_ERROR,
                "QoS 2 is not supported (PUBREC, PUBREL, PUBCOMP)",
                out,
            ),
            Packet::Subscribe { pkid, filters, .. } => self.subscribe(pkid, filters, retained, out),
            Packet::Unsubscribe { pkid, filters } => {
                let mut codes = Vec::new();
                for f in filters {
                    match self.subs.remove(&f) {
                        Some(s) => {
                            self.end_sub(s, out);
                            if let Some(q) = self.session_queue() {
                                retained.sessions.set_filter(q, &f, None);
                            }
                            codes.push(reason::SUCCESS);
                        }
                        None => codes.push(reason::NO_SUBSCRIPTION_EXISTED),
                    }
                }
                out.client.push(Reply::UnsubAck { pkid, codes });
            }
            Packet::PingReq => out.client.push(Reply::PingResp),
            Packet::Disconnect(code, props) => {
                // MQTT 5 may change the session's expiry as it goes (to 0: the session
                // ends with the connection); not from 0 (MQTT 5 §3.14.2.2.2).
                if let Some(e) = props.session_expiry {
                    match &mut self.session {
                        None if e > 0 => {
                            return self.refuse(
                                reason::PROTOCOL_ERROR,
                                "a Session Expiry Interval in DISCONNECT after CONNECT's 0",
                                out,
                            )
                        }
                        None => {}
                        Some(p) => {
                            p.expiry = e.min(retained.max_expiry);
                            retained.sessions.set_expiry(&p.queue, p.expiry);
                        }
                    }
                }
                // 0x04: "disconnect with will message" (MQTT 5).
                if code != 0x04 {
                    self.will = None;
                }
                self.lost(retained, out);
                out.close("the client disconnected");
            }
            Packet::Auth(_) => self.refuse(
                reason::BAD_AUTH_METHOD,
                "enhanced authentication (AUTH) is not supported",
                out,
            ),
        }
    }

    fn connect(&mut self, c: Connect, st: &MqttState, out: &mut Out) {
        self.version = c.version;
        self.keep_alive = c.keep_alive;
        self.clean = c.clean;
        self.state = State::Connecting;
        let v5 = self.v5();
        let refuse = |s: &mut Bridge, v311: Option<u8>, v5code: u8, why: &str, out: &mut Out| {
            s.state = State::Closed;
            let code = if v5 { Some(v5code) } else { v311 };
            if let Some(code) = code {
                out.client.push(Reply::ConnAck {
                    session_present: false,
                    code,
                    props: Props {
                        reason: v5.then(|| why.to_owned()),
                        ..Props::default()
                    },
                });
            }
            out.close(format!("CONNECT refused: {why}"));
        };
        if c.client_id.is_empty() {
            if !c.clean && !v5 {
                return refuse(
                    self,
                    Some(2),
                    reason::CLIENT_ID_NOT_VALID,
                    "an empty client id needs a clean session",
                    out,
                );
            }
            self.client_id = format!("agora-{}", self.number);
            self.assigned = true;
        } else {
            self.client_id = c.client_id;
        }
        // A persistent session: 3.1.1's clean session 0; 5.0's Session Expiry
        // Interval above 0 (3.1.1's is kept as long as the broker keeps any).
        let expiry = match v5 {
            true => c.props.session_expiry.unwrap_or(0),
            false if c.clean => 0,
            false => super::persistent::NEVER,
        };
        let owner = match (&self.cert_user, self.users) {
            (Some(u), _) => u.clone(),
            (None, true) => c.user.clone().unwrap_or_default(),
            (None, false) => String::new(),
        };
        self.session_name = session_queue(&owner, &self.client_id).ok();
        if expiry > 0 {
            let Some(queue) = self.session_name.clone() else {
                return refuse(
                    self,
                    Some(2),
                    reason::CLIENT_ID_NOT_VALID,
                    "the client id is too long for a persistent session (its queue's name would pass 255 bytes)",
                    out,
                );
            };
            self.session = Some(Persist {
                queue,
                sid: 0,
                expiry: expiry.min(st.max_expiry),
            });
        }
        if let Some(w) = &c.will {
            if w.qos == QoS::ExactlyOnce {
                return refuse(
                    self,
                    None,
                    reason::QOS_NOT_SUPPORTED,
                    "a will at QoS 2",
                    out,
                );
            }
            if let Err(e) = to_agora(&w.topic) {
                return refuse(
                    self,
                    None,
                    reason::TOPIC_NAME_INVALID,
                    &format!("the will's topic: {e}"),
                    out,
                );
            }
        }
        self.will = c.will;
        let password = match c.password.map(|p| String::from_utf8(p.to_vec())) {
            None => None,
            Some(Ok(p)) => Some(Password::new(p)),
            Some(Err(_)) => {
                return refuse(
                    self,
                    Some(4),
                    reason::BAD_USER_OR_PASSWORD,
                    "the password is not UTF-8 (a broker user's password is text)",
                    out,
                )
            }
        };
        self.pending.insert(CONNECT_RID, Pending::Connect);
        out.broker.push(ClientFrame::Connect(NativeConnect {
            rid: Some(CONNECT_RID),
            name: Some(format!("mqtt:{}", self.client_id)),
            proto: Some(1),
            confirm: Some(true),
            user: c.user,
            password,
            ..NativeConnect::default()
        }));
    }

    fn publish(&mut self, p: Publish, retained: &MqttState, out: &mut Out) {
        if self.state == State::New {
            return self.refuse(reason::PROTOCOL_ERROR, "PUBLISH before CONNECT", out);
        }
        if p.qos == QoS::ExactlyOnce {
            return self.refuse(reason::QOS_NOT_SUPPORTED, "a PUBLISH at QoS 2", out);
        }
        if p.props.topic_alias.is_some() {
            return self.refuse(
                reason::TOPIC_ALIAS_INVALID,
                "topic aliases are not supported (Topic Alias Maximum is 0)",
                out,
            );
        }
        let refused = |s: &mut Bridge, code: u8, why: String, out: &mut Out| match (p.pkid, s.v5())
        {
            (Some(pkid), true) => out.client.push(Reply::PubAck(pkid, code)),
            _ => s.refuse(code, why, out),
        };
        let name = match to_agora(&p.topic) {
            Ok(n) => n,
            Err(e) => return refused(self, reason::TOPIC_NAME_INVALID, e.to_string(), out),
        };
        let headers = match headers_of(&p.props) {
            Ok(h) => h,
            Err(e) => return refused(self, reason::IMPLEMENTATION_SPECIFIC, e, out),
        };
        let retain = match p.retain {
            false => None,
            true => {
                let kept = Kept {
                    payload: p.payload.clone(),
                    headers: headers.clone(),
                    qos: p.qos,
                };
                if !retained.retained.has_room(&name, &kept) {
                    let why = format!(
                        "the broker's retained messages are at their limit ({})",
                        retained.retained.limits()
                    );
                    return refused(self, reason::QUOTA_EXCEEDED, why, out);
                }
                Some((name.clone(), kept))
            }
        };
        let dest = match Destination::topic(&name) {
            Ok(d) => d,
            Err(e) => return refused(self, reason::TOPIC_NAME_INVALID, e.to_string(), out),
        };
        let rid = match (p.pkid, &retain) {
            (None, None) => None,
            (pkid, _) => Some(self.rid(Pending::Publish { pkid, retain })),
        };
        out.broker.push(ClientFrame::Pub(agora_protocol::Publish {
            rid,
            dest,
            headers,
            payload: p.payload,
        }));
    }

    fn subscribe(&mut self, pkid: u16, filters: Vec<Filter>, retained: &MqttState, out: &mut Out) {
        if self.state == State::New {
            return self.refuse(reason::PROTOCOL_ERROR, "SUBSCRIBE before CONNECT", out);
        }
        let v5 = self.v5();
        let failure = |code: u8| match v5 {
            true => code,
            false => reason::V311_SUBSCRIBE_FAILURE,
        };
        let mut ack = SubAck {
            codes: Vec::new(),
            waiting: 0,
            filters: Vec::new(),
        };
        for (index, f) in filters.into_iter().enumerate() {
            let qos = f.qos.min(QoS::AtLeastOnce);
            // A persistent session's QoS 1 filter binds its queue: what matches is kept
            // while the client is away.
            let bind = match qos {
                QoS::AtLeastOnce => self.session_queue().map(str::to_owned),
                _ => None,
            };
            ack.codes.push(qos as u8);
            ack.filters.push(Asked {
                filter: f.filter.clone(),
                qos,
                natives: Vec::new(),
                bound: bind.is_some(),
            });
            if v5 && f.filter.starts_with("$share/") {
                ack.codes[index] = reason::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED;
                continue;
            }
            let patterns = match filter_to_agora(&f.filter) {
                Ok(p) => p,
                Err(TopicError::TooLong(_) | TopicError::BadFilter | TopicError::Invalid)
                | Err(TopicError::Wildcard) => {
                    ack.codes[index] = failure(reason::TOPIC_FILTER_INVALID);
                    continue;
                }
            };
            if self
                .subs
                .get(&f.filter)
                .is_some_and(|s| s.bound.is_empty() != bind.is_none())
            {
                // Bound before and now live, or the other way round: the old one ends.
                if let Some(s) = self.subs.remove(&f.filter) {
                    self.end_sub(s, out);
                }
            }
            if let Some(s) = self.subs.get_mut(&f.filter) {
                // The same filter again replaces the subscription: a new QoS, and its
                // retained messages again.
                s.qos = qos;
                for sid in &s.sids {
                    if let Some(e) = self.by_sid.get_mut(sid) {
                        e.1 = qos;
                    }
                }
                ack.filters[index].natives = patterns.into_iter().map(|p| (0, p)).collect();
                continue;
            }
            let two = patterns.len() == 2;
            for (n, pattern) in patterns.into_iter().enumerate() {
                let dest = match Destination::topic_pattern(&pattern) {
                    Ok(d) => d,
                    Err(_) => {
                        ack.codes[index] = failure(reason::TOPIC_FILTER_INVALID);
                        break;
                    }
                };
                let sid = self.next_sid;
                self.next_sid += 1;
                let rid = self.rid(Pending::Sub {
                    pkid,
                    index,
                    sid,
                    parent: two && n == 0,
                });
                ack.waiting += 1;
                ack.filters[index].natives.push((sid, pattern));
                out.broker.push(match &bind {
                    Some(q) => ClientFrame::Bind {
                        rid: Some(rid),
                        queue: session_dest(q),
                        topic: dest,
                    },
                    None => ClientFrame::Sub(Subscribe {
                        rid: Some(rid),
                        dest,
                        sid,
                        prefetch: None,
                        ack: None,
                    }),
                });
            }
        }
        self.subacks.insert(pkid, ack);
        self.suback_if_done(pkid, retained, out);
    }

    /// What the broker sends when the connection ends without a `DISCONNECT` (or with
    /// MQTT 5's "with will"): the will, if any, published as the client would have.
    ///
    /// A will with the retain flag is kept as its topic's retained message once the
    /// broker accepted it (so only where the user may publish), room permitting.
    pub(crate) fn lost(&mut self, retained: &MqttState, out: &mut Out) {
        if let Some(w) = self.will.take() {
            if self.state == State::Open {
                if let (Ok(name), Ok(headers)) = (to_agora(&w.topic), headers_of(&w.props)) {
                    if let Ok(dest) = Destination::topic(&name) {
                        let kept = Kept {
                            payload: w.payload.clone(),
                            headers: headers.clone(),
                            qos: w.qos,
                        };
                        let rid =
                            (w.retain && retained.retained.has_room(&name, &kept)).then(|| {
                                self.rid(Pending::Publish {
                                    pkid: None,
                                    retain: Some((name, kept)),
                                })
                            });
                        out.broker.push(ClientFrame::Pub(agora_protocol::Publish {
                            rid,
                            dest,
                            headers,
                            payload: w.payload,
                        }));
                    }
                }
            }
        }
        self.state = State::Closed;
    }

    /// Ends an MQTT subscription's native part: its subscriptions, or its bindings.
    fn end_sub(&mut self, s: Sub, out: &mut Out) {
        for sid in s.sids {
            self.by_sid.remove(&sid);
            out.broker.push(ClientFrame::Unsub { rid: None, sid });
        }
        if let Some(q) = self.session_queue().map(str::to_owned) {
            for p in s.bound {
                if let Ok(topic) = Destination::topic_pattern(&p) {
                    out.broker.push(ClientFrame::Unbind {
                        rid: None,
                        queue: session_dest(&q),
                        topic,
                    });
                }
            }
        }
    }

    /// Takes a persistent session's filter up again: a QoS 1 one is bound already; a
    /// QoS 0 one is subscribed again.
    fn restore(&mut self, filter: String, qos: QoS, out: &mut Out) {
        let Ok(patterns) = filter_to_agora(&filter) else {
            return;
        };
        if qos == QoS::AtLeastOnce {
            self.subs.insert(
                filter,
                Sub {
                    qos,
                    sids: Vec::new(),
                    bound: patterns,
                },
            );
            return;
        }
        let mut sids = Vec::new();
        for p in patterns {
            let Ok(dest) = Destination::topic_pattern(&p) else {
                continue;
            };
            let sid = self.next_sid;
            self.next_sid += 1;
            let rid = self.rid(Pending::Quiet("a subscription of the persistent session"));
            out.broker.push(ClientFrame::Sub(Subscribe {
                rid: Some(rid),
                dest,
                sid,
                prefetch: None,
                ack: None,
            }));
            self.by_sid.insert(sid, (filter.clone(), qos));
            sids.push(sid);
        }
        self.subs.insert(
            filter,
            Sub {
                qos,
                sids,
                bound: Vec::new(),
            },
        );
    }

    /// A message from the persistent session's queue: at QoS 1, to the topic it was
    /// published to (its `agora-topic`), acknowledged to the queue when the client
    /// acknowledges it.
    fn deliver_queued(&mut self, mut d: agora_protocol::Delivery, out: &mut Out) {
        let name = match d.headers.get(agora_protocol::reply::TOPIC) {
            Some(t) => t.to_owned(),
            None => d.dest.name.as_str().to_owned(),
        };
        d.headers.remove(agora_protocol::reply::TOPIC);
        let dup = d.redelivered();
        let p = self.deliver(&name, QoS::AtLeastOnce, false, &d.headers, d.payload);
        let p = match p {
            Reply::Publish(mut p) => {
                match p.pkid {
                    Some(pkid) => {
                        p.dup = dup;
                        self.acks.insert(pkid, d.did);
                    }
                    // No packet id free: sent at QoS 0, so it is settled now.
                    None => out.broker.push(ClientFrame::Ack {
                        rid: None,
                        did: d.did,
                    }),
                }
                Reply::Publish(p)
            }
            other => other,
        };
        out.client.push(p);
    }

    /// The next free packet id for a QoS 1 publish to the client.
    fn pkid(&mut self) -> Option<u16> {
        if self.inflight.len() >= MAX_INFLIGHT {
            return None;
        }
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if self.inflight.insert(id) {
                return Some(id);
            }
        }
    }

    /// A message for the client on `topic` (an Agora name).
    fn deliver(
        &mut self,
        name: &str,
        qos: QoS,
        retain: bool,
        headers: &Headers,
        payload: Bytes,
    ) -> Reply {
        let (qos, pkid) = match qos {
            QoS::AtMostOnce => (QoS::AtMostOnce, None),
            _ => match self.pkid() {
                Some(id) => (QoS::AtLeastOnce, Some(id)),
                None => (QoS::AtMostOnce, None),
            },
        };
        Reply::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: {
                if self.last_name.0 != name {
                    self.last_name = (name.to_owned(), from_agora(name));
                }
                self.last_name.1.clone()
            },
            pkid,
            payload,
            props: match self.v5() {
                true => props_of(headers),
                false => Props::default(),
            },
        })
    }
}

/// A persistent session's queue as a destination (its name was checked when made).
fn session_dest(q: &str) -> Destination {
    Destination::queue(q).unwrap_or_else(|_| Destination::queue("_").expect("a name"))
}

/// An MQTT 5 publish's properties as Agora headers: user properties as they are (a key
/// Agora headers cannot hold is refused), the response topic as `agora-reply-to`,
/// correlation data in hex, the content type.
fn headers_of(p: &Props) -> Result<Headers, String> {
    let mut h = Headers::new();
    for (k, v) in &p.user {
        h.append(k, v)
            .map_err(|e| format!("user property {k:?}: {e}"))?;
    }
    if let Some(t) = &p.response_topic {
        let name = to_agora(t).map_err(|e| format!("the response topic: {e}"))?;
        h.insert(agora_protocol::reply::REPLY_TO, &format!("topic:{name}"))
            .map_err(|e| e.to_string())?;
    }
    if let Some(c) = &p.correlation {
        let hex: String = c.iter().map(|b| format!("{b:02x}")).collect();
        h.insert(CORRELATION, &hex).map_err(|e| e.to_string())?;
    }
    if let Some(t) = &p.content_type {
        h.insert(CONTENT_TYPE, t)
            .map_err(|e| format!("the content type: {e}"))?;
    }
    Ok(h)
}

/// Agora headers as MQTT 5 properties, the reverse of [`headers_of`].
fn props_of(h: &Headers) -> Props {
    let mut p = Props::default();
    for (k, v) in h.iter() {
        if k.eq_ignore_ascii_case(agora_protocol::reply::REPLY_TO) {
            match v.strip_prefix("topic:") {
                Some(name) => p.response_topic = Some(from_agora(name)),
                None => p.user.push((k.to_owned(), v.to_owned())),
            }
        } else if k.eq_ignore_ascii_case(CORRELATION) {
            match unhex(v) {
                Some(b) => p.correlation = Some(b.into()),
                None => p.user.push((k.to_owned(), v.to_owned())),
            }
        } else if k.eq_ignore_ascii_case(CONTENT_TYPE) {
            p.content_type = Some(v.to_owned());
        } else {
            p.user.push((k.to_owned(), v.to_owned()));
        }
    }
    p
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
