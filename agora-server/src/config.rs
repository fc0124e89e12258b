//! The broker's settings: every limit and policy in one plain struct, with defaults.
//! The binary fills it from the command line; tests build it directly.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// What happens when a topic subscriber's buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Drop that subscriber's oldest buffered message to make room, and count the drop.
    DropOldest,
    /// End that subscription with `CANCEL <sid> slow_consumer`.
    Disconnect,
}

/// Everything the broker can be told at start.
#[derive(Debug, Clone)]
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
    /// How long a destination must be idle (empty, unused) before it is removed.
    pub idle_timeout: Duration,
    /// How long graceful shutdown may take before connections are dropped.
    pub shutdown_timeout: Duration,
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
            default_prefetch: 256,
            max_prefetch: 65_536,
            subscriber_buffer: 8_192,
            slow_consumer: SlowConsumerPolicy::DropOldest,
            reply_buffer: 8_192,
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Defaults, listening on `127.0.0.1` and a free port: what tests use.
    pub fn ephemeral() -> Config {
        Config {
            port: 0,
            ..Config::default()
        }
    }
}
