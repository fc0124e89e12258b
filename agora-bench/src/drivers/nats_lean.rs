//! nats-server over its text protocol on blocking sockets, written the way the relay's
//! client is: writes buffered 64 KiB at a time, reads in batches of up to 128 KiB, the
//! server's `PING` answered. A client this lean leaves the broker to bound the figure;
//! the `nats` row (async-nats) is what an application sees. Topics are subjects, queues
//! are queue groups (core NATS: no persistence, no acknowledgements, no confirms).
//!
//! The protocol, from nats-server's documentation ("Client Protocol"): the server opens
//! with `INFO {…}`; the client sends `CONNECT {…}`; `PUB <subject> <#bytes>` and
//! `SUB <subject> [queue group] <sid>` go out, `MSG <subject> <sid> [reply-to] <#bytes>`
//! comes in, each followed by the payload and CRLF; `PING`/`PONG` either way; `+OK` and
//! `-ERR '<text>'` from the server.

use std::future::Future;
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Dest, Mode, Result};

#[derive(Clone)]
pub(crate) struct NatsLean {
    pub(crate) addr: String,
}

/// What came from the server, after the connection answered any `PING` itself.
enum Event {
    Msg(Bytes),
    Pong,
}

/// One connection: a buffered writer and a read buffer over the same socket.
struct Conn {
    sock: TcpStream,
    out: BufWriter<TcpStream>,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("nats-lean: {e}")
}

impl Conn {
    fn connect(addr: &str) -> Result<Conn> {
        let sock = TcpStream::connect(addr).map_err(err)?;
        sock.set_nodelay(true).map_err(err)?;
        let out = BufWriter::with_capacity(64 * 1024, sock.try_clone().map_err(err)?);
        let mut c = Conn {
            sock,
            out,
            buf: Vec::with_capacity(256 * 1024),
            start: 0,
        };
        // The server speaks first: INFO.
        let deadline = Instant::now() + Duration::from_secs(5);
        let info = loop {
            if let Some(line) = c.line() {
                break line;
            }
            if !c.fill(deadline)? {
                return Err(err("no INFO from the server within 5 s"));
            }
        };
        if !info.starts_with(b"INFO ") {
            return Err(err(format!(
                "expected INFO, got {:?}",
                String::from_utf8_lossy(&info)
            )));
        }
        // No echo: a publisher never gets its own messages back.
        c.out
            .write_all(
                b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\
                  \"lang\":\"rust\",\"version\":\"agora-bench\",\"protocol\":1}\r\n",
            )
            .map_err(err)?;
        c.round_trip()?;
        Ok(c)
    }

    /// Sends `PING` and waits for its `PONG`: the server has handled everything sent
    /// before. Messages that arrive meanwhile are an error (only publishers sync).
    fn round_trip(&mut self) -> Result<()> {
        self.out.write_all(b"PING\r\n").map_err(err)?;
        self.out.flush().map_err(err)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        match self.event(deadline)? {
            Some(Event::Pong) => Ok(()),
            Some(Event::Msg(_)) => Err(err("a message on a publishing connection")),
            None => Err(err("no PONG from the server within 10 s")),
        }
    }

    /// A whole control line (CRLF not included), if the buffer holds one.
    fn line(&mut self) -> Option<Vec<u8>> {
        let avail = &self.buf[self.start..];
        let end = avail.windows(2).position(|w| w == b"\r\n")?;
        let line = avail[..end].to_vec();
        self.start += end + 2;
        Some(line)
    }

