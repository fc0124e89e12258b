//! The broker-wide memory budget: bytes of messages held in queues and in topic
//! subscribers' buffers, each message counted as its payload and headers plus what
//! holding it costs ([`per_message`]).
//!
//! Bytes are taken where a message is accepted and given back where it leaves: a queue
//! gives back when a message is acknowledged, written (auto-ack), purged or
//! dead-lettered; a topic subscription's shipper gives back once per written batch, and
//! whatever a subscription still holds when it ends is given back as it is dropped. No
//! per-message reference to the budget is kept, so the hot path touches the shared
//! counter once per publish and once per batch, not once per delivery.

use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;

use agora_protocol::Destination;

/// What every held message is charged beyond its payload and headers.
pub(crate) const BOOKKEEPING: usize = 128;

/// What one message held for `dest` is charged beyond its payload and headers: its
/// place in a queue or a subscriber's buffer (96 bytes), and the rest of the frame it
/// came in. A payload is a slice of the buffer its frame was read into, and that buffer
/// is kept whole while any slice of it is held, so the frame's command line (about 20
/// bytes and the destination's name) and line ends stay resident with the payload.
/// Without this, a queue of 16-byte messages flooded to a 256 MiB budget held 2.6 GiB.
pub(crate) fn per_message(dest: &Destination) -> usize {
    BOOKKEEPING + dest.name.as_str().len()
}

/// Bytes the broker may hold, and how many it holds.
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
    /// False only for the `no_defences` ablation: nothing is counted.
    enabled: bool,
}

impl Budget {
    pub fn new(limit: usize, enabled: bool) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            limit,
            enabled,
        })
    }

    /// Whether anything is counted at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Takes `n` bytes; false (taking nothing) if that would pass the limit.
    pub fn try_take(&self, n: usize) -> bool {
        if !self.enabled || n == 0 {
            return true;
        }
        let before = self.used.fetch_add(n, SeqCst);
        if before + n > self.limit {
            self.used.fetch_sub(n, SeqCst);
            return false;
        }
        true
    }

    /// Takes `n` bytes whatever the limit (what was stored before a restart is held
    /// even past it; publishes are refused meanwhile).
    pub fn take(&self, n: usize) {
        if self.enabled && n > 0 {
            self.used.fetch_add(n, SeqCst);
        }
    }

    /// Gives back `n` bytes taken earlier.
    pub fn give_back(&self, n: usize) {
        if self.enabled && n > 0 {
            self.used.fetch_sub(n, SeqCst);
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The broker-wide budget for bytes read from clients and not yet made into frames:
/// the partly received frames connections hold between reads (`--read-budget`).
///
/// A connection's charge is set exactly after every read (the bytes of the frame it has
/// begun and not finished). A connection that holds part of a frame reads more only
/// while the others hold at most the budget less one whole frame
/// ([`may_read`](ReadBudget::may_read)). A connection that holds nothing reads freely
/// (its one read, at most 64 KiB, is charged after it), so first reads can fill the
/// room the others left: then one connection at a time, the **leader**, reads on
/// without room until its frame is done (or there is room again), so waiting
/// connections always have one that goes on (the simulation found every reader waiting
/// without it). A connection's share is one frame. [`room`](ReadBudget::room) wakes the
/// waiters whenever bytes are given back or the leader lets go.
pub(crate) struct ReadBudget {
    used: AtomicUsize,
    /// The connection reading on without room (its id), 0 when none.
    leader: std::sync::atomic::AtomicU64,
    limit: usize,
    /// The largest frame: a control line and the largest payload.
    frame: usize,
    pub room: event_listener::Event,
}

impl ReadBudget {
    pub fn new(limit: usize, frame: usize) -> ReadBudget {
        ReadBudget {
            used: AtomicUsize::new(0),
            leader: std::sync::atomic::AtomicU64::new(0),
            limit,
            frame,
            room: event_listener::Event::new(),
        }
    }

    /// Sets connection `who`'s charge from `*held` to `now` bytes; holding nothing, it
    /// is no longer the leader.
    pub fn set(&self, held: &mut usize, now: usize, who: u64) {
        if now == 0 && self.let_go(who) {
            self.room.notify(usize::MAX);
        }
        match now.cmp(held) {
            std::cmp::Ordering::Equal => {}
            std::cmp::Ordering::Greater => {
                self.used.fetch_add(now - *held, SeqCst);
            }
            std::cmp::Ordering::Less => {
                self.used.fetch_sub(*held - now, SeqCst);
                self.room.notify(usize::MAX);
            }
        }
        *held = now;
    }

    /// Whether connection `who`, holding `held` bytes of a frame, may read more: the
    /// others leave room for one whole frame, or it is (or now becomes) the leader.
    pub fn may_read(&self, held: usize, who: u64) -> bool {
        if self.has_room(held) {
            if self.let_go(who) {
                self.room.notify(usize::MAX);
            }
            return true;
        }
        match self.leader.compare_exchange(0, who, SeqCst, SeqCst) {
            Ok(_) => true,
            Err(leader) => leader == who,
        }
    }

    /// [`may_read`](ReadBudget::may_read) without taking the lead (for the
    /// simulation's checks).
    pub fn could_read(&self, held: usize, who: u64) -> bool {
        let leader = self.leader.load(SeqCst);
        self.has_room(held) || leader == 0 || leader == who
    }

    fn has_room(&self, held: usize) -> bool {
        self.used.load(SeqCst).saturating_sub(held) + self.frame <= self.limit
    }

    /// `who` is no longer the leader; true if it was.
    fn let_go(&self, who: u64) -> bool {
        self.leader.compare_exchange(who, 0, SeqCst, SeqCst).is_ok()
    }

    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}
