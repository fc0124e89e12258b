//! The WebSocket front door (`--ws-port`): `/mqtt` carries MQTT (subprotocol `mqtt`,
//! as MQTT's specification defines it over WebSocket) into the MQTT bridge, `/agora` the
//! native protocol as a byte stream into a native session. Binary messages only; a
//! frame may span messages and a message may hold many frames.
//!
//! The WebSocket itself (RFC 6455: the HTTP upgrade, framing, masking, ping and close)
//! is async-tungstenite's, over the accepted socket. A pump per connection moves the
//! payloads of binary messages into a pipe the protocol side reads, and what the
//! protocol side writes into another pipe out as binary messages: the protocol side
//! is the same code as on a TCP port.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Mutex};

use async_channel::{Receiver, Sender};
use async_net::{TcpListener, TcpStream};
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt, StreamExt};

use crate::conn::{serve_client, Input};
use crate::mqtt::state::MqttState;
use crate::shipper::Writer;
use crate::Broker;

/// Bytes each pipe between the pump and the protocol side holds.
const PIPE: usize = 256 * 1024;

/// Which protocol a WebSocket carries, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Mqtt,
    Agora,
}

/// Accepts WebSocket clients until the future is dropped. They count toward
/// `--max-connections` with the TCP ones.
pub(crate) async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    tls: Option<futures_rustls::TlsAcceptor>,
    retained: Arc<MqttState>,
    stop: Receiver<()>,
    alive: Sender<()>,
) {
    crate::conn::accept_each(broker, listener, "WebSocket", alive, |b, stream, peer| {
        let (r, stop, tls) = (retained.clone(), stop.clone(), tls.clone());
        async move {
            b.clients_ws.fetch_add(1, SeqCst);
            serve(&b, tls.as_ref(), stream, peer, &r, stop).await;
            b.clients_ws.fetch_sub(1, SeqCst);
        }
    })
    .await
}

/// What the handshake decides from the request: the route, and the subprotocol to
/// answer; an unknown path is answered 404.
fn route(req: &Request, mut resp: Response) -> (Option<Route>, Result<Response, ErrorResponse>) {
    let offered = |name: &str| {
        req.headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case(name))
    };
    let route = match req.uri().path() {
        "/mqtt" => Route::Mqtt,
        "/agora" => Route::Agora,
        other => {
            let mut e = ErrorResponse::new(Some(format!(
                "no WebSocket endpoint at {other}: /mqtt (MQTT) and /agora (the native protocol)\n"
            )));
            *e.status_mut() = StatusCode::NOT_FOUND;
            return (None, Err(e));
        }
    };
    let protocol = match route {
        Route::Mqtt => "mqtt",
        Route::Agora => "agora",
    };
    if offered(protocol) {
        resp.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    }
    (Some(route), Ok(resp))
}

async fn serve(
    broker: &Broker,
    tls: Option<&futures_rustls::TlsAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    retained: &MqttState,
    stop: Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_ws(broker, stream, None, peer, retained, stop).await,
        Some(tls) => {
            // wss: TLS first, bounded as the TCP port's; a client certificate may name
            // the user.
            let timeout = broker.config.tls_handshake_timeout;
            let Some(tls) = crate::tls::handshake(tls, stream, peer, timeout, &stop).await else {
                return;
            };
            let user = match broker.config.users.is_empty() {
                true => None,
                false => crate::tls::user_of(&tls, &broker.config.users, peer),
            };
            serve_ws(broker, tls, user, peer, retained, stop).await
        }
    }
}

// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's `Callback`
// signature, large error and all.
#[allow(clippy::result_large_err)]
async fn serve_ws<S>(
    broker: &Broker,
    stream: S,
    user: Option<Arc<crate::auth::User>>,
    peer: SocketAddr,
    retained: &MqttState,
    stop: Receiver<()>,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let chosen = Arc::new(Mutex::new(None));
    let callback = {
        let chosen = chosen.clone();
        move |req: &Request, resp: Response| {
            let (r, answer) = route(req, resp);
            *chosen.lock().unwrap_or_else(|e| e.into_inner()) = r;
            answer
        }
    };
    let largest = broker.config.max_payload + broker.config.max_line + 65_536;
    let config = WebSocketConfig::default()
        .max_message_size(Some(largest))
        .max_frame_size(Some(largest));
    let handshake = async_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let ws = future::or(async { Some(handshake.await) }, async {
        smol::Timer::after(broker.config.auth_timeout).await;
        None
    })
    .await;
    let ws = match ws {
        Some(Ok(ws)) => ws,
        Some(Err(e)) => return log::debug!("WebSocket client {peer}: handshake: {e}"),
        None => return log::debug!("WebSocket client {peer}: no handshake in time"),
    };
    let Some(route) = *chosen.lock().unwrap_or_else(|e| e.into_inner()) else {
        return;
    };
    log::debug!("WebSocket client {peer} connected to {route:?}");
    let (in_r, in_w) = piper::pipe(PIPE);
    let (out_r, out_w) = piper::pipe(PIPE);
    let (cut, cut_rx) = async_channel::bounded::<()>(1);
    let pumped = pump(ws, in_w, out_r, cut_rx);
    match route {
        Route::Agora => {
            let native = serve_client(
                broker,
                Input::Pipe(in_r, user, crate::conn::Front::WebSocket),
                Writer::Pipe(out_w),
                peer,
                stop,
            );
            future::zip(native, pumped).await;
        }
        Route::Mqtt => {
            let shut: crate::mqtt::Shut = Box::new(move || {
                cut.close();
            });
            let mqtt =
                crate::mqtt::serve_over(broker, in_r, out_w, shut, peer, retained, stop, user);
            future::zip(mqtt, pumped).await;
        }
    }
}

/// Moves binary messages' payloads into `to_protocol` and what `from_protocol` gives out
/// as binary messages, until either side ends or `cut` closes.
async fn pump<S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    mut to_protocol: piper::Writer,
    mut from_protocol: piper::Reader,
    cut: Receiver<()>,
) {
    enum Next {
        In(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
        Out(std::io::Result<usize>),
        Cut,
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let next = future::or(
            future::or(async { Next::In(ws.next().await) }, async {
                Next::Out(from_protocol.read(&mut buf).await)
            }),
            async {
                let _ = cut.recv().await;
                Next::Cut
            },
        )
        .await;
        match next {
            Next::In(Some(Ok(Message::Binary(b)))) => {
                if to_protocol.write_all(&b).await.is_err() {
                    break;
                }
            }
            Next::In(Some(Ok(Message::Text(_)))) => {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Unsupported,
                        reason: "binary messages only".into(),
                    }))
                    .await;
                break;
            }
            Next::In(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => break,
            // Pings are answered by the library; pongs and raw frames are nothing here.
            Next::In(Some(Ok(_))) => {}
            Next::Out(Ok(n)) if n > 0 => {
                let msg = Message::Binary(buf[..n].to_vec().into());
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
            Next::Out(_) | Next::Cut => {
                let _ = ws.close(None).await;
                break;
            }
        }
    }
    // The protocol side reads the end.
    drop(to_protocol);
}
