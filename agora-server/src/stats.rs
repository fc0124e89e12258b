//! The `STATS` document (schema in the book's Protocol chapter).

use std::sync::atomic::Ordering::*;

use serde::Serialize;

use crate::manager::{DestStats, Handle};
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
}

#[derive(Serialize)]
struct BrokerSection {
    bytes_in_tcp: u64,
    bytes_in_udp: u64,
    bytes_out: u64,
    connections_rejected: u64,
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
    destinations: Vec<DestStats>,
}

/// Builds the JSON document from the destinations' live figures.
pub(crate) fn document(broker: &Broker, handles: &[Handle]) -> Vec<u8> {
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
        },
        broker: {
            let m = &broker.metrics;
            let (rss_bytes, cpu_seconds) = crate::metrics::process_usage();
            BrokerSection {
                bytes_in_tcp: m.bytes_in_tcp.load(Relaxed),
                bytes_in_udp: m.bytes_in_udp.load(Relaxed),
                bytes_out: m.bytes_out.load(Relaxed),
                connections_rejected: m.connections_rejected.load(Relaxed),
                errors: m.errors().into_iter().collect(),
                rss_bytes,
                cpu_seconds,
                statsd_errors: m.statsd_errors.load(Relaxed),
            }
        },
        destinations: handles.iter().map(Handle::stats).collect(),
    };
    serde_json::to_vec(&s).unwrap_or_else(|_| b"{}".to_vec())
}
