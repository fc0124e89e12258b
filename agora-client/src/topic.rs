//! [`Topic`]: a topic bound to a client, to publish to and subscribe to; and the
//! client's shortcuts that name a topic on each call.

use agora_protocol::bytes::Bytes;
use agora_protocol::{Destination, Headers};

use crate::client::Client;
use crate::endpoint::Endpoint;
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
            ep: Endpoint {
                client: self.clone(),
                dest: Destination::topic(name)?,
            },
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
            ep: Endpoint {
                client: self.clone(),
                dest: Destination::topic_pattern(topic)?,
            },
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
    ep: Endpoint,
}

impl std::ops::Deref for Topic {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.ep
    }
}

impl Topic {
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
