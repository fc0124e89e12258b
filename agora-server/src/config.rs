//! The broker's settings: every limit and policy in one plain struct, with defaults.
//! The binary fills it through [`crate::settings`] (flags, variables, the config file);
//! tests build it directly.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use agora_protocol::Destination;

/// What happens when a topic subscriber's buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Drop that subscriber's oldest buffered message to make room, and count the drop.
    DropOldest,
    /// End that subscription with `CANCEL <sid> slow_consumer`.
    Disconnect,
}

/// The settings of one queue. [`Config::queue_settings`] gives a queue's: an entry of
/// [`Config::queues`] if it has one, else the broker-wide defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Most messages held, pending and unacknowledged together.
    pub max_messages: usize,
    /// Most payload bytes held, pending and unacknowledged together.
    pub max_bytes: usize,
    /// Deliveries after which a message goes to the dead-letter queue instead of
    /// another delivery; 0 never dead-letters.
    pub max_deliveries: u32,
    /// How long a message may wait undelivered before it goes to the dead-letter queue.
    pub ttl: Option<Duration>,
    /// How long a delivery may stay unacknowledged before it is taken back and given
    /// to another consumer.
    pub ack_timeout: Option<Duration>,
    /// The dead-letter queue's name; `None` is `<queue>.dlq`.
    pub dead_letter: Option<String>,
    /// Kept in the data directory's log, so a restart (or a crash) loses nothing
    /// confirmed; `false` keeps it in memory only. Without a data directory
    /// ([`Config::data_dir`]) every queue is memory-only whatever this says.
    pub durable: bool,
    /// A durable queue's head: most bytes of its waiting messages kept in memory; the
    /// rest wait in the log and are read back as consumers get there.
    pub memory_bytes: usize,
    /// How long the queue remembers the message id (`agora-msg-id`) of a message it
    /// accepted, to answer a repeat without storing it again; zero remembers none.
    pub dedup_window: Duration,
    /// Most message ids remembered at once (the oldest is forgotten first); zero
    /// remembers none.
    pub dedup_ids: usize,
}

/// When the log is synced to disk, and so what a publisher confirm (`PUBACK`) for a
/// durable queue promises (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every group of records, before anyone hears of it: a confirm means on
    /// disk (`fdatasync` done).
    Always,
    /// Written at once, synced at most this long after (and when idle): a confirm means
    /// written to the operating system; a machine that stops loses up to this much.
    Every(Duration),
    /// Written at once, synced only when a segment is full: a confirm means written to
    /// the operating system.
    Never,
}

impl std::fmt::Display for Fsync {
    /// As `--fsync` takes it: `always`, `never`, `every=<duration>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Never => f.write_str("never"),
            Fsync::Every(d) if d.subsec_millis() == 0 => write!(f, "every={}s", d.as_secs()),
            Fsync::Every(d) => write!(f, "every={}ms", d.as_millis()),
        }
    }
}