    /// Reads more; false if nothing came before `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<bool> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.sock
                .set_read_timeout(Some(left.min(Duration::from_millis(50))))
                .map_err(err)?;
            let have = self.buf.len();
            self.buf.resize(have + 128 * 1024, 0);
            let r = self.sock.read(&mut self.buf[have..]);
            match r {
                Ok(0) => {
                    self.buf.truncate(have);
                    return Err(err("the server closed the connection"));
                }
                Ok(n) => {
                    self.buf.truncate(have + n);
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    self.buf.truncate(have);
                }
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(err(e));
                }
            }
        }
    }

    /// The next message or `PONG`, answering `PING`s and skipping `+OK` and `INFO`;
    /// `None` if none came before `deadline`.
    fn event(&mut self, deadline: Instant) -> Result<Option<Event>> {
        loop {
            if let Some(e) = self.parse()? {
                return Ok(Some(e));
            }
            if !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    /// One event from what is buffered, if a whole one is there.
    fn parse(&mut self) -> Result<Option<Event>> {
        loop {
            let avail = &self.buf[self.start..];
            let Some(end) = avail.windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let line = &avail[..end];
            if line.starts_with(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size = line
                    .rsplit(|b| *b == b' ')
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.parse::<usize>().ok())
                    .ok_or_else(|| err("a MSG line without a size"))?;
                let body = end + 2;
                if avail.len() < body + size + 2 {
                    return Ok(None);
                }
                let payload = Bytes::copy_from_slice(&avail[body..body + size]);
                self.start += body + size + 2;
                return Ok(Some(Event::Msg(payload)));
            }
            let line = line.to_vec();
            self.start += end + 2;
            match line.as_slice() {
                b"PONG" => return Ok(Some(Event::Pong)),
                b"PING" => {
                    self.out.write_all(b"PONG\r\n").map_err(err)?;
                    self.out.flush().map_err(err)?;
                }
                b"+OK" => {}
                l if l.starts_with(b"INFO ") => {}
                l if l.starts_with(b"-ERR") => {
                    return Err(err(String::from_utf8_lossy(l)));
                }
                l => {
                    return Err(err(format!(
                        "unexpected line {:?}",
                        String::from_utf8_lossy(l)
                    )))
                }
            }
        }
    }
}

pub(crate) struct Pub {
    conn: Conn,
    subject: String,
}

pub(crate) struct Sub {
    conn: Conn,
}

impl super::Driver for NatsLean {
    type Pub = Pub;
    type Sub = Sub;

    fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        futures_lite::future::block_on(fut)
    }

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        Ok(Pub {
            conn: Conn::connect(&self.addr)?,
            subject: dest.name.clone(),
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        let mut conn = Conn::connect(&self.addr)?;
        let sub = match mode {
            Mode::Topic => format!("SUB {} 1\r\n", dest.name),
            Mode::AutoAck { .. } => format!("SUB {} bench 1\r\n", dest.name),
            Mode::Ack { .. } => return Err(err("core NATS has no consumer acks")),
        };
        conn.out.write_all(sub.as_bytes()).map_err(err)?;
        // Returns once the server has the subscription.
        conn.round_trip()?;
        Ok(Sub { conn })
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        let out = &mut self.conn.out;
        write!(out, "PUB {} {}\r\n", self.subject, payload.len())
            .and_then(|()| out.write_all(&payload))
            .and_then(|()| out.write_all(b"\r\n"))
            .map_err(err)
    }

    async fn push(&mut self) -> Result<()> {
        self.conn.out.flush().map_err(err)
    }

    async fn sync(&mut self) -> Result<()> {
        self.conn.round_trip()
    }

    async fn publish_confirmed(&self, _payload: Bytes) -> Result<()> {
        Err(err("core NATS has no publisher confirms"))
    }

    async fn close(mut self) -> Result<()> {
        self.conn.out.flush().map_err(err)?;
        let _ = self.conn.sock.shutdown(Shutdown::Write);
        Ok(())
    }
}

impl super::Subscriber for Sub {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        match self.conn.event(Instant::now() + wait)? {
            Some(Event::Msg(m)) => Ok(Some(m)),
            Some(Event::Pong) => Err(err("an unasked-for PONG")),
            None => Ok(None),
        }
    }

    async fn close(self) -> Result<()> {
        let _ = self.conn.sock.shutdown(Shutdown::Both);
        Ok(())
    }
}
