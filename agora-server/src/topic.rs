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
use std::sync::{Arc, RwLock};

use agora_protocol::{Destination, ErrorCode, Frame};
use async_channel::{Sender, TrySendError};

use crate::config::SlowConsumerPolicy;
use crate::shipper::{Delivery, Message, Outbox};

/// One subscription to a topic.
pub(crate) struct Subscriber {
    pub sid: u64,
    pub tx: Sender<Delivery>,
    pub outbox: Outbox,
    /// Messages dropped for this subscriber by the drop-oldest policy.
    pub dropped: AtomicU64,
}

/// A topic's shared state.
pub(crate) struct Topic {
    pub dest: Destination,
    subs: RwLock<Arc<Vec<Arc<Subscriber>>>>,
    policy: SlowConsumerPolicy,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    /// Drops of subscribers that have left (live ones count their own).
    dropped_gone: AtomicU64,
    /// Set when the queue manager removes the topic; publishers then resolve it again.
    pub closed: AtomicBool,
}

impl Topic {
    pub fn new(dest: Destination, policy: SlowConsumerPolicy) -> Topic {
        Topic {
            dest,
            subs: RwLock::new(Arc::new(Vec::new())),
            policy,
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            dropped_gone: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
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

    /// Hands `msg` to every current subscriber. Never waits.
    pub fn publish(&self, msg: Message) {
        self.messages_in.fetch_add(1, Relaxed);
        let subs = self.snapshot();
        let mut sent = 0;
        for s in subs.iter() {
            let d = Delivery {
                did: 0,
                count: 1,
                msg: msg.clone(),
            };
            match s.tx.try_send(d) {
                Ok(()) => sent += 1,
                Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(d)) => match self.policy {
                    SlowConsumerPolicy::DropOldest => {
                        if let Ok(Some(_)) = s.tx.force_send(d) {
                            s.dropped.fetch_add(1, Relaxed);
                        }
                        sent += 1;
                    }
                    SlowConsumerPolicy::Disconnect => self.cut_off(s),
                },
            }
        }
        self.messages_out.fetch_add(sent, Relaxed);
    }

    /// Ends a subscription that fell behind, telling its client why.
    fn cut_off(&self, s: &Arc<Subscriber>) {
        if s.tx.close() {
            s.outbox.notify(&Frame::Cancel {
                sid: s.sid,
                code: ErrorCode::SlowConsumer,
                message: format!(
                    "subscriber to {} fell {} messages behind",
                    self.dest,
                    s.tx.capacity().unwrap_or(0)
                ),
            });
            self.unsubscribe(s);
        }
    }
}
