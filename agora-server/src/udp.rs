//! The UDP side of the connection manager: one socket on the TCP port, one task per
//! source address.
//!
//! A datagram carries whole frames. The loop hands each datagram to its source's task
//! (created on first contact, like a connection) over a small bounded channel; a task
//! that falls behind loses datagrams, counted, as UDP may anyway. A source not heard
//! from for the idle timeout is forgotten, and its subscriptions end (a receiver that
//! pings stays known). Replies and deliveries go back through the same shipper as TCP,
//! packed into datagrams of at most `udp_max_datagram` bytes. Nothing here touches a
//! TCP client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::ErrorCode;
use async_channel::{Receiver, Sender, TrySendError};
use async_net::UdpSocket;

use crate::conn::{spawn_client, Input};
use crate::shipper::{UdpSource, Writer, UDP_AMPLIFICATION};
use crate::{Broker, ACCEPT_BACKOFF};

/// Datagrams waiting for one source's task before more are dropped.
const PEER_QUEUE: usize = 256;
/// Bytes of datagrams waiting for one source's task before more are dropped.
pub(crate) const PEER_BYTES: usize = 256 * 1024;

/// Receives datagrams until the future is dropped.
pub(crate) async fn udp_loop(
    broker: Arc<Broker>,
    socket: UdpSocket,
    stop: Receiver<()>,
    alive: Sender<()>,
) {
    let mut peers: HashMap<SocketAddr, (Sender<Bytes>, Arc<UdpSource>)> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut received: u64 = 0;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => {
                backoff = ACCEPT_BACKOFF.0;
                r
            }
            Err(e) => {
                log::warn!("UDP receive failed: {e}; retrying in {backoff:?}");
                smol::Timer::after(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        received += 1;
        if received.is_multiple_of(4096) {
            // Forget the entries of sources whose tasks have ended.
            peers.retain(|_, (tx, _)| !tx.is_closed());
        }
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        let datagram = match peers.get(&peer) {
            Some((_, src)) if src.queued.load(Relaxed) + n > PEER_BYTES => {
                broker.metrics.udp_dropped.fetch_add(1, Relaxed);
                log::trace!(
                    "UDP client {peer} has {PEER_BYTES} bytes waiting; a datagram was dropped"
                );
                continue;
            }
            Some((tx, src)) => match tx.try_send(datagram) {
                Ok(()) => {
                    src.queued.fetch_add(n, Relaxed);
                    broker.metrics.udp_queued.fetch_add(n, Relaxed);
                    continue;
                }
                Err(TrySendError::Full(_)) => {
                    broker.metrics.udp_dropped.fetch_add(1, Relaxed);
                    log::trace!("UDP client {peer} is behind; a datagram was dropped");
                    continue;
                }
                Err(TrySendError::Closed(d)) => d,
            },
            None => datagram,
        };
        peers.remove(&peer);
        let n_clients = broker.clients_udp.fetch_add(1, SeqCst);
        if n_clients >= broker.config.max_connections {
            broker.clients_udp.fetch_sub(1, SeqCst);
            broker.metrics.connections_rejected.fetch_add(1, Relaxed);
            broker.metrics.error(ErrorCode::TooManyConnections);
            let mut b = BytesMut::new();
            agora_protocol::encode_err(
                None,
                ErrorCode::TooManyConnections,
                &format!(
                    "the broker is at its limit of {} UDP clients",
                    broker.config.max_connections
                ),
                &mut b,
            );
            // The source is unverified: answered only within the amplification rule.
            if b.len() <= UDP_AMPLIFICATION * n {
                let _ = socket.send_to(&b, peer).await;
            } else {
                broker.metrics.udp_unanswered.fetch_add(1, Relaxed);
            }
            continue;
        }
        let source = Arc::new(UdpSource::new(broker.metrics.clone()));
        let (tx, rx) = async_channel::bounded(PEER_QUEUE);
        if tx.try_send(datagram).is_ok() {
            source.queued.fetch_add(n, Relaxed);
            broker.metrics.udp_queued.fetch_add(n, Relaxed);
        }
        peers.insert(peer, (tx, source.clone()));
        let writer = Writer::Udp {
            socket: socket.clone(),
            peer,
            max: broker.config.udp_max_datagram,
            dropped: 0,
            source: source.clone(),
            buf: Vec::new(),
        };
        let input = Input::Udp {
            datagrams: rx,
            source,
        };
        spawn_client(&broker, input, writer, peer, &stop, &alive);
    }
}
