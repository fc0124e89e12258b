//! The `STATS` document (schema in the book's Protocol chapter).

use std::sync::atomic::Ordering::*;

use serde::Serialize;

use crate::manager::{DestStats, Handle, Listing};
use crate::Broker;

#[derive(Serialize)]
struct Clients {
    /// Stream connections, native and MQTT.
    tcp: usize,
    udp: usize,
    /// Of `tcp`, those speaking MQTT (on its port; over WebSocket too).
    mqtt: usize,
    /// Of `tcp`, WebSocket connections.
    ws: usize,
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

/// What the start read back from the log.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Recovery {
    /// Messages read back.
    pub messages: usize,
    /// How long reading the log back took.
    pub ms: f64,
}

/// The durable log's figures (`null` when the broker is memory-only).
#[derive(Serialize)]
pub(crate) struct Storage {
    pub data_dir: String,
    pub fsync: String,
    /// Bytes of the log's segments on disk.
    pub disk_bytes: u64,
    pub segments: u64,
    /// Records appended since the start.
    pub records: u64,
    /// Groups written (one write call each) and syncs done since the start.
    pub groups: u64,
    pub syncs: u64,
    /// Mean and longest sync since the start, in microseconds.
    pub sync_mean_us: f64,
    pub sync_max_us: f64,
    /// What the start read back.
    pub recovery: Recovery,
    /// Reads of messages durable queues kept on disk (their backlogs past their heads),
    /// and the messages they brought back, since the start.
    pub reads: u64,
    pub read_messages: u64,
    /// Why the log stopped storing, if it did: publishes to durable queues are refused.
    pub failed: Option<String>,
    /// `--max-disk`, if given.
    pub max_disk: Option<u64>,
    /// Bytes free on the data directory's file system, at the writer's last look.
    pub free_bytes: u64,
    /// Why the log takes no more publishes now (full), if so.
    pub full: Option<String>,
}

/// The log's figures, with the directory's segments counted on disk.
pub(crate) fn storage(broker: &Broker) -> Option<Storage> {
    let (writer, recovery) = broker.store.as_ref()?;
    let dir = broker.config.data_dir.as_ref()?;
    let (mut disk_bytes, mut segments) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".seg") {
                segments += 1;
                disk_bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    let st = &writer.stats;
    let syncs = st.syncs.load(Relaxed);
    Some(Storage {
        data_dir: dir.display().to_string(),
        fsync: broker.config.fsync.to_string(),
        disk_bytes,
        segments,
        records: st.records.load(Relaxed),
        groups: st.groups.load(Relaxed),
        syncs,
        sync_mean_us: match syncs {
            0 => 0.0,
            n => st.sync_ns.load(Relaxed) as f64 / n as f64 / 1e3,
        },
        sync_max_us: st.sync_max_ns.load(Relaxed) as f64 / 1e3,
        recovery: recovery.clone(),
        reads: st.reads.load(Relaxed),
        read_messages: st.read_messages.load(Relaxed),
        failed: writer.failure().map(|w| w.to_string()),
        max_disk: broker.config.max_disk,
        free_bytes: st.free_bytes.load(Relaxed),
        full: writer.full().map(|w| w.to_string()),
    })
}

