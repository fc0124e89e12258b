//! [`Endpoint`]: what a [`Topic`](crate::Topic) and a [`Queue`](crate::Queue) share, one
//! destination bound to a client and the one set of publish calls (and requests) for
//! either kind. Both handles dereference to it.

use agora_protocol::bytes::Bytes;
use agora_protocol::{Destination, Headers};

use crate::client::{Client, PublishOutcome};
use crate::error::Result;

/// A destination bound to a client: publish to it, with or without headers, confirmed
/// or not, or send it a request. [`Topic`](crate::Topic) and [`Queue`](crate::Queue)
/// dereference to one, so these calls are the same on both.
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// for dest in [&*client.topic("prices")?, &*client.queue("jobs")?] {
///     dest.publish_confirmed("x").await?;
/// }
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub(crate) client: Client,
    pub(crate) dest: Destination,
}

impl Endpoint {
    /// The client this handle belongs to.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The destination, `topic:<name>` or `queue:<name>`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// assert_eq!(client.queue("q")?.destination().to_string(), "queue:q");
    /// assert_eq!(client.topic("t")?.destination().to_string(), "topic:t");
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

    /// Publishes and waits for the broker's `PUBACK`: the message is in its
    /// destination (a queue holds it, stored where `--fsync` says if the queue is
    /// durable; a topic handed it to its subscribers of that moment, and to the queues
    /// bound to it), or the destination's mutator chain dropped it on purpose
    /// ([`publish_outcome`](Self::publish_outcome) tells which).
    /// A refusal is returned as [`Error::Server`](crate::Error::Server), e.g. with
    /// [`ErrorCode::QueueFull`](crate::ErrorCode::QueueFull).
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
}