/// Switches that turn a design choice off, to measure what it costs or buys
/// (agora-bench ablations, the book's Evaluation chapter). All off in normal use; each
/// costs one branch where it applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ablation {
    /// Shippers write each frame with its own write call instead of batching.
    pub no_batching: bool,
    /// Topic fan-out copies the payload for each subscriber instead of sharing it.
    pub copy_fanout: bool,
    /// No memory budget accounting and no liveness pings.
    pub no_defences: bool,
    /// No latency sampling and no metric manager (StatsD, `$sys.metrics`); the
    /// counters `STATS` reads stay.
    pub no_metrics: bool,
    /// Each publish is handed to its destination on its own instead of a read's run
    /// of publishes to one destination being handed over together.
    pub no_publish_batching: bool,
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Everything the broker can be told at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port for TCP (and, later, UDP); 0 picks a free one.
    pub port: u16,
    /// The name sent in `INFO`.
    pub server_name: String,
    /// Largest payload (header block included) a client may send, in bytes.
    pub max_payload: usize,
    /// Longest control line, in bytes.
    pub max_line: usize,
    /// Most simultaneous client connections; one more is answered
    /// `ERR too_many_connections` and closed.
    pub max_connections: usize,
    /// Most messages a queue holds, pending and unacknowledged together.
    pub queue_max_messages: usize,
    /// Most payload bytes a queue holds, pending and unacknowledged together.
    pub queue_max_bytes: usize,
    /// [`queue_max_messages`](Config::queue_max_messages) of a durable queue: sized for
    /// disk (its backlog waits in the log), not memory.
    pub durable_queue_max_messages: usize,
    /// [`queue_max_bytes`](Config::queue_max_bytes) of a durable queue.
    pub durable_queue_max_bytes: usize,
    /// Default [`QueueSettings::memory_bytes`].
    pub durable_queue_memory: usize,
    /// Default [`QueueSettings::max_deliveries`].
    pub max_deliveries: u32,
    /// Default [`QueueSettings::ttl`].
    pub message_ttl: Option<Duration>,
    /// Default [`QueueSettings::ack_timeout`].
    pub ack_timeout: Option<Duration>,
    /// [`QueueSettings::dedup_window`] of every queue.
    pub dedup_window: Duration,
    /// [`QueueSettings::dedup_ids`] of every queue.
    pub dedup_ids: usize,
    /// Settings for queues by exact name, overriding the defaults above.
    pub queues: HashMap<String, QueueSettings>,
    /// Most destinations (queues and topics) at once.
    pub max_destinations: usize,
    /// Most bytes of messages held by the whole broker: in queues (pending and unacked)
    /// and in topic subscribers' buffers, each message counted as its size plus
    /// `budget::per_message`. A publish that would pass it is refused with
    /// `memory_limit`.
    pub memory_budget: usize,
    /// Most subscriptions on one connection.
    pub max_subscriptions: usize,
    /// A client silent this long is sent `PINGREQ`.
    pub ping_interval: Duration,
    /// Unanswered pings after which a client is disconnected (its unacked queue
    /// messages go back).
    pub max_missed_pings: u32,
    /// A UDP client not heard from this long is forgotten (its subscriptions end).
    pub udp_idle_timeout: Duration,
    /// Largest datagram the broker sends; replies and deliveries are packed up to it.
    pub udp_max_datagram: usize,
    /// Where to send StatsD metrics (`host:port`, UDP); `None` sends none.
    pub statsd: Option<String>,
    /// The prefix of every StatsD metric name.
    pub statsd_prefix: String,
    /// How often metrics are shipped and `$sys.metrics` gets a snapshot.
    pub metrics_interval: Duration,
    /// Capacity of each queue's command channel (publishes wait for room).
    pub queue_channel: usize,
    /// Design switches for measurements (see [`Ablation`]).
    pub ablation: Ablation,
    /// Prefetch of a queue consumer that does not give one.
    pub default_prefetch: u32,
    /// Largest prefetch a consumer may ask for.
    pub max_prefetch: u32,
    /// Messages buffered per topic subscriber before the slow-consumer policy applies.
    pub subscriber_buffer: usize,
    /// What happens to a topic subscriber whose buffer is full.
    pub slow_consumer: SlowConsumerPolicy,
    /// Replies and notices buffered per connection; a connection whose client does not
    /// read them past this is closed.
    pub reply_buffer: usize,
    /// Bytes of replies and notices queued per connection and not yet written: past
    /// it the connection's task waits (its client is not read), and a notice from
    /// another task closes the connection. One reply is always taken when nothing is
    /// queued.
    pub max_output: usize,
    /// Bytes of partly received frames all connections may hold between reads; a
    /// connection holding part of a frame reads more only while the others leave room
    /// for one whole frame. At least four of the largest frames.
    pub read_budget: usize,
    /// How long a connection holding part of a frame may wait for room in the read
    /// budget before it is closed.
    pub read_wait: Duration,
    /// While the process's resident memory is above this, publishes are refused with
    /// `memory_limit` (RabbitMQ's memory high watermark). `None`: 1.5 × the memory
    /// budget plus the read budget (see [`Config::rss_limit`]).
    pub rss_limit: Option<usize>,
    /// A batch of output (at most 64 KiB) not written within this is the sign of a
    /// client that does not read: the connection is closed, logged and counted.
    pub write_timeout: Duration,
    /// How long a destination must be idle (empty, unused) before it is removed.
    pub idle_timeout: Duration,
    /// How long graceful shutdown may take before connections are dropped.
    pub shutdown_timeout: Duration,
    /// Enrichment databases mutator chains may name (`enrich db=NAME`), name → SQLite
    /// file. Clients can name these, never a path.
    pub databases: HashMap<String, PathBuf>,
    /// Mutator chains (in the one-line chain syntax) attached to destinations whenever
    /// they are created, until `CHAIN SET`/`CLEAR` changes them.
    pub chains: HashMap<Destination, String>,
    /// Queues bound to topic names or patterns (`bind` in a `[queues.NAME]` entry):
    /// whatever is published to a matching topic is also put in the queue, until
    /// `BIND`/`UNBIND` changes that queue's bindings.
    pub bindings: Vec<(Destination, crate::auth::Pattern)>,
    /// Where durable queues are kept (created when missing, locked for one broker);
    /// `None` keeps every queue in memory only, as tests do. The binary's default is
    /// `agora-data` (`--data-dir`, `--memory-only`).
    pub data_dir: Option<PathBuf>,
    /// When the log is synced (`--fsync`).
    pub fsync: Fsync,
    /// Most bytes the log may take on disk (`--max-disk`): past it, publishes to durable
    /// queues are refused with `storage_full` until acknowledgements give space back.
    /// Whatever it says, they are refused while the file system has less free than
    /// two segments.
    pub max_disk: Option<u64>,
    /// Port for MQTT 3.1.1 and 5.0 clients (`--mqtt-port`); `None`: no MQTT; 0 picks a
    /// free port.
    pub mqtt_port: Option<u16>,
    /// Port for WebSocket clients (`--ws-port`): `/mqtt` and `/agora`; `None`: none; 0
    /// picks a free port.
    pub ws_port: Option<u16>,
    /// Port for HTTP (`--http-port`): health, metrics, the API and the console;
    /// `None`: none; 0 picks a free port.
    pub http_port: Option<u16>,
    /// HTTP connections open at once (`--http-max-connections`).
    pub http_max_connections: usize,
    /// Console event streams open at once (`--http-max-viewers`).
    pub http_max_viewers: usize,
    /// Destinations `/metrics` exports one by one (`--http-metrics-destinations`).
    pub http_metrics_destinations: usize,
    /// Bytes of MQTT retained messages the broker keeps (`--mqtt-retained-bytes`).
    pub mqtt_retained_bytes: usize,
    /// Topics with an MQTT retained message the broker keeps (`--mqtt-retained-topics`).
    pub mqtt_retained_topics: usize,
    /// Longest an MQTT persistent session is kept once its client is gone
    /// (`--mqtt-session-expiry`).
    pub mqtt_session_expiry: Duration,
    /// The cluster this node belongs to (`--cluster-name`); links from another
    /// cluster's nodes are refused.
    pub cluster_name: String,
    /// This node's id in the cluster (`--node-id`); `None`: not clustered.
    pub node_id: Option<u64>,
    /// Where this node takes links from the other nodes (`--cluster-listen`).
    pub cluster_listen: Option<std::net::SocketAddr>,
    /// Every node of the cluster, this one included: id and address (`--peers`).
    pub peers: Vec<(u64, String)>,
    /// The secret the nodes prove they share (`--cluster-secret`).
    pub cluster_secret: Option<Secret>,
    /// Queue name patterns whose queues are replicated across the cluster
    /// (`--replicated-queues`), as `orders` or `jobs.>`.
    pub replicated_queues: Vec<crate::auth::Pattern>,
    /// Bytes of a replicated queue's Raft log since its last snapshot at which a member
    /// compacts it (once the log is also larger than the queue's messages).
    pub raft_compact_bytes: usize,
    /// One tick of a replicated queue's Raft clock (`--raft-tick`): elections, the
    /// leader's lease and heartbeats are counted in it. The same on every node.
    pub raft_tick: Duration,
    /// The TCP port's certificate chain (PEM, `--tls-cert`): with it and
    /// [`Config::tls_key`], the port speaks TLS only.
    pub tls_cert: Option<PathBuf>,
    /// The private key of [`Config::tls_cert`] (PEM, `--tls-key`).
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM, `--tls-client-ca`): TLS clients must present a certificate
    /// one of them signed.
    pub tls_client_ca: Option<PathBuf>,
    /// CA certificates (PEM, `--cluster-ca`) that signed the other nodes' certificates:
    /// with it, cluster links are TLS.
    pub cluster_ca: Option<PathBuf>,
    /// The certificate chain (PEM, `--cluster-cert`) this node's cluster port presents.
    pub cluster_cert: Option<PathBuf>,
    /// Its private key (PEM, `--cluster-key`).
    pub cluster_key: Option<PathBuf>,
    /// A TLS client that has not finished its handshake within this is closed.
    pub tls_handshake_timeout: Duration,
    /// At start, set damage in the log aside (into the data directory's `damaged`
    /// folder) instead of refusing to start (`--repair`).
    pub repair: bool,
    /// The users (`[users.<name>]` in the config file); empty: nobody is asked who
    /// they are.
    pub users: crate::auth::Users,
    /// With users: a TCP client that has not authenticated within this is closed.
    pub auth_timeout: Duration,
    /// Without users, serve an address other than loopback anyway
    /// (`--allow-anonymous`).
    pub allow_anonymous: bool,
    /// With users: the destinations UDP sources may publish to, anonymously
    /// (`--udp-anonymous-publish`); UDP is refused everything else.
    pub udp_anonymous_publish: Vec<crate::auth::Pattern>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: agora_protocol::DEFAULT_PORT,
            server_name: "agora".to_owned(),
            max_payload: agora_protocol::DEFAULT_MAX_PAYLOAD,
            max_line: agora_protocol::DEFAULT_MAX_LINE,
            max_connections: 10_000,
            queue_max_messages: 100_000,
            queue_max_bytes: 256 * 1024 * 1024,
            durable_queue_max_messages: 10_000_000,
            durable_queue_max_bytes: 16 << 30,
            durable_queue_memory: 8 << 20,
            max_deliveries: 10,
            message_ttl: None,
            ack_timeout: None,
            dedup_window: Duration::from_secs(120),
            dedup_ids: 100_000,
            queues: HashMap::new(),
            max_destinations: 10_000,
            memory_budget: 1024 * 1024 * 1024,
            max_subscriptions: 1024,
            ping_interval: Duration::from_secs(30),
            max_missed_pings: 2,
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_datagram: 1400,
            statsd: None,
            statsd_prefix: "agora".to_owned(),
            metrics_interval: Duration::from_secs(1),
            queue_channel: 512,
            ablation: Ablation::default(),
            default_prefetch: 256,
            max_prefetch: 65_536,
            subscriber_buffer: 8_192,
            slow_consumer: SlowConsumerPolicy::DropOldest,
            reply_buffer: 128,
            max_output: 1024 * 1024,
            read_budget: 64 * 1024 * 1024,
            read_wait: Duration::from_secs(10),
            rss_limit: None,
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(5),
            databases: HashMap::new(),
            chains: HashMap::new(),
            bindings: Vec::new(),
            data_dir: None,
            fsync: Fsync::Always,
            max_disk: None,
            repair: false,
            mqtt_port: None,
            ws_port: None,
            http_port: None,
            http_max_connections: 64,
            http_max_viewers: 16,
            http_metrics_destinations: 1000,
            mqtt_retained_bytes: 64 * 1024 * 1024,
            mqtt_retained_topics: 100_000,
            mqtt_session_expiry: Duration::from_secs(86_400),
            cluster_name: "agora".to_owned(),
            node_id: None,
            cluster_listen: None,
            peers: Vec::new(),
            cluster_secret: None,
            replicated_queues: Vec::new(),
            raft_compact_bytes: 16 << 20,
            raft_tick: Duration::from_millis(100),
            cluster_ca: None,
            cluster_cert: None,
            cluster_key: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_handshake_timeout: Duration::from_secs(10),
            users: crate::auth::Users::default(),
            auth_timeout: Duration::from_secs(5),
            allow_anonymous: false,
            udp_anonymous_publish: Vec::new(),
        }
    }
}

