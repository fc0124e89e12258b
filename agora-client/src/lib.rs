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
//!   then makes the socket a plain blocking one and hands it to a **driver** running on
//!   a thread of its own under `async_io::block_on`, which writes, and to a reader
//!   thread per connection, which reads (each woken by the kernel directly, not through
//!   the process's one reactor). Every handle ([`Client`], [`Subscription`],
//!   [`Consumer`], [`Delivery`]) talks to the driver over channels and buffers, so the
//!   client works the same under smol, a plain `futures_lite::future::block_on`, or any
//!   other executor. Two threads per client are the price; they sleep while idle.
//! - **Batched writes.** A fire-and-forget publish is encoded by its caller into a
//!   shared buffer ([`ClientBuilder::publish_buffer`]); the driver swaps that buffer
//!   out, adds every command waiting for it and writes it all with one call.
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
//! - **Reconnect** is off by default. With a [`Reconnect`] policy the driver reconnects
//!   with exponential backoff and subscribes again: each [`Subscription`] and
//!   [`Consumer`] keeps yielding from the same stream. What can be lost: topic messages
//!   published while the client was away, and fire-and-forget publishes written just
//!   before the connection broke. What cannot: queue deliveries that were not acked
//!   come back, marked redelivered. A [`Delivery`] from before the reconnect cannot be
//!   acked: [`Delivery::ack`] returns [`Error::StaleDelivery`].
//!
//! The book's *Client SDK* chapter tells the same story at more length.
#![warn(missing_docs, rust_2018_idioms)]

mod driver;
mod error;
mod inbox;
mod message;
mod pubbuf;
mod sub;
#[cfg(feature = "serde")]
mod typed;
mod udp;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use agora_protocol::bytes::Bytes;
pub use agora_protocol::{Destination, ErrorCode, Headers, Info as ServerInfo, Kind};
use async_channel::{Receiver, Sender};

use driver::{Answer, Cmd, Ctl, Driver, Reply, Shared, SubEntry};
pub use error::{Error, Result, ServerError};
pub use message::{Delivery, Message};
pub use sub::{Consumer, Subscription};
#[cfg(feature = "serde")]
pub use typed::{
    BrokerStats, ClientCounts, DestinationStats, LatencyStats, MemoryStats, Stats, TypedConsumer,
    TypedDelivery, TypedQueue, TypedSubscription, TypedTopic,
};
pub use udp::UdpPublisher;

/// A mutex's guard, poisoned or not: every lock in the client guards state that stays
/// consistent at each step, so a panic elsewhere while holding it leaves nothing torn.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The broker's address when none is given: `127.0.0.1:48879`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:48879";

/// How to reconnect after the connection is lost: exponential backoff from
/// `initial_delay`, doubling up to `max_delay`, for at most `max_attempts` tries in a
/// row (`None`: forever, until [`Client::close`]).
///
/// ```
/// use std::time::Duration;
/// let policy = agora_client::Reconnect::default()
///     .initial_delay(Duration::from_millis(100))
///     .max_delay(Duration::from_secs(10))
///     .max_attempts(Some(20));
/// assert_eq!(policy.max_attempts, Some(20));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    /// The wait before the first attempt.
    pub initial_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
    /// Attempts in a row before giving up and closing the client; `None`: no limit.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    /// 50 ms, doubling up to 5 s, forever.
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// Sets the wait before the first attempt.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = agora_client::Reconnect::default().initial_delay(Duration::from_millis(10));
    /// assert_eq!(p.initial_delay, Duration::from_millis(10));
    /// ```
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }

    /// Sets the longest wait between attempts.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = agora_client::Reconnect::default().max_delay(Duration::from_secs(1));
    /// assert_eq!(p.max_delay, Duration::from_secs(1));
    /// ```
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Sets how many attempts in a row are made before giving up.
    ///
    /// ```
    /// let p = agora_client::Reconnect::default().max_attempts(Some(3));
    /// assert_eq!(p.max_attempts, Some(3));
    /// ```
    pub fn max_attempts(mut self, n: Option<u32>) -> Self {
        self.max_attempts = n;
        self
    }
}

