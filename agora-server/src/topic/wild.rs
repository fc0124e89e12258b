//! Wildcard topic subscriptions (`SUB topic:sensors.*.temp`, `SUB topic:orders.>`): the
//! broker's one index of them ([`SubIndex`]), and each topic's cached answer of which
//! of them its name matches.
//!
//! A wildcard subscription is not a destination: it lives in this index, and every
//! topic a matching publish names (a registered destination, or an unlisted topic made
//! for the publisher: see [`Unlisted`](super::Unlisted)) delivers to it besides its own
//! subscribers, naming itself in the `MSG`. The queues bound to topic patterns (`BIND`)
//! live in a second index beside it; the publisher puts copies in them.
//! A topic keeps the matches of its name with the index's generation; a publish costs
//! one atomic load to see the answer is current, and a walk of the name's tokens after
//! a wildcard subscription came or went.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, RwLock};

use agora_protocol::Destination;

use super::Subscriber;
use crate::auth::Pattern;
use crate::subindex::SubIndex;

/// A wildcard subscription in the index: the subscriber, compared by identity.
#[derive(Clone)]
pub(crate) struct WildSub(pub Arc<Subscriber>);

impl PartialEq for WildSub {
    fn eq(&self, other: &WildSub) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A queue bound to a topic pattern (`BIND`): a copy of every message published to a
/// topic it matches goes into the queue. Compared by the queue's name.
#[derive(Clone, PartialEq)]
pub(crate) struct Bound(pub Destination);

/// The broker's wildcard subscriptions, and the queues bound to topic patterns.
#[derive(Default)]
pub(crate) struct Wild {
    index: RwLock<SubIndex<WildSub>>,
    bindings: RwLock<SubIndex<Bound>>,
    /// Bumped on every change to either index (under its write lock); a topic's
    /// [`Seen`] is current while it matches.
    generation: AtomicU64,
    /// Subscriptions per pattern, for `STATS`.
    patterns: Mutex<BTreeMap<String, usize>>,
    /// Each queue's bound patterns, in order: for `STATS`, and what the log keeps.
    bound: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

/// Most patterns `STATS` lists.
pub(crate) const LISTED: usize = 1000;

impl Wild {
    /// Adds a subscription with `pattern`.
    pub fn subscribe(&self, pattern: &Pattern, sub: Arc<Subscriber>) {
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        ix.insert(pattern, WildSub(sub));
        self.generation.fetch_add(1, SeqCst);
        let mut p = self.patterns.lock().unwrap_or_else(|p| p.into_inner());
        *p.entry(pattern.to_string()).or_default() += 1;
    }

    /// Removes it; false if it was not there (already cut off).
    pub fn unsubscribe(&self, pattern: &Pattern, sub: &Arc<Subscriber>) -> bool {
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        let removed = ix.remove(pattern, &WildSub(sub.clone()));
        self.generation.fetch_add(1, SeqCst);
        if removed {
            let mut p = self.patterns.lock().unwrap_or_else(|p| p.into_inner());
            let key = pattern.to_string();
            if let Some(n) = p.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    p.remove(&key);
                }
            }
        }
        removed
    }

    /// The patterns subscribed to, in order (at most [`LISTED`]) with their
    /// subscriptions, and how many patterns there are in all.
    pub fn listing(&self) -> (Vec<(String, usize)>, usize) {
        let p = self.patterns.lock().unwrap_or_else(|p| p.into_inner());
        let listed = p
            .iter()
            .take(LISTED)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        (listed, p.len())
    }

    /// Binds `queue` to `pattern`; false if it was bound to it already.
    pub fn bind(&self, queue: &Destination, pattern: &Pattern) -> bool {
        let mut b = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        let patterns = b.entry(queue.name.as_str().to_owned()).or_default();
        if !patterns.insert(pattern.to_string()) {
            return false;
        }
        let mut ix = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        ix.insert(pattern, Bound(queue.compact()));
        self.generation.fetch_add(1, SeqCst);
        true
    }

    /// Removes the binding of `queue` to `pattern`; false if there was none.
    pub fn unbind(&self, queue: &Destination, pattern: &Pattern) -> bool {
        let mut b = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        let name = queue.name.as_str();
        let Some(patterns) = b.get_mut(name) else {
            return false;
        };
        if !patterns.remove(&pattern.to_string()) {
            return false;
        }
        if patterns.is_empty() {
            b.remove(name);
        }
        let mut ix = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        ix.remove(pattern, &Bound(queue.compact()));
        self.generation.fetch_add(1, SeqCst);
        true
    }

    /// Every topic pattern some queue is bound to, but the reserved `$` names (a node of
    /// a cluster wants what matches them from the others).
    pub fn all_bound_patterns(&self) -> BTreeSet<String> {
        let b = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        b.values()
            .flatten()
            .filter(|p| !p.starts_with("topic:$"))
            .cloned()
            .collect()
    }

