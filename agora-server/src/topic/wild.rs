//! Wildcard topic subscriptions (`SUB topic:sensors.*.temp`, `SUB topic:orders.>`): the
//! broker's one index of them ([`SubIndex`]), and each topic's cached answer of which
//! of them its name matches.
//!
//! A wildcard subscription is not a destination: it lives in this index, and every
//! topic a matching publish names (a registered destination, as any published-to
//! topic is) delivers to it besides its own subscribers, naming itself in the `MSG`.
//! A topic keeps the matches of its name with the index's generation; a publish costs
//! one atomic load to see the answer is current, and a walk of the name's tokens after
//! a wildcard subscription came or went.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, RwLock};

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

/// The broker's wildcard subscriptions.
#[derive(Default)]
pub(crate) struct Wild {
    index: RwLock<SubIndex<WildSub>>,
    /// The index's generation, readable without its lock.
    generation: AtomicU64,
    /// Subscriptions per pattern, for `STATS`.
    patterns: Mutex<BTreeMap<String, usize>>,
}

/// Most patterns `STATS` lists.
pub(crate) const LISTED: usize = 1000;

impl Wild {
    /// Adds a subscription with `pattern`.
    pub fn subscribe(&self, pattern: &Pattern, sub: Arc<Subscriber>) {
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        ix.insert(pattern, WildSub(sub));
        self.generation.store(ix.generation(), SeqCst);
        let mut p = self.patterns.lock().unwrap_or_else(|p| p.into_inner());
        *p.entry(pattern.to_string()).or_default() += 1;
    }

    /// Removes it; false if it was not there (already cut off).
    pub fn unsubscribe(&self, pattern: &Pattern, sub: &Arc<Subscriber>) -> bool {
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        let removed = ix.remove(pattern, &WildSub(sub.clone()));
        self.generation.store(ix.generation(), SeqCst);
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

    /// The subscriptions `name` matches, through `seen` (a topic's cached answer): from
    /// it when it is of the current generation, else walked and kept there.
    pub fn matches(&self, name: &str, seen: &Mutex<Seen>) -> Arc<[WildSub]> {
        let now = self.generation.load(SeqCst);
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        if s.generation != Some(now) {
            let ix = self.index.read().unwrap_or_else(|p| p.into_inner());
            s.subs = ix.matches(name).into();
            s.generation = Some(ix.generation());
        }
        s.subs.clone()
    }
}

/// A topic's cached matches of one generation of the index.
pub(crate) struct Seen {
    generation: Option<u64>,
    subs: Arc<[WildSub]>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            generation: None,
            subs: Arc::from(Vec::new()),
        }
    }
}
