//! Making a connection: connect, start TLS if asked to, read `INFO`, send `CONNECT`
//! (with the credentials), wait for its `OK`, then hand the stream over (a clear one's
//! socket as a blocking one); and, for the driver, trying that again with
//! exponential back-off after a connection is lost. Runs on the caller's executor for
//! the first connection and on the driver's thread for the others; it owns no state.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::bytes::BytesMut;
use agora_protocol::{
    decode_server_with, encode, ClientFrame, Connect, ErrorCode, ErrorReply, Info, Limits,
    ReadSize, ServerFrame, PROTOCOL_VERSION,
};
use async_net::TcpStream;
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stream::Stream;
use super::{Ctl, Driver};
use crate::error::{Error, Result};
use crate::lock;
use crate::options::{Options, Threads};
use crate::tls::Connector;

/// The largest payload the client accepts from the broker, at least (a `STATS`
/// document of a busy broker can exceed the publish limit).
const MIN_READ_PAYLOAD: usize = 16 * 1024 * 1024;

/// A connection that has done its handshake; a clear one's socket is a blocking one
/// on dedicated threads.
pub(crate) struct Established {
    pub stream: Stream,
    pub buf: BytesMut,
    pub info: Info,
}

/// Runs `f` with a deadline.
pub(crate) async fn timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    future::or(f, async {
        async_io::Timer::after(d).await;
        Err(Error::Timeout)
    })
    .await
}

pub(super) fn read_limits(opts: &Options, info: Option<&Info>) -> Limits {
    let server = info.map_or(0, |i| i.max_payload as usize);
    Limits {
        max_line: agora_protocol::DEFAULT_MAX_LINE.max(info.map_or(0, |i| i.max_line as usize)),
        max_payload: opts.max_payload.max(server).max(MIN_READ_PAYLOAD),
    }
}

/// Reads until one frame is decoded.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    limits: &Limits,
    seen: &mut Vec<u8>,
) -> Result<ServerFrame> {
    loop {
        match decode_server_with(buf, limits) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(Error::Protocol(e)),
        }
        let len = buf.len();
        buf.resize(len + ReadSize::MIN, 0);
        let n = stream.read(&mut buf[len..]).await?;
        buf.truncate(len + n);
        // The first bytes, kept to say what a server that is not Agora sent.
        let keep = (64 - seen.len().min(64)).min(n);
        seen.extend_from_slice(&buf[len..len + keep]);
        if n == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Connects, starts TLS when `tls` says so, reads `INFO`, sends `CONNECT` (with the
/// credentials) and waits for its `OK`, within the connect timeout. An error from TLS,
/// or a refusal of the credentials, names `addr`.
pub(crate) async fn handshake(
    addr: &str,
    opts: &Options,
    tls: Option<&Connector>,
) -> Result<Established> {
    attempt(addr, opts, tls).await.map_err(|e| match e {
        // These name the address already.
        e @ (Error::AuthFailed { .. }
        | Error::CertificateNotTrusted { .. }
        | Error::Tls { .. }
        | Error::TlsFile { .. }) => e,
        e => Error::Connect {
            addr: addr.to_owned(),
            source: Box::new(e),
        },
    })
}

async fn attempt(addr: &str, opts: &Options, tls: Option<&Connector>) -> Result<Established> {
    timeout(opts.connect_timeout, async {
        let mut tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => {
                let (buf, info) = greet(&mut tcp, addr, opts).await?;
                let stream = match opts.threads {
                    Threads::Dedicated => Stream::Tcp(into_blocking(tcp)?),
                    Threads::Shared => Stream::Async(tcp),
                };
                Ok(Established { stream, buf, info })
            }
            Some(tls) => {
                let mut stream = tls.connect(tcp, addr).await?;
                // With TLS 1.3 the broker's verdict on a client certificate arrives
                // after the client's side of the handshake is done, as an alert on the
                // first read.
                let (buf, info) = greet(&mut stream, addr, opts).await.map_err(|e| match e {
                    Error::Io(e) => crate::tls::classify(addr, e),
                    e => e,
                })?;
                Ok(Established {
                    stream: Stream::Tls(Box::new(stream)),
                    buf,
                    info,
                })
            }
        }
    })
    .await
}

/// The protocol's handshake on a connected stream: `INFO` in, `CONNECT` out, its `OK`
/// in (answering a `PINGREQ` meanwhile).
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &str,
    opts: &Options,
) -> Result<(BytesMut, Info)> {
    let mut buf = BytesMut::with_capacity(ReadSize::MIN);
    let limits = read_limits(opts, None);
    let refused = |e: ErrorReply| {
        match e.code {
        ErrorCode::AuthFailed => Error::AuthFailed {
            addr: addr.to_owned(),
            message: e.message,
        },
        // No credentials given (and no client certificate that names a user).
        ErrorCode::NotAuthenticated => Error::AuthFailed {
            addr: addr.to_owned(),
            message: format!(
                "it requires credentials and none were given (ClientBuilder::credentials; agora-cli --user with AGORA_PASSWORD): {}",
                e.message
            ),
        },
        code => Error::Server {
            code,
            message: e.message,
        },
    }
    };
    let mut seen = Vec::new();
    let info = match read_frame(stream, &mut buf, &limits, &mut seen).await {
        Ok(ServerFrame::Info(i)) => i,
        Ok(ServerFrame::Err(e)) => return Err(refused(e)),
        // What a server that is not an Agora broker sent first.
        Ok(_) | Err(Error::Protocol(_)) => {
            return Err(Error::NotAgora {
                sent: format!("{:?}", String::from_utf8_lossy(&seen)),
            })
        }
        Err(e) => return Err(e),
    };
    let (user, password) = match &opts.credentials {
        Some((u, p)) => (Some(u.clone()), Some(p.clone())),
        None => (None, None),
    };
    let mut out = BytesMut::new();
    encode(
        &ClientFrame::Connect(Connect {
            rid: Some(0),
            name: opts.name.clone(),
            // The newest both speak: a broker of protocol 1 refuses 2.
            proto: Some(PROTOCOL_VERSION.min(info.proto.max(1))),
            confirm: None,
            user,
            password,
            ..Connect::default()
        }),
        &mut out,
    );
    stream.write_all(&out).await?;
    stream.flush().await?;
    let limits = read_limits(opts, Some(&info));
    loop {
        match read_frame(stream, &mut buf, &limits, &mut seen).await? {
            ServerFrame::Ok { rid: Some(0) } => break,
            ServerFrame::Err(e) => return Err(refused(e)),
            ServerFrame::PingReq { rid } => {
                let mut out = BytesMut::new();
                encode(&ClientFrame::PingResp { rid }, &mut out);
                stream.write_all(&out).await?;
                stream.flush().await?;
            }
            ServerFrame::Shutdown { .. } => return Err(Error::Disconnected),
            other => return Err(Error::UnexpectedFrame(other.command())),
        }
    }
    Ok((buf, info))
}

