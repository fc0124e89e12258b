//! A connection's state and rules as a plain value: what the client asked for (its
//! name, publisher confirms), its subscriptions and the delivery-id slots that route an
//! `ACK` to one of them, the run of fire-and-forget publishes held back, what a request
//! may do before the broker is asked (reserved names, duplicate or too many
//! subscriptions, prefetch and ack options), and the liveness rule (when to ping a
//! silent client, when to give up on it).
//!
//! It takes a decoded frame ([`Session::on_frame`]) and returns what must happen
//! ([`Effects`]): replies to write, a publish to route, a subscription to open or let
//! go of, a question for the broker, the connection to end and why. No sockets, no
//! tasks, no clock reads: the time comes in as an argument, and a subscription is
//! whatever handle the driver keeps for it (`S`: the broker's topic or queue handles in
//! `conn`, a plain value in the simulation and the tests). The drivers — the TCP and
//! UDP front doors in `conn`, and the simulation — carry the effects out; what the
//! destinations answer (a full queue, a spent budget) is theirs to say.

mod access;
mod step;

pub(crate) use access::Access;
pub(crate) use step::{Ask, Effects, End, PubMode, Step, SubHandle, PUBLISH_RUN};

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use agora_protocol::{AckMode, Connect, Destination, ErrorCode, Kind, Subscribe};

use crate::config::Config;
use crate::metrics::METRICS_TOPIC;
use crate::queue::SLOT_SHIFT;

/// A request refused before anything was done: the `ERR` the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

fn refuse<T>(code: ErrorCode, message: String) -> Result<T, Refusal> {
    Err(Refusal { code, message })
}

/// What a `SUB` that passed the session's rules asks of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubPlan {
    Topic,
    /// A queue consumer with its delivery-id slot (already taken).
    Queue {
        prefetch: u32,
        auto_ack: bool,
        slot: u64,
    },
}

/// What the liveness rule says when the ping timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Heard from recently: look again after this long.
    Wait(Duration),
    /// Silent for a whole interval: send a `PINGREQ`, look again after an interval.
    Ping,
    /// This many pings went unanswered: close the connection.
    GiveUp(u32),
}

/// The limits a session applies, from the broker's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_subscriptions: usize,
    pub default_prefetch: u32,
    pub max_prefetch: u32,
    pub ping_interval: Duration,
    pub max_missed_pings: u32,
    /// Fire-and-forget publishes may be held back in runs (off: an ablation).
    pub publish_runs: bool,
}

impl Limits {
    pub fn of(c: &Config) -> Limits {
        Limits {
            max_subscriptions: c.max_subscriptions,
            default_prefetch: c.default_prefetch,
            max_prefetch: c.max_prefetch,
            ping_interval: c.ping_interval,
            max_missed_pings: c.max_missed_pings,
            publish_runs: !c.ablation.no_publish_batching,
        }
    }
}

/// See the module documentation.
pub(crate) struct Session<S> {
    limits: Limits,
    /// Publisher confirms on (`SETACK on`, or `CONNECT confirm=on`).
    pub confirm: bool,
    /// The protocol version the client named in `CONNECT` (1 when it named none).
    pub proto: u32,
    /// The client's name from `CONNECT`.
    pub name: Option<String>,
    subs: HashMap<u64, (S, Option<u64>)>,
    /// Delivery-id slot → subscription id, for routing `ACK`/`NACK`.
    slots: HashMap<u64, u64>,
    next_slot: u64,
    /// When the client was last heard from.
    heard: Instant,
    /// Pings sent since then.
    missed: u32,
    /// Fire-and-forget publishes held back by the driver since the run began.
    run: u32,
    /// Over UDP: the token the source must echo, and whether it has.
    udp: Option<Proof>,
    /// Who the client is, and so what it may do.
    access: Access,
    /// Destinations this client was found to be allowed to publish to (not kept for
    /// [`Access::Open`]); at most [`access::ALLOWED_CACHE`].
    allowed: HashSet<Destination>,
    /// This connection's inbox for replies, `$inbox.<nonce>` (none over UDP): only
    /// this connection may subscribe to it, and only it may name it as a reply address.
    inbox: Option<String>,
    /// The session of the MQTT front door's bridge: it may use the queues of its
    /// user's persistent MQTT sessions ([`Session::owns`]).
    mqtt: bool,
    /// A cluster link's session: see [`Session::for_link`].
    link: bool,
}

/// A UDP source's proof that it receives what is sent to its address.
#[derive(Debug, Clone)]
struct Proof {
    token: String,
    verified: bool,
}

impl<S> Session<S> {
    pub fn new(limits: Limits, now: Instant) -> Session<S> {
        Session {
            limits,
            confirm: false,
            proto: 1,
            name: None,
            subs: HashMap::new(),
            slots: HashMap::new(),
            next_slot: 1,
            heard: now,
            missed: 0,
            run: 0,
            udp: None,
            access: Access::Open,
            allowed: HashSet::new(),
            inbox: None,
            mqtt: false,
            link: false,
        }
    }

