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
use crate::shipper::Writer;
use crate::{Broker, ACCEPT_BACKOFF};

/// Datagrams waiting for one source's task before more are dropped.
const PEER_QUEUE: usize = 256;

/// Receives datagrams until the future is dropped.
pub(crate) async fn udp_loop(
    broker: Arc<Broker>,
    socket: UdpSocket,
    stop: Receiver<()>,
    alive: Sender<()>,
) {
    let mut peers: HashMap<SocketAddr, Sender<Bytes>> = HashMap::new();
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
        if received % 4096 == 0 {
            // Forget the entries of sources whose tasks have ended.
            peers.retain(|_, tx| !tx.is_closed());
        }
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        let datagram = match peers.get(&peer) {
            Some(tx) => match tx.try_send(datagram) {
                Ok(()) => continue,
                Err(TrySendError::Full(_)) => {
                    log::trace!("UDP client {peer} is behind; a datagram was dropped");
                    continue;
                }
                Err(TrySendError::Closed(d)) => d,
            },
            None => datagram,
        };
        peers.remove(&peer);
        let n = broker.clients_udp.fetch_add(1, SeqCst);
        if n >= broker.config.max_connections {
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
            let _ = socket.send_to(&b, peer).await;
            continue;
        }
        let (tx, rx) = async_channel::bounded(PEER_QUEUE);
        let _ = tx.try_send(datagram);
        peers.insert(peer, tx);
        let writer = Writer::Udp {
            socket: socket.clone(),
            peer,
            max: broker.config.udp_max_datagram,
            dropped: 0,
        };
        spawn_client(&broker, Input::Udp(rx), writer, peer, &stop, &alive);
    }
}
