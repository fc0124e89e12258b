//! The simulated world: queues, topics, clients, the clock, and the invariants.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::bytes::Bytes;
use agora_protocol::{Destination, Headers, Kind, Name};

mod check;
mod conns;
mod consumers;
mod driver;
mod durable;
mod frames;
mod intruders;
mod reads;
mod settle;
mod topics;

use super::{Failure, Report, Rng};
use crate::budget::Budget;
use crate::config::{QueueSettings, SlowConsumerPolicy};
use crate::deliveries::DeliveryRx;
use crate::message::{Delivery, Message};
use crate::queue::{QueueShared, QueueState, Refused};
use crate::session::{Limits as SessionLimits, Session};
use crate::topic::{Subscriber, Topic};

/// Queues with consumers (each has a dead-letter queue after them in `queues`).
const WORK_QUEUES: usize = 2;
const TOPICS: usize = 2;
const PUBLISHERS: u8 = 3;
/// Small on purpose: the limits and the budget must bind often.
const BUDGET: usize = 12 * 1024;
const SUBSCRIBER_BUFFER: usize = 6;
const MAX_DELIVERIES: u32 = 3;
/// Connections the queue consumers share (each with its session).
const CLIENTS: u64 = 4;
/// Subscriptions per connection: small, so the session's limit binds too.
const MAX_SUBSCRIPTIONS: usize = 3;
/// Operations kept for a failure's report.
const TRAIL: usize = 24;

/// A queue consumer's port: what the queue pushed, and whether its connection is gone.
#[derive(Clone, Default)]
pub(crate) struct Port {
    got: Rc<RefCell<Vec<Delivery>>>,
    gone: Rc<Cell<bool>>,
}

struct SimQueue {
    shared: Arc<QueueShared>,
    /// Kept so the channel stays open; nothing is sent on it here.
    _rx: crate::chan::Rx<crate::queue::QueueCmd>,
    state: QueueState<Port>,
    /// Index of its dead-letter queue in `World::queues`.
    dlq: Option<usize>,
    /// Its number in the log.
    number: u32,
    /// Its paged messages and bytes, as the budget was last told (`durable.rs`).
    paged_seen: (usize, usize),
}

struct SimConsumer {
    queue: usize,
    /// The connection (its session) the subscription belongs to.
    client: u64,
    port: Port,
    auto_ack: bool,
    prefetch: u32,
    /// Manual ack: deliveries in hand (delivery id, message id).
    held: Vec<(u64, u64)>,
    /// Auto ack: delivered, not yet reported written, in order.
    fifo: VecDeque<u64>,
}

struct SimSub {
    sub: Arc<Subscriber>,
    rx: DeliveryRx,
    /// Per publisher, the last sequence number seen.
    last: BTreeMap<u64, u64>,
}

struct SimTopic {
    topic: Arc<Topic>,
    subs: Vec<SimSub>,
}

/// A wildcard subscription of the simulated world, in its index.
struct WildSimSub {
    pattern: crate::auth::Pattern,
    sub: SimSub,
}

