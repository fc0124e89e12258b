//! An MQTT connection's task: accept, then move bytes between the client's socket, the
//! bridge and the native session's pipes, and time (keep-alive, write timeouts).
//!
//! Three futures of one task share the bridge (never across an await):
//! - **client**: reads the socket, decodes packets, steps the bridge; within the
//!   client's keep-alive (1.5 times what it asked) or the connection's end.
//! - **broker**: reads the session's pipe, decodes native frames, steps the bridge.
//! - **feed**: writes native frames into the session's pipe, in order. The client side
//!   queues them with room for [`FEED`] batches (so a client that publishes faster than
//!   the session takes waits, as a TCP client would); the broker side's (answers to the
//!   session's `PINGREQ`) never wait, so the two pipes can never hold each other up.
//!
//! Writes to the client are whole packets under one lock, each bounded by
//! `--write-timeout`; a client that does not read in time is disconnected.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agora_protocol::bytes::BytesMut;
use agora_protocol::mqtt::{self, reason, MqttError, Props, Reply, Version};
use agora_protocol::{decode_server_with, encode, Limits, ReadSize};
use async_channel::{Receiver, Sender};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use super::bridge::{Bridge, Out};
use super::state::MqttState;
use crate::conn::{serve_client, Input};
use crate::shipper::Writer;
use crate::Broker;

/// Bytes each pipe between the bridge and the session holds.
const PIPE: usize = 256 * 1024;

/// Batches of native frames the client side may queue for the session.
const FEED: usize = 16;

/// Ends a client's transport: the client side's read then returns.
pub(crate) type Shut = Box<dyn Fn() + Send + Sync>;

/// What the three futures share. `W` is the client's writing half: a TCP socket, or
/// the pipe to a WebSocket's framing (`crate::ws`).
struct Io<'a, W> {
    broker: &'a Broker,
    bridge: Mutex<Bridge>,
    retained: &'a MqttState,
    socket: smol::lock::Mutex<W>,
    shut: Shut,
    peer: SocketAddr,
    /// From the client side: bounded.
    feed: Sender<BytesMut>,
    /// From the broker side: never waits.
    urgent: Sender<BytesMut>,
    /// Why the connection ends, once it does.
    ended: Mutex<Option<String>>,
    /// A `DISCONNECT` or a refusal was read: the will is not for the end.
    done: AtomicBool,
    /// This connection's number, for the client-id registry.
    number: u64,
    /// Closed when another connection takes this one's client id over.
    kicked: Receiver<()>,
    kick: Sender<()>,
    /// The client id this connection holds in the registry, once it does.
    holds: Mutex<Option<String>>,
}

/// Serves one MQTT client reading `reader` and writing `writer`; `shut` ends them.
/// `user`: the one a TLS client certificate names.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_over<R, W>(
    broker: &Broker,
    reader: R,
    writer: W,
    shut: Shut,
    peer: SocketAddr,
    retained: &MqttState,
    stop: Receiver<()>,
    user: Option<Arc<crate::auth::User>>,
) where
    R: futures_lite::AsyncRead + Unpin,
    W: futures_lite::AsyncWrite + Unpin,
{
    broker.clients_mqtt.fetch_add(1, SeqCst);
    let cert_user = user.as_ref().map(|u| u.name.clone());
    let (session_in, to_session) = piper::pipe(PIPE);
    let (from_session, session_out) = piper::pipe(PIPE);
    let native = serve_client(
        broker,
        Input::Pipe(session_in, user, crate::conn::Front::Mqtt),
        Writer::Pipe(session_out),
        peer,
        stop,
    );
    let (feed, feed_rx) = async_channel::bounded(FEED);
    let (kick, kicked) = async_channel::bounded(1);
    let number = broker.id();
    let (urgent, urgent_rx) = async_channel::unbounded();
    let io = Io {
        broker,
        bridge: Mutex::new(
            Bridge::new(number).with_users(!broker.config.users.is_empty(), cert_user),
        ),
        retained,
        socket: smol::lock::Mutex::new(writer),
        shut,
        peer,
        feed,
        urgent,
        ended: Mutex::new(None),
        done: AtomicBool::new(false),
        number,
        kicked,
        kick,
        holds: Mutex::new(None),
    };
    let bridge = future::zip(
        future::zip(io.client(reader), io.broker_side(from_session)),
        feed_session(to_session, feed_rx, urgent_rx),
    );
    future::zip(native, bridge).await;
    if let Some(id) = lock(&io.holds).take() {
        broker.mqtt_sessions.leave(&id, number);
    }
    let b = io.bridge();
    if let Some(q) = b.session_queue() {
        // Its expiry starts (unless another connection took it over).
        retained.sessions.left(q, number);
    }
    log::debug!(
        "MQTT client {peer} ({}) disconnected ({})",
        b.client_id(),
        lock(&io.ended).as_deref().unwrap_or("closed")
    );
    broker.clients_mqtt.fetch_sub(1, SeqCst);
}

