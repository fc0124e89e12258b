//! Typed payloads (JSON through serde). Only with the `serde` feature (on by default);
//! the typed `STATS` document is in `stats` whatever the features.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// A stream of typed deliveries. A payload that is not valid JSON for `T` comes out as
/// an [`Undecoded`] item, with its delivery: the caller inspects it and decides (`nack`
/// it to have it delivered again, and after the queue's max deliveries dead-lettered;
/// `ack` it to drop it). The stream goes on either way.
pub struct TypedConsumer<T> {
    inner: Consumer,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TypedConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedConsumer").field(&self.inner).finish()
    }
}

impl<T> TypedConsumer<T> {
    /// Stops consuming and waits for the broker's `OK`; unacknowledged deliveries go
    /// back to the queue (see [`Consumer::unsubscribe`]).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let jobs = client.typed_queue::<u64>("jobs")?.consume(8).await?;
    /// jobs.unsubscribe().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn unsubscribe(self) -> Result<()> {
        self.inner.unsubscribe().await
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

/// A delivery whose payload is not JSON for the consumer's type: the error, and the
/// delivery, still unsettled, to inspect and [`ack`](Undecoded::ack) or
/// [`nack`](Undecoded::nack). Dropped unsettled, it stays unacknowledged until the
/// consumer ends.
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use futures_lite::StreamExt;
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let mut jobs = client.typed_queue::<u64>("jobs")?.consume(8).await?;
/// match jobs.next().await.unwrap() {
///     Ok(job) => job.ack().await?,
///     Err(bad) => {
///         eprintln!("not a job: {} ({:?})", bad.error, bad.delivery.payload());
///         bad.nack().await?; // dead-lettered after the queue's max deliveries
///     }
/// }
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug)]
pub struct Undecoded {
    /// Why the payload is not a `T`.
    pub error: serde_json::Error,
    /// The delivery, unsettled.
    pub delivery: Delivery,
}

impl Undecoded {
    /// Drops the message: the broker forgets it.
    pub async fn ack(self) -> Result<()> {
        self.delivery.ack().await
    }

    /// Gives it back: delivered again, and after the queue's max deliveries
    /// dead-lettered.
    pub async fn nack(self) -> Result<()> {
        self.delivery.nack().await
    }
}

impl std::fmt::Display for Undecoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "payload is not the expected json: {}", self.error)
    }
}

impl std::error::Error for Undecoded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<Undecoded> for Error {
    /// The decode error alone (the delivery is dropped unsettled).
    fn from(u: Undecoded) -> Error {
        Error::Decode(u.error)
    }
}

impl<T: DeserializeOwned> Stream for TypedConsumer<T> {
    type Item = std::result::Result<TypedDelivery<T>, Undecoded>;
    // The error holds the delivery, as the success does: boxing it would save nothing.
    #[allow(clippy::result_large_err)]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|o| {
            o.map(|d| match serde_json::from_slice::<T>(d.payload()) {
                Ok(value) => Ok(TypedDelivery { value, delivery: d }),
                Err(error) => Err(Undecoded { error, delivery: d }),
            })
        })
    }
}
