//! The front door's accept loop: counts and spawns, never waits on a client, backs off
//! when `accept` fails; a client over the cap is told why and closed; a TLS client's
//! task makes the handshake (bounded) before it is served.

use super::*;
use crate::ACCEPT_BACKOFF;

/// Accepts clients until the future is dropped.
pub(crate) async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    tls: Option<futures_rustls::TlsAcceptor>,
    stop: Receiver<()>,
    alive: async_channel::Sender<()>,
) {
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF.0;
                let n = broker.clients_tcp.fetch_add(1, SeqCst);
                if n >= broker.config.max_connections {
                    broker.clients_tcp.fetch_sub(1, SeqCst);
                    broker.metrics.connections_rejected.fetch_add(1, Relaxed);
                    broker.metrics.error(ErrorCode::TooManyConnections);
                    let max = broker.config.max_connections;
                    broker.rt.spawn(refuse(stream, max)).detach();
                    continue;
                }
                match &tls {
                    None => {
                        let writer = Writer::Tcp(stream.clone());
                        spawn_client(&broker, Input::Tcp(stream), writer, peer, &stop, &alive);
                    }
                    Some(tls) => spawn_tls_client(&broker, tls, stream, peer, &stop, &alive),
                }
            }
            Err(e) => {
                log::warn!("accept failed: {e}; retrying in {backoff:?}");
                smol::Timer::after(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
            }
        }
    }
}

/// Starts a TLS client's task: the handshake first (bounded by
/// [`Config::tls_handshake_timeout`](crate::Config::tls_handshake_timeout)), then the
/// client is served as [`spawn_client`] does. Its place under the cap is held from the
/// accept, handshake included.
fn spawn_tls_client(
    broker: &Arc<Broker>,
    tls: &futures_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    stop: &Receiver<()>,
    alive: &async_channel::Sender<()>,
) {
    let (b, tls, stop, alive) = (broker.clone(), tls.clone(), stop.clone(), alive.clone());
    broker
        .rt
        .spawn(async move {
            let raw = stream.clone();
            let timeout = b.config.tls_handshake_timeout;
            if let Some(tls) = crate::tls::handshake(&tls, stream, peer, timeout, &stop).await {
                // A client certificate may name a user.
                let user = match b.config.users.is_empty() {
                    true => None,
                    false => crate::tls::user_of(&tls, &b.config.users, peer),
                };
                // One TLS stream, shared by the reading task and the shipper.
                let (read, write) = futures_lite::io::split(tls);
                let writer = Writer::Tls { tls: write, raw };
                serve_client(&b, Input::Tls(read, user), writer, peer, stop).await;
            }
            b.clients_tcp.fetch_sub(1, SeqCst);
            drop(alive);
        })
        .detach();
}

/// Tells a client over the connection cap why it is closed.
async fn refuse(mut stream: TcpStream, max: usize) {
    let mut b = BytesMut::new();
    agora_protocol::encode_err(
        None,
        ErrorCode::TooManyConnections,
        &format!("the broker is at its limit of {max} connections"),
        &mut b,
    );
    let write = async {
        let _ = stream.write_all(&b).await;
        let _ = stream.flush().await;
    };
    future::or(write, async {
        smol::Timer::after(FLUSH_TIMEOUT).await;
    })
    .await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Accepts clients of another front door (MQTT, WebSocket; `what` names it in the log)
/// until the future is dropped: each counts toward `--max-connections` with the TCP ones
/// (one over the cap is closed at once), and `serve` serves it on a task of its own.
pub(crate) async fn accept_each<F, Fut>(
    broker: Arc<Broker>,
    listener: TcpListener,
    what: &'static str,
    alive: async_channel::Sender<()>,
    serve: F,
) where
    F: Fn(Arc<Broker>, TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF.0;
                let n = broker.clients_tcp.fetch_add(1, SeqCst);
                if n >= broker.config.max_connections {
                    broker.clients_tcp.fetch_sub(1, SeqCst);
                    broker.metrics.connections_rejected.fetch_add(1, Relaxed);
                    log::warn!(
                        "{what} client {peer} refused: the broker is at its limit of {} connections",
                        broker.config.max_connections
                    );
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let served = serve(broker.clone(), stream, peer);
                let (b, alive) = (broker.clone(), alive.clone());
                broker
                    .rt
                    .spawn(async move {
                        served.await;
                        b.clients_tcp.fetch_sub(1, SeqCst);
                        drop(alive);
                    })
                    .detach();
            }
            Err(e) => {
                log::warn!("{what} accept failed: {e}; retrying in {backoff:?}");
                smol::Timer::after(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
            }
        }
    }
}
