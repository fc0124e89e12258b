//! [`Queue`]: a queue bound to a client, to produce to and consume; and the client's
//! shortcuts that name a queue on each call.

use agora_protocol::Destination;

use crate::client::Client;
use crate::endpoint::Endpoint;
use crate::error::Result;
use crate::sub::Consumer;

impl Client {
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
            ep: Endpoint {
                client: self.clone(),
                dest: Destination::queue(name)?,
            },
        })
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
    ep: Endpoint,
}

impl std::ops::Deref for Queue {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.ep
    }
}

impl Queue {
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
    /// [`Delivery::ack`](crate::Delivery::ack) is a no-op. This is the fast mode, and it
    /// is at-most-once for what is in flight: deliveries written but not yet taken by
    /// the application when the connection drops are lost (use
    /// [`consume`](Queue::consume) with acks when that matters).
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