/// The builder's settings.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    name: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_payload: usize,
    reconnect: Option<Reconnect>,
    subscription_buffer: usize,
    command_buffer: usize,
    publish_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_payload: agora_protocol::DEFAULT_MAX_PAYLOAD,
            reconnect: None,
            subscription_buffer: 1024,
            command_buffer: 1024,
            publish_buffer: 256 * 1024,
        }
    }
}

/// Options for a [`Client`]; [`ClientBuilder::connect`] makes it.
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use std::time::Duration;
/// let client = agora_client::Client::builder()
///     .name("billing")
///     .connect_timeout(Duration::from_secs(2))
///     .request_timeout(Duration::from_secs(5))
///     .max_payload(64 * 1024)
///     .reconnect(agora_client::Reconnect::default())
///     .connect("127.0.0.1:48879")
///     .await?;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    opts: Options,
}

impl ClientBuilder {
    /// The client's name, sent in `CONNECT` and shown in the broker's logs. A token:
    /// blanks and control bytes become `_` on the wire.
    ///
    /// ```
    /// let b = agora_client::Client::builder().name("billing");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// How long connecting and the handshake may take (default 5 s); also applies to
    /// each reconnect attempt.
    ///
    /// ```
    /// let b = agora_client::Client::builder().connect_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.opts.connect_timeout = d;
        self
    }

    /// How long a request (subscribe, confirmed publish, ping, stats, unsubscribe) may
    /// wait for its answer before [`Error::Timeout`] (default 10 s).
    ///
    /// ```
    /// let b = agora_client::Client::builder().request_timeout(std::time::Duration::from_secs(3));
    /// ```
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.opts.request_timeout = d;
        self
    }

    /// The largest payload (header block included) this client publishes (default
    /// 1 MiB). The broker's own limit from `INFO` applies too, whichever is smaller; a
    /// publish over it fails locally with [`Error::PayloadTooLarge`].
    ///
    /// ```
    /// let b = agora_client::Client::builder().max_payload(4096);
    /// ```
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.opts.max_payload = bytes;
        self
    }

    /// Reconnect after the connection is lost, with this policy (default: off; a lost
    /// connection closes the client).
    ///
    /// ```
    /// let b = agora_client::Client::builder().reconnect(agora_client::Reconnect::default());
    /// ```
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.opts.reconnect = Some(policy);
        self
    }

    /// Messages buffered per topic subscription before the oldest is dropped (default
    /// 1024, at least 1).
    ///
    /// ```
    /// let b = agora_client::Client::builder().subscription_buffer(10_000);
    /// ```
    pub fn subscription_buffer(mut self, n: usize) -> Self {
        self.opts.subscription_buffer = n.max(1);
        self
    }

    /// Commands (requests, confirmed publishes) queued for the connection before the
    /// caller waits (default 1024, at least 1).
    ///
    /// ```
    /// let b = agora_client::Client::builder().command_buffer(4096);
    /// ```
    pub fn command_buffer(mut self, n: usize) -> Self {
        self.opts.command_buffer = n.max(1);
        self
    }

    /// Bytes of encoded fire-and-forget publishes buffered for the connection before a
    /// publisher waits (default 256 KiB, at least 1). A publish that finds room may
    /// take the buffer past the limit by its own size.
    ///
    /// ```
    /// let b = agora_client::Client::builder().publish_buffer(1 << 20);
    /// ```
    pub fn publish_buffer(mut self, bytes: usize) -> Self {
        self.opts.publish_buffer = bytes.max(1);
        self
    }

    /// Connects to `addr` (`host:port`), reads the broker's `INFO`, sends `CONNECT`
    /// and waits for its `OK`, then starts the driver thread.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::builder().name("me").connect("127.0.0.1:48879").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn connect(self, addr: impl ToString) -> Result<Client> {
        let addr = addr.to_string();
        let opts = self.opts;
        let conn = driver::handshake(&addr, &opts).await?;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(1),
            info: Mutex::new(conn.info.clone()),
            closed: AtomicBool::new(false),
            next_sid: AtomicU64::new(1),
            server_max_payload: AtomicU64::new(conn.info.max_payload),
            pubs: pubbuf::PubBuf::new(opts.publish_buffer),
        });
        let (cmd_tx, cmd_rx) = async_channel::bounded(opts.command_buffer);
        let (ctl_tx, ctl_rx) = async_channel::unbounded();
        let (err_tx, err_rx) = async_channel::bounded(256);
        let driver = Driver::new(
            addr.clone(),
            opts.clone(),
            shared.clone(),
            cmd_rx,
            (ctl_tx.clone(), ctl_rx),
            err_tx,
        );
        std::thread::Builder::new()
            .name("agora-client".to_owned())
            .spawn(move || async_io::block_on(driver.run(conn)))?;
        Ok(Client {
            inner: Arc::new(Inner {
                addr,
                opts,
                shared,
                cmd: cmd_tx,
                ctl: ctl_tx,
                errors: err_rx,
            }),
        })
    }
}

