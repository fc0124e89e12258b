//! The broker-wide memory budget: payload bytes held in queues and in topic
//! subscribers' buffers.
//!
//! Bytes are taken where a message is accepted and given back where it leaves: a queue
//! gives back when a message is acknowledged, written (auto-ack), purged or
//! dead-lettered; a topic subscription's shipper gives back once per written batch, and
//! whatever a subscription still holds when it ends is given back as it is dropped. No
//! per-message reference to the budget is kept, so the hot path touches the shared
//! counter once per publish and once per batch, not once per delivery.

use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;

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
