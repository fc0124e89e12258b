//! The broker-wide memory budget: payload bytes held in queues and in topic
//! subscribers' buffers, counted where they are taken and given back when dropped.

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

    /// Whether charges are counted at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Takes `n` bytes, or `None` if that would pass the limit.
    pub fn try_charge(self: &Arc<Self>, n: usize) -> Option<Charge> {
        if !self.enabled {
            return Some(Charge { budget: None, n: 0 });
        }
        let before = self.used.fetch_add(n, SeqCst);
        if before + n > self.limit && n > 0 {
            self.used.fetch_sub(n, SeqCst);
            return None;
        }
        Some(Charge {
            budget: Some(self.clone()),
            n,
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Bytes taken from the budget; given back when dropped.
pub(crate) struct Charge {
    /// `None` when the budget is disabled (nothing to give back).
    budget: Option<Arc<Budget>>,
    n: usize,
}

impl Charge {
    /// Takes a charge of `n` bytes out of this one (at most what it holds).
    pub fn take(&mut self, n: usize) -> Charge {
        let n = n.min(self.n);
        self.n -= n;
        Charge {
            budget: if n > 0 { self.budget.clone() } else { None },
            n,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let (Some(b), true) = (&self.budget, self.n > 0) {
            b.used.fetch_sub(self.n, SeqCst);
        }
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({})", self.n)
    }
}