struct Inner {
    addr: String,
    opts: Options,
    shared: Arc<Shared>,
    cmd: Sender<Cmd>,
    ctl: Sender<Ctl>,
    errors: Receiver<ServerError>,
}

/// A connection to the broker. Cheap to clone: clones share the connection, which
/// lives while any clone, [`Subscription`] or [`Consumer`] does.
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// client.publish("greetings", "hello").await?;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("generation", &self.generation())
            .finish()
    }
}

impl Client {
    /// Connects with default options; see [`ClientBuilder`] for the others.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn connect(addr: impl ToString) -> Result<Client> {
        ClientBuilder::default().connect(addr).await
    }

    /// A builder for a client with options.
    ///
    /// ```
    /// let builder = agora_client::Client::builder().name("inventory");
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The broker's `INFO` greeting (of the current connection, after a reconnect).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// println!("{} {}", client.server_info().server, client.server_info().version);
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn server_info(&self) -> ServerInfo {
        lock(&self.inner.shared.info).clone()
    }

    /// The connection generation: 1 for the first connection, one more per reconnect.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// assert_eq!(client.generation(), 1);
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn generation(&self) -> u64 {
        self.inner.shared.generation.load(SeqCst)
    }

    /// True once the client is closed: by [`close`](Client::close), or because the
    /// connection was lost and reconnecting is off or gave up.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// assert!(!client.is_closed());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(SeqCst)
    }

    /// A handle for publishing to and subscribing to the topic `name`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let prices = client.topic("prices.eu-west")?;
    /// prices.publish("101.5").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn topic(&self, name: &str) -> Result<Topic> {
        Ok(Topic {
            client: self.clone(),
            dest: Destination::topic(name)?,
        })
    }

    /// A handle for producing to and consuming the queue `name`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let jobs = client.queue("jobs")?;
    /// jobs.publish("job 1").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn queue(&self, name: &str) -> Result<Queue> {
        Ok(Queue {
            client: self.clone(),
            dest: Destination::queue(name)?,
        })
    }

    /// Publishes `payload` to the topic `topic`, fire-and-forget: returns once the
    /// publish is queued for the connection. A refusal arrives on
    /// [`errors`](Client::errors).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.publish("prices", "101.5").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<()> {
        self.topic(topic)?.publish(payload).await
    }

    /// Publishes to the topic `topic` with headers, fire-and-forget.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut h = agora_client::Headers::new();
    /// h.insert("Trace-Id", "ab12").unwrap();
    /// client.publish_with_headers("prices", h, "101.5").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_with_headers(
        &self,
        topic: &str,
        headers: Headers,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        self.topic(topic)?
            .publish_with_headers(headers, payload)
            .await
    }

    /// Subscribes to the topic `topic`; see [`Subscription`].
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut sub = client.subscribe("prices").await?;
    /// while let Some(msg) = sub.next().await {
    ///     println!("{:?}", msg.payload());
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        self.topic(topic)?.subscribe().await
    }

    /// Consumes the queue `queue` with manual acknowledgements: the broker sends at
    /// most `prefetch` deliveries that are not yet acked or nacked. See [`Consumer`].
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut jobs = client.consume("jobs", 8).await?;
    /// while let Some(job) = jobs.next().await {
    ///     job.ack().await?;
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn consume(&self, queue: &str, prefetch: u32) -> Result<Consumer> {
        self.queue(queue)?.consume(prefetch).await
    }

    /// Consumes the queue `queue`, acknowledging each delivery as the application
    /// takes it from the stream. See [`Queue::consume_auto_ack`].
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut logs = client.consume_auto_ack("logs", 64).await?;
    /// let first = logs.next().await;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn consume_auto_ack(&self, queue: &str, prefetch: u32) -> Result<Consumer> {
        self.queue(queue)?.consume_auto_ack(prefetch).await
    }

    /// Round trip to the broker (`PINGREQ`/`PINGRESP`); returns the time it took.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// println!("rtt {:?}", client.ping().await?);
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        self.request(|reply| Cmd::Ping { reply }).await?;
        Ok(start.elapsed())
    }

    /// Returns once everything this client queued before the call has reached the
    /// broker and been handled by it (a `PINGREQ` round trip: the broker answers in
    /// order). A refused fire-and-forget publish is reported on
    /// [`errors`](Client::errors) before `flush` returns.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.publish("prices", "1").await?;
    /// client.flush().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn flush(&self) -> Result<()> {
        self.request(|reply| Cmd::Ping { reply }).await.map(|_| ())
    }

    /// The broker's `STATS` document, as the JSON bytes it sent.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let json = client.stats_raw().await?;
    /// println!("{}", String::from_utf8_lossy(&json));
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn stats_raw(&self) -> Result<Bytes> {
        match self.request(|reply| Cmd::Stats { reply }).await? {
            Answer::Body(b) => Ok(b),
            _ => Err(Error::UnexpectedFrame("OK")),
        }
    }

    /// The broker's `STATS` document, parsed (the schema is in the book's Protocol
    /// chapter).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let stats = client.stats().await?;
    /// for d in &stats.destinations {
    ///     println!("{}:{} depth {}", d.kind, d.name, d.depth);
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    #[cfg(feature = "serde")]
    pub async fn stats(&self) -> Result<Stats> {
        let json = self.stats_raw().await?;
        serde_json::from_slice(&json).map_err(Error::Decode)
    }

    /// The broker's `STATS` document, as JSON bytes (built without the `serde`
    /// feature; with it, this returns a parsed `Stats`).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let json = client.stats().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    #[cfg(not(feature = "serde"))]
    pub async fn stats(&self) -> Result<Bytes> {
        self.stats_raw().await
    }

    /// Drops every pending (not yet delivered) message of a queue; the queue's
    /// consumers and their unacknowledged deliveries are untouched.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.purge("jobs").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn purge(&self, queue: &str) -> Result<()> {
        let dest = Destination::queue(queue).map_err(Error::InvalidName)?;
        self.request(|reply| Cmd::Request {
            frame: Box::new(move |rid| agora_protocol::ClientFrame::Purge { rid, dest }),
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Deletes a queue or topic: its subscribers are told (`CANCEL`), its messages
    /// are dropped. Using the name again creates a new, empty destination. Fails with
    /// `unknown_destination` if there is none.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::Destination;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.delete(Destination::queue("old-jobs").unwrap()).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn delete(&self, dest: Destination) -> Result<()> {
        self.request(|reply| Cmd::Request {
            frame: Box::new(move |rid| agora_protocol::ClientFrame::Delete { rid, dest }),
            reply,
        })
        .await
        .map(|_| ())
    }

    /// A destination's mutator chain (the book's Mutators chapter has the syntax), or
    /// `None` if it has none.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::Destination;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let t = Destination::topic("telemetry").unwrap();
    /// client.chain_set(t.clone(), "threshold /temp > 30 | sample 10").await?;
    /// assert_eq!(client.chain_get(t.clone()).await?.as_deref(), Some("threshold /temp > 30 | sample 10"));
    /// client.chain_clear(t).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn chain_get(&self, dest: Destination) -> Result<Option<String>> {
        let answer = self
            .request(|reply| Cmd::Request {
                frame: Box::new(move |rid| agora_protocol::ClientFrame::ChainGet { rid, dest }),
                reply,
            })
            .await?;
        match answer {
            Answer::Body(b) if b.is_empty() => Ok(None),
            Answer::Body(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            _ => Err(Error::UnexpectedFrame("OK")),
        }
    }

    /// Attaches a mutator chain to a destination, replacing any it had; it runs on
    /// every message published from then on. A chain that does not parse, or whose
    /// `enrich` names a database the broker's config file does not declare, fails with
    /// `bad_chain` and changes nothing. Blank text removes the chain.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::Destination;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.chain_set(Destination::queue("jobs").unwrap(), "set header:seen=now").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn chain_set(&self, dest: Destination, chain: &str) -> Result<()> {
        let chain = Bytes::copy_from_slice(chain.as_bytes());
        self.request(|reply| Cmd::Request {
            frame: Box::new(move |rid| agora_protocol::ClientFrame::ChainSet { rid, dest, chain }),
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Removes a destination's mutator chain (there need not be one).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::Destination;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.chain_clear(Destination::topic("telemetry").unwrap()).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn chain_clear(&self, dest: Destination) -> Result<()> {
        self.request(|reply| Cmd::Request {
            frame: Box::new(move |rid| agora_protocol::ClientFrame::ChainClear { rid, dest }),
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Errors the broker sent that no request was waiting for: refused fire-and-forget
    /// publishes (`queue_full`, `not_permitted`, ...), acks of unknown deliveries,
    /// subscriptions the broker cancelled. Each is also logged with `log::warn!`.
    ///
    /// All calls share one bounded list (256; when nobody reads it, the oldest go
    /// first): each error goes to one reader. The stream ends when the client closes.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut errors = client.errors();
    /// client.queue("jobs")?.publish("x").await?;
    /// client.flush().await?;
    /// if let Some(e) = errors.try_next() {
    ///     eprintln!("broker said: {e}");
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn errors(&self) -> ErrorStream {
        ErrorStream {
            rx: Box::pin(self.inner.errors.clone()),
        }
    }

    /// Closes the client: everything queued before the call is written, then
    /// `DISCONNECT`; returns when the broker has closed the connection (or the request
    /// timeout passed). Answers to requests written before it still arrive. Later calls
    /// on any handle fail with [`Error::Closed`]. Calling it twice is fine.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.publish("prices", "1").await?;
    /// client.close().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn close(&self) -> Result<()> {
        let (tx, rx) = async_channel::bounded(1);
        let _ = self.inner.ctl.try_send(Ctl::Closing);
        if self.inner.cmd.send(Cmd::Close { reply: tx }).await.is_err() {
            return Ok(()); // already closed
        }
        let _ = rx.recv().await;
        Ok(())
    }

    async fn send(&self, cmd: Cmd) -> Result<()> {
        self.inner.cmd.send(cmd).await.map_err(|_| Error::Closed)
    }

    /// Sends a request and waits for its answer, within the request timeout.
    async fn request(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<Answer> {
        let (tx, rx) = async_channel::bounded(1);
        driver::timeout(self.inner.opts.request_timeout, async {
            self.send(make(tx)).await?;
            rx.recv().await.unwrap_or(Err(Error::Closed))
        })
        .await
    }

    fn check_size(&self, headers: &Headers, payload: &[u8]) -> Result<()> {
        let size = payload.len()
            + if headers.is_empty() {
                0
            } else {
                headers.encoded_len()
            };
        let server = self.inner.shared.server_max_payload.load(SeqCst);
        let max = self
            .inner
            .opts
            .max_payload
            .min(usize::try_from(server).unwrap_or(usize::MAX));
        if size > max {
            return Err(Error::PayloadTooLarge { size, max });
        }
        Ok(())
    }

    async fn publish_to(
        &self,
        dest: &Destination,
        headers: Headers,
        payload: Bytes,
        confirm: bool,
    ) -> Result<()> {
        if !confirm {
            self.check_size(&headers, &payload)?;
            return self
                .inner
                .shared
                .pubs
                .publish(dest, &headers, &payload)
                .await;
        }
        self.publish_outcome_to(dest, headers, payload)
            .await
            .map(|_| ())
    }

    /// Publishes with a confirm and says whether the message was kept or filtered.
    async fn publish_outcome_to(
        &self,
        dest: &Destination,
        headers: Headers,
        payload: Bytes,
    ) -> Result<PublishOutcome> {
        self.check_size(&headers, &payload)?;
        let answer = self
            .request(|reply| Cmd::Publish {
                dest: dest.clone(),
                headers,
                payload,
                confirm: Some(reply),
            })
            .await?;
        Ok(match answer {
            Answer::PubAck { filtered: true } => PublishOutcome::Filtered,
            _ => PublishOutcome::Accepted,
        })
    }

    async fn subscribe_to(
        &self,
        dest: &Destination,
        prefetch: Option<u32>,
        auto_ack: bool,
    ) -> Result<(u64, SubParts)> {
        let sid = self.inner.shared.next_sid.fetch_add(1, SeqCst);
        let cap = prefetch.map_or(self.inner.opts.subscription_buffer, |p| p.max(1) as usize);
        let inbox = Arc::new(inbox::Inbox::new(cap));
        let dropped = Arc::new(AtomicU64::new(0));
        let entry = SubEntry {
            dest: dest.clone(),
            prefetch: prefetch.map(|p| p.max(1)),
            auto_ack,
            inbox: inbox.clone(),
            dropped: dropped.clone(),
        };
        self.request(|reply| Cmd::Subscribe { sid, entry, reply })
            .await?;
        Ok((
            sid,
            SubParts {
                rx: inbox::InboxReader::new(inbox),
                dropped,
            },
        ))
    }
}

/// What a new subscription's handle is made of.
pub(crate) struct SubParts {
    rx: inbox::InboxReader,
    dropped: Arc<AtomicU64>,
}

/// Errors from [`Client::errors`]: a [`Stream`](futures_core::Stream) of
/// [`ServerError`].
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use futures_lite::StreamExt;
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let mut errors = client.errors();
/// while let Some(e) = errors.next().await {
///     eprintln!("{e}");
/// }
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug)]
pub struct ErrorStream {
    rx: std::pin::Pin<Box<Receiver<ServerError>>>,
}

impl ErrorStream {
    /// The next error if one is waiting, without waiting.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// assert!(client.errors().try_next().is_none());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn try_next(&mut self) -> Option<ServerError> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for ErrorStream {
    type Item = ServerError;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ServerError>> {
        self.rx.as_mut().poll_next(cx)
    }
}

/// A topic, bound to a client: publish to it, subscribe to it. From [`Client::topic`].
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let t = client.topic("prices")?;
/// let sub = t.subscribe().await?;
/// t.publish("101.5").await?;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Topic {
    client: Client,
    dest: Destination,
}

impl Topic {
    /// The destination, `topic:<name>`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// assert_eq!(client.topic("t")?.destination().to_string(), "topic:t");
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// Publishes, fire-and-forget (see [`Client::publish`]).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.topic("prices")?.publish(vec![1u8, 2, 3]).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish(&self, payload: impl Into<Bytes>) -> Result<()> {
        self.client
            .publish_to(&self.dest, Headers::new(), payload.into(), false)
            .await
    }

    /// Publishes with headers, fire-and-forget.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut h = agora_client::Headers::new();
    /// h.insert("Content-Type", "text/plain").unwrap();
    /// client.topic("prices")?.publish_with_headers(h, "1").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_with_headers(
        &self,
        headers: Headers,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        self.client
            .publish_to(&self.dest, headers, payload.into(), false)
            .await
    }

    /// Publishes and waits for the broker's `PUBACK`: the message reached the topic
    /// (and so its subscribers at that moment), or the topic's mutator chain dropped it
    /// on purpose; [`publish_outcome`](Self::publish_outcome) tells which.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.topic("prices")?.publish_confirmed("1").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_confirmed(&self, payload: impl Into<Bytes>) -> Result<()> {
        self.client
            .publish_to(&self.dest, Headers::new(), payload.into(), true)
            .await
    }

    /// Publishes, waits for the broker's `PUBACK`, and says whether the message was
    /// accepted or dropped by the destination's mutator chain.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::PublishOutcome;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let dest = client.topic("readings")?;
    /// if dest.publish_outcome("12.5").await? == PublishOutcome::Filtered {
    ///     println!("dropped by the chain");
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_outcome(&self, payload: impl Into<Bytes>) -> Result<PublishOutcome> {
        self.client
            .publish_outcome_to(&self.dest, Headers::new(), payload.into())
            .await
    }

    /// [`publish_outcome`](Self::publish_outcome) with headers.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut h = agora_client::Headers::new();
    /// h.insert("site", "s1").unwrap();
    /// client.topic("readings")?.publish_outcome_with_headers(h, "12.5").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_outcome_with_headers(
        &self,
        headers: Headers,
        payload: impl Into<Bytes>,
    ) -> Result<PublishOutcome> {
        self.client
            .publish_outcome_to(&self.dest, headers, payload.into())
            .await
    }

    /// Subscribes; the [`Subscription`] yields every message published to the topic
    /// from the broker's `OK` on.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let sub = client.topic("prices")?.subscribe().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn subscribe(&self) -> Result<Subscription> {
        let (sid, parts) = self.client.subscribe_to(&self.dest, None, false).await?;
        Ok(Subscription::new(
            self.client.clone(),
            sid,
            self.dest.clone(),
            parts,
        ))
    }
}

