//! What the lean drivers (`agora-lean`, `nats-lean`, `redis-lean`, and the `-tls` rows)
//! and the relay's client share: a blocking socket whose writes are gathered
//! [`WRITE_AT`] bytes at a time and whose reads take up to 128 KiB, with a deadline.
//! Each driver parses its own protocol out of [`Socket::inb`].
//!
//! The socket is generic over its [`Transport`]: TCP itself, or TLS over it
//! (`crate::tls`), so a `-tls` row runs exactly the code of its clear row with one more
//! layer under it. A driver is generic over the [`Dial`] that makes that layer.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::Result;

/// A byte stream a lean client speaks over: a TCP socket, or something over one.
pub(crate) trait Transport: Read + Write + Send {
    /// The TCP socket underneath: read timeouts and shutdown are set there.
    fn tcp(&self) -> &TcpStream;
    /// Says goodbye at this layer (TLS's `close_notify`) before the socket is shut.
    fn goodbye(&mut self) {}
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// How a driver turns a connected TCP socket into its transport, and what the
/// connections it made negotiated.
pub(crate) trait Dial: Clone + Send + Sync + 'static {
    type Stream: Transport;
    /// Wraps `tcp` (for TLS: the whole handshake, within a bounded time).
    fn dial(&self, tcp: TcpStream) -> Result<Self::Stream>;
    /// What every connection so far negotiated (TLS version and cipher suite), if it
    /// negotiates anything.
    fn negotiated(&self) -> Option<String> {
        None
    }
}

/// TCP as it is: the clear rows.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Plain;

impl Dial for Plain {
    type Stream = TcpStream;
    fn dial(&self, tcp: TcpStream) -> Result<TcpStream> {
        Ok(tcp)
    }
}

/// Bytes gathered before a write.
pub(crate) const WRITE_AT: usize = 64 * 1024;
/// The most one read asks for.
const READ: usize = 128 * 1024;
/// How long one read waits before the deadline is looked at again.
const READ_WAIT: Duration = Duration::from_millis(50);

/// A deadline `wait` from the first time it is asked for: a receiver that finds its
/// next message already buffered reads no clock for it.
pub(crate) struct Deadline {
    wait: Duration,
    at: Option<Instant>,
}

impl Deadline {
    pub(crate) fn after(wait: Duration) -> Deadline {
        Deadline { wait, at: None }
    }

    pub(crate) fn get(&mut self) -> Instant {
        *self.at.get_or_insert_with(|| Instant::now() + self.wait)
    }
}

/// Where the first CRLF in `b` starts.
pub(crate) fn crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

pub(crate) struct Socket<S: Transport = TcpStream> {
    sock: S,
    /// Written and not yet sent.
    pub(crate) out: BytesMut,
    /// Read and not yet parsed.
    pub(crate) inb: BytesMut,
    /// What a read lands in before it is appended to `inb`: zeroed once, so a read
    /// costs a copy of what came (at most 16 KiB over TLS) rather than zeroing
    /// [`READ`] bytes of `inb` each time.
    scratch: Box<[u8]>,
    /// The socket's read timeout is [`READ_WAIT`] (set once, not per read).
    timeout_set: bool,
    /// The driver's name, for errors.
    who: &'static str,
}

impl Socket {
    /// A clear TCP connection to `addr`.
    pub(crate) fn connect(addr: &str, who: &'static str) -> Result<Socket> {
        let e = |e: std::io::Error| format!("{who}: connect to {addr}: {e}");
        let sock = TcpStream::connect(addr).map_err(e)?;
        sock.set_nodelay(true).map_err(e)?;
        Ok(Socket {
            sock,
            out: BytesMut::with_capacity(2 * WRITE_AT),
            inb: BytesMut::with_capacity(2 * READ),
            scratch: vec![0; READ].into_boxed_slice(),
            timeout_set: false,
            who,
        })
    }

    /// The same connection through `dial`'s transport: at once (Agora's TLS port speaks
    /// TLS from the first byte), or after a clear greeting (NATS's `INFO`, then TLS).
    /// Nothing may be left unsent or unparsed: it belonged to the clear part.
    pub(crate) fn upgrade<D: Dial>(self, dial: &D) -> Result<Socket<D::Stream>> {
        if !self.out.is_empty() || !self.inb.is_empty() {
            return Err(self.err(format!(
                "{} bytes unsent, {} unparsed before the transport started",
                self.out.len(),
                self.inb.len()
            )));
        }
        let who = self.who;
        Ok(Socket {
            sock: dial.dial(self.sock).map_err(|e| format!("{who}: {e}"))?,
            out: self.out,
            inb: self.inb,
            scratch: self.scratch,
            timeout_set: false,
            who,
        })
    }
}

impl<S: Transport> Socket<S> {
    pub(crate) fn err(&self, e: impl std::fmt::Display) -> String {
        format!("{}: {e}", self.who)
    }

    /// Sends what was gathered once there is [`WRITE_AT`] of it.
    pub(crate) fn wrote(&mut self) -> Result<()> {
        if self.out.len() >= WRITE_AT {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            let r = self
                .sock
                .write_all(&self.out)
                .and_then(|()| self.sock.flush());
            r.map_err(|e| self.err(e))?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends what was gathered, then reads more into `inb`; false if nothing came
    /// before `deadline`.
    /// (A read waits at most [`READ_WAIT`], so `deadline` is missed by at most that.)
    pub(crate) fn fill(&mut self, deadline: Instant) -> Result<bool> {
        self.flush()?;
        if Instant::now() >= deadline {
            return Ok(false);
        }
        if !self.timeout_set {
            self.sock
                .tcp()
                .set_read_timeout(Some(READ_WAIT))
                .map_err(|e| self.err(e))?;
            self.timeout_set = true;
        }
        loop {
            let n = match self.sock.read(&mut self.scratch) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                    continue;
                }
                Err(e) => return Err(self.err(e)),
            };
            if n == 0 {
                return Err(self.err("the server closed the connection"));
            }
            self.inb.extend_from_slice(&self.scratch[..n]);
            return Ok(true);
        }
    }

    /// Sends what was gathered and closes `how`.
    pub(crate) fn close(&mut self, how: Shutdown) -> Result<()> {
        self.flush()?;
        self.sock.goodbye();
        let _ = self.sock.tcp().shutdown(how);
        Ok(())
    }
}