pub(crate) struct World {
    seed: u64,
    rng: Rng,
    start: Instant,
    now: Instant,
    budget: Arc<Budget>,
    queues: Vec<SimQueue>,
    topics: Vec<SimTopic>,
    /// The wildcard subscriptions every topic delivers to where its name matches.
    wild: Arc<crate::topic::wild::Wild>,
    wild_subs: Vec<WildSimSub>,
    /// Per cluster link, what its subscriptions were handed (publisher, sequence):
    /// each at most once, whatever overlaps.
    link_seen: BTreeMap<u64, std::collections::BTreeSet<(u64, u64)>>,
    consumers: BTreeMap<u64, SimConsumer>,
    /// Connections: each one's session holds its subscriptions and delivery-id slots.
    clients: BTreeMap<u64, Session<u64>>,
    next_cid: u64,
    next_id: u64,
    /// Accepted queue messages not yet finished (acked, written, purged, deleted).
    live: BTreeSet<u64>,
    /// Delivery count last seen per message id.
    counts: BTreeMap<u64, u32>,
    /// Messages held back by `NACK delay=`, and when they may come back.
    delayed: BTreeMap<u64, Instant>,
    /// Messages `NACK dlq`'d, not yet in the dead letters.
    rejected: BTreeSet<u64>,
    /// Per publisher, the next topic sequence number.
    seqs: [u64; PUBLISHERS as usize],
    report: Report,
    trail: VecDeque<String>,
    /// Set by an operation that saw a rule broken as it happened.
    broken: Option<String>,
    /// The simulation's message id of each message in the log, by queue number and
    /// log id: what a paged message is (its payload is only in the log).
    log_ids: BTreeMap<(u32, u64), u64>,
    /// Consumers under `HOLD`: the queue must give them nothing new.
    held: BTreeSet<u64>,
    /// Queue publishes with a message id, for retries: queue, message, when accepted.
    retries: VecDeque<(usize, Message, Instant)>,
    /// Publishing connections, driven through their sessions.
    conns: BTreeMap<u64, conns::SimConn>,
    /// Clients without the right (`intruders.rs`).
    intruders: [Session<u64>; 3],
    /// Chains set on destinations (by the connections' `CHAIN SET`).
    chains: std::collections::HashMap<Destination, Arc<crate::mutators::Chain>>,
    /// The clients' model of which destinations have a chain.
    chain_model: std::collections::HashSet<Destination>,
    /// Connections reading frames in pieces, and the read budget they share.
    readers: Vec<reads::Reader>,
    read_budget: crate::budget::ReadBudget,
    /// Every queue's journal goes to this log (`durable.rs`), on this disk.
    log: crate::store::Log<crate::store::SimDisk>,
    disk: crate::store::SimDisk,
    /// Dead letters' `Ack`s, appended after the queues' own records (as a dead-letter
    /// queue's task appends them after its `Enqueue` of the copy).
    moved: Vec<crate::store::Record>,
}

type Check = Result<(), String>;

impl World {
    pub fn new(seed: u64) -> World {
        let start = Instant::now();
        let budget = Budget::new(BUDGET, true);
        let disk = crate::store::SimDisk::new();
        let mut w = World {
            seed,
            rng: Rng::new(seed),
            start,
            now: start,
            budget,
            queues: Vec::new(),
            topics: Vec::new(),
            wild: Default::default(),
            wild_subs: Vec::new(),
            link_seen: BTreeMap::new(),
            consumers: BTreeMap::new(),
            clients: BTreeMap::new(),
            next_cid: 1,
            next_id: 1,
            live: BTreeSet::new(),
            counts: BTreeMap::new(),
            delayed: BTreeMap::new(),
            rejected: BTreeSet::new(),
            seqs: [0; PUBLISHERS as usize],
            report: Report::default(),
            trail: VecDeque::new(),
            broken: None,
            log_ids: BTreeMap::new(),
            retries: VecDeque::new(),
            held: BTreeSet::new(),
            conns: BTreeMap::new(),
            intruders: intruders::sessions(start),
            chains: Default::default(),
            chain_model: Default::default(),
            readers: (0..reads::READERS).map(|_| Default::default()).collect(),
            read_budget: reads::budget(),
            log: durable::open_log(&disk),
            disk,
            moved: Vec::new(),
        };
        for q in 0..WORK_QUEUES {
            let work = w.queues.len();
            w.queues
                .push(w.new_queue(&format!("work{q}"), Some(work + 1)));
            w.queues.push(w.new_queue(&format!("work{q}.dlq"), None));
        }
        for q in 0..w.queues.len() {
            w.make_durable(q);
        }
        for t in 0..TOPICS {
            let policy = match t % 2 {
                0 => SlowConsumerPolicy::DropOldest,
                _ => SlowConsumerPolicy::Disconnect,
            };
            let dest = dest(Kind::Topic, &format!("events{t}"));
            let topic =
                Arc::new(Topic::new(dest, policy, w.budget.clone()).with_wild(w.wild.clone()));
            w.topics.push(SimTopic {
                topic,
                subs: Vec::new(),
            });
        }
        w
    }