#[derive(Serialize)]
struct Stats {
    server: String,
    version: &'static str,
    uptime_s: f64,
    clients: Clients,
    memory: Memory,
    broker: BrokerSection,
    storage: Option<Storage>,
    page: Page,
    destinations: Vec<DestStats>,
    /// Wildcard topic subscriptions by pattern (not destinations: they live in the
    /// broker's index).
    wildcards: Wildcards,
    /// Publishes to topics that are not destinations (no subscriber of their own, no
    /// chain), all together.
    unlisted_topics: UnlistedTopics,
    /// Queues bound to topic names or patterns (`BIND`).
    bindings: Bindings,
    /// A page of the connections, when asked for (`connections=<n>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<crate::conns::Listing>,
    /// The cluster this node is one of (its peers and their links); absent when it is
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Bindings {
    /// Bindings in all.
    total: usize,
    /// The first queues in order, at most 1000, with their patterns.
    queues: Vec<BoundQueue>,
}

#[derive(Serialize)]
struct BoundQueue {
    queue: String,
    patterns: Vec<String>,
}

#[derive(Serialize)]
struct UnlistedTopics {
    messages_in: u64,
    bytes_in: u64,
    /// Deliveries to the wildcard subscriptions their names matched.
    messages_out: u64,
    bytes_out: u64,
}

#[derive(Serialize)]
struct Wildcards {
    /// Patterns subscribed to (all of them).
    total: usize,
    /// The first patterns in order, at most 1000, with their subscriptions.
    patterns: Vec<WildcardPattern>,
}

#[derive(Serialize)]
struct WildcardPattern {
    pattern: String,
    subscriptions: usize,
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
    only: Option<&crate::auth::User>,
) -> Vec<u8> {
    let handles: &[Handle] = &listing.handles;
    let s = Stats {
        server: broker.config.server_name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: broker.started.elapsed().as_secs_f64(),
        clients: Clients {
            tcp: broker.clients_tcp.load(Relaxed),
            udp: broker.clients_udp.load(Relaxed),
            mqtt: broker.clients_mqtt.load(Relaxed),
            ws: broker.clients_ws.load(Relaxed),
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
        storage: storage(broker),
        page: Page {
            prefix: page.prefix.clone(),
            after: page.after.as_ref().map(|d| d.to_string()),
            limit: listing.limit,
            listed: handles.len(),
            total: listing.total,
            next: listing.next.as_ref().map(|d| d.to_string()),
        },
        destinations: handles.iter().map(Handle::stats).collect(),
        cluster: broker.cluster.as_ref().map(|c| {
            let mut v = c.stats();
            if let Some(g) = &broker.replicated {
                let figures = g.figures.lock().unwrap_or_else(|e| e.into_inner()).clone();
                v["replicated"] = serde_json::to_value(figures).unwrap_or_default();
            }
            v
        }),
        // A user that is not an admin sees its own connections.
        connections: page.connections.map(|n| {
            broker.conns.list(
                page.connections_after,
                n as usize,
                only.map(|u| u.name.as_str()),
            )
        }),
        wildcards: {
            let (mut listed, mut total) = broker.wild.listing();
            // A user that is not an admin sees the patterns its rights cover.
            if let Some(u) = only {
                listed.retain(|(p, _)| {
                    crate::auth::Pattern::parse(p)
                        .is_ok_and(|p| u.rights.subscribe.iter().any(|mine| mine.covers(&p)))
                });
                total = listed.len();
            }
            Wildcards {
                total,
                patterns: listed
                    .into_iter()
                    .map(|(pattern, subscriptions)| WildcardPattern {
                        pattern,
                        subscriptions,
                    })
                    .collect(),
            }
        },
        bindings: {
            let (mut listed, mut total) = broker.wild.binding_listing();
            // A user that is not an admin sees the queues it may consume from.
            if let Some(u) = only {
                listed.retain(|(q, _)| {
                    agora_protocol::Destination::queue(q).is_ok_and(|d| u.rights.may_subscribe(&d))
                });
                total = listed.iter().map(|(_, p)| p.len()).sum();
            }
            Bindings {
                total,
                queues: listed
                    .into_iter()
                    .map(|(queue, patterns)| BoundQueue { queue, patterns })
                    .collect(),
            }
        },
        unlisted_topics: {
            let c = &broker.unlisted.counts;
            UnlistedTopics {
                messages_in: c.messages_in.load(Relaxed),
                bytes_in: c.bytes_in.load(Relaxed),
                messages_out: c.messages_out.load(Relaxed),
                bytes_out: c.bytes_out.load(Relaxed),
            }
        },
    };
    serde_json::to_vec(&s).unwrap_or_else(|_| b"{}".to_vec())
}
