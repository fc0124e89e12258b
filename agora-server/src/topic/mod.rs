//! Topics: each message to every current subscriber.
//!
//! A topic has no task of its own: the publishing connection fans a message out to
//! each subscriber's bounded channel itself, so a message costs no extra hop and per
//! publisher order is kept. The payload is shared between subscribers (`Bytes`), never
//! copied. The subscriber list is read-mostly: publishers take a snapshot (`Arc`) under
//! a read lock; (un)subscribing replaces it. A full subscriber buffer is handled by the
//! configured [`SlowConsumerPolicy`] for that subscriber alone: the publisher never waits
//! and the other subscribers never notice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, RwLock};

use agora_protocol::bytes::Bytes;
use agora_protocol::{Destination, ErrorCode};

use crate::budget::Budget;
use crate::config::SlowConsumerPolicy;
use crate::deliveries::DeliveryTx;
use crate::shipper::{Delivery, Message, Outbox};
pub(crate) mod wild;

use self::wild::{Seen, Wild};

/// One subscription to a topic.
pub(crate) struct Subscriber {
    pub sid: u64,
    /// The subscription's delivery queue to the shipper; `cap` bounds it.
    pub tx: DeliveryTx,
    /// Messages buffered before the slow-consumer policy applies.
    pub cap: usize,
    pub outbox: Outbox,
    /// Messages dropped for this subscriber by the drop-oldest policy.
    pub dropped: AtomicU64,
    /// A wildcard subscription's pattern (it lives in the broker's [`Wild`] index, not
    /// in one topic's list).
    pub pattern: Option<crate::auth::Pattern>,
    /// Made by another node's cluster link (the link's connection id): a publish that
    /// came over a link is not handed to it, and a publish is handed to each link once,
    /// however many of its subscriptions match.
    pub link: Option<u64>,
    /// This node's interest in the subscription's pattern, given up when it is dropped
    /// (a local subscription on a node of a cluster). Held for its `Drop`.
    #[allow(dead_code)]
    pub interest: Option<crate::interest::Held>,
}

/// What a topic counts: its own for a destination, shared by every topic that is not
/// one ([`Unlisted`]).
#[derive(Default)]
pub(crate) struct Counts {
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// Topics that are not destinations: a publish to a topic with no subscriber of its
/// own and no chain (a per-device name only wildcard subscriptions match, say) is
/// delivered by a topic made for the publishing connection and never registered, so
/// it neither counts toward `--max-destinations` nor stays in memory once the
/// connection lets go of it.
#[derive(Default)]
pub(crate) struct Unlisted {
    /// Bumped whenever a topic becomes a destination or gets a chain: an unlisted
    /// topic made before is then stale, and its publishers ask the registry again.
    pub generation: AtomicU64,
    /// What all of them counted.
    pub counts: Arc<Counts>,
}

/// A topic's shared state.
pub(crate) struct Topic {
    pub dest: Destination,
    subs: RwLock<Arc<Vec<Arc<Subscriber>>>>,
    policy: SlowConsumerPolicy,
    pub counts: Arc<Counts>,
    /// Not a destination: the registry's [`Unlisted`] and its generation when this
    /// topic was made.
    unlisted: Option<(Arc<Unlisted>, u64)>,
    /// Sampled delivery latency, recorded by subscribers' shippers.
    pub latency: crate::metrics::LatencyRef,
    /// Drops of subscribers that have left (live ones count their own).
    dropped_gone: AtomicU64,
    /// Set when the queue manager removes the topic; publishers then resolve it again.
    pub closed: AtomicBool,
    /// Buffered deliveries are charged to the broker's memory budget.
    budget: Arc<Budget>,
    /// What each delivery is charged beyond its message's size
    /// ([`budget::per_message`](crate::budget::per_message)).
    per_message: usize,
    /// The `copy_fanout` ablation: a copy of the payload per subscriber.
    copy_fanout: bool,
    /// The mutator chain publishers run before fan-out, and its drop count.
    pub chain: crate::mutators::ChainSlot,
    /// The broker's wildcard subscriptions, and which of them this topic's name
    /// matched at the index's last generation.
    wild: Option<(Arc<Wild>, Mutex<Seen>)>,
}

/// Why a topic publish was refused.
pub(crate) enum TopicRefused {
    /// The broker's memory budget cannot hold another copy per subscriber.
    Memory(String),
    /// The topic was removed; resolve it again.
    Closed,
}

/// The messages a publish hands to subscribers: borrowed, or given up by the caller
/// ([`Topic::publish_run`]).
enum Run<'a> {
    Shared(&'a [Message]),
    Owned(&'a mut Vec<Message>),
}

impl Run<'_> {
    fn as_slice(&self) -> &[Message] {
        match self {
            Run::Shared(m) => m,
            Run::Owned(v) => v,
        }
    }
}

impl Topic {
    pub fn new(dest: Destination, policy: SlowConsumerPolicy, budget: Arc<Budget>) -> Topic {
        Topic {
            per_message: crate::budget::per_message(&dest),
            dest,
            subs: RwLock::new(Arc::new(Vec::new())),
            policy,
            counts: Arc::default(),
            unlisted: None,
            latency: Default::default(),
            dropped_gone: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            budget,
            chain: Default::default(),
            copy_fanout: false,
            wild: None,
        }
    }

