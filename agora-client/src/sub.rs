//! The streams the application reads: a topic [`Subscription`] of [`Message`]s and a
//! queue [`Consumer`] of [`Delivery`]s. These handles never touch the socket; they read
//! from a bounded inbox the driver fills (see `inbox`), and end their subscription at
//! the broker when dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};

use agora_protocol::Destination;
use futures_core::Stream;

use crate::client::{Client, SubParts};
use crate::driver::{Cmd, Ctl};
use crate::error::Result;
use crate::inbox::InboxReader;
use crate::inbox::Incoming;
use crate::message::{Delivery, Message};

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
        self.rx
            .try_next()
            .map(|i| Message::from_wire(i.msg, Some(self.client.inner.shared.clone())))
    }
}

async fn unsubscribe(client: &Client, sid: u64) -> Result<()> {
    client
        .call(|reply| Cmd::Unsubscribe { sid, reply })
        .await
        .map(|_| ())
}

impl Subscription {
    /// Stops the subscription taking new messages (`UNSUB`, answered before this
    /// returns) and keeps what is buffered: the stream yields it, then ends.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut prices = client.subscribe("prices").await?;
    /// prices.drain().await?;
    /// while let Some(last) = prices.next().await {
    ///     println!("{:?}", last.payload());
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn drain(&mut self) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        unsubscribe(&self.client, self.sid).await
    }

    /// Messages received and not yet taken from the stream. Past the subscription's
    /// buffer ([`ClientBuilder::subscription_buffer`](crate::ClientBuilder::subscription_buffer))
    /// the broker has been asked to hold the rest (under
    /// [`Overflow::Hold`](crate::Overflow::Hold)); what it had sent before that still
    /// arrives, and is counted here.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let prices = client.subscribe("prices").await?;
    /// println!("{} waiting here", prices.buffered());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn buffered(&self) -> usize {
        self.rx.buffered()
    }
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
        let this = &mut *self;
        let shared = &this.client.inner.shared;
        this.rx
            .poll_next(cx)
            .map(|o| o.map(|i| Message::from_wire(i.msg, Some(shared.clone()))))
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
        self.give_back_unseen();
        unsubscribe(&self.client, self.sid).await
    }

    /// Gives back (`NACK … unseen`) what the client buffered and the application never
    /// took: those are not delivery attempts, so they do not count toward the queue's
    /// delivery limit. A `HOLD` goes first, so the queue cannot hand them straight back
    /// to this consumer before its `UNSUB` (the frames go out in this order, before the
    /// `UNSUB`, which gives back the rest, counted). An auto-ack consumer has nothing to
    /// give back (the broker forgot them).
    fn give_back_unseen(&mut self) {
        if self.auto_ack {
            return;
        }
        let now = self.client.inner.shared.generation.load(SeqCst);
        let ctl = &self.client.inner.ctl;
        let mut held = false;
        while let Some(i) = self.rx.try_next() {
            if i.generation != now {
                continue;
            }
            if !held {
                held = true;
                let _ = ctl.try_send(Ctl::Hold {
                    sid: self.sid,
                    on: true,
                });
            }
            let _ = ctl.try_send(Ctl::Settle {
                did: i.msg.did,
                generation: i.generation,
                ack: false,
                how: agora_protocol::Nack::Unseen,
            });
        }
    }

    /// Stops the broker giving this consumer new deliveries (`HOLD`, in force before
    /// this returns) and lets the application finish: the stream yields what is
    /// buffered, then ends; what the application holds it still acks or nacks. Drop
    /// the consumer once they are settled: that sends the `UNSUB`, and anything still
    /// unsettled then goes back to the queue.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut jobs = client.consume("jobs", 16).await?;
    /// jobs.drain().await?; // a shutdown signal came
    /// while let Some(job) = jobs.next().await {
    ///     job.ack().await?;
    /// }
    /// drop(jobs);
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn drain(&mut self) -> Result<()> {
        let sid = self.sid;
        self.client
            .call(|reply| Cmd::Request {
                frame: Box::new(move |rid| agora_protocol::ClientFrame::Hold { rid, sid }),
                reply,
            })
            .await?;
        self.rx.drain();
        Ok(())
    }

    /// Deliveries this client holds for the application that it has not taken yet
    /// (at most the prefetch).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let jobs = client.consume("jobs", 8).await?;
    /// println!("{} waiting here", jobs.buffered());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn buffered(&self) -> usize {
        self.rx.buffered()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if !self.ended {
            self.give_back_unseen();
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
        Some(Delivery::new(
            i.msg,
            i.generation,
            self.auto_ack,
            self.client.inner.shared.clone(),
        ))
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
