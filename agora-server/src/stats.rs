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
struct Stats {
    server: String,
    version: &'static str,
    uptime_s: f64,
    clients: Clients,
    memory: Memory,
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
        destinations: handles.iter().map(Handle::stats).collect(),
    };
    serde_json::to_vec(&s).unwrap_or_else(|_| b"{}".to_vec())
}