    /// Whether `queue` is bound to any pattern.
    pub fn is_bound(&self, queue: &str) -> bool {
        let b = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        b.contains_key(queue)
    }

    /// The patterns `queue` is bound to, in order.
    pub fn bound_patterns(&self, queue: &str) -> Vec<String> {
        let b = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        b.get(queue)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every binding, by queue name, for `STATS` (at most [`LISTED`] queues), and how
    /// many bindings there are in all.
    pub fn binding_listing(&self) -> (Vec<(String, Vec<String>)>, usize) {
        let b = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        let total = b.values().map(BTreeSet::len).sum();
        let listed = b
            .iter()
            .take(LISTED)
            .map(|(q, p)| (q.clone(), p.iter().cloned().collect()))
            .collect();
        (listed, total)
    }

    /// The subscriptions `name` matches, through `seen` (a topic's cached answer): from
    /// it when it is of the current generation, else walked and kept there.
    pub fn matches(&self, name: &str, seen: &Mutex<Seen>) -> Arc<[WildSub]> {
        self.current(name, seen).subs.clone()
    }

    /// Both: the subscriptions and the bound queues `name` matches (one look).
    pub fn both(&self, name: &str, seen: &Mutex<Seen>) -> (Arc<[WildSub]>, Arc<[Bound]>) {
        let s = self.current(name, seen);
        (s.subs.clone(), s.bound.clone())
    }

    fn current<'a>(&self, name: &str, seen: &'a Mutex<Seen>) -> std::sync::MutexGuard<'a, Seen> {
        let now = self.generation.load(SeqCst);
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        if s.generation != Some(now) {
            // Under both read locks no change is half made: the generation read
            // there is the one these answers belong to.
            let ix = self.index.read().unwrap_or_else(|p| p.into_inner());
            let bx = self.bindings.read().unwrap_or_else(|p| p.into_inner());
            s.subs = ix.matches(name).into();
            // A queue gets one copy, however many of its patterns match.
            let mut bound = bx.matches(name);
            bound.sort_by(|a, b| a.0.name.as_str().cmp(b.0.name.as_str()));
            bound.dedup();
            s.bound = bound.into();
            s.generation = Some(self.generation.load(SeqCst));
        }
        s
    }
}

/// A topic's cached matches of one generation of the indexes.
pub(crate) struct Seen {
    generation: Option<u64>,
    subs: Arc<[WildSub]>,
    bound: Arc<[Bound]>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            generation: None,
            subs: Arc::from(Vec::new()),
            bound: Arc::from(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> Pattern {
        Pattern::parse(&format!("topic:{p}")).unwrap()
    }

    fn queue(q: &str) -> Destination {
        Destination::queue(q).unwrap()
    }

    fn names(b: &[Bound]) -> Vec<&str> {
        b.iter().map(|b| b.0.name.as_str()).collect()
    }

    /// A topic's cached answer follows every bind and unbind (one generation for both
    /// indexes), and a queue is named once however many of its patterns match.
    #[test]
    fn bindings_are_matched_once_per_queue_and_cached_by_generation() {
        let w = Wild::default();
        let seen = Mutex::new(Seen::default());
        let name = "sensors.a.alarm";
        assert!(w.both(name, &seen).1.is_empty());
        assert!(w.bind(&queue("alerts"), &pattern("sensors.*.alarm")));
        assert!(w.bind(&queue("alerts"), &pattern("sensors.>")));
        assert!(
            !w.bind(&queue("alerts"), &pattern("sensors.>")),
            "bound already"
        );
        assert!(w.bind(&queue("audit"), &pattern(">")));
        assert!(w.bind(&queue("other"), &pattern("orders.>")));
        assert_eq!(names(&w.both(name, &seen).1), ["alerts", "audit"]);
        // `>` at the root never stands for a `$` name.
        assert!(w
            .both("$sys.metrics", &Mutex::new(Seen::default()))
            .1
            .is_empty());
        assert!(w.unbind(&queue("alerts"), &pattern("sensors.>")));
        assert_eq!(names(&w.both(name, &seen).1), ["alerts", "audit"]);
        assert!(w.unbind(&queue("alerts"), &pattern("sensors.*.alarm")));
        assert!(!w.unbind(&queue("alerts"), &pattern("sensors.*.alarm")));
        assert_eq!(names(&w.both(name, &seen).1), ["audit"]);
        let (listed, total) = w.binding_listing();
        assert_eq!(total, 2);
        assert_eq!(listed[0], ("audit".to_owned(), vec!["topic:>".to_owned()]));
        assert_eq!(w.bound_patterns("other"), ["topic:orders.>"]);
        assert!(w.bound_patterns("alerts").is_empty());
    }
}
