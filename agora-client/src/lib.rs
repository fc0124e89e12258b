//! The Agora client SDK: publish to and subscribe to topics, produce to and consume
//! queues, over the wire protocol of `agora-protocol`.
//!
//! ```no_run
//! # futures_lite::future::block_on(async {
//! use futures_lite::StreamExt;
//!
//! let client = agora_client::Client::connect("127.0.0.1:48879").await?;
//! let mut prices = client.subscribe("prices").await?;
//! client.publish("prices", "101.5").await?;
//! let msg = prices.next().await.unwrap();
//! assert_eq!(msg.payload(), "101.5");
//!
//! let jobs = client.queue("jobs")?;
//! jobs.publish_confirmed("resize 42.png").await?; // waits for the broker's PUBACK
//! let mut consumer = jobs.consume(16).await?;
//! let job = consumer.next().await.unwrap();
//! job.ack().await?;
//! client.close().await?;
//! # Ok::<(), agora_client::Error>(())
//! # });
//! ```
//!
//! # Design
//!
//! - **No runtime is assumed.** [`Client::connect`] does the handshake on the caller's
//!   executor (any: the socket is an `async-net` one, driven by `async-io`'s reactor),
//!   then hands it to a **driver**, which writes, and a **reader**, which reads. By
//!   default both run on the process's shared I/O threads (half the cores, at most
//!   four; [`set_shared_threads`]), so a client costs no thread of its own;
//!   [`Threads::Dedicated`] gives a connection two threads on a blocking socket
//!   instead, each woken by the kernel directly, for shorter round trips. Every handle ([`Client`], [`Subscription`], [`Consumer`],
//!   [`Delivery`]) talks to the driver over channels and buffers, so the client works
//!   the same under smol, a plain `futures_lite::future::block_on`, or any other
//!   executor.
//! - **Batched writes.** A fire-and-forget publish is encoded by its caller into a
//!   shared buffer ([`ClientBuilder::publish_buffer`]); the driver swaps that buffer
//!   out, adds every command waiting for it and writes it all with one call. While a
//!   publisher streams (publishes arrived during the last write), the driver gathers
//!   up to 64 KiB before it writes, waiting at most [`ClientBuilder::publish_linger`]
//!   (50 µs by default).
//! - **Request ids.** Every request that gets an answer carries `#rid`; answers are
//!   matched by it, so any number of requests can be in flight from many tasks.
//! - **Bounded buffers.** Publishes wait for room in the publish buffer, requests in
//!   the driver's command queue ([`ClientBuilder::command_buffer`]). A topic subscription buffers
//!   [`ClientBuilder::subscription_buffer`] messages; when the application does not
//!   drain it, the *oldest* is dropped and counted ([`Subscription::dropped`]), as the
//!   broker does, so one slow subscription never stalls the connection. A queue
//!   consumer's buffer holds its prefetch, which the broker never exceeds; nothing is
//!   dropped there (a delivery that would not fit is given back with `NACK`).
//! - **Errors without a waiter are not lost.** An `ERR` about a fire-and-forget publish
//!   (say `queue_full`), or a `CANCEL` of a subscription, is logged with `log::warn!`
//!   and sent to [`Client::errors`].
//! - **TLS and credentials** are off by default. [`ClientBuilder::tls`],
//!   [`ClientBuilder::ca_file`] and [`ClientBuilder::client_cert`] speak TLS (rustls,
//!   ring's crypto) to a broker started with `--tls-cert`;
//!   [`ClientBuilder::credentials`] sends a user and password in `CONNECT`. A refusal
//!   says what failed and names the broker's address: [`Error::CertificateNotTrusted`],
//!   [`Error::Tls`], [`Error::AuthFailed`]; a file that cannot be used is named in
//!   [`Error::TlsFile`].
//! - **Reconnect** is off by default. With a [`Reconnect`] policy the driver reconnects
//!   with exponential backoff and subscribes again: each [`Subscription`] and
//!   [`Consumer`] keeps yielding from the same stream. What can be lost: topic messages
//!   published while the client was away, and fire-and-forget publishes written just
//!   before the connection broke. What cannot: queue deliveries that were not acked
//!   come back, marked redelivered; a confirmed publish the lost connection never
//!   answered is published again on the next one, with a message id
//!   (`agora-msg-id`, added unless the headers have one), so a queue keeps it once. A [`Delivery`] from before the reconnect cannot be
//!   acked: [`Delivery::ack`] returns [`Error::StaleDelivery`].
//!
//! The book's *Client SDK* chapter tells the same story at more length.
#![warn(missing_docs, rust_2018_idioms)]

// Module map, leaves first: a module imports only modules above it in this list
// (`cargo xtask cycles` fails otherwise).
//
// - `error`, `options`: the error types and the error stream; the settings.
// - `tls`: the rustls configuration made from the settings, and TLS's errors.
// - `inbox`, `pubbuf`: the buffers between handles and threads: one inbox per
//   subscription, filled by the reader; the publish buffer, filled by publishers
//   (and by consumers, with their acks and nacks).
// - `driver`: the threads that own the socket (connect, writer, reader).
// - `message`: what the application receives, `Message` and `Delivery`.
// - `client`: the `Client` handle, its requests, the plumbing of publish and subscribe.
// - `sub`: the streams, `Subscription` and `Consumer`.
// - `topic`, `queue`: the `Topic` and `Queue` handles and the client's shortcuts.
// - `typed`: typed payloads and the typed `STATS` document (feature `serde`).
// - `admin`: `STATS`, `PURGE`, `DELETE`, mutator chains.
// - `builder`: `ClientBuilder`, and the connect that starts the driver.
// - `udp`: `UdpPublisher`, which needs none of the above.

mod admin;
mod builder;
mod client;
mod driver;
mod endpoint;
mod error;
mod events;
mod inbox;
mod message;
mod options;
mod pool;
mod pubbuf;
mod queue;
mod request;
mod stats;
mod sub;
mod tls;
mod topic;
#[cfg(feature = "serde")]
mod typed;
mod udp;

use std::sync::{Mutex, MutexGuard};

pub use agora_protocol::bytes::Bytes;
pub use agora_protocol::{
    Destination, DestinationError, ErrorCode, HeaderError, Headers, Info as ServerInfo, Kind, Nack,
    NameError, ProtocolError, StatsPage,
};

pub use builder::ClientBuilder;
pub use client::{Client, PublishOutcome};
pub use endpoint::Endpoint;
pub use error::{Error, ErrorKind, ErrorStream, Result, ServerError};
pub use events::{Event, EventStream};
pub use message::{Delivery, Message};
pub use options::{Overflow, Reconnect, Threads};
pub use pool::{set_shared_threads, MAX_SHARED_THREADS};
pub use queue::Queue;
pub use stats::{
    BindingStats, BoundQueueStats, BrokerStats, ClientCounts, ClusterStats, ConnectionStats,
    ConnectionsPage, ConnectionsPageInfo, DestinationStats, LatencyStats, MemoryStats, PageStats,
    PeerStats, ReplicatedQueueStats, Stats, UnlistedTopicStats, WildcardPatternStats,
    WildcardStats,
};
pub use sub::{Consumer, Subscription};
pub use topic::Topic;
#[cfg(feature = "serde")]
pub use typed::{
    TypedConsumer, TypedDelivery, TypedQueue, TypedSubscription, TypedTopic, Undecoded,
};
pub use udp::UdpPublisher;

/// A mutex's guard, poisoned or not: every lock in the client guards state that stays
/// consistent at each step, so a panic elsewhere while holding it leaves nothing torn.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The broker's address when none is given: `127.0.0.1:48879`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:48879";