/// The handshake's socket as a plain blocking one, out of the reactor: from here on the
/// driver's dedicated thread writes it and a reader thread reads it, each woken by the
/// kernel.
fn into_blocking(stream: TcpStream) -> Result<std::net::TcpStream> {
    let stream: Arc<async_io::Async<std::net::TcpStream>> = stream.into();
    let stream = Arc::try_unwrap(stream)
        .map_err(|_| Error::Io(std::io::Error::other("the handshake's socket is shared")))?;
    let stream = stream.into_inner()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

impl Driver {
    /// Tries to connect again with exponential backoff; `None` when the policy gives
    /// up or the application closes the client meanwhile.
    pub(super) async fn reconnect(&self) -> Option<Established> {
        let policy = self.opts.reconnect.clone()?;
        let mut delay = policy.initial_delay;
        let mut attempt = 0u32;
        loop {
            if policy.max_attempts.is_some_and(|m| attempt >= m) {
                log::warn!(
                    "agora client: giving up on {} after {attempt} attempts",
                    self.core.addrs.join(", ")
                );
                return None;
            }
            attempt += 1;
            // Wait out the delay, meanwhile handling control messages: acks are stale
            // by now, unsubscribes just forget the subscription, a close stops us.
            let deadline = async_io::Timer::after(delay);
            let stop = future::or(
                async {
                    deadline.await;
                    false
                },
                async {
                    loop {
                        match self.ctl_rx.recv().await {
                            Ok(Ctl::Unsub { sid }) => {
                                lock(&self.core.subs).remove(&sid);
                            }
                            Ok(Ctl::Closing) | Err(_) => return true,
                            Ok(_) => {}
                        }
                    }
                },
            )
            .await;
            if stop || self.cmd_rx.is_closed() {
                return None;
            }
            // Each attempt tries the next broker of the list (the same one when
            // there is one).
            let i = (self.core.at.load(SeqCst) + 1) % self.core.addrs.len();
            let addr = &self.core.addrs[i];
            match handshake(addr, &self.opts, self.tls[i].as_ref()).await {
                Ok(c) => {
                    self.core.at.store(i, SeqCst);
                    log::info!("agora client: reconnected to {addr} (attempt {attempt})");
                    return Some(c);
                }
                // Refused credentials will be refused again: give up at once.
                Err(e @ Error::AuthFailed { .. }) => {
                    log::error!("agora client: reconnect: {e}; giving up");
                    return None;
                }
                Err(e) => {
                    self.core.at.store(i, SeqCst);
                    log::warn!("agora client: reconnect to {addr} failed (attempt {attempt}): {e}");
                    delay = (delay * 2).min(policy.max_delay);
                }
            }
        }
    }
}