    /// The session of an MQTT connection's bridge (`crate::mqtt`): see
    /// [`Session::owns`].
    pub fn for_mqtt(mut self) -> Session<S> {
        self.mqtt = true;
        self
    }

    /// The session of a cluster link (`crate::cluster`): it carries a whole node's
    /// subscriptions (no per-connection limit) and publishes what another node's
    /// clients sent, whose reply addresses that node checked.
    pub fn for_link(mut self) -> Session<S> {
        self.link = true;
        self
    }

    /// Whether `dest` is a queue of a persistent MQTT session of this connection's
    /// user, `$mqtt.session.<user>.<client id>` (`_` for the user with no users
    /// configured): only an MQTT bridge's session owns any, and it may subscribe to,
    /// bind, unbind and delete them whatever the user's rights (the topics it binds
    /// them to are checked as subscriptions).
    pub fn owns(&self, dest: &Destination) -> bool {
        if !self.mqtt || dest.kind != Kind::Queue {
            return false;
        }
        let user = match &self.access {
            Access::Open => "",
            Access::User(u) => u.name.as_str(),
            Access::Pending | Access::Anonymous(_) => return false,
        };
        let prefix = agora_protocol::mqtt::topic::session_prefix(user);
        dest.name.as_str().len() > prefix.len() && dest.name.as_str().starts_with(&prefix)
    }

    /// The session of a connection whose inbox for replies is `inbox`
    /// (`$inbox.<nonce>`, announced in its `INFO`).
    pub fn with_inbox(mut self, inbox: String) -> Session<S> {
        self.inbox = Some(inbox);
        self
    }

    /// This connection's inbox, if it has one.
    pub fn inbox(&self) -> Option<&str> {
        self.inbox.as_deref()
    }

    /// The session of a client that is `access` to begin with (users configured: not
    /// authenticated yet, or known by its certificate; over UDP, anonymous).
    pub fn with_access(mut self, access: Access) -> Session<S> {
        self.access = access;
        self
    }

    /// Who the client is.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// A session over UDP, whose source must prove it receives (`CONNECT token=…` with
    /// this token) before a subscription takes effect; until then it is refused
    /// `unverified`, with the token in the message. Commands whose answers do not fit a
    /// datagram (`STATS`, `HELP`) are refused over UDP.
    pub fn over_udp(mut self, token: String) -> Session<S> {
        self.udp = Some(Proof {
            token,
            verified: false,
        });
        self
    }

    /// True over TCP, and over UDP once the source has echoed its token.
    pub fn verified(&self) -> bool {
        self.udp.as_ref().is_none_or(|p| p.verified)
    }

    /// `STATS` and `HELP`: answered over TCP only.
    fn check_large_answer(&self, what: &str) -> Result<(), Refusal> {
        match self.udp {
            Some(_) => refuse(
                ErrorCode::NotPermitted,
                format!("{what} is answered over TCP only (its answer does not fit a datagram)"),
            ),
            None => Ok(()),
        }
    }

    /// The protocol version `CONNECT` names must be one this broker speaks (1 or 2).
    fn check_version(&self, c: &Connect) -> Result<(), Refusal> {
        use agora_protocol::PROTOCOL_VERSION;
        match c.proto.filter(|p| !(1..=PROTOCOL_VERSION).contains(p)) {
            Some(p) => refuse(
                ErrorCode::BadArgs,
                format!(
                    "protocol version {p} is not supported; this broker speaks 1 to {PROTOCOL_VERSION}"
                ),
            ),
            None => Ok(()),
        }
    }

    /// `CONNECT`: the protocol version must be this broker's; name and confirms are
    /// taken as given (who the client is, the caller has settled).
    pub fn connect(&mut self, c: Connect) -> Result<(), Refusal> {
        self.check_version(&c)?;
        if let Some(p) = c.proto {
            self.proto = p;
        }
        if let (Some(t), Some(p)) = (&c.token, &mut self.udp) {
            if *t != p.token {
                // The right one goes back to the address, where only a real receiver
                // sees it.
                return refuse(ErrorCode::Unverified, format!("token={}", p.token));
            }
            p.verified = true;
        }
        if let Some(on) = c.confirm {
            self.confirm = on;
        }
        if c.name.is_some() {
            self.name = c.name;
        }
        Ok(())
    }

    /// Whether a client may publish to `dest`, and may purge, delete or chain it:
    /// names starting with `$` belong to the broker.
    pub fn check_reserved(dest: &Destination) -> Result<(), Refusal> {
        match dest.name.is_reserved() {
            true => refuse(
                ErrorCode::NotPermitted,
                format!("{dest} is reserved for the broker"),
            ),
            false => Ok(()),
        }
    }

    /// `PURGE`: queues only, and not the broker's own.
    pub fn check_purge(dest: &Destination) -> Result<(), Refusal> {
        if dest.kind != Kind::Queue {
            return refuse(ErrorCode::BadArgs, "only queues can be purged".to_owned());
        }
        Self::check_reserved(dest)
    }