impl Config {
    /// The resident-memory watermark in effect: the one given, or 1.5 × the memory
    /// budget plus the read budget.
    pub fn rss_limit(&self) -> usize {
        self.rss_limit.unwrap_or_else(|| {
            (self.memory_budget / 2)
                .saturating_mul(3)
                .saturating_add(self.read_budget)
        })
    }

    /// The settings of the queue called `name`.
    pub fn queue_settings(&self, name: &str) -> QueueSettings {
        // A dead-letter queue (`….dlq`) keeps what it is given: no dead-lettering of
        // its own and no TTL, unless configured by name.
        let dlq = name.ends_with(".dlq");
        let mut s = match self.queues.get(name) {
            Some(s) => s.clone(),
            None => {
                let (max_messages, max_bytes) = self.queue_limits(self.data_dir.is_some());
                QueueSettings {
                    max_messages,
                    max_bytes,
                    max_deliveries: if dlq { 0 } else { self.max_deliveries },
                    ttl: if dlq { None } else { self.message_ttl },
                    ack_timeout: self.ack_timeout,
                    dead_letter: None,
                    durable: true,
                    memory_bytes: self.durable_queue_memory,
                    dedup_window: self.dedup_window,
                    dedup_ids: self.dedup_ids,
                }
            }
        };
        // Broker-wide: the log keeps segments for the longest window.
        s.dedup_window = self.dedup_window;
        s.dedup_ids = self.dedup_ids;
        s
    }

    /// A queue's default most messages and bytes: a durable one's (its backlog waits
    /// on disk) or a memory-only one's.
    pub fn queue_limits(&self, durable: bool) -> (usize, usize) {
        match durable {
            true => (
                self.durable_queue_max_messages,
                self.durable_queue_max_bytes,
            ),
            false => (self.queue_max_messages, self.queue_max_bytes),
        }
    }

    /// Defaults, listening on `127.0.0.1` and a free port: what tests use.
    pub fn ephemeral() -> Config {
        Config {
            port: 0,
            ..Config::default()
        }
    }
}
