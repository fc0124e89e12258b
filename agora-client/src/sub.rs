//! What the application receives: [`Message`] and [`Delivery`], and the streams that
//! yield them, [`Subscription`] and [`Consumer`]. These handles never touch the socket;
//! they read from a bounded inbox the driver fills (see `inbox`).

use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};

use agora_protocol::{Destination, Headers};
use async_channel::Sender;
use bytes::Bytes;
use futures_core::Stream;

use crate::driver::{Cmd, Ctl, Shared};
use crate::inbox::InboxReader;
use crate::inbox::Incoming;
use crate::{Client, Error, Result, SubParts};

/// A message received from a topic or a queue.
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use futures_lite::StreamExt;
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let mut sub = client.subscribe("prices").await?;
/// let msg = sub.next().await.unwrap();
/// println!("{} {:?} {:?}", msg.destination(), msg.headers().get("trace-id"), msg.payload());
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    dest: Destination,
    headers: Headers,
    payload: Bytes,
    count: u32,
}

impl Message {
    fn from_wire(d: agora_protocol::Delivery) -> Message {
        Message {
            dest: d.dest,
            headers: d.headers,
            payload: d.payload,
            count: d.count,
        }
    }

    /// Where the message was published: `topic:<name>` or `queue:<name>`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut sub = client.subscribe("prices").await?;
    /// let msg = sub.next().await.unwrap();
    /// assert_eq!(msg.destination().name.as_str(), "prices");
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// The headers (empty when published without).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut sub = client.subscribe("prices").await?;
    /// let msg = sub.next().await.unwrap();
    /// let trace = msg.headers().get("Trace-Id");
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The payload. Shared, not copied, from the connection's read buffer.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut sub = client.subscribe("prices").await?;
    /// let msg = sub.next().await.unwrap();
    /// let text = String::from_utf8_lossy(msg.payload());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Takes the payload.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut sub = client.subscribe("prices").await?;
    /// let bytes: agora_client::Bytes = sub.next().await.unwrap().into_payload();
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// How many times the message has been delivered, this time included (1 the first
    /// time; topic messages are always 1).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut sub = client.subscribe("prices").await?;
    /// assert_eq!(sub.next().await.unwrap().delivery_count(), 1);
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn delivery_count(&self) -> u32 {
        self.count
    }

    /// True when the message was delivered before (delivery count above 1): a
    /// consumer nacked it, or went away without acking it.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut jobs = client.consume("jobs", 1).await?;
    /// let job = jobs.next().await.unwrap();
    /// if job.redelivered() { /* maybe done already: check before redoing */ }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn redelivered(&self) -> bool {
        self.count > 1
    }

    /// Deserializes the payload from JSON.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut jobs = client.consume("jobs", 1).await?;
    /// let job = jobs.next().await.unwrap();
    /// let v: serde_json::Value = job.json()?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    #[cfg(feature = "serde")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload).map_err(Error::Decode)
    }
}

/// A queue delivery: a [`Message`] (reachable through `Deref`) to settle with
/// [`ack`](Delivery::ack) or [`nack`](Delivery::nack).
///
/// A delivery dropped without either stays unacknowledged at the broker, counting
/// against the consumer's prefetch, until the consumer ends; then the broker delivers
/// it again.
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use futures_lite::StreamExt;
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let mut jobs = client.consume("jobs", 8).await?;
/// let job = jobs.next().await.unwrap();
/// println!("{:?} (delivery {})", job.payload(), job.delivery_count());
/// job.ack().await?;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug)]
pub struct Delivery {
    message: Message,
    did: u64,
    generation: u64,
    auto_acked: bool,
    ctl: Sender<Ctl>,
    shared: Arc<Shared>,
}

