//! Publishing over UDP: fire-and-forget, many frames per datagram.

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{encode_pub, Destination, Headers};
use async_net::UdpSocket;

use crate::error::{Error, Result};

/// The largest UDP payload IPv4 allows.
const UDP_LIMIT: usize = 65_507;

/// A UDP publisher: frames are packed into datagrams of at most
/// [`max_datagram`](UdpPublisher::max_datagram) bytes (default 1,400, safe on any
/// network path) and sent when the next frame would not fit, or on
/// [`flush`](UdpPublisher::flush).
///
/// UDP gives no confirmation: a datagram can be lost, duplicated or reordered, and the
/// broker's errors (`ERR` datagrams) are not read here. Use the TCP [`Client`] for
/// publishes that must not be lost.
///
/// [`Client`]: crate::Client
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// let mut udp = agora_client::UdpPublisher::connect("127.0.0.1:48879").await?;
/// udp.publish_topic("sensors.temp", "21.5").await?;
/// udp.flush().await?;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
pub struct UdpPublisher {
    socket: UdpSocket,
    buf: BytesMut,
    max: usize,
}

impl UdpPublisher {
    /// Binds a local UDP socket and aims it at the broker's address (its TCP port).
    pub async fn connect(addr: impl ToString) -> Result<UdpPublisher> {
        let addr = addr.to_string();
        let target = async_net::resolve(addr.as_str())
            .await
            .map_err(Error::Io)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{addr} resolves to no address"),
                ))
            })?;
        let local = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local).await.map_err(Error::Io)?;
        socket.connect(target).await.map_err(Error::Io)?;
        Ok(UdpPublisher {
            socket,
            buf: BytesMut::new(),
            max: 1400,
        })
    }

    /// Sets the largest datagram to send (frames larger than it travel alone).
    pub fn max_datagram(mut self, bytes: usize) -> Self {
        self.max = bytes.clamp(64, UDP_LIMIT);
        self
    }

    /// Publishes to a topic.
    pub async fn publish_topic(&mut self, topic: &str, payload: impl Into<Bytes>) -> Result<()> {
        let dest = Destination::topic(topic).map_err(Error::InvalidName)?;
        self.publish(&dest, &Headers::new(), payload).await
    }

    /// Publishes to a queue.
    pub async fn publish_queue(&mut self, queue: &str, payload: impl Into<Bytes>) -> Result<()> {
        let dest = Destination::queue(queue).map_err(Error::InvalidName)?;
        self.publish(&dest, &Headers::new(), payload).await
    }

    /// Publishes with headers to any destination.
    pub async fn publish(
        &mut self,
        dest: &Destination,
        headers: &Headers,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        let payload = payload.into();
        let mut frame = BytesMut::new();
        encode_pub(None, dest, headers, &payload, &mut frame);
        if frame.len() > UDP_LIMIT {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                max: UDP_LIMIT - (frame.len() - payload.len()),
            });
        }
        if !self.buf.is_empty() && self.buf.len() + frame.len() > self.max {
            self.flush().await?;
        }
        self.buf.extend_from_slice(&frame);
        if self.buf.len() >= self.max {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is packed so far.
    pub async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.socket.send(&self.buf).await;
        self.buf.clear();
        r.map(|_| ()).map_err(Error::Io)
    }
}