    /// A topic that is not a destination (see [`Unlisted`]): it counts into `u`'s
    /// counts, and is closed once `u`'s generation moves on.
    pub fn unlisted(mut self, u: Arc<Unlisted>) -> Topic {
        self.counts = u.counts.clone();
        self.unlisted = Some((u.clone(), u.generation.load(SeqCst)));
        self
    }

    /// Whether it is a registered destination (not an [`Unlisted`] one).
    pub fn is_listed(&self) -> bool {
        self.unlisted.is_none()
    }

    /// Removed by the registry, or an unlisted topic gone stale: resolve it again.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
            || self
                .unlisted
                .as_ref()
                .is_some_and(|(u, at)| u.generation.load(Relaxed) != *at)
    }

    /// Delivers to the broker's wildcard subscriptions its name matches too.
    pub fn with_wild(mut self, wild: Arc<Wild>) -> Topic {
        self.wild = Some((wild, Mutex::new(Seen::default())));
        self
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Subscriber>>> {
        match self.subs.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Vec<Arc<Subscriber>>)) {
        let mut g = match self.subs.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut v = (**g).clone();
        f(&mut v);
        *g = Arc::new(v);
    }

    /// Turns on the `copy_fanout` ablation.
    pub fn with_copy_fanout(mut self, on: bool) -> Topic {
        self.copy_fanout = on;
        self
    }

    /// Adds a subscriber; false if the topic was removed meanwhile.
    pub fn subscribe(&self, s: Arc<Subscriber>) -> bool {
        let mut ok = true;
        self.update(|v| {
            if self.closed.load(SeqCst) {
                ok = false;
            } else {
                v.push(s);
            }
        });
        ok
    }

    /// Removes a subscriber (by identity).
    pub fn unsubscribe(&self, s: &Arc<Subscriber>) {
        self.update(|v| v.retain(|x| !Arc::ptr_eq(x, s)));
        s.tx.close();
        self.dropped_gone
            .fetch_add(s.dropped.load(Relaxed), Relaxed);
    }

    /// Marks the topic removed if nobody subscribes; true if it was.
    pub fn try_retire(&self) -> bool {
        let mut retired = false;
        self.update(|v| {
            if v.is_empty() {
                self.closed.store(true, SeqCst);
                retired = true;
            }
        });
        retired
    }

    /// Current subscriber count.
    pub fn subscribers(&self) -> usize {
        self.snapshot().len()
    }

    /// Messages buffered for subscribers, and messages dropped for them so far.
    pub fn buffered_and_dropped(&self) -> (usize, u64) {
        let subs = self.snapshot();
        let buffered = subs.iter().map(|s| s.tx.len()).sum();
        let dropped = subs.iter().map(|s| s.dropped.load(Relaxed)).sum::<u64>()
            + self.dropped_gone.load(Relaxed);
        (buffered, dropped)
    }

    /// Deletes the topic: every subscriber gets `CANCEL`. Returns how many buffered
    /// messages were dropped.
    pub fn delete(&self) -> usize {
        let mut gone = Vec::new();
        self.update(|v| {
            self.closed.store(true, SeqCst);
            gone = std::mem::take(v);
        });
        let mut n = 0;
        for s in gone {
            n += s.tx.len();
            s.tx.close();
            s.outbox.cancel(
                s.sid,
                ErrorCode::UnknownDestination,
                format!("{} was deleted", self.dest),
            );
        }
        n
    }

