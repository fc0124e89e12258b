//! The metric manager and the counters it reads.
//!
//! The hot path only bumps atomics where things happen (a publish, a write, an error);
//! nothing sends on a channel or takes a lock per message. Latency (publish received →
//! written to the consumer) is *sampled*: one delivery in [`LATENCY_SAMPLE`] is recorded
//! into its destination's HdrHistogram under a mutex, so the lock is taken once per
//! sixteen deliveries and the histogram stays small; at the rates Agora runs, sampling
//! loses nothing a percentile can show. Each interval the metric manager task reads every
//! counter, turns counters into deltas, and ships the lot: to StatsD over UDP (when
//! configured) and as a JSON snapshot on the reserved topic `$sys.metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::*};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// StatsD-safe form of a destination name: `.` would split Graphite's hierarchy and
/// `$` is not a path character, so both become `_` (`prices.eu-west` →
/// `prices_eu-west`, `$sys.metrics` → `_sys_metrics`). Names can hold nothing else
/// special to StatsD (`:`, `|`, `@`) by the protocol's naming rules.
pub fn statsd_name(name: &str) -> String {
    name.chars()
        .map(|c| if c == '.' || c == '$' { '_' } else { c })
        .collect()
}

/// Counter values seen at the previous flush, to send deltas.
#[derive(Default)]
pub(crate) struct Previous {
    values: HashMap<String, u64>,
}

impl Previous {
    /// The increase of counter `key` since the last call (the whole value the first
    /// time; 0 if it went down, as after a destination was re-created).
    pub fn delta(&mut self, key: &str, now: u64) -> u64 {
        let before = self.values.insert(key.to_owned(), now).unwrap_or(0);
        now.saturating_sub(before)
    }

    /// Forgets counters not seen in this round (deleted destinations).
    pub fn retain(&mut self, seen: &std::collections::HashSet<String>) {
        self.values.retain(|k, _| seen.contains(k));
    }
}

/// Shared handle used by shippers to sample latency.
pub(crate) type LatencyRef = Arc<Latency>;

/// The reserved topic that receives a snapshot (the `STATS` document) each interval.
pub const METRICS_TOPIC: &str = "$sys.metrics";

/// Runs the metric manager until the future is dropped: every
/// [`Config::metrics_interval`](crate::Config::metrics_interval) it publishes the
/// snapshot on `$sys.metrics` (when someone subscribes) and ships StatsD metrics (when
/// [`Config::statsd`](crate::Config::statsd) is set).
pub(crate) async fn run_manager(broker: Arc<crate::Broker>) {
    use crate::manager::{Handle, ManagerCmd};
    let every = broker.config.metrics_interval;
    let mut prev = Previous::default();
    let mut cpu_prev = process_usage().1;
    let mut statsd: Option<statsd::Client> = None;
    let mut topic: Option<Arc<crate::topic::Topic>> = None;
    let dest = agora_protocol::Destination {
        kind: agora_protocol::Kind::Topic,
        name: agora_protocol::Name::try_from(METRICS_TOPIC).expect("valid reserved name"),
    };
    let mut ticker = smol::Timer::interval(every);
    loop {
        futures_lite::StreamExt::next(&mut ticker).await;
        let (tx, rx) = async_channel::bounded(1);
        if broker
            .manager
            .send(ManagerCmd::List { reply: tx })
            .await
            .is_err()
        {
            return;
        }
        let handles = rx.recv().await.unwrap_or_default();
        // Fold each destination's latency samples of this interval (for STATS too).
        let latencies: Vec<Option<Histogram<u64>>> = handles
            .iter()
            .map(|h| match h {
                Handle::Queue(q) => q.latency.take(),
                Handle::Topic(t) => t.latency.take(),
            })
            .collect();
        // The snapshot on $sys.metrics, for whoever listens.
        if topic.as_ref().is_none_or(|t| t.closed.load(SeqCst)) {
            let (tx, rx) = async_channel::bounded(1);
            let _ = broker
                .manager
                .send(ManagerCmd::Resolve {
                    dest: dest.clone(),
                    reply: tx,
                })
                .await;
            topic = match rx.recv().await {
                Ok(Ok(Handle::Topic(t))) => Some(t),
                _ => None,
            };
        }
        if let Some(t) = &topic {
            if t.subscribers() > 0 {
                let json = crate::stats::document(&broker, &handles);
                let msg = crate::shipper::Message {
                    headers: agora_protocol::Headers::new(),
                    payload: agora_protocol::bytes::Bytes::from(json),
                    received: Instant::now(),
                };
                let _ = t.publish(&msg);
            }
        }
        let Some(addr) = broker.config.statsd.clone() else {
            continue;
        };
        if statsd.is_none() {
            let prefix = broker.config.statsd_prefix.clone();
            match blocking::unblock(move || statsd::Client::new(addr.as_str(), &prefix)).await {
                Ok(c) => statsd = Some(c),
                Err(e) => {
                    broker.metrics.statsd_errors.fetch_add(1, Relaxed);
                    log::warn!(
                        "StatsD at {}: {e}",
                        broker.config.statsd.as_deref().unwrap_or("")
                    );
                    continue;
                }
            }
        }
        let (rss, cpu) = process_usage();
        let cpu_percent = (cpu - cpu_prev).max(0.0) / every.as_secs_f64() * 100.0;
        cpu_prev = cpu;
        let lines = statsd_lines(&broker, &handles, &latencies, &mut prev, rss, cpu_percent);
        let Some(client) = statsd.take() else {
            continue;
        };
        // The send is a handful of blocking UDP writes: off the executor.
        let client = blocking::unblock(move || {
            let mut pipe = client.pipeline();
            // Below the usual 1,500-byte MTU, as the StatsD docs advise.
            pipe.set_max_udp_size(1432);
            for l in lines {
                match l {
                    Line::Count(k, v) => pipe.count(&k, v as f64),
                    Line::Gauge(k, v) => pipe.gauge(&k, v),
                    Line::Timer(k, v) => pipe.timer(&k, v),
                }
            }
            pipe.send(&client);
            client
        })
        .await;
        statsd = Some(client);
    }
}

