//! Persistent MQTT sessions (clean session 0 in 3.1.1; a Session Expiry Interval above
//! 0 in 5.0), as records: which filters a session has, at which QoS, and until when
//! it is kept once its client is gone.
//!
//! What a session holds while its client is away is a durable queue,
//! `$mqtt.session.<user>.<client id>`, bound to the patterns of its QoS 1 filters
//! (`BIND`): the broker's own queues and bindings keep those messages, durably with a
//! data directory. This record is the rest: the filters and their QoS (QoS 0 filters
//! are plain subscriptions, made again when the client returns), and the expiry.
//! Records are written to the data directory by [`super::state`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use agora_protocol::mqtt::QoS;
use serde::{Deserialize, Serialize};

/// A session's expiry meaning "never" (3.1.1's persistent sessions, and 5.0's
/// `0xFFFFFFFF`), before the broker's cap.
pub(crate) const NEVER: u32 = u32::MAX;

/// One persistent session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Its queue's name.
    pub queue: String,
    /// MQTT filter -> granted QoS (0 or 1).
    pub filters: BTreeMap<String, u8>,
    /// Seconds it is kept once its client is gone.
    pub expiry: u32,
    /// When its client went (Unix seconds); `None` while one is connected.
    pub offline_since: Option<u64>,
    /// The connection holding it (not written: after a restart nobody does).
    #[serde(skip)]
    pub holder: Option<u64>,
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The broker's persistent sessions, by queue name.
#[derive(Default)]
pub(crate) struct Records {
    map: Mutex<HashMap<String, Record>>,
    dirty: AtomicBool,
    wake: Option<async_channel::Sender<()>>,
}

impl Records {
    /// Records that wake `wake` when they change (the writer of the data directory).
    pub(crate) fn new(wake: Option<async_channel::Sender<()>>) -> Records {
        Records {
            wake,
            ..Records::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.dirty.store(true, Release);
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }

    /// Connection `holder` takes the session of `queue` up again, keeping it `expiry`
    /// seconds once it goes: its filters, or `None` when there was no session (one is
    /// begun, with none).
    pub(crate) fn resume(
        &self,
        queue: &str,
        holder: u64,
        expiry: u32,
    ) -> Option<Vec<(String, QoS)>> {
        let mut map = self.lock();
        let found = map.get_mut(queue).map(|r| {
            r.holder = Some(holder);
            r.offline_since = None;
            r.expiry = expiry;
            r.filters
                .iter()
                .map(|(f, q)| (f.clone(), qos(*q)))
                .collect()
        });
        if found.is_none() {
            map.insert(
                queue.to_owned(),
                Record {
                    queue: queue.to_owned(),
                    filters: BTreeMap::new(),
                    expiry,
                    offline_since: None,
                    holder: Some(holder),
                },
            );
        }
        drop(map);
        self.changed();
        found
    }

    /// Whether `queue` has a session.
    #[cfg(test)]
    pub(crate) fn exists(&self, queue: &str) -> bool {
        self.lock().contains_key(queue)
    }

    /// Ends the session of `queue` (clean start, or expired): true if there was one.
    pub(crate) fn forget(&self, queue: &str) -> bool {
        let gone = self.lock().remove(queue).is_some();
        if gone {
            self.changed();
        }
        gone
    }

    /// The session's filter `filter` is granted `q` (`None`: unsubscribed).
    pub(crate) fn set_filter(&self, queue: &str, filter: &str, q: Option<QoS>) {
        let mut map = self.lock();
        let Some(r) = map.get_mut(queue) else {
            return;
        };
        match q {
            Some(q) => r.filters.insert(filter.to_owned(), q as u8),
            None => r.filters.remove(filter),
        };
        drop(map);
        self.changed();
    }

    /// The session's expiry is now `expiry` seconds (MQTT 5's `DISCONNECT` may say so).
    pub(crate) fn set_expiry(&self, queue: &str, expiry: u32) {
        let mut map = self.lock();
        if let Some(r) = map.get_mut(queue) {
            r.expiry = expiry;
            drop(map);
            self.changed();
        }
    }

    /// Connection `holder` is gone: the session's expiry starts, unless another
    /// connection holds it since.
    pub(crate) fn left(&self, queue: &str, holder: u64) {
        let mut map = self.lock();
        let Some(r) = map.get_mut(queue).filter(|r| r.holder == Some(holder)) else {
            return;
        };
        r.holder = None;
        r.offline_since = Some(now_secs());
        drop(map);
        self.changed();
    }

    /// Removes the sessions whose client has been gone longer than their expiry at
    /// `now` (Unix seconds), capped at `cap` seconds; returns their queues.
    pub(crate) fn expire(&self, now: u64, cap: u32) -> Vec<String> {
        let mut map = self.lock();
        let gone: Vec<String> = map
            .values()
            .filter(|r| {
                r.offline_since
                    .is_some_and(|t| now.saturating_sub(t) >= u64::from(r.expiry.min(cap)))
            })
            .map(|r| r.queue.clone())
            .collect();
        for q in &gone {
            map.remove(q);
        }
        drop(map);
        if !gone.is_empty() {
            self.changed();
        }
        gone
    }

    /// The records to write, if they changed since the last call.
    pub(crate) fn take_dirty(&self) -> Option<Vec<Record>> {
        if !self.dirty.swap(false, AcqRel) {
            return None;
        }
        let mut all: Vec<Record> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.queue.cmp(&b.queue));
        Some(all)
    }

