//! [`Topic`]: a topic bound to a client, to publish to and subscribe to; and the
//! client's shortcuts that name a topic on each call.

use agora_protocol::bytes::Bytes;
use agora_protocol::{Destination, Headers};

use crate::client::{Client, PublishOutcome};
use crate::error::Result;
use crate::sub::Subscription;

impl Client {
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
    ///
    /// `topic` may be a pattern: `*` stands for one dot-separated token and `>` for one
    /// or more at the end (`sensors.*.temp`, `orders.>`); each message's
    /// [`destination`](crate::Message::destination) is then the topic it was published to.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        let t = Topic {
            client: self.clone(),
            dest: Destination::topic_pattern(topic)?,
        };
        t.subscribe().await
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
    /// The client this handle belongs to.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

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
