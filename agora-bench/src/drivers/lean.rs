//! What the lean drivers (`agora-lean`, `nats-lean`, `redis-lean`) and the relay's
//! client share: a blocking socket whose writes are gathered [`WRITE_AT`] bytes at a
//! time and whose reads take up to 128 KiB, with a deadline. Each driver parses its own
//! protocol out of [`Socket::inb`].

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::Result;

/// Bytes gathered before a write.
pub(crate) const WRITE_AT: usize = 64 * 1024;
/// The most one read asks for.
const READ: usize = 128 * 1024;

pub(crate) struct Socket {
    sock: TcpStream,
    /// Written and not yet sent.
    pub(crate) out: BytesMut,
    /// Read and not yet parsed.
    pub(crate) inb: BytesMut,
    /// The driver's name, for errors.
    who: &'static str,
}

impl Socket {
    pub(crate) fn connect(addr: &str, who: &'static str) -> Result<Socket> {
        let e = |e: std::io::Error| format!("{who}: connect to {addr}: {e}");
        let sock = TcpStream::connect(addr).map_err(e)?;
        sock.set_nodelay(true).map_err(e)?;
        Ok(Socket {
            sock,
            out: BytesMut::with_capacity(2 * WRITE_AT),
            inb: BytesMut::with_capacity(2 * READ),
            who,
        })
    }

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
            let r = self.sock.write_all(&self.out);
            r.map_err(|e| self.err(e))?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends what was gathered, then reads more into `inb`; false if nothing came
    /// before `deadline`.
    pub(crate) fn fill(&mut self, deadline: Instant) -> Result<bool> {
        self.flush()?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let wait = left.min(Duration::from_millis(50));
            self.sock
                .set_read_timeout(Some(wait))
                .map_err(|e| self.err(e))?;
            let have = self.inb.len();
            self.inb.resize(have + READ, 0);
            let r = self.sock.read(&mut self.inb[have..]);
            let n = match r {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    self.inb.truncate(have);
                    continue;
                }
                Err(e) => {
                    self.inb.truncate(have);
                    return Err(self.err(e));
                }
            };
            self.inb.truncate(have + n);
            if n == 0 {
                return Err(self.err("the server closed the connection"));
            }
            return Ok(true);
        }
    }

    /// Sends what was gathered and closes `how`.
    pub(crate) fn close(&mut self, how: Shutdown) -> Result<()> {
        self.flush()?;
        let _ = self.sock.shutdown(how);
        Ok(())
    }
}
