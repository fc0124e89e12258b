//! The [`Client`] handle: what its clones share (the channels to the driver, the
//! state the driver publishes), its requests and the plumbing of publishing and
//! subscribing that [`Topic`](crate::Topic) and [`Queue`](crate::Queue) use. It never
//! touches the socket: everything goes to the driver over channels and the publish
//! buffer.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::bytes::Bytes;
use agora_protocol::{Destination, Headers, Info as ServerInfo};
use async_channel::{Receiver, Sender};

use crate::driver::{self, Answer, Cmd, Ctl, Reply, Shared, SubEntry};
use crate::error::{Error, ErrorStream, Result, ServerError};
use crate::inbox::{Inbox, InboxReader};
use crate::lock;
use crate::options::Options;

/// What the clones of a [`Client`] share.
pub(crate) struct Inner {
    pub(crate) addr: String,
    pub(crate) opts: Options,
    pub(crate) shared: Arc<Shared>,
    pub(crate) cmd: Sender<Cmd>,
    pub(crate) ctl: Sender<Ctl>,
    /// For requests written by the requester itself.
    pub(crate) asker: crate::driver::Asker,
    pub(crate) errors: Receiver<ServerError>,
    pub(crate) events: Receiver<crate::events::Event>,
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
///
/// [`Subscription`]: crate::Subscription
/// [`Consumer`]: crate::Consumer
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
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

    /// True while a connection to the broker is up: false while the client reconnects
    /// after a loss, and once it is closed.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// assert!(client.is_connected());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn is_connected(&self) -> bool {
        self.inner.shared.connected.load(SeqCst)
    }

    /// What happens to the connection: lost (with the reason), made again (with its
    /// generation), closed; a subscription's messages dropped in this client; an error
    /// the broker sent that no call waits for. See [`Event`](crate::Event). All calls
    /// share one bounded list (256; when nobody reads it, the oldest go first): each
    /// event goes to one reader.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut events = client.events();
    /// if let Some(agora_client::Event::Disconnected { reason, .. }) = events.next().await {
    ///     eprintln!("lost the broker: {reason}");
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn events(&self) -> crate::events::EventStream {
        crate::events::EventStream::new(self.inner.events.clone())
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
        self.call(|reply| Cmd::Ping { reply }).await?;
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
        self.call(|reply| Cmd::Ping { reply }).await.map(|_| ())
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
        ErrorStream::new(self.inner.errors.clone())
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

    /// Lets the application finish, then closes: every topic subscription stops taking
    /// messages (its stream yields what it buffered, then ends); every consumer is
    /// given nothing new (`HOLD`) and its stream ends once drained. Returns once the
    /// application has dropped every consumer (settling what it held first), then
    /// closes the client as [`close`](Client::close) does. It waits as long as the
    /// application takes: wrap it in a timeout to bound a shutdown.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use futures_lite::StreamExt;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut jobs = client.consume("jobs", 16).await?;
    /// let worker = async move {
    ///     while let Some(job) = jobs.next().await {
    ///         job.ack().await?;
    ///     }
    ///     Ok::<(), agora_client::Error>(()) // the consumer is dropped here
    /// };
    /// let (done, drained) = futures_lite::future::zip(worker, client.drain()).await;
    /// done?;
    /// drained?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn drain(&self) -> Result<()> {
        let (tx, rx) = async_channel::bounded(1);
        self.send(Cmd::Drain { reply: tx }).await?;
        rx.recv().await.unwrap_or(Err(Error::Closed))?;
        self.close().await
    }

    async fn send(&self, cmd: Cmd) -> Result<()> {
        self.inner.cmd.send(cmd).await.map_err(|_| Error::Closed)
    }

    /// Sends a request and waits for its answer, within the request timeout.
    pub(crate) async fn call(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<Answer> {
        let (tx, rx) = async_channel::bounded(1);
        driver::timeout(self.inner.opts.request_timeout, async {
            self.send(make(tx)).await?;
            rx.recv().await.unwrap_or(Err(Error::Closed))
        })
        .await
    }

    pub(crate) fn check_size(&self, headers: &Headers, payload: &[u8]) -> Result<()> {
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

    pub(crate) async fn publish_to(
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
    pub(crate) async fn publish_outcome_to(
        &self,
        dest: &Destination,
        mut headers: Headers,
        payload: Bytes,
    ) -> Result<PublishOutcome> {
        // Under a reconnect policy the driver may publish it again on the next
        // connection: an id makes the broker keep it once.
        if self.inner.opts.reconnect.is_some() && agora_protocol::msg_id::msg_id(&headers).is_none()
        {
            let _ = headers.insert(
                agora_protocol::msg_id::MSG_ID,
                &self.inner.shared.msg_ids.next(),
            );
        }
        self.check_size(&headers, &payload)?;
        let answer = self
            .call(|reply| Cmd::Publish {
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

    pub(crate) async fn subscribe_to(
        &self,
        dest: &Destination,
        prefetch: Option<u32>,
        auto_ack: bool,
    ) -> Result<(u64, SubParts)> {
        let sid = self.inner.shared.next_sid.fetch_add(1, SeqCst);
        let cap = prefetch.map_or(self.inner.opts.subscription_buffer, |p| p.max(1) as usize);
        // A topic subscription under flow control asks the broker to hold it when its
        // buffer is full, and to resume once the application has taken it.
        let flow: Option<crate::inbox::Flow> = match (prefetch, self.inner.opts.overflow) {
            (None, crate::options::Overflow::Hold) => {
                let ctl = self.inner.ctl.clone();
                Some(Box::new(move |on| {
                    let _ = ctl.try_send(Ctl::Hold { sid, on });
                }))
            }
            _ => None,
        };
        let inbox = Arc::new(Inbox::with_flow(cap, flow));
        let dropped = Arc::new(AtomicU64::new(0));
        let entry = SubEntry {
            dest: dest.clone(),
            prefetch: prefetch.map(|p| p.max(1)),
            auto_ack,
            inbox: inbox.clone(),
            dropped: dropped.clone(),
        };
        self.call(|reply| Cmd::Subscribe { sid, entry, reply })
            .await?;
        Ok((
            sid,
            SubParts {
                rx: InboxReader::new(inbox),
                dropped,
            },
        ))
    }
}

/// What a new subscription's handle is made of.
pub(crate) struct SubParts {
    pub(crate) rx: InboxReader,
    pub(crate) dropped: Arc<AtomicU64>,
}

/// What the broker did with a confirmed publish ([`Topic::publish_outcome`],
/// [`Queue::publish_outcome`]). The plain `publish_confirmed` calls return `Ok(())` in
/// both cases.
///
/// [`Topic::publish_outcome`]: crate::Topic::publish_outcome
/// [`Queue::publish_outcome`]: crate::Queue::publish_outcome
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The message is in the destination (`PUBACK`).
    Accepted,
    /// The destination's mutator chain dropped it on purpose (`PUBACK filtered`): no
    /// subscriber or consumer will see it.
    Filtered,
}