impl Deref for Delivery {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

impl Delivery {
    /// The message.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut jobs = client.consume("jobs", 1).await?;
    /// let msg: &agora_client::Message = jobs.next().await.unwrap().message();
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Takes the message, leaving the delivery unsettled (see the type's docs).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut jobs = client.consume_auto_ack("jobs", 1).await?;
    /// let msg = jobs.next().await.unwrap().into_message();
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn into_message(self) -> Message {
        self.message
    }

    /// The broker's delivery id (unique on the connection it arrived on).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut jobs = client.consume("jobs", 1).await?;
    /// println!("{}", jobs.next().await.unwrap().delivery_id());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn delivery_id(&self) -> u64 {
        self.did
    }

    /// The connection generation it arrived on (see [`Client::generation`]).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut jobs = client.consume("jobs", 1).await?;
    /// let d = jobs.next().await.unwrap();
    /// assert_eq!(d.generation(), client.generation());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Acknowledges: the broker forgets the message. Returns once the `ACK` is queued
    /// for the connection (an `ERR` about it goes to [`Client::errors`]).
    ///
    /// Fails with [`Error::StaleDelivery`] if the client reconnected since the delivery
    /// arrived (the broker delivers it again), [`Error::Closed`] if the client is
    /// closed. A no-op for deliveries of [`Queue::consume_auto_ack`](crate::Queue::consume_auto_ack).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut jobs = client.consume("jobs", 1).await?;
    /// jobs.next().await.unwrap().ack().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn ack(self) -> Result<()> {
        self.settle(true)
    }

    /// Gives the message back: the broker delivers it again, to this or another
    /// consumer, with its delivery count raised. Same errors as [`ack`](Delivery::ack).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut jobs = client.consume("jobs", 1).await?;
    /// jobs.next().await.unwrap().nack().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn nack(self) -> Result<()> {
        self.settle(false)
    }

    pub(crate) fn settle(&self, ack: bool) -> Result<()> {
        if self.auto_acked {
            return Ok(());
        }
        if self.shared.closed.load(SeqCst) {
            return Err(Error::Closed);
        }
        if self.shared.generation.load(SeqCst) != self.generation {
            return Err(Error::StaleDelivery);
        }
        // The driver checks the generation again when it writes the frame, so a
        // reconnect in between drops the settle instead of acking a stranger.
        self.ctl
            .try_send(Ctl::Settle {
                did: self.did,
                generation: self.generation,
                ack,
            })
            .map_err(|_| Error::Closed)
    }
}

/// A topic subscription: a [`Stream`] of [`Message`]s. From [`Client::subscribe`].
///
/// Buffers up to [`ClientBuilder::subscription_buffer`](crate::ClientBuilder::subscription_buffer)
/// messages; when the application falls behind the oldest is dropped and counted in
/// [`dropped`](Subscription::dropped). Dropping the subscription sends `UNSUB`. The
/// stream ends when the client closes or the broker cancels the subscription (the
/// reason goes to [`Client::errors`]). With a reconnect policy it resumes after a
/// reconnect; messages published meanwhile are not seen.
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use futures_lite::StreamExt;
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let sub = client.subscribe("prices").await?;
/// let first_ten: Vec<_> = sub.take(10).collect().await;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    sid: u64,
    dest: Destination,
    rx: InboxReader,
    dropped: Arc<AtomicU64>,
    ended: bool,
}

impl Subscription {
    pub(crate) fn new(client: Client, sid: u64, dest: Destination, parts: SubParts) -> Self {
        Subscription {
            client,
            sid,
            dest,
            rx: parts.rx,
            dropped: parts.dropped,
            ended: false,
        }
    }

    /// The topic, `topic:<name>`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let sub = client.subscribe("prices").await?;
    /// assert_eq!(sub.destination().to_string(), "topic:prices");
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// Messages dropped so far because this subscription's buffer was full.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let sub = client.subscribe("prices").await?;
    /// assert_eq!(sub.dropped(), 0);
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn dropped(&self) -> u64 {
        self.dropped.load(SeqCst)
    }