    fn new_queue(&self, name: &str, dlq: Option<usize>) -> SimQueue {
        let settings = QueueSettings {
            max_messages: 40,
            max_bytes: 4096,
            max_deliveries: if dlq.is_some() { MAX_DELIVERIES } else { 0 },
            ttl: dlq.map(|_| Duration::from_secs(20)),
            ack_timeout: dlq.map(|_| Duration::from_secs(5)),
            dead_letter: None,
            durable: true,
            memory_bytes: 1024,
            dedup_window: std::time::Duration::from_secs(120),
            dedup_ids: 100_000,
        };
        let (shared, rx) = QueueShared::new(
            dest(Kind::Queue, name),
            settings.clone(),
            self.budget.clone(),
            16,
        );
        SimQueue {
            shared,
            _rx: rx,
            state: QueueState::new(settings),
            dlq,
            number: 0,
            paged_seen: (0, 0),
        }
    }

    pub fn run(mut self, ops: u64) -> Result<Report, Failure> {
        for op in 0..ops {
            let what = self.step();
            self.note(what);
            let checked = self
                .settle()
                .and_then(|()| self.journal_to_log())
                .and_then(|()| self.check());
            let checked = match checked {
                Ok(()) if op % durable::EVERY == durable::EVERY - 1 => self.check_log(),
                c => c,
            };
            if let Err(e) = checked {
                return Err(self.failure(op, e));
            }
            self.report.ops += 1;
        }
        let drained = self.drain_all();
        self.note("final drain".to_owned());
        let checked = drained
            .and_then(|()| self.journal_to_log())
            .and_then(|()| self.check())
            .and_then(|()| self.check_log());
        match checked {
            Ok(()) => Ok(self.report),
            Err(e) => Err(self.failure(ops, e)),
        }
    }

    fn note(&mut self, what: String) {
        if self.trail.len() == TRAIL {
            self.trail.pop_front();
        }
        let t = self.now.duration_since(self.start).as_millis();
        self.trail.push_back(format!("t={t}ms {what}"));
    }

    fn failure(&self, op: u64, what: String) -> Failure {
        Failure {
            cluster: false,
            seed: self.seed,
            op,
            what,
            trail: self.trail.iter().cloned().collect(),
        }
    }

    /// One random operation; returns what it did, for the trail.
    fn step(&mut self) -> String {
        let roll = self.rng.below(100);
        let q = (self.rng.below(WORK_QUEUES as u64) * 2) as usize;
        let t = self.rng.below(TOPICS as u64) as usize;
        match roll {
            0..=9 => self.publish(q),
            10..=21 => self.conn_send(),
            22..=31 => self.topic_publish(t),
            32..=36 => self.subscribe(q),
            37..=51 => self.settle_one(true),
            52..=56 => self.settle_one(false),
            57 => self.toggle_hold(),
            58..=59 => self.unsubscribe(false),
            60..=62 => self.unsubscribe(true),
            63..=70 => self.written(),
            71..=78 => {
                let ms = self.rng.below(3000);
                self.now += Duration::from_millis(ms);
                for sq in &mut self.queues {
                    sq.state.timers(self.now);
                    sq.state.release_delayed(self.now);
                    sq.state.expire_seen(self.now);
                }
                self.conn_timers();
                format!("time +{ms}ms")
            }
            79 => self.purge(q),
            80 if self.rng.chance(30) => self.delete(q),
            81..=85 if self.rng.chance(25) => self.wild_subscribe(),
            81..=85 => self.topic_subscribe(t),
            86..=87 if self.rng.chance(25) => self.wild_unsubscribe(),
            86..=87 => self.topic_unsubscribe(t),
            88..=91 => self.read_step(),
            92..=93 => self.intrude(),
            94..=96 => {
                // A work queue or its dead-letter queue.
                let which = q + self.rng.below(2) as usize;
                self.page(which)
            }
            _ if self.rng.chance(25) => self.wild_drain(),
            _ => self.topic_drain(t),
        }
    }

