//! Where a connection's frames come from: the front doors and streams a session is
//! served over.

use std::sync::Arc;

use agora_protocol::bytes::Bytes;
use async_channel::Receiver;
use async_net::TcpStream;

use crate::shipper;

/// The front door a piped connection comes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Front {
    /// An MQTT connection's bridge: its session may use its user's MQTT session queues.
    Mqtt,
    /// A WebSocket's `/agora`: a native client like any other.
    WebSocket,
    /// An action of the HTTP console (`crate::http`), as its user.
    Http,
    /// What a cluster link brings from another node, published here
    /// (`crate::cluster`).
    Link,
}

/// Where a client's frames come from.
pub(crate) enum Input {
    /// A TCP stream, read in bulk.
    Tcp(TcpStream),
    /// A pipe from another front door: an MQTT connection's bridge (`crate::mqtt`), or
    /// a WebSocket's `/agora` (`crate::ws`); the user its TLS client certificate names,
    /// if any.
    Pipe(piper::Reader, Option<Arc<crate::auth::User>>, Front),
    /// The reading half of a TLS stream (its handshake done), read in bulk; the user
    /// its client certificate names, if any.
    Tls(
        futures_lite::io::ReadHalf<crate::tls::TlsStream>,
        Option<Arc<crate::auth::User>>,
    ),
    /// Another node's cluster link (its handshake done), as the cluster's user
    /// (`crate::cluster`).
    Link(TcpStream, Arc<crate::auth::User>),
    /// The same over TLS (`--cluster-ca`): the reading half of the stream.
    LinkTls(
        futures_lite::io::ReadHalf<crate::tls::TlsStream>,
        Arc<crate::auth::User>,
    ),
    /// Datagrams from one UDP source address, handed over by the UDP loop, and what
    /// the broker keeps for that source.
    Udp {
        datagrams: Receiver<Bytes>,
        source: Arc<shipper::UdpSource>,
    },
}
