//! Agora through a lean client: the protocol crate's codec on blocking sockets, buffered
//! as the `nats-lean` and relay clients are (writes gathered 64 KiB at a time, reads of
//! up to 128 KiB, the broker's `PINGREQ` answered). Set against `nats-lean`, it shows the
//! brokers apart from their client libraries; the `agora` row (the SDK) is what an
//! application sees. It publishes without confirms: the `confirm` scenario is the SDK's.
//! Over [`Tls`](crate::tls::Tls) instead of [`Plain`] it is the `agora-lean-tls` row:
//! the same code on a broker started with `--tls-cert`, TLS from the first byte.

use std::net::Shutdown;
use std::time::Duration;

use agora_protocol::{
    decode_server, encode, encode_pub, AckMode, ClientFrame, Destination, Headers, ServerFrame,
    Subscribe,
};
use bytes::Bytes;

use super::lean::{crlf, Deadline, Dial, Plain, Socket};
use super::{Dest, Mode, Result};

#[derive(Clone)]
pub(crate) struct AgoraLean<D: Dial = Plain> {
    pub(crate) addr: String,
    /// Clear TCP, or TLS over it.
    pub(crate) dial: D,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("agora-lean: {e}")
}

fn dest_of(d: &Dest) -> Result<Destination> {
    if d.queue {
        Destination::queue(&d.name)
    } else {
        Destination::topic(&d.name)
    }
    .map_err(err)
}

/// What a subscription names: a queue, a topic, or a topic pattern (`*`, `>`).
fn sub_dest_of(d: &Dest) -> Result<Destination> {
    match d.queue {
        true => dest_of(d),
        false => Destination::topic_pattern(&d.name).map_err(err),
    }
}

struct Conn<D: Dial> {
    s: Socket<D::Stream>,
    next_rid: u64,
}

impl<D: Dial> Conn<D> {
    fn connect(addr: &str, dial: &D) -> Result<Conn<D>> {
        let mut c = Conn {
            s: Socket::connect(addr, "agora-lean")?.upgrade(dial)?,
            next_rid: 1,
        };
        match c.frame(&mut Deadline::after(Duration::from_secs(5)))? {
            Some(ServerFrame::Info(_)) => Ok(c),
            Some(f) => Err(err(format!("expected INFO, got {f:?}"))),
            None => Err(err("no INFO from the broker within 5 s")),
        }
    }

    fn send(&mut self, f: &ClientFrame) -> Result<()> {
        encode(f, &mut self.s.out);
        self.s.wrote()
    }

    /// Sends a request with an id and waits for its answer (`OK`, `PINGRESP`); an `ERR`
    /// for it, or a delivery meanwhile on a connection that expects none, is an error.
    fn request(&mut self, make: impl FnOnce(u64) -> ClientFrame) -> Result<()> {
        let rid = self.next_rid;
        self.next_rid += 1;
        self.send(&make(rid))?;
        let mut deadline = Deadline::after(Duration::from_secs(10));
        loop {
            match self.frame(&mut deadline)? {
                Some(ServerFrame::Ok { rid: Some(r) } | ServerFrame::PingResp { rid: Some(r) })
                    if r == rid =>
                {
                    return Ok(())
                }
                Some(ServerFrame::Err(e)) => return Err(err(format!("{e:?}"))),
                Some(ServerFrame::Msg(_)) => return Err(err("a delivery while waiting")),
                Some(_) => {}
                None => return Err(err("no answer within 10 s")),
            }
        }
    }

    /// The next frame from the broker, answering its `PINGREQ`s; `None` if none came
    /// before `deadline`. What was gathered (a subscriber's `ACK`s, a request) goes out
    /// before any wait.
    fn frame(&mut self, deadline: &mut Deadline) -> Result<Option<ServerFrame>> {
        loop {
            match decode_server(&mut self.s.inb).map_err(err)? {
                Some(ServerFrame::PingReq { rid }) => {
                    self.send(&ClientFrame::PingResp { rid })?;
                    continue;
                }
                Some(f) => return Ok(Some(f)),
                None => {}
            }
            if !self.s.fill(deadline.get())? {
                return Ok(None);
            }
        }
    }

