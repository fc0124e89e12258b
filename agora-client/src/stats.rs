//! The typed `STATS` document: what the broker reports, field by field.

use serde::{Deserialize, Serialize};

/// The broker's `STATS` document (schema in the book's Protocol chapter). Fields the
/// client does not know are ignored.
///
/// ```
/// let json = r#"{"server":"agora","version":"0.1.0","uptime_s":1.5,
///   "clients":{"tcp":1,"udp":0},"destinations":[]}"#;
/// let s: agora_client::Stats = serde_json::from_str(json).unwrap();
/// assert_eq!(s.clients.tcp, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// The broker's name, as in `INFO`.
    pub server: String,
    /// The broker's software version.
    pub version: String,
    /// Seconds since the broker started.
    pub uptime_s: f64,
    /// Clients connected now, by transport.
    pub clients: ClientCounts,
    /// Payload bytes the broker holds, and its memory budget.
    #[serde(default)]
    pub memory: MemoryStats,
    /// Broker-wide counters.
    #[serde(default)]
    pub broker: BrokerStats,
    /// Which destinations are listed, and where the next page starts.
    #[serde(default)]
    pub page: PageStats,
    /// One entry per destination listed, queues first, then by name.
    pub destinations: Vec<DestinationStats>,
    /// Wildcard topic subscriptions by pattern.
    #[serde(default)]
    pub wildcards: WildcardStats,
    /// Queues bound to topic names or patterns ([`Client::bind`](crate::Client::bind)).
    #[serde(default)]
    pub bindings: BindingStats,
    /// Publishes to topics that are not destinations (no subscriber of their own and
    /// no chain: names only wildcard subscriptions match), all together.
    #[serde(default)]
    pub unlisted_topics: UnlistedTopicStats,
    /// A page of the broker's connections, when asked for
    /// ([`StatsPage::connections`](crate::StatsPage)); `None` otherwise.
    #[serde(default)]
    pub connections: Option<ConnectionsPage>,
    /// The cluster the broker is a node of; `None` when it is none.
    #[serde(default)]
    pub cluster: Option<ClusterStats>,
}

/// The cluster a broker is a node of (in [`Stats`]).
///
/// ```
/// let json = r#"{"name":"eu","node":1,"interest":2,"peers":[{"node":2,"addr":"10.0.0.2:7480",
///   "link_out":"up","link_in":"down","for_s":30,"connects":1,"messages_in":9,
///   "last_error":null,"replies_lost":0}]}"#;
/// let c: agora_client::ClusterStats = serde_json::from_str(json).unwrap();
/// assert_eq!((c.node, c.peers[0].link_out.as_str()), (1, "up"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterStats {
    /// The cluster's name (`--cluster-name`).
    pub name: String,
    /// This node's id.
    pub node: u64,
    /// One tick of its replicated queues' Raft clocks, in milliseconds (`--raft-tick`;
    /// 0 from a broker that does not say).
    #[serde(default)]
    pub raft_tick_ms: u64,
    /// Topic patterns this node's own clients subscribe to (what the other nodes send
    /// it).
    #[serde(default)]
    pub interest: u64,
    /// The other nodes.
    pub peers: Vec<PeerStats>,
    /// The replicated queues this node runs, by name.
    #[serde(default)]
    pub replicated: std::collections::BTreeMap<String, ReplicatedQueueStats>,
}

/// A replicated queue as one node of its group sees it (in [`ClusterStats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicatedQueueStats {
    /// The node this one knows leads the queue (0: none known).
    pub leader: u64,
    /// Its Raft term, as this node knows it.
    #[serde(default)]
    pub term: u64,
    /// Whether this node leads it under its lease and delivers it.
    #[serde(default)]
    pub serving: bool,
    /// The last entry of its log here.
    #[serde(default)]
    pub last_index: u64,
    /// The highest entry known committed here.
    #[serde(default)]
    pub commit: u64,
    /// On the leader: entries each other member lacks, by node id.
    #[serde(default)]
    pub lag: std::collections::BTreeMap<String, u64>,
    /// The nodes that vote in its group.
    #[serde(default)]
    pub voters: Vec<u64>,
    /// The nodes that follow its log without voting.
    #[serde(default)]
    pub learners: Vec<u64>,
    /// Why this node's log of it cannot be written, if it cannot.
    #[serde(default)]
    pub failed: Option<String>,
}

