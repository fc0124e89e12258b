//! Request-reply: [`Client::request`] publishes with a reply address under the
//! connection's inbox and waits for the first reply; responders answer with
//! [`Message::respond`](crate::Message::respond) or, from a queue,
//! [`Delivery::respond`](crate::Delivery::respond). Replies travel through one inbox
//! subscription per connection, which the driver makes at the first request; any
//! number of requests share it, told apart by the number at the end of their address.
//! On an idle connection whose inbox is subscribed, the requester writes its request
//! itself ([`Asker::ask_direct`](crate::driver::Asker::ask_direct)); otherwise it is a
//! command for the driver.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use agora_protocol::bytes::Bytes;
use agora_protocol::{Destination, Headers};

use crate::client::Client;
use crate::driver::{self, Answer, Cmd, Ctl};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::message::Message;

impl Client {
    /// Sends a request and waits for its reply, within the request timeout
    /// ([`ClientBuilder::request_timeout`](crate::ClientBuilder::request_timeout), 10 s by
    /// default). `dest` is `topic:<name>` (every subscriber gets the request; the first
    /// reply wins) or `queue:<name>` (one consumer gets it; if it dies before answering,
    /// the queue delivers it to another); a bare name is a topic.
    ///
    /// Fails at once with [`Error::Server`] and
    /// [`ErrorCode::NoResponders`](crate::ErrorCode::NoResponders) when nobody listens on
    /// `dest` (the request was not kept), with [`Error::Timeout`] when no reply came in
    /// time, and with [`Error::Disconnected`] when the connection was lost meanwhile (the
    /// request may or may not have been answered).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let reply = client.request("topic:time", "").await?;
    /// println!("{:?}", reply.payload());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn request(&self, dest: &str, payload: impl Into<Bytes>) -> Result<Message> {
        let timeout = self.inner.opts.request_timeout;
        self.request_with(dest, Headers::new(), payload, timeout)
            .await
    }

    /// [`request`](Client::request) with headers and a timeout of its own.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use std::time::Duration;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let mut h = agora_client::Headers::new();
    /// h.insert("trace-id", "ab12").unwrap();
    /// let reply = client
    ///     .request_with("queue:resize", h, "img-17.png", Duration::from_secs(2))
    ///     .await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn request_with(
        &self,
        dest: &str,
        headers: Headers,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message> {
        let dest = request_destination(dest)?;
        self.request_to(&dest, headers, payload.into(), timeout)
            .await
    }

    /// Sends a request to `dest` and waits for the reply.
    pub(crate) async fn request_to(
        &self,
        dest: &Destination,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message> {
        self.check_size(&headers, &payload)?;
        let shared = &self.inner.shared;
        let number = shared.next_request.fetch_add(1, SeqCst);
        let (tx, rx) = async_channel::bounded(2);
        // Whatever ends the wait (a reply, an error, the timeout, the caller dropping
        // this future), the driver forgets the request unless the reply took it.
        let mut forget = Forget {
            client: self,
            number,
            armed: true,
        };
        let answer = async {
            loop {
                match rx.recv().await {
                    Ok(Ok(Answer::Reply(d))) => {
                        return Ok(Message::from_wire(d, Some(shared.clone())))
                    }
                    // A PUBACK (confirms were on): the request is in; wait on.
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(Error::Closed),
                }
            }
        };
        // On an idle connection the request is written here, one thread hop shorter,
        // and the driver's alarm times it out (a timer of its own would wake the I/O
        // thread to arm it). Otherwise the driver writes it, and the timer here also
        // covers its wait for room in the command queue.
        let parts = (dest, &headers, &payload[..]);
        let deadline = std::time::Instant::now().checked_add(timeout);
        let direct =
            deadline.is_some_and(|d| self.inner.asker.ask_direct(shared, parts, number, &tx, d));
        let r = if direct {
            answer.await
        } else {
            let ask = Cmd::Ask {
                dest: dest.clone(),
                headers,
                payload,
                number,
                reply: tx,
            };
            driver::timeout(timeout, async {
                self.inner.cmd.send(ask).await.map_err(|_| Error::Closed)?;
                answer.await
            })
            .await
        };
        forget.armed = r.is_err();
        r
    }
}

/// Tells the driver to forget a request nobody waits for any more.
struct Forget<'a> {
    client: &'a Client,
    number: u64,
    armed: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.armed {
            let forget = Ctl::Forget {
                number: self.number,
            };
            let _ = self.client.inner.ctl.try_send(forget);
        }
    }
}

/// `queue:<name>`, `topic:<name>`, or a bare topic name.
fn request_destination(dest: &str) -> Result<Destination> {
    if dest.starts_with("queue:") || dest.starts_with("topic:") {
        let (kind, name) = dest.split_at(6);
        return Ok(match kind {
            "queue:" => Destination::queue(name)?,
            _ => Destination::topic(name)?,
        });
    }
    Ok(Destination::topic(dest)?)
}

impl Endpoint {
    /// Sends a request to this destination and waits for the reply: every subscriber
    /// of a topic gets it and the first reply wins, one consumer of a queue gets it;
    /// see [`Client::request`].
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let reply = client.topic("time")?.request("").await?;
    /// let resized = client.queue("resize")?.request("img-17.png").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn request(&self, payload: impl Into<Bytes>) -> Result<Message> {
        let c = self.client();
        let timeout = c.inner.opts.request_timeout;
        c.request_to(self.destination(), Headers::new(), payload.into(), timeout)
            .await
    }
}

#[cfg(feature = "serde")]
impl Client {
    /// A request whose payload is `req` as JSON, and whose reply is read as JSON `R`;
    /// as [`request`](Client::request), and [`Error::Decode`] when the reply is not an
    /// `R`.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// #[derive(serde::Serialize)]
    /// struct Quote { symbol: String }
    /// #[derive(serde::Deserialize)]
    /// struct Price { cents: u64 }
    ///
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let p: Price = client.request_json("queue:quotes", &Quote { symbol: "ACME".into() }).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn request_json<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        dest: &str,
        req: &T,
    ) -> Result<R> {
        let body = serde_json::to_vec(req).map_err(Error::Encode)?;
        self.request(dest, body).await?.json()
    }
}