/// Writes what both sides queue into the session's pipe, the broker side's first; once
/// both queues are closed and drained, closes the pipe (the session then ends).
async fn feed_session(
    mut pipe: piper::Writer,
    feed: Receiver<BytesMut>,
    urgent: Receiver<BytesMut>,
) {
    loop {
        let next = match urgent.try_recv().or_else(|_| feed.try_recv()) {
            Ok(b) => Ok(b),
            // Both empty: wait on those still open (a closed one's recv would return
            // at once, and forever).
            Err(_) => match (urgent.is_closed(), feed.is_closed()) {
                (false, false) => future::or(urgent.recv(), feed.recv()).await,
                (true, false) => feed.recv().await,
                (false, true) => urgent.recv().await,
                (true, true) => break,
            },
        };
        if let Ok(b) = next {
            if pipe.write_all(&b).await.is_err() {
                break;
            }
        }
    }
    let _ = pipe.close().await;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<W: futures_lite::AsyncWrite + Unpin> Io<'_, W> {
    /// The bridge, for one step (never held across an await).
    fn bridge(&self) -> MutexGuard<'_, Bridge> {
        lock(&self.bridge)
    }

    fn version(&self) -> Version {
        self.bridge().version().unwrap_or(Version::V311)
    }

    /// Ends the connection once: closes the queues to the session (after what is in
    /// them) and shuts the socket down, which ends the client side's read.
    fn end(&self, why: impl Into<String>) {
        let mut ended = lock(&self.ended);
        if ended.is_some() {
            return;
        }
        *ended = Some(why.into());
        self.feed.close();
        self.urgent.close();
        (self.shut)();
    }

    /// Sends what a step produced: to the client first (whole packets, bounded by the
    /// write timeout), then to the session; then ends the connection if it said so.
    async fn apply(&self, out: Out, urgent: bool) {
        if !out.client.is_empty() {
            let mut b = BytesMut::new();
            let v = self.version();
            for r in &out.client {
                mqtt::encode(r, v, &mut b);
            }
            let write = async {
                let mut s = self.socket.lock().await;
                s.write_all(&b).await.is_ok()
            };
            let wrote = future::or(write, async {
                smol::Timer::after(self.broker.config.write_timeout).await;
                false
            })
            .await;
            if !wrote {
                return self.end("the client did not take what it was sent in time");
            }
        }
        if !out.broker.is_empty() {
            let mut b = BytesMut::new();
            for f in &out.broker {
                encode(f, &mut b);
            }
            let _ = match urgent {
                true => self.urgent.try_send(b).is_ok(),
                false => self.feed.send(b).await.is_ok(),
            };
        }
        if let Some(why) = out.close {
            self.done.store(true, Relaxed);
            self.end(why);
        }
    }

    /// How long the client may be silent: until `CONNECT`, the authentication timeout;
    /// then 1.5 times its keep-alive (none when it asked for 0).
    fn silence(&self) -> Option<Duration> {
        let b = self.bridge();
        match b.version() {
            None => Some(self.broker.config.auth_timeout),
            Some(_) if b.keep_alive() == 0 => None,
            Some(_) => Some(Duration::from_millis(u64::from(b.keep_alive()) * 1500)),
        }
    }

    /// The client side.
    async fn client<R: futures_lite::AsyncRead + Unpin>(&self, mut stream: R) {
        let max = self.broker.config.max_payload + self.broker.config.max_line + 65_536;
        let mut buf = BytesMut::new();
        let mut size = ReadSize::default();
        'read: loop {
            let len = buf.len();
            buf.resize(len + size.get(), 0);
            let read = async { Some(Some(stream.read(&mut buf[len..]).await)) };
            // Another connection taking this client id over ends this one.
            let read = future::or(read, async {
                let _ = self.kicked.recv().await;
                Some(None)
            });
            let read = match self.silence() {
                None => read.await,
                Some(d) => {
                    future::or(read, async {
                        smol::Timer::after(d).await;
                        None
                    })
                    .await
                }
            };
            let n = match read {
                Some(Some(Ok(n))) if n > 0 => n,
                Some(None) => {
                    buf.truncate(len);
                    self.refuse(
                        reason::SESSION_TAKEN_OVER,
                        "another connection with this client id took over",
                    )
                    .await;
                    break;
                }
                Some(Some(_)) => {
                    buf.truncate(len);
                    self.lost("the connection closed").await;
                    break;
                }
                None => {
                    buf.truncate(len);
                    self.refuse(
                        reason::KEEP_ALIVE_TIMEOUT,
                        "the keep-alive passed with nothing from the client",
                    )
                    .await;
                    break;
                }
            };
            buf.truncate(len + n);
            size.after_read(n);
            // Every whole packet of this read, then what they produced, sent at once.
            let mut out = Out::default();
            loop {
                let version = self.bridge().version();
                match mqtt::decode(&mut buf, version, max) {
                    Ok(Some(p)) => {
                        self.bridge().on_packet(p, self.retained, &mut out);
                        if out.close.is_some() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.apply(std::mem::take(&mut out), false).await;
                        let code = match e {
                            MqttError::TooLarge(_) => reason::PACKET_TOO_LARGE,
                            MqttError::UnsupportedVersion(_) => reason::UNSUPPORTED_VERSION,
                            MqttError::ProtocolError(_) => reason::PROTOCOL_ERROR,
                            MqttError::Malformed(_) => reason::MALFORMED,
                        };
                        if let MqttError::UnsupportedVersion(_) = e {
                            // A CONNACK of 3.1.1's form, which every version reads: 1,
                            // unacceptable protocol version.
                            let mut b = BytesMut::new();
                            mqtt::encode(
                                &Reply::ConnAck {
                                    session_present: false,
                                    code: 1,
                                    props: Props::default(),
                                },
                                Version::V311,
                                &mut b,
                            );
                            let _ = self.socket.lock().await.write_all(&b).await;
                            self.done.store(true, Relaxed);
                            self.end(e.to_string());
                        } else {
                            self.refuse(code, &e.to_string()).await;
                        }
                        log::debug!("MQTT client {}: {e}", self.peer);
                        break 'read;
                    }
                }
            }
            self.hold_client_id();
            let closing = out.close.is_some();
            self.apply(out, false).await;
            if closing || lock(&self.ended).is_some() {
                break;
            }
        }
        self.end("the client side ended");
    }

    /// Registers the client id once a `CONNECT` named it: a connection holding it
    /// already is told to go.
    fn hold_client_id(&self) {
        let mut holds = lock(&self.holds);
        if holds.is_some() {
            return;
        }
        let id = self.bridge().holding().map(str::to_owned);
        if let Some(id) = id {
            self.broker
                .mqtt_sessions
                .enter(&id, self.number, self.kick.clone());
            *holds = Some(id);
        }
    }

    /// The client broke the protocol or went silent: MQTT 5 is told why; the will is
    /// published.
    async fn refuse(&self, code: u8, why: &str) {
        let mut out = Out::default();
        if self.bridge().version() == Some(Version::V5) {
            out.client.push(Reply::Disconnect(
                code,
                Props {
                    reason: Some(why.to_owned()),
                    ..Props::default()
                },
            ));
        }
        self.bridge().lost(self.retained, &mut out);
        out.close = Some(why.to_owned());
        self.apply(out, true).await;
    }

    /// The connection ended without a `DISCONNECT`: the will, if any, is published.
    async fn lost(&self, why: &str) {
        if self.done.load(Relaxed) {
            return self.end(why);
        }
        let mut out = Out::default();
        self.bridge().lost(self.retained, &mut out);
        out.close = Some(why.to_owned());
        self.apply(out, true).await;
    }

    /// The broker side: the session's frames, until the session ends.
    async fn broker_side(&self, mut pipe: piper::Reader) {
        let limits = Limits {
            max_line: self.broker.config.max_line,
            max_payload: self.broker.config.max_payload,
        };
        let mut buf = BytesMut::new();
        let mut size = ReadSize::default();
        loop {
            // Every whole frame of this read, then what they produced, sent at once.
            let mut out = Out::default();
            loop {
                match decode_server_with(&mut buf, &limits) {
                    Ok(Some(f)) => self.bridge().on_frame(f, self.retained, &mut out),
                    Ok(None) => break,
                    Err(e) => {
                        self.apply(out, true).await;
                        log::warn!("MQTT client {}: a frame from the session: {e}", self.peer);
                        return self.end(format!("a frame from the session: {e}"));
                    }
                }
            }
            self.apply(out, true).await;
            let len = buf.len();
            buf.resize(len + size.get(), 0);
            match pipe.read(&mut buf[len..]).await {
                Ok(n) if n > 0 => {
                    buf.truncate(len + n);
                    size.after_read(n);
                }
                _ => {
                    buf.truncate(len);
                    return self.end("the session ended");
                }
            }
        }
    }
}