    /// Subscriptions the broker ended (`CANCEL`), as `ended` tells: removed, so their
    /// ids and places are free again; returned for the caller to let go of.
    pub fn take_ended(&mut self, ended: impl Fn(&S) -> bool) -> Vec<S> {
        let gone: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, (s, _))| ended(s))
            .map(|(sid, _)| *sid)
            .collect();
        gone.into_iter()
            .filter_map(|sid| self.remove(sid))
            .collect()
    }

    /// The rules a `SUB` must pass before the broker is asked; a queue subscription
    /// gets its delivery-id slot here (never reused on this connection).
    pub fn plan_subscribe(&mut self, s: &Subscribe) -> Result<SubPlan, Refusal> {
        // Clients may listen to the broker's own topics, never create others; a
        // connection's own inbox is its own, whatever its rights.
        let own_inbox = (s.dest.kind == Kind::Topic
            && self.inbox.as_deref() == Some(s.dest.name.as_str()))
            || self.owns(&s.dest);
        let readable = s.dest.kind == Kind::Topic && s.dest.name.as_str() == METRICS_TOPIC;
        if !readable && !own_inbox {
            Self::check_reserved(&s.dest)?;
        }
        if !own_inbox {
            self.access.check_subscribe(&s.dest)?;
        }
        if let Some(p) = self.udp.as_ref().filter(|p| !p.verified) {
            // Short: it must fit the answer allowance of an unverified source.
            return refuse(ErrorCode::Unverified, format!("token={}", p.token));
        }
        if self.subs.contains_key(&s.sid) {
            let why = format!(
                "subscription {} is already active on this connection",
                s.sid
            );
            return refuse(ErrorCode::DuplicateSubscription, why);
        }
        let max = self.limits.max_subscriptions;
        if self.subs.len() >= max && !self.link {
            let why = format!("at most {max} subscriptions per connection");
            return refuse(ErrorCode::TooManySubscriptions, why);
        }
        if s.dest.kind == Kind::Topic {
            if s.prefetch.is_some() || s.ack.is_some() {
                let why = "prefetch and ack apply to queue subscriptions only".to_owned();
                return refuse(ErrorCode::BadArgs, why);
            }
            return Ok(SubPlan::Topic);
        }
        let prefetch = s.prefetch.unwrap_or(self.limits.default_prefetch);
        if prefetch > self.limits.max_prefetch {
            let why = format!(
                "prefetch {prefetch} is above the limit of {}",
                self.limits.max_prefetch
            );
            return refuse(ErrorCode::BadArgs, why);
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        let auto_ack = s.ack == Some(AckMode::Auto);
        Ok(SubPlan::Queue {
            prefetch,
            auto_ack,
            slot,
        })
    }

    /// The broker took the subscription `sid` planned as `plan`.
    pub fn add(&mut self, sid: u64, plan: SubPlan, sub: S) {
        let slot = match plan {
            SubPlan::Queue { slot, .. } => {
                self.slots.insert(slot, sid);
                Some(slot)
            }
            SubPlan::Topic => None,
        };
        self.subs.insert(sid, (sub, slot));
    }

    /// Ends subscription `sid`; `None` if there is none.
    pub fn remove(&mut self, sid: u64) -> Option<S> {
        let (sub, slot) = self.subs.remove(&sid)?;
        if let Some(slot) = slot {
            self.slots.remove(&slot);
        }
        Some(sub)
    }

    /// Whether no subscription is active.
    pub fn is_idle(&self) -> bool {
        self.subs.is_empty()
    }

    /// Every subscription, for a connection that ends.
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }

    pub fn drain(&mut self) -> Vec<(u64, S)> {
        self.slots.clear();
        self.subs.drain().map(|(sid, (s, _))| (sid, s)).collect()
    }

    /// The subscription a delivery id belongs to, if it is still active here.
    pub fn for_delivery(&self, did: u64) -> Option<&S> {
        self.sub(self.sid_for_delivery(did)?)
    }

    /// The id of the subscription a delivery id belongs to, if it is still active.
    pub fn sid_for_delivery(&self, did: u64) -> Option<u64> {
        let sid = *self.slots.get(&(did >> SLOT_SHIFT))?;
        self.subs.contains_key(&sid).then_some(sid)
    }

    /// Subscription `sid`, if active.
    pub fn sub(&self, sid: u64) -> Option<&S> {
        self.subs.get(&sid).map(|(s, _)| s)
    }

    /// The client was heard from (any bytes).
    pub fn heard(&mut self, now: Instant) {
        self.heard = now;
        self.missed = 0;
    }

    /// The ping timer fired at `now`: what to do.
    pub fn ping_due(&mut self, now: Instant) -> Liveness {
        let every = self.limits.ping_interval;
        let quiet = now.saturating_duration_since(self.heard);
        if quiet < every {
            return Liveness::Wait(every - quiet);
        }
        if self.missed >= self.limits.max_missed_pings {
            return Liveness::GiveUp(self.limits.max_missed_pings);
        }
        self.missed += 1;
        Liveness::Ping
    }
}

#[cfg(test)]
mod tests;
