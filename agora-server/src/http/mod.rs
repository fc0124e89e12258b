//! The HTTP port (`--http-port`): health and readiness for orchestrators, Prometheus
//! metrics, the `STATS` document and the connections as JSON, a live console, and the
//! console's actions. hyper's HTTP/1.1 server on the broker's executor (`io.rs` gives
//! it async-io's sockets and timers); HTTPS with the broker's TLS settings.
//!
//! Who may do what: with no users configured, anyone reaching the port may read, and
//! actions are taken from loopback clients only; with users, everything but
//! `/healthz` and `/readyz` needs HTTP basic auth (over HTTPS, or from loopback), reads
//! show what the user may see, and actions need `admin = true`. Actions also need the
//! header `X-Agora-Console: 1`, which a cross-site form or image cannot send, and an
//! `Origin`, when there is one, naming this host.

mod actions;
mod api;
mod early;
mod io;
mod native;
mod parse;
mod prom;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::bytes::Bytes;
use async_net::{TcpListener, TcpStream};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};

use crate::Broker;

pub(crate) use early::Early;

/// A response body: whole, or a stream of events.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How long a client has to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the port counts.
#[derive(Default)]
pub(crate) struct Counts {
    /// Connections open.
    pub connections: AtomicUsize,
    /// Event streams open (`/api/events`).
    pub viewers: AtomicUsize,
}

/// Accepts HTTP clients until the future is dropped (at shutdown).
pub(crate) async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    tls: Option<futures_rustls::TlsAcceptor>,
    stop: async_channel::Receiver<()>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                log::warn!("HTTP accept failed: {e}");
                smol::Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        let n = broker.http.connections.fetch_add(1, SeqCst);
        if n >= broker.config.http_max_connections {
            broker.http.connections.fetch_sub(1, SeqCst);
            log::warn!(
                "HTTP client {peer} refused: at the limit of {} connections (--http-max-connections)",
                broker.config.http_max_connections
            );
            continue;
        }
        let (b, tls, stop) = (broker.clone(), tls.clone(), stop.clone());
        broker
            .rt
            .spawn(async move {
                serve(&b, stream, peer, tls, stop).await;
                b.http.connections.fetch_sub(1, SeqCst);
            })
            .detach();
    }
}

async fn serve(
    broker: &Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<futures_rustls::TlsAcceptor>,
    stop: async_channel::Receiver<()>,
) {
    match tls {
        None => connection(broker, io::Io::new(stream), peer, false, stop).await,
        Some(tls) => {
            let timeout = broker.config.tls_handshake_timeout;
            if let Some(s) = crate::tls::handshake(&tls, stream, peer, timeout, &stop).await {
                connection(broker, io::Io::new(s), peer, true, stop).await
            }
        }
    }
}

async fn connection<S>(
    broker: &Arc<Broker>,
    io: io::Io<S>,
    peer: SocketAddr,
    secure: bool,
    stop: async_channel::Receiver<()>,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    let b = broker.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let b = b.clone();
        async move { Ok::<_, Infallible>(api::route(&b, req, peer, secure).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(io::Timer)
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let ended = futures_lite::future::or(
        async {
            let _ = conn.as_mut().await;
            true
        },
        async {
            let _ = stop.recv().await;
            false
        },
    )
    .await;
    if !ended {
        // Shutting down: answer what is in progress, then close.
        conn.as_mut().graceful_shutdown();
        let _ = futures_lite::future::or(
            async {
                let _ = conn.await;
            },
            async {
                smol::Timer::after(Duration::from_secs(1)).await;
            },
        )
        .await;
    }
}

/// A whole response.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// A JSON error: `{"error": {"code", "message"}}`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message.into()}}),
    )
}