    fn publish(&mut self, q: usize) -> String {
        // Now and then the retry of a publish with a message id, as a client whose
        // confirm was lost sends it: within the window, never stored again.
        if self.rng.chance(15) {
            if let Some(what) = self.retry(q) {
                return what;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let pad = self.rng.below(120) as usize;
        let mut body = id.to_le_bytes().to_vec();
        body.resize(8 + pad, b'.');
        let mut msg = message(body, self.now);
        let with_id = self.rng.chance(30);
        if with_id {
            let _ = msg
                .headers
                .insert(agora_protocol::msg_id::MSG_ID, &format!("m{id}"));
        }
        let sq = &mut self.queues[q];
        match sq.shared.reserve(msg.size()) {
            Ok(()) => {
                if with_id {
                    if self.retries.len() == 32 {
                        self.retries.pop_front();
                    }
                    self.retries.push_back((q, msg.clone(), self.now));
                }
                sq.state.enqueue([msg], self.now);
                self.live.insert(id);
                self.report.published += 1;
                format!("publish #{id} to queue {q}")
            }
            Err(Refused::Full(why)) | Err(Refused::Memory(why)) => {
                self.report.refused += 1;
                format!("publish #{id} to queue {q} refused: {why}")
            }
            Err(Refused::Retired) => format!("publish #{id}: queue {q} retired"),
            // The simulation's queues have no writer to fail.
            Err(Refused::Storage(why) | Refused::StorageFull(why)) => {
                format!("publish #{id}: {why}")
            }
        }
    }
}

impl World {
    /// Publishes again a message with an id that queue `q` accepted within its
    /// window: its room is reserved, and must come back; it must never be held. `None`:
    /// no such message (or no room for the retry).
    fn retry(&mut self, q: usize) -> Option<String> {
        let window = self.queues[q].shared.settings.dedup_window;
        let (_, msg, _) = self
            .retries
            .iter()
            .rev()
            .find(|(at_q, _, at)| *at_q == q && self.now.saturating_duration_since(*at) < window)?
            .clone();
        let sq = &mut self.queues[q];
        sq.shared.reserve(msg.size()).ok()?;
        let before = sq.state.totals().duplicates;
        let id = msg_id(&msg);
        sq.state.enqueue([msg], self.now);
        if sq.state.totals().duplicates != before + 1 {
            self.broken = Some(format!("queue {q}: the retry of #{id} was not a duplicate"));
        }
        self.report.duplicates += 1;
        Some(format!(
            "publish #{id} to queue {q} again (same message id)"
        ))
    }
}

impl SimQueue {
    fn state_ttl(&self) -> Duration {
        self.shared.settings.ttl.unwrap_or(Duration::MAX)
    }
}

fn session_limits() -> SessionLimits {
    SessionLimits {
        max_subscriptions: MAX_SUBSCRIPTIONS,
        default_prefetch: 2,
        max_prefetch: 4,
        ping_interval: Duration::from_secs(30),
        max_missed_pings: 2,
        publish_runs: true,
    }
}

fn dest(kind: Kind, name: &str) -> Destination {
    Destination {
        kind,
        name: Name::try_from(name).expect("a valid name"),
    }
}

fn message(body: Vec<u8>, at: Instant) -> Message {
    Message {
        headers: Headers::default(),
        payload: Bytes::from(body),
        received: at,
    }
}

fn msg_id(m: &Message) -> u64 {
    id_of(&m.payload)
}

/// The simulation's id of a message, from its payload's first 8 bytes.
fn id_of(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload[..8].try_into().expect("8-byte id"))
}
