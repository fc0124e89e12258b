//! The `STATS` document (schema in the book's Protocol chapter).

use std::sync::atomic::Ordering::*;

use serde::Serialize;

use crate::manager::{DestStats, Handle, Listing};
use crate::Broker;

#[derive(Serialize)]
struct Clients {
    tcp: usize,
    udp: usize,
}

#[derive(Serialize)]
struct Memory {
    used: usize,
    limit: usize,
    read_used: usize,
    read_limit: usize,
    rss_limit: usize,
    /// Above the watermark at the last look: publishes are refused.
    over_rss: bool,
}

#[derive(Serialize)]
struct BrokerSection {
    bytes_in_tcp: u64,
    bytes_in_udp: u64,
    bytes_out: u64,
    connections_rejected: u64,
    slow_closed: u64,
    output_queued: usize,
    udp_dropped: u64,
    udp_unanswered: u64,
    udp_queued: usize,
    read_waits: u64,
    read_closed: u64,
    /// `ERR`s sent, by code.
    errors: std::collections::BTreeMap<&'static str, u64>,
    rss_bytes: u64,
    cpu_seconds: f64,
    statsd_errors: u64,
}

#[derive(Serialize)]
struct Stats {
    server: String,
    version: &'static str,
    uptime_s: f64,
    clients: Clients,
    memory: Memory,
    broker: BrokerSection,
    page: Page,
    destinations: Vec<DestStats>,
}

/// Which destinations this document lists, and where the next page starts.
#[derive(Serialize)]
struct Page {
    prefix: Option<String>,
    after: Option<String>,
    limit: usize,
    /// Destinations listed here.
    listed: usize,
    /// Destinations in the broker (all of them, whatever the prefix).
    total: usize,
    /// Pass as `after=` for the next page; `null` when this page is the last.
    next: Option<String>,
}

/// Builds the JSON document from a page of destinations' live figures.
pub(crate) fn document(
    broker: &Broker,
    page: &agora_protocol::StatsPage,
    listing: &Listing,
) -> Vec<u8> {
    let handles: &[Handle] = &listing.handles;
    let s = Stats {
        server: broker.config.server_name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: broker.started.elapsed().as_secs_f64(),
        clients: Clients {
            tcp: broker.clients_tcp.load(Relaxed),
            udp: broker.clients_udp.load(Relaxed),
        },
        memory: Memory {
            used: broker.budget.used(),
            limit: broker.budget.limit(),
            read_used: broker.read_budget.used(),
            read_limit: broker.read_budget.limit(),
            rss_limit: broker.config.rss_limit(),
            over_rss: broker.metrics.over_rss.load(Relaxed),
        },
        broker: {
            let m = &broker.metrics;
            let (rss_bytes, cpu_seconds) = crate::metrics::process_usage();
            BrokerSection {
                bytes_in_tcp: m.bytes_in_tcp.load(Relaxed),
                bytes_in_udp: m.bytes_in_udp.load(Relaxed),
                bytes_out: m.bytes_out.load(Relaxed),
                connections_rejected: m.connections_rejected.load(Relaxed),
                slow_closed: m.slow_closed.load(Relaxed),
                output_queued: m.output_queued.load(Relaxed),
                udp_dropped: m.udp_dropped.load(Relaxed),
                udp_unanswered: m.udp_unanswered.load(Relaxed),
                udp_queued: m.udp_queued.load(Relaxed),
                read_waits: m.read_waits.load(Relaxed),
                read_closed: m.read_closed.load(Relaxed),
                errors: m.errors().into_iter().collect(),
                rss_bytes,
                cpu_seconds,
                statsd_errors: m.statsd_errors.load(Relaxed),
            }
        },
        page: Page {
            prefix: page.prefix.clone(),
            after: page.after.as_ref().map(|d| d.to_string()),
            limit: listing.limit,
            listed: handles.len(),
            total: listing.total,
            next: listing.next.as_ref().map(|d| d.to_string()),
        },
        destinations: handles.iter().map(Handle::stats).collect(),
    };
    serde_json::to_vec(&s).unwrap_or_else(|_| b"{}".to_vec())
}
