//! The metric manager: a task that, each interval, reads every counter (`metrics`),
//! turns counters into deltas, and ships the lot: to StatsD over UDP (when configured)
//! and as a JSON snapshot (the `STATS` document) on the reserved topic `$sys.metrics`.
//! Kept apart from the counters so that the blocks that count need not import the
//! registry, the topics and `STATS` that reporting reads.

use std::collections::HashMap;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::ask::ask;
use crate::metrics::{process_usage, METRICS_TOPIC};

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
    let rss_limit = broker.config.rss_limit() as u64;
    loop {
        futures_lite::StreamExt::next(&mut ticker).await;
        // The resident-memory watermark: publishes are refused while above it.
        let (rss, cpu) = process_usage();
        broker.metrics.rss.store(rss, Relaxed);
        let over = rss > rss_limit;
        if broker.metrics.over_rss.swap(over, Relaxed) != over {
            match over {
                true => log::warn!(
                    "resident memory {rss} bytes is above --rss-limit {rss_limit}: refusing publishes"
                ),
                false => log::info!(
                    "resident memory {rss} bytes is back under --rss-limit {rss_limit}: taking publishes"
                ),
            }
        }
        let Some(handles) = ask(&broker.manager, |reply| ManagerCmd::All { reply }).await else {
            return;
        };
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
            let dest = dest.clone();
            topic = match ask(&broker.manager, |reply| ManagerCmd::Resolve { dest, reply }).await {
                Some(Ok(Handle::Topic(t))) => Some(t),
                _ => None,
            };
        }
        if let Some(t) = &topic {
            if t.subscribers() > 0 {
                // The first page, as a plain `STATS` gives it.
                let page = agora_protocol::StatsPage::default();
                let Some(listing) = ask(&broker.manager, |reply| ManagerCmd::List {
                    only: None,
                    page: page.clone(),
                    reply,
                })
                .await
                else {
                    return;
                };
                let json = crate::stats::document(&broker, &page, &listing, None);
                let msg = crate::message::Message {
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
        if let Handle::Queue(_) = h {
            out.push(Line::Gauge(format!("{base}.paged"), s.paged as f64));
        }
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
    count(
        &mut out,
        "broker.connections.slow_closed".into(),
        m.slow_closed.load(Relaxed),
    );
    out.push(Line::Gauge(
        "broker.output.queued".into(),
        m.output_queued.load(Relaxed) as f64,
    ));
    count(
        &mut out,
        "broker.udp.dropped".into(),
        m.udp_dropped.load(Relaxed),
    );
    count(
        &mut out,
        "broker.udp.unanswered".into(),
        m.udp_unanswered.load(Relaxed),
    );
    out.push(Line::Gauge(
        "broker.udp.queued".into(),
        m.udp_queued.load(Relaxed) as f64,
    ));
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
    if let Some(st) = crate::stats::storage(broker) {
        out.push(Line::Gauge(
            "broker.storage.disk_bytes".into(),
            st.disk_bytes as f64,
        ));
        out.push(Line::Gauge(
            "broker.storage.segments".into(),
            st.segments as f64,
        ));
        count(&mut out, "broker.storage.records".into(), st.records);
        count(&mut out, "broker.storage.syncs".into(), st.syncs);
        count(
            &mut out,
            "broker.storage.read_messages".into(),
            st.read_messages,
        );
        out.push(Line::Gauge(
            "broker.storage.sync_max_us".into(),
            st.sync_max_us,
        ));
        out.push(Line::Gauge(
            "broker.storage.recovery_ms".into(),
            st.recovery.ms,
        ));
    }
    prev.retain(&seen);
    out
}
