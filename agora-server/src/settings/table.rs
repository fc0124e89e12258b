//! The table itself: one entry per setting, in the order of `agora --help`. Adding a
//! setting is adding an entry here (and its field in `Config` or `Settings`); the
//! flag, the variable, the `[broker]` key, the help text and the book's table follow.

use super::{choice, count, duration, path, signed, switch, text, unsigned, Kind, Setting};
use crate::config::SlowConsumerPolicy;

/// What most entries share; each entry says what differs.
const BASE: Setting = Setting {
    key: "",
    flag: "",
    env: "",
    value_name: None,
    kind: Kind::Value,
    default: None,
    default_note: "",
    valid: "",
    doc: "",
    choices: &[],
    hidden: false,
    in_file: true,
    apply: |_, _| Ok(()),
};

const SLOW_CONSUMER: &[(&str, &str)] = &[
    (
        "drop-oldest",
        "Drop the subscriber's oldest buffered message, and count it",
    ),
    (
        "disconnect",
        "End the subscription with CANCEL slow_consumer",
    ),
];

const ABLATE: &[(&str, &str)] = &[
    ("no-batching", "One write call per frame instead of batches"),
    (
        "copy-fanout",
        "Copy the payload for each topic subscriber instead of sharing it",
    ),
    (
        "no-defences",
        "No memory budget accounting, no liveness pings",
    ),
    ("no-metrics", "No latency sampling, no metric manager"),
    (
        "no-publish-batching",
        "Hand each publish to its destination on its own, not a read's run together",
    ),
];

