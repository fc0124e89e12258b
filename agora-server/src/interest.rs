//! A node of a cluster's interest: the topic patterns its own clients subscribe to, each
//! counted, which the links to the other nodes subscribe to there (so a node sends a message to
//! another only when that node has a subscriber it matches).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use agora_protocol::{Destination, Kind};

/// The patterns with local subscriptions, and a signal when the set changes.
#[derive(Default)]
pub(crate) struct Interest {
    counts: Mutex<BTreeMap<String, usize>>,
    /// Bumped whenever a pattern comes or goes.
    version: AtomicU64,
    changed: event_listener::Event,
}

/// One subscription's share of the interest in its pattern, given up when dropped
/// (with the subscriber, however it ends: unsubscribed, cut off, deleted, or its
/// connection gone).
pub(crate) struct Held {
    interest: Arc<Interest>,
    key: String,
}

impl Interest {
    /// Counts a local subscription to `dest` (a topic or a topic pattern). `None` for
    /// what is not routed between nodes: queues, and the broker's reserved `$` names
    /// (inboxes, metrics, MQTT sessions), which stay on their node.
    pub fn hold(self: &Arc<Self>, dest: &Destination) -> Option<Held> {
        if dest.kind != Kind::Topic || dest.name.as_str().starts_with('$') {
            return None;
        }
        let key = dest.to_string();
        let first = {
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let n = c.entry(key.clone()).or_default();
            *n += 1;
            *n == 1
        };
        if first {
            self.bump();
        }
        Some(Held {
            interest: self.clone(),
            key,
        })
    }

    fn bump(&self) {
        self.version.fetch_add(1, SeqCst);
        self.changed.notify(usize::MAX);
    }

    /// The patterns subscribed to now, with the version they are of.
    pub fn patterns(&self) -> (u64, BTreeSet<String>) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        (self.version.load(SeqCst), c.keys().cloned().collect())
    }

    /// The version of the set now.
    #[cfg(test)]
    pub fn version(&self) -> u64 {
        self.version.load(SeqCst)
    }

    /// Resolves once the set may have changed (listen, then compare versions).
    pub fn listen(&self) -> event_listener::EventListener {
        self.changed.listen()
    }
}

/// The topic (or topic pattern) a key of the interest names.
pub(crate) fn topic(key: &str) -> Option<Destination> {
    Destination::topic_pattern(key.strip_prefix("topic:")?).ok()
}

impl Drop for Held {
    fn drop(&mut self) {
        let last = {
            let mut c = self
                .interest
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match c.get_mut(&self.key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    c.remove(&self.key);
                    true
                }
                None => false,
            }
        };
        if last {
            self.interest.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str) -> Destination {
        topic(s).or_else(|| s.parse().ok()).unwrap()
    }

    #[test]
    fn a_pattern_is_wanted_while_any_subscription_holds_it() {
        let i = Arc::new(Interest::default());
        let v0 = i.version();
        let a = i.hold(&dest("topic:sensors.>")).unwrap();
        let b = i.hold(&dest("topic:sensors.>")).unwrap();
        let c = i.hold(&dest("topic:alerts")).unwrap();
        let (v1, p) = i.patterns();
        assert!(v1 > v0);
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            ["topic:alerts", "topic:sensors.>"]
        );
        drop(a);
        // Still held by b: no change.
        assert_eq!(i.version(), v1);
        drop(b);
        drop(c);
        let (v2, p) = i.patterns();
        assert!(v2 > v1);
        assert!(p.is_empty());
    }

    #[test]
    fn queues_and_reserved_names_stay_on_their_node() {
        let i = Arc::new(Interest::default());
        assert!(i.hold(&dest("queue:jobs")).is_none());
        assert!(i.hold(&dest("topic:$sys.metrics")).is_none());
        assert!(i
            .hold(&dest("topic:$inbox.abcdefghijklmnopqrstuv"))
            .is_none());
        assert_eq!(i.patterns().1.len(), 0);
    }
}
