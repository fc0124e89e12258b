//! The MQTT port's accept loop, and each connection's start: TLS first with
//! `--tls-cert` (`mqtts`), then the connection (`super::conn::serve_over`).

use std::net::SocketAddr;
use std::sync::Arc;

use async_channel::{Receiver, Sender};
use async_net::{TcpListener, TcpStream};

use super::conn::{serve_over, Shut};
use super::state::MqttState;
use crate::Broker;

/// Accepts MQTT clients until the future is dropped. They count toward
/// `--max-connections` with the TCP ones.
pub(crate) async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    tls: Option<futures_rustls::TlsAcceptor>,
    retained: Arc<MqttState>,
    stop: Receiver<()>,
    alive: Sender<()>,
) {
    crate::conn::accept_each(broker, listener, "MQTT", alive, |b, stream, peer| {
        let (r, stop, tls) = (retained.clone(), stop.clone(), tls.clone());
        async move {
            match tls {
                None => serve(&b, stream, peer, &r, stop).await,
                Some(tls) => serve_tls(&b, &tls, stream, peer, &r, stop).await,
            }
        }
    })
    .await
}

/// Serves one MQTT client on a TCP socket until it leaves, is cut off, or the broker
/// stops.
async fn serve(
    broker: &Broker,
    stream: TcpStream,
    peer: SocketAddr,
    retained: &MqttState,
    stop: Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let raw = stream.clone();
    let shut: Shut = Box::new(move || {
        let _ = raw.shutdown(std::net::Shutdown::Both);
    });
    serve_over(
        broker,
        stream.clone(),
        stream,
        shut,
        peer,
        retained,
        stop,
        None,
    )
    .await;
}

/// Serves one MQTT client over TLS (`mqtts`): the handshake first, bounded as the TCP
/// port's; a client certificate may name the user.
async fn serve_tls(
    broker: &Broker,
    tls: &futures_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    retained: &MqttState,
    stop: Receiver<()>,
) {
    let raw = stream.clone();
    let timeout = broker.config.tls_handshake_timeout;
    let Some(tls) = crate::tls::handshake(tls, stream, peer, timeout, &stop).await else {
        return;
    };
    let user = match broker.config.users.is_empty() {
        true => None,
        false => crate::tls::user_of(&tls, &broker.config.users, peer),
    };
    let (read, write) = futures_lite::io::split(tls);
    let shut: Shut = Box::new(move || {
        let _ = raw.shutdown(std::net::Shutdown::Both);
    });
    serve_over(broker, read, write, shut, peer, retained, stop, user).await;
}