    /// Hands a run of messages (publishes one connection read in a row) to every
    /// current subscriber: one subscriber snapshot, one budget charge and one lock
    /// per subscriber for the whole run. Never waits. The slow-consumer policy is
    /// applied under each subscriber's lock, so its buffer never passes
    /// `subscriber_buffer`. On `Err` nothing was delivered; a caller with a run of
    /// several publishes them one by one ([`publish`](Topic::publish)), which tells
    /// apart the ones the memory budget can still take.
    pub fn publish_all(&self, msgs: &[Message]) -> Result<(), TopicRefused> {
        self.publish_all_as(msgs, None, false).map(|_| ())
    }

    /// As [`publish_all`](Topic::publish_all); with `named`, the topic's own
    /// subscribers' `MSG` names it instead of the topic (a reply to an address under
    /// an inbox). Returns the queues bound to patterns its name matches, for the
    /// publisher to put copies in. `from_link`: the messages came over a cluster link,
    /// so no link gets them (the node they came from sent them to every node that
    /// wanted them).
    pub fn publish_all_as(
        &self,
        msgs: &[Message],
        named: Option<&Destination>,
        from_link: bool,
    ) -> Result<Arc<[wild::Bound]>, TopicRefused> {
        self.deliver(Run::Shared(msgs), named, from_link)
    }

    /// [`publish_all`](Topic::publish_all) of a run the caller gives up: when no queue
    /// is bound to the topic, the last subscriber gets the messages themselves rather
    /// than copies (each copy is an atomic count on the read buffer they share, which
    /// the subscriber's shipper counts down again on another thread), and `msgs` is
    /// emptied. On `Err`, when queues are bound (returned, for the caller's copies),
    /// and when the last subscriber is a cluster link the run does not go to, it is
    /// left as it was.
    pub fn publish_run(
        &self,
        msgs: &mut Vec<Message>,
        from_link: bool,
    ) -> Result<Arc<[wild::Bound]>, TopicRefused> {
        self.deliver(Run::Owned(msgs), None, from_link)
    }

    fn deliver(
        &self,
        run: Run<'_>,
        named: Option<&Destination>,
        from_link: bool,
    ) -> Result<Arc<[wild::Bound]>, TopicRefused> {
        if self.is_closed() {
            return Err(TopicRefused::Closed);
        }
        let msgs = run.as_slice();
        let n = msgs.len() as u64;
        let bytes: u64 = msgs.iter().map(|m| m.payload.len() as u64).sum();
        let subs = self.snapshot();
        let (wild, bound) = match &self.wild {
            Some((w, seen)) => w.both(self.dest.name.as_str(), seen),
            None => (Arc::from(Vec::new()), Arc::from(Vec::new())),
        };
        if subs.is_empty() && wild.is_empty() {
            self.counts.messages_in.fetch_add(n, Relaxed);
            self.counts.bytes_in.fetch_add(bytes, Relaxed);
            return Ok(bound);
        }
        let size: usize =
            msgs.iter().map(Message::size).sum::<usize>() + msgs.len() * self.per_message;
        // Each subscriber's buffered copy counts against the budget (the payload is
        // shared, but each copy may outlive the others); shares that find no place (a
        // closed or cut-off subscriber, a dropped oldest message) go back at the end.
        if !self.budget.try_take(size * (subs.len() + wild.len())) {
            return Err(TopicRefused::Memory(format!(
                "the broker's memory budget of {} bytes is spent",
                self.budget.limit()
            )));
        }
        self.counts.messages_in.fetch_add(n, Relaxed);
        self.counts.bytes_in.fetch_add(bytes, Relaxed);
        let charge = self.budget.enabled();
        let per_message = self.per_message;
        let charged = |m: &Message| match charge {
            true => m.size() + per_message,
            false => 0,
        };
        let drop_oldest = matches!(self.policy, SlowConsumerPolicy::DropOldest);
        // The messages themselves go to the last subscriber, when the caller gave them
        // up and no bound queue needs copies after.
        let last = subs.len() + wild.len() - 1;
        let (shared, mut owned): (&[Message], Option<&mut Vec<Message>>) = match run {
            Run::Owned(v) if bound.is_empty() && !self.copy_fanout => (&[], Some(v)),
            Run::Owned(v) => (v, None),
            Run::Shared(m) => (m, None),
        };
        let mut unplaced = 0;
        let mut sent = 0u64;
        let mut sent_bytes = 0u64;
        let own = subs.iter().map(|s| (s, named));
        // A wildcard subscription's MSG names this topic.
        let topic = Some(self.dest.clone());
        let others = wild.iter().map(|w| (&w.0, topic.as_ref()));
        // The links this run went to already (a link's subscriptions may overlap).
        let mut links: Vec<u64> = Vec::new();
        for (i, (s, via)) in own.chain(others).enumerate() {
            if let Some(link) = s.link {
                if from_link || links.contains(&link) {
                    if charge {
                        unplaced += size;
                    }
                    continue;
                }
                links.push(link);
            }
            let r = match owned.take() {
                Some(v) if i == last => {
                    let deliveries = v.drain(..).map(|m| Delivery {
                        topic: via.cloned(),
                        did: 0,
                        count: 1,
                        charged: charged(&m),
                        msg: m,
                    });
                    s.tx.push_all(deliveries, s.cap, drop_oldest)
                }
                v => {
                    owned = v;
                    let msgs = owned.as_deref().map_or(shared, Vec::as_slice);
                    let deliveries = msgs.iter().map(|m| Delivery {
                        topic: via.cloned(),
                        did: 0,
                        count: 1,
                        msg: if self.copy_fanout {
                            Message {
                                headers: m.headers.clone(),
                                payload: Bytes::copy_from_slice(&m.payload),
                                received: m.received,
                            }
                        } else {
                            m.clone()
                        },
                        charged: charged(m),
                    });
                    s.tx.push_all(deliveries, s.cap, drop_oldest)
                }
            };
            unplaced += r.unplaced;
            sent += r.pushed as u64;
            sent_bytes += r.pushed_bytes;
            if r.dropped > 0 {
                let before = s.dropped.fetch_add(r.dropped, Relaxed);
                // Once per power of two passed, so a stalled subscriber cannot flood
                // the log.
                let bits = |x: u64| 64 - x.leading_zeros();
                if bits(before) != bits(before + r.dropped) {
                    log::warn!(
                        "subscriber {} of {} is behind: {} of its oldest messages dropped so far",
                        s.sid,
                        self.dest,
                        before + r.dropped
                    );
                }
            }
            if r.refused && !drop_oldest && !s.tx.is_closed() {
                self.cut_off(s);
            }
        }
        self.budget.give_back(unplaced);
        self.counts.messages_out.fetch_add(sent, Relaxed);
        self.counts.bytes_out.fetch_add(sent_bytes, Relaxed);
        Ok(bound)
    }

