//! The systems the bench compares: a broker and the client that drives it.

use clap::ValueEnum;

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub(crate) enum System {
    /// The Agora broker (the release `agora` binary), through agora-client: what an
    /// application sees.
    Agora,
    /// The Agora broker through a lean blocking client of its protocol (the same
    /// buffering as `nats-lean`): what the broker bounds.
    AgoraLean,
    /// nats-server, through async-nats: what an application sees.
    Nats,
    /// nats-server, through a lean blocking client of its text protocol (the same
    /// buffering as the relay's): what the server bounds.
    NatsLean,
    /// redis-server, through the redis crate: what an application sees.
    Redis,
    /// redis-server, through a lean blocking client of RESP, pipelined: what the server
    /// bounds.
    RedisLean,
    /// A null relay that forwards bytes without parsing them: the ceiling.
    Raw,
}

impl System {
    pub(crate) const ALL: [System; 7] = [
        System::Agora,
        System::AgoraLean,
        System::Nats,
        System::NatsLean,
        System::Redis,
        System::RedisLean,
        System::Raw,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Agora => "agora",
            System::AgoraLean => "agora-lean",
            System::Nats => "nats",
            System::NatsLean => "nats-lean",
            System::Redis => "redis",
            System::RedisLean => "redis-lean",
            System::Raw => "raw",
        }
    }
}