    /// Ends the subscription and waits for the broker's `OK`. Messages still buffered
    /// are discarded.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let sub = client.subscribe("prices").await?;
    /// sub.unsubscribe().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn unsubscribe(mut self) -> Result<()> {
        self.ended = true;
        unsubscribe(&self.client, self.sid).await
    }

    /// The next message if one has arrived, without waiting: `None` when nothing is
    /// buffered right now (or the subscription has ended; the stream says which).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut sub = client.subscribe("prices").await?;
    /// while let Some(msg) = sub.try_next() {
    ///     println!("{:?}", msg.payload());
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn try_next(&mut self) -> Option<Message> {
        self.rx.try_next().map(|i| Message::from_wire(i.msg))
    }
}

async fn unsubscribe(client: &Client, sid: u64) -> Result<()> {
    client
        .request(|reply| Cmd::Unsubscribe { sid, reply })
        .await
        .map(|_| ())
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.client.inner.ctl.try_send(Ctl::Unsub { sid: self.sid });
        }
    }
}

impl Stream for Subscription {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx
            .poll_next(cx)
            .map(|o| o.map(|i| Message::from_wire(i.msg)))
    }
}

/// A queue consumer: a [`Stream`] of [`Delivery`]s. From [`Client::consume`] or
/// [`Client::consume_auto_ack`].
///
/// Buffers at most its prefetch (the broker sends no more until some are settled).
/// Dropping the consumer sends `UNSUB`: the broker gives its unacked deliveries to
/// other consumers, marked redelivered. With a reconnect policy it resumes after a
/// reconnect; deliveries it held then come again, redelivered.
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
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    sid: u64,
    dest: Destination,
    rx: InboxReader,
    auto_ack: bool,
    ended: bool,
}

impl Consumer {
    pub(crate) fn new(
        client: Client,
        sid: u64,
        dest: Destination,
        parts: SubParts,
        auto_ack: bool,
    ) -> Self {
        Consumer {
            client,
            sid,
            dest,
            rx: parts.rx,
            auto_ack,
            ended: false,
        }
    }

    /// The queue, `queue:<name>`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let c = client.consume("jobs", 1).await?;
    /// assert_eq!(c.destination().to_string(), "queue:jobs");
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// Stops consuming and waits for the broker's `OK`. Unacked deliveries go back to
    /// the queue; deliveries still held can no longer be settled usefully.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let c = client.consume("jobs", 1).await?;
    /// c.unsubscribe().await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn unsubscribe(mut self) -> Result<()> {
        self.ended = true;
        unsubscribe(&self.client, self.sid).await
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.client.inner.ctl.try_send(Ctl::Unsub { sid: self.sid });
        }
    }
}

impl Consumer {
    /// A delivery for the application; `None` for one of a lost connection to a
    /// consumer that acks: it comes again (redelivered) on the new one, and could not be
    /// acked anyway.
    fn wrap(&self, i: Incoming) -> Option<Delivery> {
        if !self.auto_ack && i.generation != self.client.inner.shared.generation.load(SeqCst) {
            return None;
        }
        Some(Delivery {
            did: i.msg.did,
            generation: i.generation,
            message: Message::from_wire(i.msg),
            auto_acked: self.auto_ack,
            ctl: self.client.inner.ctl.clone(),
            shared: self.client.inner.shared.clone(),
        })
    }

    /// The next delivery if one has arrived, without waiting: `None` when nothing is
    /// buffered right now (or the consumer has ended; the stream says which).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut jobs = client.consume("jobs", 64).await?;
    /// while let Some(job) = jobs.try_next() {
    ///     job.ack().await?;
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn try_next(&mut self) -> Option<Delivery> {
        loop {
            let i = self.rx.try_next()?;
            if let Some(d) = self.wrap(i) {
                return Some(d);
            }
        }
    }
}

impl Stream for Consumer {
    type Item = Delivery;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        loop {
            let Poll::Ready(next) = self.rx.poll_next(cx) else {
                return Poll::Pending;
            };
            let Some(i) = next else {
                return Poll::Ready(None);
            };
            if let Some(d) = self.wrap(i) {
                return Poll::Ready(Some(d));
            }
        }
    }
}
