//! The counters the hot path bumps, which the metric manager (`reporter`) and `STATS`
//! read.
//!
//! The hot path only bumps atomics where things happen (a publish, a write, an error);
//! nothing sends on a channel or takes a lock per message. Latency (publish received →
//! written to the consumer) is *sampled*: one delivery in [`LATENCY_SAMPLE`] is recorded
//! into its destination's HdrHistogram under a mutex, so the lock is taken once per
//! sixteen deliveries and the histogram stays small; at the rates Agora runs, sampling
//! loses nothing a percentile can show. This module imports no other part of the broker:
//! every block can count here without depending on the one that reports.

use std::sync::atomic::{AtomicU64, Ordering::*};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_protocol::ErrorCode;
use hdrhistogram::Histogram;
use serde::Serialize;

/// One delivery in this many has its latency recorded.
pub(crate) const LATENCY_SAMPLE: u64 = 16;

/// Broker-wide counters.
#[derive(Default)]
pub(crate) struct BrokerMetrics {
    pub bytes_in_tcp: AtomicU64,
    pub bytes_in_udp: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections_rejected: AtomicU64,
    /// Connections closed because their client did not read what it was sent (a batch
    /// not written within the write timeout, or too much queued for it).
    pub slow_closed: AtomicU64,
    /// Bytes of replies queued for all connections and not yet written.
    pub output_queued: std::sync::atomic::AtomicUsize,
    /// The process's resident memory passed `--rss-limit` at the last look: publishes
    /// are refused.
    pub over_rss: std::sync::atomic::AtomicBool,
    /// Resident memory at the last look, in bytes.
    pub rss: AtomicU64,
    /// Times a connection holding part of a frame had to wait for room in the read
    /// budget, and connections closed because the wait was too long.
    pub read_waits: AtomicU64,
    pub read_closed: AtomicU64,
    /// Datagrams dropped because their UDP source's task was behind (its queue full).
    pub udp_dropped: AtomicU64,
    /// Answers not sent to UDP sources that had not proved themselves, over their
    /// allowance (the amplification rule).
    pub udp_unanswered: AtomicU64,
    /// Bytes of datagrams waiting for their sources' tasks.
    pub udp_queued: std::sync::atomic::AtomicUsize,
    /// Metric intervals whose StatsD send could not be made (address not resolved,
    /// socket error).
    pub statsd_errors: AtomicU64,
    /// `ERR`s sent, by code (indexed like [`ErrorCode::ALL`]).
    errors: [AtomicU64; ErrorCode::ALL.len()],
}

impl BrokerMetrics {
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Errors sent so far, by code token (codes never sent are left out).
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        ErrorCode::ALL
            .iter()
            .zip(&self.errors)
            .map(|(c, n)| (c.as_str(), n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// A destination's sampled latency, in microseconds.
pub(crate) struct Latency {
    /// Made on the first sample of an interval and taken away at its end, so a
    /// destination without deliveries holds none (a histogram of this range and
    /// precision is about 26 KiB).
    hist: Mutex<Option<Histogram<u64>>>,
    /// The last interval's summary, for `STATS`.
    last: Mutex<LatencySummary>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // 1 µs to 1 hour, two significant digits: about 2 KiB.
            hist: Mutex::new(None),
            last: Mutex::new(LatencySummary::default()),
        }
    }
}

impl Latency {
    /// Records one sampled latency.
    pub fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.hist.lock() {
            // 1 µs to 1 hour, two significant digits.
            let h = h.get_or_insert_with(|| {
                Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
            });
            let _ = h.record(us);
        }
    }

    /// Takes what was recorded since the last call, and keeps its summary for
    /// [`last`](Latency::last).
    pub fn take(&self) -> Option<Histogram<u64>> {
        let h = self.hist.lock().ok().and_then(|mut h| h.take());
        if let Ok(mut last) = self.last.lock() {
            *last = h.as_ref().map(LatencySummary::of).unwrap_or_default();
        }
        h
    }

    /// The summary of the last completed interval.
    pub fn last(&self) -> LatencySummary {
        self.last.lock().map(|l| *l).unwrap_or_default()
    }
}

/// Latency percentiles of one interval, in microseconds, as `STATS` shows them.
#[derive(Serialize, Clone, Copy, Default, Debug)]
pub(crate) struct LatencySummary {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// This process's resident memory and CPU time, from /proc (Linux); zeros elsewhere.
pub(crate) fn process_usage() -> (u64, f64) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    // utime and stime are fields 14 and 15 of /proc/self/stat, in clock ticks (100/s
    // on Linux), after the command name in parentheses.
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

/// Shared handle used by shippers to sample latency.
pub(crate) type LatencyRef = Arc<Latency>;

/// The reserved topic that receives a snapshot (the `STATS` document) each interval.
pub const METRICS_TOPIC: &str = "$sys.metrics";