/// What the broker did with a confirmed publish ([`Topic::publish_outcome`],
/// [`Queue::publish_outcome`]). The plain `publish_confirmed` calls return `Ok(())` in
/// both cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The message is in the destination (`PUBACK`).
    Accepted,
    /// The destination's mutator chain dropped it on purpose (`PUBACK filtered`): no
    /// subscriber or consumer will see it.
    Filtered,
}

/// A queue, bound to a client: produce to it, consume it. From [`Client::queue`].
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let q = client.queue("jobs")?;
/// q.publish_confirmed("job").await?;
/// let consumer = q.consume(4).await?;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Queue {
    client: Client,
    dest: Destination,
}

impl Queue {
    /// The destination, `queue:<name>`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// assert_eq!(client.queue("q")?.destination().to_string(), "queue:q");
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// Publishes, fire-and-forget: returns once queued for the connection. If the
    /// broker refuses it (`queue_full`, say) the error arrives on
    /// [`Client::errors`].
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.queue("jobs")?.publish("job").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish(&self, payload: impl Into<Bytes>) -> Result<()> {
        self.client
            .publish_to(&self.dest, Headers::new(), payload.into(), false)
            .await
    }

    /// Publishes with headers, fire-and-forget.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut h = agora_client::Headers::new();
    /// h.insert("Priority", "high").unwrap();
    /// client.queue("jobs")?.publish_with_headers(h, "job").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_with_headers(
        &self,
        headers: Headers,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        self.client
            .publish_to(&self.dest, headers, payload.into(), false)
            .await
    }

    /// Publishes and waits for the broker's `PUBACK`: the message is in the queue, or
    /// the queue's mutator chain dropped it on purpose
    /// ([`publish_outcome`](Self::publish_outcome) tells which).
    /// A refusal is returned as [`Error::Server`], e.g. with
    /// [`ErrorCode::QueueFull`].
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// match client.queue("jobs")?.publish_confirmed("job").await {
    ///     Err(e) if e.code() == Some(agora_client::ErrorCode::QueueFull) => { /* back off */ }
    ///     other => other?,
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_confirmed(&self, payload: impl Into<Bytes>) -> Result<()> {
        self.client
            .publish_to(&self.dest, Headers::new(), payload.into(), true)
            .await
    }

    /// Publishes, waits for the broker's `PUBACK`, and says whether the message was
    /// accepted or dropped by the destination's mutator chain.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::PublishOutcome;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let dest = client.queue("jobs")?;
    /// if dest.publish_outcome("12.5").await? == PublishOutcome::Filtered {
    ///     println!("dropped by the chain");
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_outcome(&self, payload: impl Into<Bytes>) -> Result<PublishOutcome> {
        self.client
            .publish_outcome_to(&self.dest, Headers::new(), payload.into())
            .await
    }

    /// [`publish_outcome`](Self::publish_outcome) with headers.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut h = agora_client::Headers::new();
    /// h.insert("site", "s1").unwrap();
    /// client.queue("jobs")?.publish_outcome_with_headers(h, "12.5").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_outcome_with_headers(
        &self,
        headers: Headers,
        payload: impl Into<Bytes>,
    ) -> Result<PublishOutcome> {
        self.client
            .publish_outcome_to(&self.dest, headers, payload.into())
            .await
    }

    /// Publishes with headers and waits for the broker's `PUBACK`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.queue("jobs")?.publish_confirmed_with_headers(agora_client::Headers::new(), "job").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_confirmed_with_headers(
        &self,
        headers: Headers,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        self.client
            .publish_to(&self.dest, headers, payload.into(), true)
            .await
    }

    /// Consumes with manual acknowledgements and the given prefetch (at least 1): the
    /// most deliveries held at once that are not yet acked or nacked.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut c = client.queue("jobs")?.consume(8).await?;
    /// if let Some(d) = c.next().await {
    ///     d.nack().await?; // give it back: it comes again, redelivered
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn consume(&self, prefetch: u32) -> Result<Consumer> {
        let (sid, parts) = self
            .client
            .subscribe_to(&self.dest, Some(prefetch), false)
            .await?;
        Ok(Consumer::new(
            self.client.clone(),
            sid,
            self.dest.clone(),
            parts,
            false,
        ))
    }

    /// Consumes in the broker's auto-ack mode (`ack=auto`): the broker forgets each
    /// message once it has written it to this connection, so no `ACK` travels and
    /// [`Delivery::ack`] is a no-op. This is the fast mode, and it is at-most-once for
    /// what is in flight: deliveries written but not yet taken by the application when
    /// the connection drops are lost (use [`consume`](Queue::consume) with acks when
    /// that matters).
    ///
    /// `prefetch` bounds both what the broker has in flight and this consumer's buffer;
    /// when the application falls behind, the client stops reading the connection (TCP
    /// backpressure) rather than dropping anything, which also holds back the other
    /// subscriptions of this client.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut c = client.queue("logs")?.consume_auto_ack(64).await?;
    /// while let Some(d) = c.next().await {
    ///     println!("{:?}", d.payload());
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn consume_auto_ack(&self, prefetch: u32) -> Result<Consumer> {
        let (sid, parts) = self
            .client
            .subscribe_to(&self.dest, Some(prefetch), true)
            .await?;
        Ok(Consumer::new(
            self.client.clone(),
            sid,
            self.dest.clone(),
            parts,
            true,
        ))
    }
}