/// Another node of the cluster, as this one sees it (in [`ClusterStats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PeerStats {
    /// Its node id.
    pub node: u64,
    /// Its cluster address, as `--peers` gives it.
    pub addr: String,
    /// This node's link to it: `up` or `down`.
    pub link_out: String,
    /// Its link to this node: `up` or `down`.
    pub link_in: String,
    /// Seconds since this node's link to it last came up or went down.
    #[serde(default)]
    pub for_s: u64,
    /// Times this node's link to it came up.
    #[serde(default)]
    pub connects: u64,
    /// Messages that came from it.
    #[serde(default)]
    pub messages_in: u64,
    /// Why the last attempt to link to it failed, or the link ended.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Replies to its clients' inboxes this node could not send it.
    #[serde(default)]
    pub replies_lost: u64,
}

/// A page of connections (in [`Stats`], with `STATS connections=<n>`).
///
/// ```
/// let json = r#"{"connections":[{"id":7,"address":"127.0.0.1:5000","name":"w","protocol":"tcp",
///   "user":null,"subscriptions":1,"bytes_in":10,"bytes_out":20,"since_s":1.5}],
///   "page":{"limit":1,"listed":1,"total":2,"next":7}}"#;
/// let p: agora_client::ConnectionsPage = serde_json::from_str(json).unwrap();
/// assert_eq!((p.connections[0].id, p.page.next), (7, Some(7)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConnectionsPage {
    /// In id order.
    pub connections: Vec<ConnectionStats>,
    /// Where the next page starts.
    pub page: ConnectionsPageInfo,
}

/// One connection (in [`ConnectionsPage`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// The broker's id for it.
    pub id: u64,
    /// The client's address.
    pub address: String,
    /// The name its `CONNECT` gave.
    pub name: Option<String>,
    /// `tcp`, `tls`, `udp`, `mqtt`, `ws` or `http`.
    pub protocol: String,
    /// The user it authenticated as.
    pub user: Option<String>,
    /// Its subscriptions.
    pub subscriptions: u64,
    /// Bytes read from it.
    pub bytes_in: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
    /// Seconds connected.
    pub since_s: f64,
}

/// Which connections a page lists (in [`ConnectionsPage`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConnectionsPageInfo {
    /// At most this many.
    pub limit: u64,
    /// Listed here.
    pub listed: u64,
    /// All the asker may see.
    pub total: u64,
    /// Pass as `connections_after` for the next page; `None` on the last.
    pub next: Option<u64>,
}

/// Wildcard subscriptions (in [`Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WildcardStats {
    /// Patterns subscribed to, in all.
    #[serde(default)]
    pub total: u64,
    /// The first patterns in order (at most 1,000), with their subscriptions.
    #[serde(default)]
    pub patterns: Vec<WildcardPatternStats>,
}

/// One pattern's wildcard subscriptions (in [`WildcardStats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WildcardPatternStats {
    /// The pattern, e.g. `topic:sensors.*.temp`.
    pub pattern: String,
    /// Subscriptions to it.
    pub subscriptions: u64,
}

/// Queues bound to topic patterns (in [`Stats`]).
///
/// ```
/// let json = r#"{"total":1,"queues":[{"queue":"alerts","patterns":["topic:sensors.>"]}]}"#;
/// let b: agora_client::BindingStats = serde_json::from_str(json).unwrap();
/// assert_eq!(b.queues[0].patterns, ["topic:sensors.>"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BindingStats {
    /// Bindings in all.
    #[serde(default)]
    pub total: u64,
    /// The first bound queues in order (at most 1,000).
    #[serde(default)]
    pub queues: Vec<BoundQueueStats>,
}

/// One queue's bindings (in [`BindingStats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BoundQueueStats {
    /// The queue's name.
    pub queue: String,
    /// Its patterns, `topic:…`.
    pub patterns: Vec<String>,
}

/// What unlisted topics counted together (in [`Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UnlistedTopicStats {
    /// Messages published to them.
    #[serde(default)]
    pub messages_in: u64,
    /// Their payload bytes.
    #[serde(default)]
    pub bytes_in: u64,
    /// Deliveries to the wildcard subscriptions their names matched.
    #[serde(default)]
    pub messages_out: u64,
    /// Their payload bytes.
    #[serde(default)]
    pub bytes_out: u64,
}

