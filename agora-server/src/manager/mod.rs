//! The queue manager: the registry of queues and topics and their lifecycles.
//!
//! It owns control, not data: a connection asks it once for a destination's handle and
//! then publishes straight into the destination. A queue is created on first use
//! (publish, subscribe or `BIND`); a topic when subscribed to or given a chain (a
//! publish to a topic that is no destination goes through an unlisted one: see
//! [`Unlisted`](crate::topic::Unlisted)). One that is idle (a queue holding no message and with no
//! consumer, a topic with no subscriber) and has seen no publish for
//! [`Config::idle_timeout`](crate::Config::idle_timeout) is removed by a sweep that runs
//! a few times per idle timeout; publishers holding its handle notice the `closed` flag
//! and resolve the name again.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::{Destination, ErrorCode, Kind, StatsPage};
use async_channel::{Receiver, Sender};
use serde::Serialize;

use crate::ask::ask;
use crate::budget::Budget;
use crate::config::Config;
use crate::mutators::{Chain, ChainSlot, Env};
use crate::queue::{self, MessageIds, QueueCmd, QueueShared, QueueStore};
use crate::store::{Append, Kept, Record, WriterHandle};
use crate::topic::Topic;

mod bindings;
mod listing;
mod resolve;
mod store;

pub(crate) use listing::{DestStats, Listing};
pub(crate) use store::Store;

/// A destination as connections hold it.
#[derive(Clone)]
pub(crate) enum Handle {
    Queue(Arc<QueueShared>),
    Topic(Arc<Topic>),
}

