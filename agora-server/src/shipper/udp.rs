//! The writing half of a client's transport ([`Writer`]: a TCP stream or a UDP source),
//! and what the broker keeps for each UDP source ([`UdpSource`]: its proof of receipt,
//! the amplification rule, its queued datagrams).

use super::*;

/// What the broker keeps for one UDP source beside its task: whether it has proved it
/// receives (echoed its token), how much it may still be answered before it has (the
/// amplification rule), and the bytes of its datagrams waiting for its task.
pub(crate) struct UdpSource {
    verified: std::sync::atomic::AtomicBool,
    /// Bytes the broker may still send an unverified source: [`UDP_AMPLIFICATION`]
    /// times what it sent, at most [`UDP_CREDIT_MAX`].
    credit: AtomicUsize,
    /// Bytes of datagrams handed to its task and not yet taken.
    pub queued: AtomicUsize,
    metrics: Arc<BrokerMetrics>,
}

/// An unverified UDP source is answered at most this many times the bytes it sent.
pub(crate) const UDP_AMPLIFICATION: usize = 4;
/// Most answer credit an unverified source can bank.
pub(crate) const UDP_CREDIT_MAX: usize = 16 * 1024;

impl UdpSource {
    pub fn new(metrics: Arc<BrokerMetrics>) -> UdpSource {
        UdpSource {
            verified: Default::default(),
            credit: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            metrics,
        }
    }

    /// A datagram of `n` bytes came from the source: more it may be answered.
    pub fn received(&self, n: usize) {
        let _ = self.credit.fetch_update(AcqRel, Acquire, |c| {
            Some((c + UDP_AMPLIFICATION * n).min(UDP_CREDIT_MAX))
        });
    }

    /// The source echoed its token: it is answered in full from now on.
    pub fn verify(&self) {
        self.verified.store(true, Relaxed);
    }

    pub fn is_verified(&self) -> bool {
        self.verified.load(Relaxed)
    }

    /// Whether `n` bytes may be sent to it now (and, if not yet verified, spends them).
    fn spend(&self, n: usize) -> bool {
        if self.is_verified() {
            return true;
        }
        let ok = self
            .credit
            .fetch_update(AcqRel, Acquire, |c| c.checked_sub(n))
            .is_ok();
        if !ok {
            self.metrics.udp_unanswered.fetch_add(1, Relaxed);
        }
        ok
    }
}

/// The writing half of a client's transport. Shippers do not know which one it is.
pub(crate) enum Writer {
    /// A TCP stream (a clone of the connection's socket).
    Tcp(async_net::TcpStream),
    /// The writing half of a TLS stream; `raw` is its socket, shut down at the close
    /// so that the reading half sees the end too (as a TCP stream's shutdown does).
    Tls {
        tls: futures_lite::io::WriteHalf<crate::tls::TlsStream>,
        raw: async_net::TcpStream,
    },
    /// The pipe to an MQTT connection's bridge (`crate::mqtt`), which turns the native
    /// frames into MQTT packets.
    Pipe(piper::Writer),
    /// A UDP peer: datagrams to its address from the broker's one UDP socket.
    Udp {
        socket: async_net::UdpSocket,
        peer: std::net::SocketAddr,
        /// Frames are packed into datagrams up to this size.
        max: usize,
        /// Frames too large for any datagram, dropped (counted for the log).
        dropped: u64,
        /// The source's proof and answer credit.
        source: Arc<UdpSource>,
        /// The datagram being packed.
        buf: Vec<u8>,
    },
}

/// The `ERR` that replaces an answer too large for any datagram, with the answer's
/// request id (its second token, when that is `#<n>`).
fn too_large_for_udp(frame: &[u8]) -> BytesMut {
    let rid = frame
        .split(|b| *b == b' ' || *b == b'\r')
        .nth(1)
        .and_then(|t| t.strip_prefix(b"#"))
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse().ok());
    let mut b = BytesMut::new();
    encode_err(
        rid,
        ErrorCode::PayloadTooLarge,
        &format!(
            "the answer is {} bytes; over UDP an answer must fit one datagram ({UDP_LIMIT} bytes): ask over TCP",
            frame.len()
        ),
        &mut b,
    );
    b
}

