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
//!
//! Over [`Tls`](crate::tls::Tls) it is the `nats-lean-tls` row, and connects as NATS
//! clients do: the server's `INFO` in clear text (saying `"tls_required":true`), then
//! the TLS handshake, then `CONNECT` and the rest over TLS. (nats-server 2.10.4 and
//! later can also be told `handshake_first`; Debian's 2.9 cannot, and the handshake is
//! made before any run is measured either way.)

use std::fmt::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::lean::{crlf, Deadline, Dial, Plain, Socket};
use super::{Dest, Mode, Result};

#[derive(Clone)]
pub(crate) struct NatsLean<D: Dial = Plain> {
    pub(crate) addr: String,
    /// Clear TCP, or TLS after the server's `INFO`.
    pub(crate) dial: D,
}

/// What came from the server, after the connection answered any `PING` itself.
enum Event {
    Msg(Bytes),
    Pong,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("nats-lean: {e}")
}

/// One connection.
struct Conn<D: Dial> {
    s: Socket<D::Stream>,
}

impl<D: Dial> Conn<D> {
    fn connect(addr: &str, dial: &D) -> Result<Conn<D>> {
        let mut s = Socket::connect(addr, "nats-lean")?;
        // The server speaks first, in clear text: INFO.
        let deadline = Instant::now() + Duration::from_secs(5);
        let info = loop {
            if let Some(end) = crlf(&s.inb) {
                break s.inb.split_to(end + 2);
            }
            if !s.fill(deadline)? {
                return Err(err("no INFO from the server within 5 s"));
            }
        };
        if !info.starts_with(b"INFO ") {
            return Err(err(format!(
                "expected INFO, got {:?}",
                String::from_utf8_lossy(&info)
            )));
        }
        // Then TLS, if the dial makes it: the server waits for the handshake.
        let mut c = Conn {
            s: s.upgrade(dial)?,
        };
        // No echo: a publisher never gets its own messages back.
        c.s.out.extend_from_slice(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\
              \"lang\":\"rust\",\"version\":\"agora-bench\",\"protocol\":1}\r\n",
        );
        c.round_trip()?;
        Ok(c)
    }

    /// Sends `PING` and waits for its `PONG`: the server has handled everything sent
    /// before. A message meanwhile is an error (only publishers and new subscribers sync).
    fn round_trip(&mut self) -> Result<()> {
        self.s.out.extend_from_slice(b"PING\r\n");
        match self.event(&mut Deadline::after(Duration::from_secs(10)))? {
            Some(Event::Pong) => Ok(()),
            Some(Event::Msg(_)) => Err(err("a message on a publishing connection")),
            None => Err(err("no PONG from the server within 10 s")),
        }
    }

    /// The next message or `PONG`, answering `PING`s and skipping `+OK` and `INFO`;
    /// `None` if none came before `deadline`. What was gathered goes out before a wait.
    fn event(&mut self, deadline: &mut Deadline) -> Result<Option<Event>> {
        loop {
            if let Some(e) = self.parse()? {
                return Ok(Some(e));
            }
            if !self.s.fill(deadline.get())? {
                return Ok(None);
            }
        }
    }

    /// One event from what is buffered, if a whole one is there.
    fn parse(&mut self) -> Result<Option<Event>> {
        loop {
            let Some(end) = crlf(&self.s.inb) else {
                return Ok(None);
            };
            let line = &self.s.inb[..end];
            if line.starts_with(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size = line
                    .rsplit(|b| *b == b' ')
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.parse::<usize>().ok())
                    .ok_or_else(|| err("a MSG line without a size"))?;
                let body = end + 2;
                if self.s.inb.len() < body + size + 2 {
                    return Ok(None);
                }
                let frame = self.s.inb.split_to(body + size + 2).freeze();
                return Ok(Some(Event::Msg(frame.slice(body..body + size))));
            }
            let line = self.s.inb.split_to(end + 2);
            match &line[..end] {
                b"PONG" => return Ok(Some(Event::Pong)),
                b"PING" => self.s.out.extend_from_slice(b"PONG\r\n"),
                b"+OK" => {}
                l if l.starts_with(b"INFO ") => {}
                l if l.starts_with(b"-ERR") => return Err(err(String::from_utf8_lossy(l))),
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

pub(crate) struct Pub<D: Dial> {
    conn: Conn<D>,
    subject: String,
}

pub(crate) struct Sub<D: Dial> {
    conn: Conn<D>,
}

impl<D: Dial> super::Driver for NatsLean<D> {
    type Pub = Pub<D>;
    type Sub = Sub<D>;

    async fn publisher(&self, dest: &Dest) -> Result<Pub<D>> {
        Ok(Pub {
            conn: Conn::connect(&self.addr, &self.dial)?,
            subject: dest.name.clone(),
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub<D>> {
        let mut conn = Conn::connect(&self.addr, &self.dial)?;
        let sub = match mode {
            Mode::Topic => format!("SUB {} 1\r\n", dest.name),
            Mode::AutoAck { .. } => format!("SUB {} bench 1\r\n", dest.name),
            Mode::Ack { .. } => return Err(err("core NATS has no consumer acks")),
        };
        conn.s.out.extend_from_slice(sub.as_bytes());
        // Returns once the server has the subscription.
        conn.round_trip()?;
        Ok(Sub { conn })
    }

    fn negotiated(&self) -> Option<String> {
        self.dial.negotiated()
    }
}

impl<D: Dial> super::Publisher for Pub<D> {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        let s = &mut self.conn.s;
        write!(s.out, "PUB {} {}\r\n", self.subject, payload.len()).map_err(err)?;
        s.out.extend_from_slice(&payload);
        s.out.extend_from_slice(b"\r\n");
        s.wrote()
    }

    async fn push(&mut self) -> Result<()> {
        self.conn.s.flush()
    }

    async fn sync(&mut self) -> Result<()> {
        self.conn.round_trip()
    }

    async fn publish_confirmed(&self, _payload: Bytes) -> Result<()> {
        Err(err("core NATS has no publisher confirms"))
    }

    async fn close(mut self) -> Result<()> {
        self.conn.s.close(Shutdown::Write)
    }
}

impl<D: Dial> super::Subscriber for Sub<D> {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        match self.conn.event(&mut Deadline::after(wait))? {
            Some(Event::Msg(m)) => Ok(Some(m)),
            Some(Event::Pong) => Err(err("an unasked-for PONG")),
            None => Ok(None),
        }
    }

    async fn close(mut self) -> Result<()> {
        self.conn.s.close(Shutdown::Both)
    }
}