impl Handle {
    /// The same destination object (not merely the same name).
    pub fn same(&self, other: &Handle) -> bool {
        match (self, other) {
            (Handle::Queue(a), Handle::Queue(b)) => Arc::ptr_eq(a, b),
            (Handle::Topic(a), Handle::Topic(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The destination's mutator chain slot.
    #[inline]
    pub fn chain(&self) -> &ChainSlot {
        match self {
            Handle::Queue(q) => &q.chain,
            Handle::Topic(t) => &t.chain,
        }
    }

    /// Whether a request published now has someone to answer it: a topic's
    /// subscribers (wildcard ones included), a queue's consumers.
    pub fn listened(&self) -> bool {
        match self {
            Handle::Queue(q) => q.consumers.load(SeqCst) > 0,
            Handle::Topic(t) => t.listened(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Handle::Queue(q) => q.closed.load(SeqCst),
            Handle::Topic(t) => t.is_closed(),
        }
    }

    /// Whether it is a registered destination (a topic may be [unlisted]).
    ///
    /// [unlisted]: crate::topic::Unlisted
    pub fn is_listed(&self) -> bool {
        match self {
            Handle::Queue(_) => true,
            Handle::Topic(t) => t.is_listed(),
        }
    }
}

/// Requests to the queue manager.
pub(crate) enum ManagerCmd {
    /// Find or create a destination (refused at the destination limit).
    Resolve {
        dest: Destination,
        reply: Sender<Result<Handle, (ErrorCode, String)>>,
    },
    /// What a publish to `dest` goes to: the destination if there is one; else a
    /// queue is made (as `Resolve`), and a topic without a chain is an unlisted one
    /// (see [`Unlisted`](crate::topic::Unlisted)), made for the asker and not kept.
    ResolvePublish {
        dest: Destination,
        reply: Sender<Result<Handle, (ErrorCode, String)>>,
    },
    /// Delete a destination: its subscribers get `CANCEL`, its messages are dropped.
    /// Answers with how many messages went, or `None` if there was no such destination.
    Delete {
        dest: Destination,
        reply: Sender<Option<usize>>,
    },
    /// Find a destination without creating it.
    Lookup {
        dest: Destination,
        reply: Sender<Option<Handle>>,
    },
    /// A page of destinations, in order, for `STATS`.
    List {
        page: StatsPage,
        /// Only the destinations this user may see (`None`: all of them).
        only: Option<Arc<crate::auth::User>>,
        reply: Sender<Listing>,
    },
    /// Every destination, in no order, for the metric task.
    All { reply: Sender<Vec<Handle>> },
    /// Remove idle destinations.
    Sweep,
    /// Attach (`Some`) or remove (`None`) a destination's mutator chain, now and
    /// whenever the destination is created again.
    SetChain {
        dest: Destination,
        chain: Option<Arc<Chain>>,
        reply: Sender<Result<(), (ErrorCode, String)>>,
    },
    /// Bind (`on`) a queue to a topic pattern, making the queue; or unbind it
    /// (`unknown_destination` when it was not bound to it). Kept in the log.
    Bind {
        queue: Destination,
        pattern: crate::auth::Pattern,
        on: bool,
        reply: Sender<Result<(), (ErrorCode, String)>>,
    },
    /// A destination's chain, if it has one.
    GetChain {
        dest: Destination,
        reply: Sender<Option<Arc<Chain>>>,
    },
}

struct Entry {
    handle: Handle,
    /// messages_in when last looked at, and when it last changed.
    seen_in: u64,
    active_at: Instant,
}

/// Spawns the manager task on `rt`; returns its channel. Queues read back from the
/// log (`store`) are made before anything else is served.
// Each argument is a different piece of the broker the manager hands to what it makes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    config: &Config,
    budget: Arc<Budget>,
    env: Arc<Env>,
    rt: &agora_rt::Handle,
    store: Option<Store>,
    wild: Arc<crate::topic::wild::Wild>,
    unlisted: Arc<crate::topic::Unlisted>,
    replicated: Option<Arc<crate::replicated::Groups>>,
) -> Sender<ManagerCmd> {
    let (tx, rx) = async_channel::bounded(1024);
    // `Server::bind` checked every configured chain.
    let mut chains: HashMap<Destination, Arc<Chain>> = config
        .chains
        .iter()
        .filter_map(|(d, text)| match Chain::parse(text, &env) {
            Ok(c) => Some((d.compact(), Arc::new(c))),
            Err(e) => {
                log::error!("chain of {d} ignored: {e}");
                None
            }
        })
        .collect();
    // What `CHAIN SET`/`CLEAR` said before the start has the last word.
    for (dest, text) in store.iter().flat_map(|s| &s.chains) {
        let Ok(d) = Destination::parse(dest) else {
            log::error!("the log holds a chain for '{dest}', not a destination; ignored");
            continue;
        };
        if text.is_empty() {
            chains.remove(&d.compact());
            continue;
        }
        match Chain::parse(text, &env) {
            Ok(c) => {
                log::info!("chain of {d} read back from the log: {text}");
                chains.insert(d.compact(), Arc::new(c));
            }
            Err(e) => log::error!("chain of {d} read back from the log ignored: {e}"),
        }
    }
    // Queues bound to topic patterns: the config file's, unless the log has the last
    // word for a queue (what BIND and UNBIND made of it before the start).
    let mut bindings: BTreeMap<String, Vec<crate::auth::Pattern>> = BTreeMap::new();
    for (q, p) in &config.bindings {
        bindings
            .entry(q.name.as_str().to_owned())
            .or_default()
            .push(p.clone());
    }
    for (q, text) in store.iter().flat_map(|s| &s.bindings) {
        let patterns = text
            .split_whitespace()
            .filter_map(|p| match crate::auth::Pattern::parse(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::error!("the log binds queue:{q} to '{p}', not a pattern ({e}); ignored");
                    None
                }
            })
            .collect();
        log::info!("bindings of queue:{q} read back from the log: {text}");
        bindings.insert(q.clone(), patterns);
    }
    let mut bound = Vec::new();
    for (q, patterns) in bindings {
        let Ok(dest) = Destination::queue(&q) else {
            log::error!("bindings of '{q}', not a queue name; ignored");
            continue;
        };
        for p in &patterns {
            wild.bind(&dest, p);
        }
        if !patterns.is_empty() {
            bound.push(dest);
        }
    }
    let m = Manager {
        config: config.clone(),
        registry: BTreeMap::new(),
        budget,
        me: tx.downgrade(),
        chains,
        rt: rt.clone(),
        store,
        wild,
        unlisted,
        replicated,
    };
    rt.spawn(m.run(rx, bound)).detach();
    // The sweeper only holds a weak link: it stops when the broker drops the manager.
    let weak = tx.downgrade();
    let every = (config.idle_timeout / 4).max(Duration::from_millis(10));
    rt.spawn(async move {
        loop {
            smol::Timer::after(every).await;
            let Some(tx) = weak.upgrade() else { break };
            if tx.send(ManagerCmd::Sweep).await.is_err() {
                break;
            }
        }
    })
    .detach();
    tx
}

struct Manager {
    config: Config,
    /// Ordered, so `STATS` pages through it without copying it.
    registry: BTreeMap<Destination, Entry>,
    budget: Arc<Budget>,
    /// Handed to queues, which resolve their dead-letter queues through the manager.
    me: async_channel::WeakSender<ManagerCmd>,
    /// Chains by destination name, from the config file and `CHAIN SET`; attached to
    /// a destination whenever it is created, so a chain outlives idle removal.
    chains: HashMap<Destination, Arc<Chain>>,
    /// Where queue tasks are spawned.
    rt: agora_rt::Handle,
    /// The log, when the broker has a data directory.
    store: Option<Store>,
    /// The wildcard subscriptions every topic delivers to where its name matches.
    wild: Arc<crate::topic::wild::Wild>,
    /// Topics published to that are not destinations.
    unlisted: Arc<crate::topic::Unlisted>,
    /// The cluster's replicated queues, when this node has any.
    replicated: Option<Arc<crate::replicated::Groups>>,
}

impl Manager {
    async fn run(mut self, rx: Receiver<ManagerCmd>, bound: Vec<Destination>) {
        self.recover().await;
        // Replicated queues this node has a log of take part in their groups at once.
        let logged = self
            .replicated
            .as_ref()
            .map(|g| g.logged())
            .unwrap_or_default();
        for q in logged {
            if let Err((_, why)) = self.resolve(q.clone()).await {
                log::error!("{q} not made at start: {why}");
            }
        }
        // Bound queues exist from the start: what the bindings route is kept.
        for q in bound {
            if let Err((_, why)) = self.resolve(q.clone()).await {
                log::error!("{q}, bound to topic patterns, not made at start: {why}");
            }
        }
        while let Ok(cmd) = rx.recv().await {
            match cmd {
                ManagerCmd::Resolve { dest, reply } => {
                    let h = self.resolve(dest).await;
                    let _ = reply.try_send(h);
                }
                ManagerCmd::ResolvePublish { dest, reply } => {
                    let h = match self.registry.get(&dest) {
                        Some(e) if !e.handle.is_closed() => Ok(e.handle.clone()),
                        _ if dest.kind == Kind::Topic && !self.chains.contains_key(&dest) => {
                            let c = &self.config;
                            let t =
                                Topic::new(dest.compact(), c.slow_consumer, self.budget.clone())
                                    .with_copy_fanout(c.ablation.copy_fanout)
                                    .with_wild(self.wild.clone())
                                    .unlisted(self.unlisted.clone());
                            Ok(Handle::Topic(Arc::new(t)))
                        }
                        _ => self.resolve(dest).await,
                    };
                    let _ = reply.try_send(h);
                }
                ManagerCmd::Delete { dest, reply } => {
                    let Some(e) = self.registry.remove(&dest) else {
                        let _ = reply.try_send(None);
                        continue;
                    };
                    if let Some(st) = &mut self.store {
                        // The queue's task writes its `Delete`; made again, the name
                        // gets a new number.
                        st.numbers.remove(dest.name.as_str());
                    }
                    let n = match e.handle {
                        Handle::Queue(q) => {
                            // Its bindings go with it.
                            self.unbind_all(&dest).await;
                            // Publishers see the flag at once and resolve the name
                            // again; the queue task tells its consumers, then answers.
                            // The manager does not wait for it.
                            q.closed.store(true, SeqCst);
                            self.rt
                                .spawn(async move {
                                    let n = ask(&q.tx, |reply| QueueCmd::Delete { reply }).await;
                                    if let Some(n) = n {
                                        log::info!("deleted {dest} ({n} messages dropped)");
                                    }
                                    let _ = reply.send(n).await;
                                })
                                .detach();
                            continue;
                        }
                        Handle::Topic(t) => t.delete(),
                    };
                    log::info!("deleted {dest} ({n} messages dropped)");
                    let _ = reply.try_send(Some(n));
                }
                ManagerCmd::Lookup { dest, reply } => {
                    let h = self
                        .registry
                        .get(&dest)
                        .map(|e| e.handle.clone())
                        .filter(|h| !h.is_closed());
                    let _ = reply.try_send(h);
                }
                ManagerCmd::List { page, only, reply } => {
                    let _ = reply.try_send(self.list(&page, only.as_deref()));
                }
                ManagerCmd::All { reply } => {
                    let all = self.registry.values().map(|e| e.handle.clone()).collect();
                    let _ = reply.try_send(all);
                }
                ManagerCmd::Sweep => self.sweep(),
                ManagerCmd::SetChain { dest, chain, reply } => {
                    let dest = dest.compact();
                    let max = self.config.max_destinations;
                    if chain.is_some()
                        && !self.chains.contains_key(&dest)
                        && self.chains.len() >= max
                    {
                        let _ = reply.try_send(Err((
                            ErrorCode::TooManyDestinations,
                            format!("the broker is at its limit of {max} chains"),
                        )));
                        continue;
                    }
                    if let Some(e) = self.registry.get(&dest) {
                        e.handle.chain().set(chain.clone());
                    }
                    // An unlisted topic of this name has no chain: its publishers must
                    // ask again, and find the destination the chain makes it.
                    self.unlisted.generation.fetch_add(1, SeqCst);
                    if let Some(st) = &self.store {
                        // Kept for the next start (an empty text: cleared).
                        let text = chain
                            .as_ref()
                            .map_or(String::new(), |c| c.text().to_owned());
                        let record = Record::Chain {
                            dest: dest.to_string(),
                            text,
                        };
                        keep(st, record).await;
                    }
                    match chain {
                        Some(c) => {
                            log::info!("chain of {dest} set: {}", c.text());
                            self.chains.insert(dest, c);
                        }
                        None => {
                            if self.chains.remove(&dest).is_some() {
                                log::info!("chain of {dest} cleared");
                            }
                        }
                    }
                    let _ = reply.try_send(Ok(()));
                }
                ManagerCmd::Bind {
                    queue,
                    pattern,
                    on,
                    reply,
                } => {
                    let r = self.bind(queue, pattern, on).await;
                    let _ = reply.try_send(r);
                }
                ManagerCmd::GetChain { dest, reply } => {
                    let _ = reply.try_send(self.chains.get(&dest).cloned());
                }
            }
        }
    }
}

/// Hands a record of the registry's own (a chain, a queue's bindings) to the log's
/// writer; answered once handed over, not once synced.
async fn keep(st: &Store, record: Record) {
    let _ = st
        .writer
        .append(Append {
            records: vec![record],
            done: Vec::new(),
        })
        .await;
}