    /// A whole `MSG <dest> <sid> <did> <count> <size>` frame at the head of what was
    /// read: its delivery id and payload, cut out without building a frame (as the
    /// NATS client parses its `MSG` lines). `None` for anything else, or a frame not
    /// whole yet: [`frame`](Conn::frame) then decodes it in full.
    fn msg(&mut self) -> Option<(u64, Bytes)> {
        let inb = &mut self.s.inb;
        if !inb.starts_with(b"MSG ") {
            return None;
        }
        let end = crlf(inb)?;
        let mut tokens = inb[..end].split(|b| *b == b' ');
        let number = |t: Option<&[u8]>| std::str::from_utf8(t?).ok()?.parse::<u64>().ok();
        let did = number(tokens.nth(3))?;
        let size = number(tokens.nth(1))? as usize;
        if tokens.next().is_some() {
            return None;
        }
        let body = end + 2;
        if inb.len() < body + size + 2 {
            return None;
        }
        let frame = inb.split_to(body + size + 2).freeze();
        Some((did, frame.slice(body..body + size)))
    }
}

pub(crate) struct Pub<D: Dial> {
    conn: Conn<D>,
    dest: Destination,
}

pub(crate) struct Sub<D: Dial> {
    conn: Conn<D>,
    /// Acknowledge each delivery (`Mode::Ack`).
    ack: bool,
}

impl<D: Dial> super::Driver for AgoraLean<D> {
    type Pub = Pub<D>;
    type Sub = Sub<D>;

    async fn publisher(&self, dest: &Dest) -> Result<Pub<D>> {
        Ok(Pub {
            conn: Conn::connect(&self.addr, &self.dial)?,
            dest: dest_of(dest)?,
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub<D>> {
        let mut conn = Conn::connect(&self.addr, &self.dial)?;
        let (prefetch, ack) = match mode {
            Mode::Topic => (None, None),
            Mode::AutoAck { prefetch } => (Some(prefetch), Some(AckMode::Auto)),
            Mode::Ack { prefetch } => (Some(prefetch), Some(AckMode::Manual)),
        };
        let dest = sub_dest_of(dest)?;
        conn.request(|rid| {
            ClientFrame::Sub(Subscribe {
                rid: Some(rid),
                dest,
                sid: 1,
                prefetch,
                ack,
            })
        })?;
        Ok(Sub {
            conn,
            ack: matches!(mode, Mode::Ack { .. }),
        })
    }

    fn negotiated(&self) -> Option<String> {
        self.dial.negotiated()
    }
}

impl<D: Dial> super::Publisher for Pub<D> {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        // Encoded from its parts, as the SDK's publisher does: no frame built per message.
        let s = &mut self.conn.s;
        encode_pub(None, &self.dest, &Headers::new(), &payload, &mut s.out);
        s.wrote()
    }

    async fn push(&mut self) -> Result<()> {
        self.conn.s.flush()
    }

    async fn sync(&mut self) -> Result<()> {
        // A refused publish is answered with ERR before the PINGRESP.
        self.conn
            .request(|rid| ClientFrame::PingReq { rid: Some(rid) })
    }

    async fn publish_confirmed(&self, _payload: Bytes) -> Result<()> {
        Err(err(
            "the lean driver publishes without confirms (the agora row has them)",
        ))
    }

    async fn close(mut self) -> Result<()> {
        self.conn.s.close(Shutdown::Write)
    }
}

impl<D: Dial> super::Subscriber for Sub<D> {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        let mut deadline = Deadline::after(wait);
        loop {
            let (did, payload) = match self.conn.msg() {
                Some(m) => m,
                None => match self.conn.frame(&mut deadline)? {
                    Some(ServerFrame::Msg(d)) => (d.did, d.payload),
                    Some(ServerFrame::Err(e)) => return Err(err(format!("{e:?}"))),
                    Some(ServerFrame::Cancel { .. }) => return Err(err("subscription cancelled")),
                    Some(_) => continue,
                    None => return Ok(None),
                },
            };
            if self.ack {
                self.conn.send(&ClientFrame::Ack { rid: None, did })?;
            }
            return Ok(Some(payload));
        }
    }

    async fn close(mut self) -> Result<()> {
        // ACKs still gathered go out first: a delivery left unacknowledged would be
        // given to another consumer when this connection closes.
        self.conn.s.close(Shutdown::Write)
    }
}
