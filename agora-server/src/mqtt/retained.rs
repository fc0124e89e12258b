//! MQTT retained messages: the last retained message of each topic, shared by every
//! MQTT connection of the broker, bounded in bytes and in topics.
//!
//! Kept in memory; with a data directory, `super::state` writes them to
//! `mqtt/retained` after each change (at most once a second) and at shutdown, and reads
//! them back at start. A retained publish is checked for room before it is passed on and kept once the
//! broker accepted it, so the bound may be passed by the retained publishes in flight
//! at once. An empty retained payload clears the topic's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Mutex;

use agora_protocol::bytes::Bytes;
use agora_protocol::mqtt::QoS;
use agora_protocol::{Destination, Headers};

use crate::auth::Pattern;

/// What a retained message costs beyond its name and payload.
const OVERHEAD: usize = 64;

/// A retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    pub payload: Bytes,
    pub headers: Headers,
    pub qos: QoS,
}

fn cost(name: &str, k: &Kept) -> usize {
    let headers: usize = k.headers.iter().map(|(a, b)| a.len() + b.len() + 4).sum();
    name.len() + k.payload.len() + headers + OVERHEAD
}

#[derive(Default)]
struct Inner {
    /// By Agora topic name.
    map: BTreeMap<String, Kept>,
    bytes: usize,
}

/// The broker's retained messages.
pub(crate) struct Retained {
    inner: Mutex<Inner>,
    max_bytes: usize,
    max_topics: usize,
    /// Changed since last written.
    dirty: AtomicBool,
    /// Woken on a change: the writer of the data directory.
    wake: Option<async_channel::Sender<()>>,
}

impl Retained {
    pub(crate) fn new(max_bytes: usize, max_topics: usize) -> Retained {
        Retained {
            inner: Mutex::default(),
            max_bytes,
            max_topics,
            dirty: AtomicBool::new(false),
            wake: None,
        }
    }

    /// Retained messages that wake `wake` when they change.
    pub(crate) fn with_wake(mut self, wake: async_channel::Sender<()>) -> Retained {
        self.wake = Some(wake);
        self
    }

    /// Every retained message, if they changed since the last call.
    pub(crate) fn take_dirty(&self) -> Option<Vec<(String, Kept)>> {
        if !self.dirty.swap(false, AcqRel) {
            return None;
        }
        let i = self.lock();
        Some(i.map.iter().map(|(n, k)| (n.clone(), k.clone())).collect())
    }

    /// Marks them as needing a write again (the last one failed).
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Release);
    }

    /// Takes the retained messages read at start (whatever the limits: they were
    /// within the limits of the broker that kept them).
    pub(crate) fn load(&self, all: Vec<(String, Kept)>) {
        let mut i = self.lock();
        for (name, k) in all {
            i.bytes += cost(&name, &k);
            if let Some(old) = i.map.insert(name.clone(), k) {
                i.bytes -= cost(&name, &old);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The limits, for an error message.
    pub(crate) fn limits(&self) -> String {
        format!("{} bytes, {} topics", self.max_bytes, self.max_topics)
    }

    /// Whether keeping `k` for `name` stays within the limits (clearing always does).
    pub(crate) fn has_room(&self, name: &str, k: &Kept) -> bool {
        if k.payload.is_empty() {
            return true;
        }
        let i = self.lock();
        let old = i.map.get(name).map(|o| cost(name, o));
        let topics = i.map.len() + usize::from(old.is_none());
        i.bytes - old.unwrap_or(0) + cost(name, k) <= self.max_bytes && topics <= self.max_topics
    }

    /// Keeps `k` as `name`'s retained message; an empty payload clears it.
    pub(crate) fn set(&self, name: String, k: Kept) {
        let mut i = self.lock();
        if let Some(old) = i.map.remove(&name) {
            i.bytes -= cost(&name, &old);
        }
        if !k.payload.is_empty() {
            i.bytes += cost(&name, &k);
            i.map.insert(name, k);
        }
        drop(i);
        self.dirty.store(true, Release);
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }

    /// The retained messages whose topics any of `patterns` (Agora topic patterns)
    /// matches, in name order.
    pub(crate) fn matching(&self, patterns: &[&str]) -> Vec<(String, Kept)> {
        let patterns: Vec<Pattern> = patterns
            .iter()
            .filter_map(|p| Pattern::parse(&format!("topic:{p}")).ok())
            .collect();
        let i = self.lock();
        i.map
            .iter()
            .filter(|(name, _)| {
                Destination::topic(name).is_ok_and(|d| patterns.iter().any(|p| p.matches(&d)))
            })
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect()
    }

    /// (topics, bytes) kept.
    #[cfg(test)]
    pub(crate) fn figures(&self) -> (usize, usize) {
        let i = self.lock();
        (i.map.len(), i.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(p: &'static str) -> Kept {
        Kept {
            payload: Bytes::from_static(p.as_bytes()),
            headers: Headers::new(),
            qos: QoS::AtLeastOnce,
        }
    }

    #[test]
    fn the_last_one_is_kept_and_an_empty_one_clears() {
        let r = Retained::new(1 << 20, 10);
        r.set("a.b".into(), kept("1"));
        r.set("a.b".into(), kept("2"));
        r.set("a.c".into(), kept("3"));
        let all: Vec<_> = r
            .matching(&["a.*"])
            .into_iter()
            .map(|(n, k)| (n, k.payload))
            .collect();
        assert_eq!(
            all,
            [
                ("a.b".into(), Bytes::from("2")),
                ("a.c".into(), Bytes::from("3"))
            ]
        );
        r.set("a.b".into(), kept(""));
        assert_eq!(r.matching(&[">"]).len(), 1);
        assert_eq!(r.figures().0, 1);
        r.set("a.c".into(), kept(""));
        assert_eq!(r.figures(), (0, 0));
    }

    #[test]
    fn patterns_match_as_subscriptions_do() {
        let r = Retained::new(1 << 20, 10);
        for n in ["x", "x.y", "x.y.z", "$sys.x"] {
            r.set(n.into(), kept("v"));
        }
        let names =
            |p: &[&str]| -> Vec<String> { r.matching(p).into_iter().map(|(n, _)| n).collect() };
        assert_eq!(names(&["x", "x.>"]), ["x", "x.y", "x.y.z"]);
        assert_eq!(names(&["*.y"]), ["x.y"]);
        assert_eq!(
            names(&[">"]),
            ["x", "x.y", "x.y.z"],
            "$ names only when named"
        );
        assert_eq!(names(&["$sys.>"]), ["$sys.x"]);
    }

    #[test]
    fn the_limits_hold() {
        let k = kept("0123456789");
        let one = cost("t.1", &k);
        let r = Retained::new(2 * one, 10);
        assert!(r.has_room("t.1", &k));
        r.set("t.1".into(), k.clone());
        r.set("t.2".into(), k.clone());
        assert!(!r.has_room("t.3", &k), "over the bytes");
        assert!(r.has_room("t.2", &k), "replacing costs nothing more");
        assert!(r.has_room("t.3", &kept("")), "clearing always has room");
        let r = Retained::new(1 << 20, 1);
        r.set("t.1".into(), k.clone());
        assert!(!r.has_room("t.2", &k), "over the topics");
        assert!(r.has_room("t.1", &k));
    }
}