/// Every setting with a flag.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "port",
        flag: "port",
        env: "AGORA_PORT",
        default: Some("48879"),
        valid: "0 to 65535; 0 picks a free port",
        doc: "TCP port to listen on (0 picks a free port)",
        apply: |s, v| {
            s.config.port = signed(v, 0, u16::MAX.into())? as u16;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "bind",
        flag: "bind",
        env: "AGORA_BIND",
        default: Some("127.0.0.1"),
        valid: "an IPv4 or IPv6 address",
        doc: "Address to listen on: the loopback address unless told otherwise. Any other address needs users (or --allow-anonymous): without them the broker refuses to start",
        apply: |s, v| {
            s.config.bind = text(v)?.parse().map_err(|e: std::net::AddrParseError| e.to_string())?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "mqtt_port",
        flag: "mqtt-port",
        env: "AGORA_MQTT_PORT",
        value_name: Some("PORT"),
        default_note: "none: no MQTT",
        valid: "0 to 65535; 0 picks a free port",
        doc: "Port for MQTT 3.1.1 and 5.0 clients, on the --bind address (off unless given; 0 picks a free port and the listening line shows it). See the book's MQTT chapter",
        apply: |s, v| {
            s.config.mqtt_port = Some(signed(v, 0, u16::MAX.into())? as u16);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "ws_port",
        flag: "ws-port",
        env: "AGORA_WS_PORT",
        value_name: Some("PORT"),
        default_note: "none: no WebSocket",
        valid: "0 to 65535; 0 picks a free port",
        doc: "Port for WebSocket clients, on the --bind address (off unless given; 0 picks a free port and the listening line shows it): /mqtt carries MQTT (subprotocol mqtt), /agora the native protocol in binary messages. See the book's MQTT chapter",
        apply: |s, v| {
            s.config.ws_port = Some(signed(v, 0, u16::MAX.into())? as u16);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "http_port",
        flag: "http-port",
        env: "AGORA_HTTP_PORT",
        value_name: Some("PORT"),
        default_note: "none: no HTTP",
        valid: "0 to 65535; 0 picks a free port",
        doc: "Port for HTTP, on the --bind address (off unless given; 0 picks a free port and the listening line shows it; HTTPS with --tls-cert): /healthz, /readyz, /metrics (Prometheus), /api/… and the console at /. See the book's Monitoring chapter",
        apply: |s, v| {
            s.config.http_port = Some(signed(v, 0, u16::MAX.into())? as u16);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "http_max_connections",
        flag: "http-max-connections",
        env: "AGORA_HTTP_MAX_CONNECTIONS",
        value_name: Some("N"),
        default: Some("64"),
        valid: "at least 1",
        doc: "HTTP connections open at once; one more is closed at accept",
        apply: |s, v| {
            s.config.http_max_connections = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "http_max_viewers",
        flag: "http-max-viewers",
        env: "AGORA_HTTP_MAX_VIEWERS",
        value_name: Some("N"),
        default: Some("16"),
        valid: "at least 1",
        doc: "Console event streams (/api/events) open at once; one more is answered 503. Each costs one STATS document a second",
        apply: |s, v| {
            s.config.http_max_viewers = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "http_metrics_destinations",
        flag: "http-metrics-destinations",
        env: "AGORA_HTTP_METRICS_DESTINATIONS",
        value_name: Some("N"),
        default: Some("1000"),
        valid: "1 to 10000",
        doc: "Destinations /metrics exports one by one (queues first, by name); the rest are counted in agora_metrics_destinations_omitted, so a broker with 100,000 names exports a bounded number of series",
        apply: |s, v| {
            s.config.http_metrics_destinations = count(unsigned(v, 1, Some(10_000))?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "mqtt_retained_bytes",
        flag: "mqtt-retained-bytes",
        env: "AGORA_MQTT_RETAINED_BYTES",
        value_name: Some("BYTES"),
        default: Some("67108864"),
        valid: "a number of bytes, at least 1",
        doc: "Bytes of MQTT retained messages kept (topic, payload, properties and 64 bytes each); a retained publish past it is refused (MQTT 5: quota exceeded; 3.1.1: the connection is closed)",
        apply: |s, v| {
            s.config.mqtt_retained_bytes = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "mqtt_retained_topics",
        flag: "mqtt-retained-topics",
        env: "AGORA_MQTT_RETAINED_TOPICS",
        value_name: Some("N"),
        default: Some("100000"),
        valid: "at least 1",
        doc: "Topics with an MQTT retained message kept; a retained publish to one more topic is refused as --mqtt-retained-bytes says",
        apply: |s, v| {
            s.config.mqtt_retained_topics = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "mqtt_session_expiry",
        flag: "mqtt-session-expiry",
        env: "AGORA_MQTT_SESSION_EXPIRY",
        default: Some("24h"),
        valid: "a [duration](#durations), at least 1s",
        doc: "Longest an MQTT persistent session is kept once its client is gone (3.1.1's clean session 0 gets this; a 5.0 Session Expiry Interval is capped at it); then its queue and what it holds are deleted",
        apply: |s, v| {
            let d = duration(v)?;
            if d.as_secs() == 0 {
                return Err("must be at least 1s".to_owned());
            }
            s.config.mqtt_session_expiry = d;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "cluster_name",
        flag: "cluster-name",
        env: "AGORA_CLUSTER_NAME",
        value_name: Some("NAME"),
        default: Some("agora"),
        valid: "1 to 64 of A-Z a-z 0-9 _ - .",
        doc: "The cluster this node belongs to: a node of another cluster is refused. See the book's Clustering chapter",
        apply: |s, v| {
            let name = text(v)?;
            if !agora_protocol::cluster::valid_cluster_name(name) {
                return Err(format!("'{name}' is not 1 to 64 of A-Z a-z 0-9 _ - ."));
            }
            s.config.cluster_name = name.to_owned();
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "node_id",
        flag: "node-id",
        env: "AGORA_NODE_ID",
        value_name: Some("N"),
        default_note: "none: not clustered",
        valid: "1 to 2^63, one of --peers",
        doc: "This node's id in the cluster; with --cluster-listen, --peers and --cluster-secret it makes the broker a node of a cluster",
        apply: |s, v| {
            s.config.node_id = Some(unsigned(v, 1, Some(i64::MAX as u64))?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "cluster_listen",
        flag: "cluster-listen",
        env: "AGORA_CLUSTER_LISTEN",
        value_name: Some("ADDR"),
        default_note: "none",
        valid: "an IP address and port; port 0 picks a free one",
        doc: "Where this node takes the other nodes' links (only theirs: a client cannot connect there)",
        apply: |s, v| {
            let t = text(v)?;
            s.config.cluster_listen = Some(
                t.parse()
                    .map_err(|_| format!("'{t}' is not an IP address and port, as 10.0.0.1:7480"))?,
            );
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "peers",
        flag: "peers",
        env: "AGORA_PEERS",
        value_name: Some("ID=ADDR,..."),
        default_note: "none",
        valid: "comma-separated ID=HOST:PORT, ids distinct, this node's included",
        doc: "Every node of the cluster, this one included, each with the address of its --cluster-listen",
        apply: |s, v| {
            s.config.peers = parse_peers(text(v)?)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "cluster_secret",
        flag: "cluster-secret",
        env: "AGORA_CLUSTER_SECRET",
        value_name: Some("SECRET"),
        default_note: "none",
        valid: "at least 16 characters",
        doc: "The secret every node of the cluster is given: a link proves it (HMAC-SHA256 over both sides' random nonces; the secret itself never crosses). Better from the environment or the config file than on a command line others can read",
        apply: |s, v| {
            let t = text(v)?;
            if t.chars().count() < 16 {
                return Err("must be at least 16 characters".to_owned());
            }
            s.config.cluster_secret = Some(crate::config::Secret(t.to_owned()));
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "replicated_queues",
        flag: "replicated-queues",
        env: "AGORA_REPLICATED_QUEUES",
        value_name: Some("PATTERN,..."),
        default_note: "none: every queue stays on its node",
        valid: "comma-separated queue name patterns (`*` one token, `>` the rest), as orders,jobs.>; the same on every node; needs --data-dir",
        doc: "Queues whose names match are replicated on the cluster's nodes (a Raft group each, on three nodes or every node when fewer): a confirm means a majority has the message on disk, and when the node leading one goes, another takes over (see the book's Clustering chapter)",
        apply: |s, v| {
            let mut out = Vec::new();
            for p in text(v)?.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let pattern = crate::auth::Pattern::parse(&format!("queue:{p}"))?;
                if pattern.to_string().starts_with("queue:$") {
                    return Err(format!("'{p}': the broker's own $ names are never replicated"));
                }
                out.push(pattern);
            }
            s.config.replicated_queues = out;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "raft_compact_bytes",
        flag: "raft-compact-bytes",
        env: "AGORA_RAFT_COMPACT_BYTES",
        default: Some("16777216"),
        default_note: "16 MiB",
        valid: "4096 or more bytes",
        doc: "A member of a replicated queue's group compacts its Raft log (memory and file) into a snapshot of the queue once the entries since the last one hold this many bytes and four times the queue's messages; a member that is behind what the leader compacted gets the snapshot (see the book's Clustering chapter)",
        apply: |s, v| {
            s.config.raft_compact_bytes = count(unsigned(v, 4096, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "raft_tick",
        flag: "raft-tick",
        env: "AGORA_RAFT_TICK",
        default: Some("100ms"),
        valid: "a [duration](#durations) from 20ms to 1s; the same on every node",
        doc: "One tick of a replicated queue's Raft clock: a follower that has not heard from its leader for 10 to 20 ticks calls an election, a leader serves under a lease of 8 ticks, and heartbeats go every 2. Shorter ticks fail over sooner and cost more heartbeats; every node of a cluster with replicated queues must have the same (see the book's Clustering chapter)",
        apply: |s, v| {
            let t = duration(v)?;
            if !(20..=1000).contains(&t.as_millis()) {
                return Err(format!("'{}' must be from 20ms to 1s", text(v)?));
            }
            s.config.raft_tick = t;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "tls_cert",
        flag: "tls-cert",
        env: "AGORA_TLS_CERT",
        value_name: Some("FILE"),
        kind: Kind::Path,
        default_note: "none: the TCP port speaks clear text",
        valid: "a PEM file: the server's certificate, then its chain; with `--tls-key`",
        doc: "PEM certificate chain for TLS. With it (and --tls-key) the TCP port speaks TLS only, from the first byte, and the listening line says tls:// (see the book's Security chapter)",
        apply: |s, v| {
            s.config.tls_cert = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "tls_key",
        flag: "tls-key",
        env: "AGORA_TLS_KEY",
        value_name: Some("FILE"),
        kind: Kind::Path,
        default_note: "none",
        valid: "a PEM file holding the private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1)",
        doc: "PEM private key of the --tls-cert certificate",
        apply: |s, v| {
            s.config.tls_key = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "tls_client_ca",
        flag: "tls-client-ca",
        env: "AGORA_TLS_CLIENT_CA",
        value_name: Some("FILE"),
        kind: Kind::Path,
        default_note: "none: no client certificate asked for",
        valid: "a PEM file of one or more CA certificates; needs `--tls-cert`",
        doc: "Require every TLS client to present a certificate signed by a CA in this PEM file (a client without one is refused in the handshake)",
        apply: |s, v| {
            s.config.tls_client_ca = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "cluster_ca",
        flag: "cluster-ca",
        env: "AGORA_CLUSTER_CA",
        value_name: Some("FILE"),
        kind: Kind::Path,
        default_note: "none: cluster links in clear text",
        valid: "a PEM file of one or more CA certificates; needs `--cluster-cert` and `--cluster-key`",
        doc: "Cluster links use TLS: this node's cluster port presents --cluster-cert, and the other nodes' certificates must be signed by a CA in this file and name the host of their --peers address",
        apply: |s, v| {
            s.config.cluster_ca = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "cluster_cert",
        flag: "cluster-cert",
        env: "AGORA_CLUSTER_CERT",
        value_name: Some("FILE"),
        kind: Kind::Path,
        default_note: "none",
        valid: "a PEM file: the certificate, then its chain; needs `--cluster-ca`",
        doc: "The certificate this node's cluster port presents to the other nodes (its names must include the host of this node's --peers address)",
        apply: |s, v| {
            s.config.cluster_cert = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "cluster_key",
        flag: "cluster-key",
        env: "AGORA_CLUSTER_KEY",
        value_name: Some("FILE"),
        kind: Kind::Path,
        default_note: "none",
        valid: "a PEM file: PKCS#8, PKCS#1 or SEC1 private key",
        doc: "The private key of --cluster-cert",
        apply: |s, v| {
            s.config.cluster_key = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "tls_handshake_timeout",
        flag: "tls-handshake-timeout",
        env: "AGORA_TLS_HANDSHAKE_TIMEOUT",
        default: Some("10s"),
        valid: "a [duration](#durations) of at least 1ms",
        doc: "A TLS client that has not finished its handshake within this (one speaking clear text, or silent) is closed",
        apply: |s, v| {
            let d = duration(v)?;
            if d < std::time::Duration::from_millis(1) {
                return Err("must be at least 1ms".into());
            }
            s.config.tls_handshake_timeout = d;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "auth_timeout",
        flag: "auth-timeout",
        env: "AGORA_AUTH_TIMEOUT",
        default: Some("5s"),
        valid: "a [duration](#durations) of at least 1ms",
        doc: "With users configured, a TCP client that has not authenticated within this (CONNECT user=… password=…, or its certificate) is closed",
        apply: |s, v| {
            let d = duration(v)?;
            if d < std::time::Duration::from_millis(1) {
                return Err("must be at least 1ms".into());
            }
            s.config.auth_timeout = d;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "allow_anonymous",
        flag: "allow-anonymous",
        env: "AGORA_ALLOW_ANONYMOUS",
        kind: Kind::Switch,
        default_note: "off",
        valid: "a flag; the variable and the file take `true` or `false`",
        doc: "Serve an address other than loopback with no users configured (anyone who reaches the port may do anything); without it such a broker refuses to start",
        apply: |s, v| {
            s.config.allow_anonymous = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "udp_anonymous_publish",
        flag: "udp-anonymous-publish",
        env: "AGORA_UDP_ANONYMOUS_PUBLISH",
        value_name: Some("PATTERN"),
        kind: Kind::List,
        default_note: "none: with users, UDP is refused everything",
        valid: "comma-separated permission patterns such as `topic:sensors.>` (the flag may be repeated)",
        doc: "With users configured, UDP sources may publish to these destinations anonymously (UDP carries no credentials); everything else over UDP is refused",
        apply: |s, v| {
            for p in text(v)?.split(',').filter(|p| !p.trim().is_empty()) {
                let p = crate::auth::Pattern::parse(p.trim())?;
                s.config.udp_anonymous_publish.push(p);
            }
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "data_dir",
        flag: "data-dir",
        env: "AGORA_DATA_DIR",
        value_name: Some("DIR"),
        kind: Kind::Path,
        default: Some("agora-data"),
        default_note: "`agora-data` under the working directory",
        valid: "a directory path; created when missing; one broker at a time (locked)",
        doc: "Directory where durable queues are kept (created when missing; locked, so a second broker on it refuses to start)",
        apply: |s, v| {
            s.data_dir = path(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "memory_only",
        flag: "memory-only",
        env: "AGORA_MEMORY_ONLY",
        kind: Kind::Switch,
        default_note: "off",
        valid: "a flag; the variable and the file take `true` or `false`",
        doc: "Keep every queue in memory only and write nothing to disk (a restart loses every queued message)",
        apply: |s, v| {
            s.memory_only = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "fsync",
        flag: "fsync",
        env: "AGORA_FSYNC",
        value_name: Some("POLICY"),
        default: Some("always"),
        valid: "`always`, `never` or `every=<duration>` (e.g. `every=200ms`)",
        doc: "When the log is synced to disk: always (a confirm means on disk), every=<duration>, or never (see the book's Durability chapter)",
        apply: |s, v| {
            s.config.fsync = text(v)?.parse()?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "max_disk",
        flag: "max-disk",
        env: "AGORA_MAX_DISK",
        value_name: Some("BYTES"),
        default_note: "none (the file system's free space)",
        valid: "65536 or more bytes",
        doc: "Most bytes the durable log may take on disk; past it, publishes to durable queues are refused with storage_full until acknowledgements give space back",
        apply: |s, v| {
            s.config.max_disk = Some(unsigned(v, 65_536, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "repair",
        flag: "repair",
        env: "AGORA_REPAIR",
        kind: Kind::Switch,
        default_note: "off",
        valid: "a flag; the variable and the file take `true` or `false`",
        doc: "At start, move damage found in the data directory's log (from the first bad record on, and any foreign file) into its damaged/ folder instead of refusing to start",
        apply: |s, v| {
            s.config.repair = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "max_payload",
        flag: "max-payload",
        env: "AGORA_MAX_PAYLOAD",
        default: Some("1048576"),
        default_note: "1 MiB",
        valid: "1 to 67108864 (64 MiB) bytes",
        doc: "Largest payload a client may publish, in bytes (headers included)",
        apply: |s, v| {
            s.config.max_payload = count(unsigned(v, 1, Some(64 * 1024 * 1024))?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "max_connections",
        flag: "max-connections",
        env: "AGORA_MAX_CONNECTIONS",
        default: Some("10000"),
        valid: "1 or more",
        doc: "Most simultaneous client connections",
        apply: |s, v| {
            s.config.max_connections = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "queue_max_messages",
        flag: "queue-max-messages",
        env: "AGORA_QUEUE_MAX_MESSAGES",
        default: Some("100000"),
        valid: "1 or more",
        doc: "Most messages a memory-only queue holds (pending and unacknowledged together)",
        apply: |s, v| {
            s.config.queue_max_messages = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "queue_max_bytes",
        flag: "queue-max-bytes",
        env: "AGORA_QUEUE_MAX_BYTES",
        default: Some("268435456"),
        default_note: "256 MiB",
        valid: "1 or more bytes",
        doc: "Most payload bytes a memory-only queue holds (pending and unacknowledged together)",
        apply: |s, v| {
            s.config.queue_max_bytes = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "durable_queue_max_messages",
        flag: "durable-queue-max-messages",
        env: "AGORA_DURABLE_QUEUE_MAX_MESSAGES",
        default: Some("10000000"),
        valid: "1 or more",
        doc: "Most messages a durable queue holds (pending and unacknowledged together); its backlog waits on disk, and each waiting message keeps about 130 bytes in memory",
        apply: |s, v| {
            s.config.durable_queue_max_messages = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "durable_queue_max_bytes",
        flag: "durable-queue-max-bytes",
        env: "AGORA_DURABLE_QUEUE_MAX_BYTES",
        default: Some("17179869184"),
        default_note: "16 GiB",
        valid: "1 or more bytes",
        doc: "Most payload bytes a durable queue holds (pending and unacknowledged together); --max-disk bounds all of them together",
        apply: |s, v| {
            s.config.durable_queue_max_bytes = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "durable_queue_memory",
        flag: "durable-queue-memory",
        env: "AGORA_DURABLE_QUEUE_MEMORY",
        default: Some("8388608"),
        default_note: "8 MiB",
        valid: "1 or more bytes",
        doc: "Most bytes of a durable queue's waiting messages kept in memory, each counted as the memory budget counts it (256 KiB while the budget is more than half spent); the rest wait in the log and are read back as consumers get there",
        apply: |s, v| {
            s.config.durable_queue_memory = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "default_prefetch",
        flag: "default-prefetch",
        env: "AGORA_DEFAULT_PREFETCH",
        default: Some("256"),
        valid: "1 to 65536",
        doc: "Prefetch of a queue consumer that gives none",
        apply: |s, v| {
            s.config.default_prefetch = signed(v, 1, 65_536)? as u32;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "subscriber_buffer",
        flag: "subscriber-buffer",
        env: "AGORA_SUBSCRIBER_BUFFER",
        default: Some("8192"),
        valid: "1 or more messages",
        doc: "Messages buffered per topic subscriber before the slow-consumer policy applies",
        apply: |s, v| {
            s.config.subscriber_buffer = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "slow_consumer",
        flag: "slow-consumer",
        env: "AGORA_SLOW_CONSUMER",
        default: Some("drop-oldest"),
        valid: "`drop-oldest` or `disconnect`",
        doc: "What happens to a topic subscriber whose buffer is full",
        choices: SLOW_CONSUMER,
        apply: |s, v| {
            s.config.slow_consumer = match choice(text(v)?, SLOW_CONSUMER)? {
                "disconnect" => SlowConsumerPolicy::Disconnect,
                _ => SlowConsumerPolicy::DropOldest,
            };
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "idle_timeout",
        flag: "idle-timeout",
        env: "AGORA_IDLE_TIMEOUT",
        default: Some("60"),
        valid: "1 or more seconds (a plain number)",
        doc: "Seconds an unused, empty destination is kept before it is removed",
        apply: |s, v| {
            s.config.idle_timeout = std::time::Duration::from_secs(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "max_deliveries",
        flag: "max-deliveries",
        env: "AGORA_MAX_DELIVERIES",
        default: Some("10"),
        valid: "0 to 4294967295; 0 never dead-letters",
        doc: "Deliveries after which a queue message goes to its dead-letter queue (0: never)",
        apply: |s, v| {
            s.config.max_deliveries = signed(v, 0, u32::MAX.into())? as u32;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "message_ttl",
        flag: "message-ttl",
        env: "AGORA_MESSAGE_TTL",
        default_note: "none (messages never expire)",
        valid: "a [duration](#durations)",
        doc: "How long a queue message may wait undelivered before it is dead-lettered (e.g. 30s, 500ms; default: forever)",
        apply: |s, v| {
            s.config.message_ttl = Some(duration(v)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "ack_timeout",
        flag: "ack-timeout",
        env: "AGORA_ACK_TIMEOUT",
        default_note: "none (a delivery is held until its consumer leaves)",
        valid: "a [duration](#durations)",
        doc: "How long a queue delivery may stay unacknowledged before another consumer gets it (e.g. 30s; default: until the consumer leaves)",
        apply: |s, v| {
            s.config.ack_timeout = Some(duration(v)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "dedup_window",
        flag: "dedup-window",
        env: "AGORA_DEDUP_WINDOW",
        default: Some("2m"),
        valid: "a [duration](#durations); 0s remembers no ids",
        doc: "How long a queue remembers the message id (agora-msg-id) of a message it accepted: a publish repeating it within the window is confirmed again and not stored twice",
        apply: |s, v| {
            s.config.dedup_window = duration(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "dedup_ids",
        flag: "dedup-ids",
        env: "AGORA_DEDUP_IDS",
        default: Some("100000"),
        valid: "0 or more; 0 remembers no ids",
        doc: "Most message ids a queue remembers at once (the oldest is forgotten first); each costs its length and 96 bytes of the memory budget",
        apply: |s, v| {
            s.config.dedup_ids = unsigned(v, 0, None)? as usize;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "max_destinations",
        flag: "max-destinations",
        env: "AGORA_MAX_DESTINATIONS",
        default: Some("10000"),
        valid: "1 or more",
        doc: "Most destinations at once: queues, and topics with a subscriber of their own or a chain (a topic only wildcard subscriptions match is not one; the broker's own $ topics, its metrics and the inboxes, do not count)",
        apply: |s, v| {
            s.config.max_destinations = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "memory_budget",
        flag: "memory-budget",
        env: "AGORA_MEMORY_BUDGET",
        default: Some("1073741824"),
        default_note: "1 GiB",
        valid: "1 or more bytes",
        doc: "Most bytes of messages the broker holds in queues and subscriber buffers together, each counted as its payload and headers plus 128 bytes and its destination's name",
        apply: |s, v| {
            s.config.memory_budget = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "max_output",
        flag: "max-output",
        env: "AGORA_MAX_OUTPUT",
        default: Some("1048576"),
        default_note: "1 MiB",
        valid: "1 or more bytes, per connection",
        doc: "Most bytes of replies queued for one connection and not yet written; past it the connection is not read until they are (one reply is always taken when none is queued)",
        apply: |s, v| {
            s.config.max_output = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "read_budget",
        flag: "read-budget",
        env: "AGORA_READ_BUDGET",
        default: Some("67108864"),
        default_note: "64 MiB",
        valid: "at least 4 × (max payload + max line) bytes",
        doc: "Most bytes of partly received frames all connections hold between reads; a connection holding part of a frame waits (is not read) while there is no room for one more whole frame",
        apply: |s, v| {
            s.config.read_budget = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "read_wait",
        flag: "read-wait",
        env: "AGORA_READ_WAIT",
        default: Some("10s"),
        valid: "a [duration](#durations)",
        doc: "A connection holding part of a frame that waits this long for room in the read budget is closed",
        apply: |s, v| {
            s.config.read_wait = duration(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "rss_limit",
        flag: "rss-limit",
        env: "AGORA_RSS_LIMIT",
        default_note: "1.5 × the memory budget plus the read budget",
        valid: "1 or more bytes",
        doc: "While the broker's resident memory is above this, publishes are refused with memory_limit (checked every metric interval)",
        apply: |s, v| {
            s.config.rss_limit = Some(count(unsigned(v, 1, None)?));
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "write_timeout",
        flag: "write-timeout",
        env: "AGORA_WRITE_TIMEOUT",
        default: Some("10s"),
        valid: "a [duration](#durations)",
        doc: "A batch of output (at most 64 KiB) not written to a client within this closes its connection: the client does not read",
        apply: |s, v| {
            s.config.write_timeout = duration(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "max_subscriptions",
        flag: "max-subscriptions",
        env: "AGORA_MAX_SUBSCRIPTIONS",
        default: Some("1024"),
        valid: "1 or more, per connection",
        doc: "Most subscriptions on one connection",
        apply: |s, v| {
            s.config.max_subscriptions = count(unsigned(v, 1, None)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "ping_interval",
        flag: "ping-interval",
        env: "AGORA_PING_INTERVAL",
        default: Some("30s"),
        valid: "a [duration](#durations)",
        doc: "A client silent this long is sent PINGREQ (e.g. 30s)",
        apply: |s, v| {
            s.config.ping_interval = duration(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "max_missed_pings",
        flag: "max-missed-pings",
        env: "AGORA_MAX_MISSED_PINGS",
        default: Some("2"),
        valid: "1 to 4294967295",
        doc: "Unanswered pings after which a client is disconnected",
        apply: |s, v| {
            s.config.max_missed_pings = signed(v, 1, u32::MAX.into())? as u32;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "udp_idle_timeout",
        flag: "udp-idle-timeout",
        env: "AGORA_UDP_IDLE_TIMEOUT",
        default: Some("60s"),
        valid: "a [duration](#durations)",
        doc: "A UDP client not heard from this long is forgotten (e.g. 60s)",
        apply: |s, v| {
            s.config.udp_idle_timeout = duration(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "udp_max_datagram",
        flag: "udp-max-datagram",
        env: "AGORA_UDP_MAX_DATAGRAM",
        default: Some("1400"),
        valid: "64 to 65507 bytes",
        doc: "Largest datagram the broker sends to UDP clients, in bytes",
        apply: |s, v| {
            s.config.udp_max_datagram = count(unsigned(v, 64, Some(65_507))?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "statsd",
        flag: "statsd",
        env: "AGORA_STATSD",
        value_name: Some("HOST:PORT"),
        default_note: "none (no StatsD)",
        valid: "`host:port` of a StatsD server, UDP",
        doc: "Send metrics to this StatsD server (host:port, UDP)",
        apply: |s, v| {
            s.config.statsd = Some(text(v)?.to_owned());
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "statsd_prefix",
        flag: "statsd-prefix",
        env: "AGORA_STATSD_PREFIX",
        default: Some("agora"),
        valid: "a metric-name prefix",
        doc: "Prefix of every StatsD metric name",
        apply: |s, v| {
            s.config.statsd_prefix = text(v)?.to_owned();
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "statsd_interval",
        flag: "statsd-interval",
        env: "AGORA_STATSD_INTERVAL",
        default: Some("1s"),
        valid: "a [duration](#durations)",
        doc: "How often metrics go to StatsD and to the $sys.metrics topic (e.g. 1s)",
        apply: |s, v| {
            s.config.metrics_interval = duration(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "profile",
        flag: "profile",
        env: "AGORA_PROFILE",
        kind: Kind::Switch,
        default_note: "off",
        valid: "a flag; the variable and the file take `true` or `false`",
        doc: "Record a CPU profile for the broker's whole life, written at shutdown in pprof's protobuf format, with a flamegraph SVG beside it",
        apply: |s, v| {
            s.profile = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "profile_path",
        flag: "profile-path",
        env: "AGORA_PROFILE_PATH",
        value_name: Some("FILE"),
        kind: Kind::Path,
        default: Some("agora.pprof"),
        valid: "a file path",
        doc: "Where --profile writes (the flamegraph goes to the same path with .svg)",
        apply: |s, v| {
            s.profile_path = path(v)?;
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "threads",
        flag: "threads",
        env: "AGORA_THREADS",
        value_name: Some("N"),
        default_note: "one per core",
        valid: "1 to 1024 worker threads of the broker's executor (see `SMOL_THREADS` below)",
        doc: "Executor threads that run the broker's tasks (default: one per core; the SMOL_THREADS variable is read too when this is not given)",
        apply: |s, v| {
            s.threads = Some(count(unsigned(v, 1, Some(1024))?));
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "queue_channel",
        flag: "queue-channel",
        env: "AGORA_QUEUE_CHANNEL",
        default: Some("512"),
        valid: "1 to 1000000",
        doc: "Capacity of each queue's command channel (publishers wait when it is full)",
        hidden: true,
        apply: |s, v| {
            s.config.queue_channel = count(unsigned(v, 1, Some(1_000_000))?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "ablate",
        flag: "ablate",
        env: "AGORA_ABLATE",
        kind: Kind::List,
        default_note: "none",
        valid: "comma-separated: `no-batching`, `copy-fanout`, `no-defences`, `no-metrics`, `no-publish-batching`",
        doc: "Switch design choices off to measure them (comma-separated)",
        choices: ABLATE,
        hidden: true,
        apply: |s, v| {
            let a = &mut s.config.ablation;
            for name in text(v)?.split(',') {
                match choice(name, ABLATE)? {
                    "no-batching" => a.no_batching = true,
                    "copy-fanout" => a.copy_fanout = true,
                    "no-defences" => a.no_defences = true,
                    "no-metrics" => a.no_metrics = true,
                    _ => a.no_publish_batching = true,
                }
            }
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "log_config",
        flag: "log-config",
        env: "AGORA_LOG_CONFIG",
        value_name: Some("FILE"),
        kind: Kind::Path,
        default_note: "the built-in configuration",
        valid: "a path to a Seelog-style XML file (see [Logging](logging.md))",
        doc: "Seelog-style XML file that configures logging (default: the built-in one, which is `config/logconfig.xml` in the repository)",
        apply: |s, v| {
            s.log_config = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
    Setting {
        key: "config",
        flag: "config",
        env: "AGORA_CONFIG",
        value_name: Some("FILE"),
        kind: Kind::Path,
        default_note: "none",
        valid: "a path to a TOML file (see [the config file](#the-config-file)); not in the file itself",
        doc: "TOML file declaring broker settings, destinations, their mutator chains and queue settings, and the enrichment databases chains may name (see the book's Configuration chapter)",
        in_file: false,
        apply: |s, v| {
            s.config_file = Some(path(v)?);
            Ok(())
        },
        ..BASE
    },
];

/// `ID=HOST:PORT,...`: ids from 1, distinct.
fn parse_peers(t: &str) -> Result<Vec<(u64, String)>, String> {
    let mut peers: Vec<(u64, String)> = Vec::new();
    for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|&n| n >= 1 && n <= i64::MAX as u64)
            .ok_or_else(|| format!("'{id}' in '{part}' is not a node id (1 to 2^63)"))?;
        let addr = addr.trim();
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(format!("'{addr}' in '{part}' is not HOST:PORT")),
        }
        if peers.iter().any(|(p, _)| *p == id) {
            return Err(format!("node {id} is listed twice"));
        }
        peers.push((id, addr.to_owned()));
    }
    if peers.is_empty() {
        return Err("no node listed".to_owned());
    }
    Ok(peers)
}