/// The page of destinations a [`Stats`] document lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PageStats {
    /// The name prefix asked for.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The destination the page starts after.
    #[serde(default)]
    pub after: Option<String>,
    /// The page size applied.
    #[serde(default)]
    pub limit: u64,
    /// Destinations listed in this document.
    #[serde(default)]
    pub listed: u64,
    /// Destinations in the broker, all of them.
    #[serde(default)]
    pub total: u64,
    /// Where the next page starts (pass it as `after`); `None` on the last page.
    #[serde(default)]
    pub next: Option<String>,
}

/// The broker's memory budget (in [`Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Payload bytes held in queues and subscriber buffers.
    pub used: u64,
    /// The budget.
    pub limit: u64,
}

/// Connected clients, by transport (in [`Stats`]).
///
/// ```
/// let c: agora_client::ClientCounts = serde_json::from_str(r#"{"tcp":3,"udp":0}"#).unwrap();
/// assert_eq!(c.tcp, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientCounts {
    /// Over TCP.
    pub tcp: u64,
    /// Over UDP.
    #[serde(default)]
    pub udp: u64,
}

/// One destination's counters (in [`Stats`]).
///
/// ```
/// let d: agora_client::DestinationStats = serde_json::from_str(
///     r#"{"kind":"queue","name":"jobs","depth":1,"unacked":0,"consumers":0,
///        "messages_in":1,"messages_out":0,"dropped":0,"redelivered":0}"#).unwrap();
/// assert_eq!(d.depth, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DestinationStats {
    /// `queue` or `topic`.
    pub kind: String,
    /// The name, without the kind.
    pub name: String,
    /// Queue: messages waiting. Topic: messages buffered for subscribers.
    pub depth: u64,
    /// Queue: delivered, not yet acknowledged. Topic: 0.
    pub unacked: u64,
    /// Consumers or subscribers.
    pub consumers: u64,
    /// Publishes accepted.
    pub messages_in: u64,
    /// Deliveries written, redeliveries included.
    pub messages_out: u64,
    /// Messages discarded under a limit policy.
    pub dropped: u64,
    /// Deliveries with a count above 1.
    pub redelivered: u64,
    /// Queue: messages moved to the dead-letter queue. Topic: 0.
    #[serde(default)]
    pub deadlettered: u64,
    /// Queue: publishes not stored because they repeated a message id
    /// (`agora-msg-id`) accepted within the window; each was confirmed again. Topic: 0.
    #[serde(default)]
    pub duplicates: u64,
    /// Queue: message ids remembered now. Topic: 0.
    #[serde(default)]
    pub message_ids: u64,
    /// Messages the destination's mutator chain dropped.
    #[serde(default)]
    pub filtered: u64,
    /// Payload bytes published.
    #[serde(default)]
    pub bytes_in: u64,
    /// Payload bytes delivered.
    #[serde(default)]
    pub bytes_out: u64,
    /// Sampled delivery latency of the broker's last metric interval.
    #[serde(default)]
    pub latency: LatencyStats,
}

/// Sampled latency, publish received → written to the consumer (in
/// [`DestinationStats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LatencyStats {
    /// Deliveries sampled in the interval.
    pub samples: u64,
    /// Median, in microseconds.
    pub p50_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
    /// Largest, in microseconds.
    pub max_us: u64,
}

/// Broker-wide counters (in [`Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Bytes read from TCP clients.
    #[serde(default)]
    pub bytes_in_tcp: u64,
    /// Bytes received from UDP clients.
    #[serde(default)]
    pub bytes_in_udp: u64,
    /// Bytes written to clients.
    #[serde(default)]
    pub bytes_out: u64,
    /// Connections refused at the connection limit.
    #[serde(default)]
    pub connections_rejected: u64,
    /// `ERR`s sent, by code.
    #[serde(default)]
    pub errors: std::collections::BTreeMap<String, u64>,
    /// The broker process's resident memory, in bytes.
    #[serde(default)]
    pub rss_bytes: u64,
    /// CPU time the broker process has used, in seconds.
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Metric intervals whose StatsD send failed.
    #[serde(default)]
    pub statsd_errors: u64,
}