    /// Marks the records as needing a write again (the last one failed).
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Release);
    }

    /// Takes the records read at start: every client is gone, so every session's
    /// expiry runs (from when it went, or from now for one that was connected).
    pub(crate) fn load(&self, records: Vec<Record>) {
        let now = now_secs();
        let mut map = self.lock();
        for mut r in records {
            r.holder = None;
            r.offline_since = Some(r.offline_since.unwrap_or(now));
            map.insert(r.queue.clone(), r);
        }
    }

    /// How many sessions are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_begun_resumed_with_its_filters_and_forgotten() {
        let r = Records::default();
        assert_eq!(r.resume("q", 1, 60), None, "none before");
        r.set_filter("q", "a/#", Some(QoS::AtLeastOnce));
        r.set_filter("q", "b", Some(QoS::AtMostOnce));
        r.set_filter("q", "c", Some(QoS::AtMostOnce));
        r.set_filter("q", "c", None);
        r.left("q", 1);
        let back = r.resume("q", 2, 60).unwrap();
        assert_eq!(
            back,
            [
                ("a/#".to_owned(), QoS::AtLeastOnce),
                ("b".to_owned(), QoS::AtMostOnce)
            ]
        );
        assert!(r.forget("q"));
        assert!(!r.exists("q"));
    }

    #[test]
    fn only_the_holder_leaving_starts_the_expiry_and_it_is_capped() {
        let r = Records::default();
        r.resume("q", 1, NEVER);
        r.resume("q", 2, NEVER); // taken over
        r.left("q", 1);
        assert!(r.expire(u64::MAX, 10).is_empty(), "held by 2");
        r.left("q", 2);
        let t = r.lock()["q"].offline_since.unwrap();
        assert!(r.expire(t + 9, 10).is_empty());
        assert_eq!(r.expire(t + 10, 10), ["q"], "NEVER is capped at 10 s");
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn changes_are_taken_once_and_loaded_records_are_offline() {
        let r = Records::default();
        r.resume("q", 1, 5);
        let written = r.take_dirty().unwrap();
        assert!(r.take_dirty().is_none(), "taken");
        assert_eq!(written[0].offline_since, None);
        let back = Records::default();
        back.load(written);
        let t = back.lock()["q"].offline_since.unwrap();
        assert_eq!(back.expire(t + 5, NEVER), ["q"]);
    }
}