/// Sends one datagram. UDP is lossy anyway: a failed send is a lost datagram, not a
/// dead connection.
async fn send_datagram(socket: &async_net::UdpSocket, d: &[u8], peer: std::net::SocketAddr) {
    if let Err(e) = socket.send_to(d, peer).await {
        log::trace!("UDP send to {peer} failed: {e}");
    }
}

/// How long a closing TLS connection's `close_notify` may take to be written.
const TLS_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest UDP payload IPv4 allows.
const UDP_LIMIT: usize = 65_507;

impl Writer {
    /// Writes a batch of whole frames; `ends` says where each frame ends.
    /// Writes `b`, whose frames end at `ends`; `done` counts the bytes a TCP stream took
    /// (so a failed write still says which frames went out whole).
    pub(super) async fn write_batch(
        &mut self,
        b: &[u8],
        ends: &[usize],
        done: &mut usize,
    ) -> std::io::Result<()> {
        match self {
            Writer::Tcp(s) => {
                while *done < b.len() {
                    match s.write(&b[*done..]).await {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => *done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Writer::Pipe(p) => {
                while *done < b.len() {
                    match p.write(&b[*done..]).await {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => *done += n,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Writer::Tls { tls, .. } => {
                // What rustls took is encrypted and written as the socket has room; the
                // flush waits until all of it is (or the write times out).
                while *done < b.len() {
                    match tls.write(&b[*done..]).await {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => *done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                tls.flush().await
            }
            Writer::Udp {
                socket,
                peer,
                max,
                dropped,
                source,
                buf,
            } => {
                // Pack consecutive frames into datagrams of at most `max` bytes; a frame
                // larger than that travels alone, up to what UDP can carry at all. An
                // unverified source is sent each frame only if its allowance covers it.
                let verified = source.is_verified();
                let mut start = 0;
                buf.clear();
                for &end in ends {
                    let frame = &b[start..end];
                    start = end;
                    let too_large;
                    let frame = match frame.len() > UDP_LIMIT {
                        false => frame,
                        // A delivery is dropped (counted); an answer is replaced by a
                        // short ERR naming the limit.
                        true if frame.starts_with(b"MSG ") || frame.starts_with(b"HMSG ") => {
                            *dropped += 1;
                            log::trace!(
                                "a {} byte delivery for UDP client {peer} fits no datagram; dropped",
                                frame.len()
                            );
                            continue;
                        }
                        true => {
                            too_large = too_large_for_udp(frame);
                            &too_large[..]
                        }
                    };
                    if !verified && !source.spend(frame.len()) {
                        log::trace!(
                            "a {} byte frame for unverified UDP source {peer} is over its allowance; not sent",
                            frame.len()
                        );
                        continue;
                    }
                    if !buf.is_empty() && buf.len() + frame.len() > *max {
                        send_datagram(socket, buf, *peer).await;
                        buf.clear();
                    }
                    buf.extend_from_slice(frame);
                }
                if !buf.is_empty() {
                    send_datagram(socket, buf, *peer).await;
                    buf.clear();
                }
                // A large frame's room is not kept for every quiet source.
                buf.shrink_to(*max);
                Ok(())
            }
        }
    }

    pub(super) async fn close(&mut self) {
        match self {
            Writer::Tcp(s) => {
                let _ = s.flush().await;
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Writer::Tls { tls, raw } => {
                // close_notify, given a moment: a client that does not read is not
                // waited for.
                futures_lite::future::or(
                    async {
                        let _ = tls.close().await;
                    },
                    async {
                        smol::Timer::after(TLS_CLOSE_WAIT).await;
                    },
                )
                .await;
                let _ = raw.shutdown(std::net::Shutdown::Both);
            }
            Writer::Pipe(p) => {
                let _ = p.close().await;
            }
            Writer::Udp { .. } => {}
        }
    }
}