/// One StatsD metric, before formatting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Line {
    /// A counter's increase since the last flush (`|c`).
    Count(String, u64),
    /// An absolute value (`|g`).
    Gauge(String, f64),
    /// A duration in milliseconds (`|ms`).
    Timer(String, f64),
}

/// Points of the latency distribution sent per destination and interval as timings:
/// StatsD then computes percentiles close to the real ones.
const LATENCY_POINTS: usize = 100;

/// The metrics of one interval, named `<kind>.<name>.<metric>` and `broker.<metric>`
/// (the StatsD client adds the prefix).
pub(crate) fn statsd_lines(
    broker: &crate::Broker,
    handles: &[crate::manager::Handle],
    latencies: &[Option<Histogram<u64>>],
    prev: &mut Previous,
    rss: u64,
    cpu_percent: f64,
) -> Vec<Line> {
    use crate::manager::Handle;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Deltas are kept by the real name (`key`), not the sanitised one, so two names
    // that sanitise alike never share a counter's history.
    let mut delta = |out: &mut Vec<Line>, key: String, name: String, now: u64| {
        let d = prev.delta(&key, now);
        seen.insert(key);
        out.push(Line::Count(name, d));
    };
    for (h, lat) in handles.iter().zip(latencies) {
        let s = h.stats();
        let base = format!("{}.{}", s.kind, statsd_name(&s.name));
        let real = format!("{}:{}", s.kind, s.name);
        for (metric, v) in [
            ("messages.in", s.messages_in),
            ("messages.out", s.messages_out),
            ("bytes.in", s.bytes_in),
            ("bytes.out", s.bytes_out),
            ("dropped", s.dropped),
            ("redelivered", s.redelivered),
            ("deadlettered", s.deadlettered),
            ("filtered", s.filtered),
        ] {
            delta(
                &mut out,
                format!("{real}.{metric}"),
                format!("{base}.{metric}"),
                v,
            );
        }
        let who = match h {
            Handle::Queue(_) => "consumers",
            Handle::Topic(_) => "subscribers",
        };
        out.push(Line::Gauge(format!("{base}.{who}"), s.consumers as f64));
        out.push(Line::Gauge(format!("{base}.pending"), s.depth as f64));
        out.push(Line::Gauge(format!("{base}.unacked"), s.unacked as f64));
        if let Some(lat) = lat.as_ref().filter(|l| !l.is_empty()) {
            for i in 0..LATENCY_POINTS {
                let q = (i as f64 + 0.5) / LATENCY_POINTS as f64;
                let ms = lat.value_at_quantile(q) as f64 / 1000.0;
                out.push(Line::Timer(format!("{base}.latency"), ms));
            }
        }
    }
    let m = &broker.metrics;
    let mut count =
        |out: &mut Vec<Line>, name: String, now: u64| delta(out, name.clone(), name, now);
    out.push(Line::Gauge(
        "broker.clients.tcp".into(),
        broker.clients_tcp.load(Relaxed) as f64,
    ));
    out.push(Line::Gauge(
        "broker.clients.udp".into(),
        broker.clients_udp.load(Relaxed) as f64,
    ));
    count(
        &mut out,
        "broker.bytesin.tcp".into(),
        m.bytes_in_tcp.load(Relaxed),
    );
    count(
        &mut out,
        "broker.bytesin.udp".into(),
        m.bytes_in_udp.load(Relaxed),
    );
    count(
        &mut out,
        "broker.bytesout".into(),
        m.bytes_out.load(Relaxed),
    );
    count(
        &mut out,
        "broker.connections.rejected".into(),
        m.connections_rejected.load(Relaxed),
    );
    for (code, n) in m.errors() {
        count(&mut out, format!("broker.errors.{code}"), n);
    }
    count(
        &mut out,
        "broker.statsd.errors".into(),
        m.statsd_errors.load(Relaxed),
    );
    out.push(Line::Gauge("broker.memory.rss".into(), rss as f64));
    out.push(Line::Gauge(
        "broker.memory.budget.used".into(),
        broker.budget.used() as f64,
    ));
    out.push(Line::Gauge("broker.cpu.percent".into(), cpu_percent));
    prev.retain(&seen);
    out
}
