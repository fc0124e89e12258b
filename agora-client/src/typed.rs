//! Typed payloads (JSON through serde) and the typed `STATS` document. Only with the
//! `serde` feature (on by default).

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::message::Delivery;
use crate::queue::Queue;
use crate::sub::{Consumer, Subscription};
use crate::topic::Topic;

impl Client {
    /// A topic whose payloads are `T`, as JSON.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Price { symbol: String, cents: u64 }
    ///
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let prices = client.typed_topic::<Price>("prices")?;
    /// let mut sub = prices.subscribe().await?;
    /// prices.publish(&Price { symbol: "ACME".into(), cents: 10150 }).await?;
    /// let p: Price = sub.next().await.unwrap()?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn typed_topic<T>(&self, name: &str) -> Result<TypedTopic<T>> {
        Ok(TypedTopic {
            topic: self.topic(name)?,
            _t: PhantomData,
        })
    }
}

/// A topic carrying `T` as JSON. From [`Client::typed_topic`].
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let counts = client.typed_topic::<Vec<u32>>("counts")?;
/// counts.publish(&vec![1, 2, 3]).await?;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
pub struct TypedTopic<T> {
    topic: Topic,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for TypedTopic<T> {
    fn clone(&self) -> Self {
        TypedTopic {
            topic: self.topic.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for TypedTopic<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedTopic")
            .field(self.topic.destination())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> TypedTopic<T> {
    /// The untyped topic underneath.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let t = client.typed_topic::<u32>("n")?;
    /// t.topic().publish("not json").await?; // typed subscribers get an Err item
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Publishes `value` as JSON, fire-and-forget.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.typed_topic::<(String, f64)>("ticks")?.publish(&("ACME".into(), 1.5)).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish(&self, value: &T) -> Result<()> {
        let json = serde_json::to_vec(value).map_err(Error::Encode)?;
        self.topic.publish(json).await
    }

    /// Publishes `value` as JSON and waits for the broker's `PUBACK`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.typed_topic::<u64>("n")?.publish_confirmed(&7).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn publish_confirmed(&self, value: &T) -> Result<()> {
        let json = serde_json::to_vec(value).map_err(Error::Encode)?;
        self.topic.publish_confirmed(json).await
    }

    /// Subscribes; items are `Ok(T)`, or `Err(Error::Decode)` for a payload that is not
    /// a `T` in JSON (the stream goes on after it).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut sub = client.typed_topic::<u64>("n")?.subscribe().await?;
    /// match sub.next().await {
    ///     Some(Ok(n)) => println!("{n}"),
    ///     Some(Err(e)) => eprintln!("skipped: {e}"),
    ///     None => {}
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn subscribe(&self) -> Result<TypedSubscription<T>> {
        Ok(TypedSubscription {
            inner: self.topic.subscribe().await?,
            _t: PhantomData,
        })
    }
}

/// A [`Stream`] of `Result<T, Error>` decoded from a topic's JSON payloads. From
/// [`TypedTopic::subscribe`].
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use futures_lite::StreamExt;
/// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let sub = client.typed_topic::<u64>("n")?.subscribe().await?;
/// let good: Vec<u64> = sub.filter_map(|r| r.ok()).take(3).collect().await;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
pub struct TypedSubscription<T> {
    inner: Subscription,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TypedSubscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedSubscription")
            .field(&self.inner)
            .finish()
    }
}

impl<T> TypedSubscription<T> {
    /// The untyped subscription underneath (its destination, its drop count).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let sub = client.typed_topic::<u64>("n")?.subscribe().await?;
    /// assert_eq!(sub.subscription().dropped(), 0);
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn subscription(&self) -> &Subscription {
        &self.inner
    }

    /// Ends the subscription and waits for the broker's `OK`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.typed_topic::<u64>("n")?.subscribe().await?.unsubscribe().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn unsubscribe(self) -> Result<()> {
        self.inner.unsubscribe().await
    }
}

impl<T: DeserializeOwned> Stream for TypedSubscription<T> {
    type Item = Result<T>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|o| o.map(|m| m.json::<T>()))
    }
}

impl Client {
    /// A queue whose payloads are `T` as JSON.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Job { id: u32 }
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let jobs = client.typed_queue::<Job>("jobs")?;
    /// jobs.publish_confirmed(&Job { id: 7 }).await?;
    /// let mut consumer = jobs.consume(16).await?;
    /// let job = consumer.next().await.unwrap()?;
    /// assert_eq!(job.value.id, 7);
    /// job.ack().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn typed_queue<T>(&self, name: &str) -> Result<TypedQueue<T>> {
        Ok(TypedQueue {
            queue: self.queue(name)?,
            _t: PhantomData,
        })
    }
}

/// A queue carrying `T` as JSON (see [`Client::typed_queue`]).
pub struct TypedQueue<T> {
    queue: Queue,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for TypedQueue<T> {
    fn clone(&self) -> Self {
        TypedQueue {
            queue: self.queue.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for TypedQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedQueue").field(&self.queue).finish()
    }
}

impl<T: Serialize + DeserializeOwned> TypedQueue<T> {
    /// The untyped queue underneath.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Publishes `value` as JSON, without waiting for the broker.
    pub async fn publish(&self, value: &T) -> Result<()> {
        let json = serde_json::to_vec(value).map_err(Error::Encode)?;
        self.queue.publish(json).await
    }

    /// Publishes `value` as JSON and waits for the broker's `PUBACK`.
    pub async fn publish_confirmed(&self, value: &T) -> Result<()> {
        let json = serde_json::to_vec(value).map_err(Error::Encode)?;
        self.queue.publish_confirmed(json).await
    }

    /// Consumes with manual acks, up to `prefetch` unacknowledged at once.
    pub async fn consume(&self, prefetch: u32) -> Result<TypedConsumer<T>> {
        Ok(TypedConsumer {
            inner: self.queue.consume(prefetch).await?,
            _t: PhantomData,
        })
    }
}

/// A stream of typed deliveries. A payload that is not valid JSON for `T` is given
/// back to the broker (`NACK`: it is redelivered, and after the queue's max deliveries
/// it goes to the dead-letter queue) and comes out as an `Err(Error::Decode)` item; the
/// stream goes on.
pub struct TypedConsumer<T> {
    inner: Consumer,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TypedConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedConsumer").field(&self.inner).finish()
    }
}

/// A decoded delivery, to [`ack`](TypedDelivery::ack) or [`nack`](TypedDelivery::nack).
pub struct TypedDelivery<T> {
    /// The decoded payload.
    pub value: T,
    delivery: Delivery,
}

impl<T> TypedDelivery<T> {
    /// The delivery underneath (headers, redelivered flag, count).
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Done with it: the broker forgets the message.
    pub async fn ack(self) -> Result<()> {
        self.delivery.ack().await
    }

    /// Give it back for redelivery.
    pub async fn nack(self) -> Result<()> {
        self.delivery.nack().await
    }
}

impl<T: DeserializeOwned> Stream for TypedConsumer<T> {
    type Item = Result<TypedDelivery<T>>;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<TypedDelivery<T>>>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|o| {
            o.map(|d| match d.json::<T>() {
                Ok(value) => Ok(TypedDelivery { value, delivery: d }),
                Err(e) => {
                    let _ = d.settle(false);
                    Err(e)
                }
            })
        })
    }
}

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
