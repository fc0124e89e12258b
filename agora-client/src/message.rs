//! What the application receives: a [`Message`] from a topic or a queue, and a queue
//! [`Delivery`] to settle. Plain values: a delivery settles by sending `ACK`/`NACK` to
//! the driver's control channel, never by touching the socket, and never settles a
//! delivery of an earlier connection (its generation says which).

use std::ops::Deref;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use agora_protocol::{Destination, Headers};
use bytes::Bytes;

use crate::driver::Shared;
use crate::error::{Error, Result};

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
    replier: Replier,
}

/// The way back to the client a message arrived on, for [`Message::respond`]. Not part
/// of the message's value: two messages that differ only here are equal.
#[derive(Clone, Default)]
struct Replier(Option<Arc<Shared>>);

impl PartialEq for Replier {
    fn eq(&self, _: &Replier) -> bool {
        true
    }
}

impl Eq for Replier {}

impl std::fmt::Debug for Replier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Client" } else { "None" })
    }
}

impl Message {
    /// A message read on the client whose state is `shared` (it can answer through it).
    pub(crate) fn from_wire(d: agora_protocol::Delivery, shared: Option<Arc<Shared>>) -> Message {
        Message {
            dest: d.dest,
            headers: d.headers,
            payload: d.payload,
            count: d.count,
            replier: Replier(shared),
        }
    }

    /// The address a request asks to be answered at (its `agora-reply-to` header), or
    /// `None` when the message is not a request.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut sub = client.subscribe("time").await?;
    /// let msg = sub.next().await.unwrap();
    /// if let Some(to) = msg.reply_to() {
    ///     println!("answer at {to}");
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn reply_to(&self) -> Option<Destination> {
        agora_protocol::reply::reply_to(&self.headers).and_then(Result::ok)
    }

    /// Answers a request: publishes `payload` to its reply address, fire-and-forget,
    /// through the client it arrived on. Fails with [`Error::NoReplyAddress`] when the
    /// message is not a request. A queue [`Delivery`] has its own
    /// [`respond`](Delivery::respond), which also acknowledges it.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut requests = client.subscribe("time").await?;
    /// while let Some(req) = requests.next().await {
    ///     req.respond("12:00").await?;
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn respond(&self, payload: impl Into<Bytes>) -> Result<()> {
        self.respond_with_headers(Headers::new(), payload).await
    }

    /// Answers a request with headers; as [`respond`](Message::respond).
    pub async fn respond_with_headers(
        &self,
        headers: Headers,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        let (Some(to), Some(shared)) = (self.reply_to(), &self.replier.0) else {
            return Err(Error::NoReplyAddress);
        };
        let payload = payload.into();
        let size = payload.len()
            + if headers.is_empty() {
                0
            } else {
                headers.encoded_len()
            };
        let max = usize::try_from(shared.server_max_payload.load(SeqCst)).unwrap_or(usize::MAX);
        if size > max {
            return Err(Error::PayloadTooLarge { size, max });
        }
        shared.pubs.publish(&to, &headers, &payload).await
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
}

impl Deref for Delivery {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

impl Delivery {
    /// A delivery read on connection `generation`; `auto_acked`: the broker forgot it
    /// once written, so settling it is a no-op.
    pub(crate) fn new(
        d: agora_protocol::Delivery,
        generation: u64,
        auto_acked: bool,
        shared: Arc<Shared>,
    ) -> Delivery {
        Delivery {
            did: d.did,
            generation,
            message: Message::from_wire(d, Some(shared)),
            auto_acked,
        }
    }

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

    /// The connection generation it arrived on (see
    /// [`Client::generation`](crate::Client::generation)).
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
    /// for the connection (an `ERR` about it goes to
    /// [`Client::errors`](crate::Client::errors)).
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

    /// Gives the message back as `how` says: now (as [`nack`](Delivery::nack)), after a
    /// delay (`Nack::Delay`, 1 ms to 1 hour: meanwhile no consumer gets it), or
    /// straight to the queue's dead-letter queue (`Nack::DeadLetter`, reason
    /// `rejected`). Same errors as [`ack`](Delivery::ack).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// # use futures_lite::StreamExt;
    /// use agora_client::Nack;
    /// use std::time::Duration;
    /// # let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # let mut jobs = client.consume("jobs", 1).await?;
    /// let job = jobs.next().await.unwrap();
    /// // The service it needs is down: try again in 30 s.
    /// job.nack_with(Nack::Delay(Duration::from_secs(30))).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn nack_with(self, how: agora_protocol::Nack) -> Result<()> {
        self.settle_as(false, how)
    }

    /// Answers a request taken from a queue, then acknowledges it: the reply goes out
    /// before the `ACK` (publishes made before a settle are written before it), so a
    /// responder that dies between the two leaves the request to be delivered again
    /// (and perhaps answered twice; the requester takes the first answer). A delivery
    /// that is not a request (no reply address) is given back (`NACK`) and
    /// [`Error::NoReplyAddress`] returned: check [`reply_to`](Message::reply_to) first
    /// to treat it otherwise.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut work = client.consume("resize", 8).await?;
    /// while let Some(req) = work.next().await {
    ///     let answer = format!("{} bytes", req.payload().len());
    ///     req.respond(answer).await?;
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn respond(self, payload: impl Into<Bytes>) -> Result<()> {
        if self.message.reply_to().is_none() {
            self.settle(false)?;
            return Err(Error::NoReplyAddress);
        }
        self.message.respond(payload).await?;
        self.settle(true)
    }

    pub(crate) fn settle(&self, ack: bool) -> Result<()> {
        self.settle_as(ack, agora_protocol::Nack::Requeue)
    }

    fn settle_as(&self, ack: bool, how: agora_protocol::Nack) -> Result<()> {
        if self.auto_acked {
            return Ok(());
        }
        // A delivery always has the way back to its client.
        let Some(shared) = &self.message.replier.0 else {
            return Err(Error::Closed);
        };
        // Encoded here, into the buffer the driver writes with the publishes; refused
        // if the connection it arrived on is gone (the broker delivers it again).
        shared
            .pubs
            .settle(self.generation, self.did, (!ack).then_some(how))
    }
}
