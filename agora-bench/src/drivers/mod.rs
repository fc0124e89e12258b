//! One driver per system: how to connect, publish, subscribe and consume. The scenarios
//! (`crate::scenario`) are written once against these traits.
//!
//! Each role of a scenario (a publisher, a subscriber) runs on a thread of its own under
//! [`Driver::block_on`]; a system's own I/O runs elsewhere (Agora's client driver
//! thread, a one-worker tokio runtime for the peers, the kernel for the raw relay), so a
//! role may block its thread while it paces itself or waits for its window.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub(crate) mod agora;
pub(crate) mod agora_lean;
#[cfg(feature = "peers")]
pub(crate) mod jetstream;
pub(crate) mod lean;
pub(crate) mod mqtt_lean;
#[cfg(feature = "peers")]
pub(crate) mod nats;
pub(crate) mod nats_lean;
#[cfg(feature = "peers")]
pub(crate) mod rabbitmq;
pub(crate) mod raw;
#[cfg(feature = "peers")]
pub(crate) mod redis;
pub(crate) mod redis_lean;

pub(crate) type Result<T, E = String> = std::result::Result<T, E>;

/// Where messages go.
#[derive(Debug, Clone)]
pub(crate) struct Dest {
    pub(crate) queue: bool,
    pub(crate) name: String,
}

/// How a receiver takes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A topic subscriber: every message.
    Topic,
    /// A competing consumer that does not acknowledge explicitly.
    AutoAck { prefetch: u32 },
    /// A competing consumer that acknowledges each message after taking it.
    Ack { prefetch: u32 },
}

pub(crate) trait Driver: Clone + Send + Sync + 'static {
    type Pub: Publisher;
    type Sub: Subscriber;
    /// Runs one role to completion on the calling thread (by default by polling it
    /// there: right for drivers whose I/O is the calling thread's own, or another
    /// thread's, as the SDK's driver thread).
    fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        futures_lite::future::block_on(fut)
    }
    fn publisher(&self, dest: &Dest) -> impl Future<Output = Result<Self::Pub>>;
    /// Returns once the broker has registered the subscription.
    fn subscriber(&self, dest: &Dest, mode: Mode) -> impl Future<Output = Result<Self::Sub>>;
    /// What this driver's connections negotiated below the protocol (the TLS rows:
    /// version, cipher suite, key exchange), for the record.
    fn negotiated(&self) -> Option<String> {
        None
    }
}

pub(crate) trait Publisher {
    /// Fire-and-forget publish.
    fn publish(&mut self, payload: Bytes) -> impl Future<Output = Result<()>>;
    /// Puts whatever this client buffered on the wire now (called before any wait).
    fn push(&mut self) -> impl Future<Output = Result<()>>;
    /// Returns once the broker has handled everything published before, as far as the
    /// system lets a client know; fails if the broker refused any of it.
    fn sync(&mut self) -> impl Future<Output = Result<()>>;
    /// Publishes and waits for the broker's confirmation. Called concurrently.
    fn publish_confirmed(&self, payload: Bytes) -> impl Future<Output = Result<()>>;
    fn close(self) -> impl Future<Output = Result<()>>;
}

pub(crate) trait Subscriber {
    /// The next payload, or `None` if none came within `wait`.
    fn next(&mut self, wait: Duration) -> impl Future<Output = Result<Option<Bytes>>>;
    /// Messages the client library itself dropped (a full local buffer), if it counts them.
    fn dropped(&self) -> u64 {
        0
    }
    fn close(self) -> impl Future<Output = Result<()>>;
}