    /// Hands `msg` to every current subscriber. Never waits.
    pub fn publish(&self, msg: &Message) -> Result<(), TopicRefused> {
        self.publish_all(std::slice::from_ref(msg))
    }

    /// As [`publish`](Topic::publish), its own subscribers' `MSG` naming `named` when
    /// given.
    pub fn publish_as(
        &self,
        msg: &Message,
        named: Option<&Destination>,
        from_link: bool,
    ) -> Result<Arc<[wild::Bound]>, TopicRefused> {
        self.publish_all_as(std::slice::from_ref(msg), named, from_link)
    }

    /// Whether anyone would receive a message published now: a subscriber of its own,
    /// or a wildcard subscription its name matches.
    pub fn listened(&self) -> bool {
        if !self.snapshot().is_empty() {
            return true;
        }
        match &self.wild {
            Some((w, seen)) => !w.matches(self.dest.name.as_str(), seen).is_empty(),
            None => false,
        }
    }

    /// Ends a subscription that fell behind, telling its client why.
    fn cut_off(&self, s: &Arc<Subscriber>) {
        if let (Some(p), Some((wild, _))) = (&s.pattern, &self.wild) {
            if s.tx.close() {
                log::warn!(
                    "subscriber {} of {p} fell {} messages behind: cancelled (slow_consumer)",
                    s.sid,
                    s.cap
                );
                s.outbox.cancel(
                    s.sid,
                    ErrorCode::SlowConsumer,
                    format!("subscriber to {p} fell {} messages behind", s.cap),
                );
                wild.unsubscribe(p, s);
            }
            return;
        }
        if s.tx.close() {
            log::warn!(
                "subscriber {} of {} fell {} messages behind: cancelled (slow_consumer)",
                s.sid,
                self.dest,
                s.cap
            );
            s.outbox.cancel(
                s.sid,
                ErrorCode::SlowConsumer,
                format!("subscriber to {} fell {} messages behind", self.dest, s.cap),
            );
            self.unsubscribe(s);
        }
    }
}

#[cfg(test)]
mod tests;
