//! Any MQTT broker (Agora's `--mqtt-port`, mosquitto) through a lean MQTT 3.1.1 client on
//! blocking sockets, buffered as the other lean clients are (writes gathered 64 KiB at a
//! time, reads of up to 128 KiB). The same code drives both rows, so their ratio is the
//! brokers'. Packets are built from the 3.1.1 specification here, not with the broker's
//! codec.
//!
//! Publishes are QoS 0, confirmed ones QoS 1 (many outstanding on one connection, each
//! waiting for its `PUBACK`); subscriptions are QoS 0. `sync` is a `PINGREQ` round trip:
//! both brokers handle a connection's packets in order.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};

use super::lean::{Deadline, Socket};
use super::{Dest, Mode, Result};

#[derive(Clone)]
pub(crate) struct MqttLean {
    pub(crate) addr: String,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("mqtt-lean: {e}")
}

/// Client ids unique in this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn put_len(out: &mut bytes::BytesMut, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if n == 0 {
            return;
        }
    }
}

fn put_str(out: &mut bytes::BytesMut, s: &[u8]) {
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

/// What came from the broker.
enum Event {
    Publish(Bytes),
    PubAck(u16),
    SubAck,
    PingResp,
    ConnAck(u8),
}

struct Conn {
    s: Socket,
}

impl Conn {
    fn connect(addr: &str) -> Result<Conn> {
        let mut c = Conn {
            s: Socket::connect(addr, "mqtt-lean")?,
        };
        let id = format!(
            "bench-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Relaxed)
        );
        let mut body = bytes::BytesMut::new();
        put_str(&mut body, b"MQTT");
        body.put_u8(4);
        body.put_u8(0x02); // clean session
        body.put_u16(0); // no keep-alive: runs are short and never idle
        put_str(&mut body, id.as_bytes());
        c.s.out.put_u8(0x10);
        put_len(&mut c.s.out, body.len());
        c.s.out.put_slice(&body);
        match c.event(&mut Deadline::after(Duration::from_secs(5)))? {
            Some(Event::ConnAck(0)) => Ok(c),
            Some(Event::ConnAck(code)) => Err(err(format!("CONNACK {code}"))),
            Some(_) => Err(err("something before CONNACK")),
            None => Err(err("no CONNACK within 5 s")),
        }
    }

    fn publish(&mut self, topic: &[u8], payload: &[u8], pkid: Option<u16>) -> Result<()> {
        let out = &mut self.s.out;
        let qos = if pkid.is_some() { 0x02 } else { 0 };
        out.put_u8(0x30 | qos);
        put_len(
            out,
            2 + topic.len() + if pkid.is_some() { 2 } else { 0 } + payload.len(),
        );
        put_str(out, topic);
        if let Some(id) = pkid {
            out.put_u16(id);
        }
        out.put_slice(payload);
        self.s.wrote()
    }

    /// Sends `PINGREQ` and waits for `PINGRESP`: the broker has read everything before.
    fn round_trip(&mut self) -> Result<()> {
        self.s.out.put_slice(&[0xC0, 0]);
        loop {
            match self.event(&mut Deadline::after(Duration::from_secs(10)))? {
                Some(Event::PingResp) => return Ok(()),
                Some(Event::Publish(_)) => return Err(err("a message on a publishing connection")),
                Some(_) => {}
                None => return Err(err("no PINGRESP within 10 s")),
            }
        }
    }

    /// The next event; `None` if none came before `deadline`.
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
        let b = &self.s.inb;
        if b.len() < 2 {
            return Ok(None);
        }
        let (mut len, mut i) = (0usize, 1);
        loop {
            let Some(&byte) = b.get(i) else {
                return Ok(None);
            };
            len |= ((byte & 0x7F) as usize) << (7 * (i - 1));
            if byte & 0x80 == 0 {
                break;
            }
            i += 1;
            if i > 4 {
                return Err(err("a length longer than 4 bytes"));
            }
        }
        if b.len() < i + 1 + len {
            return Ok(None);
        }
        let first = b[0];
        self.s.inb.advance(i + 1);
        let mut body = self.s.inb.split_to(len).freeze();
        Ok(Some(match first >> 4 {
            3 => {
                let tlen = body.get_u16() as usize;
                body.advance(tlen);
                if (first >> 1) & 3 > 0 {
                    return Err(err("a QoS 1 delivery to a QoS 0 subscription"));
                }
                Event::Publish(body)
            }
            4 => Event::PubAck(body.get_u16()),
            9 => {
                if body.last().is_some_and(|c| *c >= 0x80) {
                    return Err(err("the subscription was refused"));
                }
                Event::SubAck
            }
            13 => Event::PingResp,
            2 => Event::ConnAck(body.get(1).copied().unwrap_or(0xFF)),
            k => return Err(err(format!("unexpected packet type {k}"))),
        }))
    }
}

pub(crate) struct Pub {
    conn: RefCell<Conn>,
    topic: Vec<u8>,
    /// QoS 1 publishes sent, by packet id, not yet acknowledged.
    waiting: RefCell<HashSet<u16>>,
    next_pkid: std::cell::Cell<u16>,
}

pub(crate) struct Sub {
    conn: Conn,
}

impl super::Driver for MqttLean {
    type Pub = Pub;
    type Sub = Sub;

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        Ok(Pub {
            conn: RefCell::new(Conn::connect(&self.addr)?),
            topic: dest.name.as_bytes().to_vec(),
            waiting: RefCell::new(HashSet::new()),
            next_pkid: std::cell::Cell::new(1),
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        if let Mode::Ack { .. } = mode {
            return Err(err("MQTT has no competing consumers that acknowledge"));
        }
        let mut conn = Conn::connect(&self.addr)?;
        let out = &mut conn.s.out;
        out.put_u8(0x82);
        put_len(out, 2 + 2 + dest.name.len() + 1);
        out.put_u16(1);
        put_str(out, dest.name.as_bytes());
        out.put_u8(0);
        match conn.event(&mut Deadline::after(Duration::from_secs(10)))? {
            Some(Event::SubAck) => Ok(Sub { conn }),
            _ => Err(err("no SUBACK within 10 s")),
        }
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        let topic = &self.topic;
        self.conn.get_mut().publish(topic, &payload, None)
    }

    async fn push(&mut self) -> Result<()> {
        self.conn.get_mut().s.flush()
    }

    async fn sync(&mut self) -> Result<()> {
        self.conn.get_mut().round_trip()
    }

    /// QoS 1: many of these run at once on the thread; each writes its PUBLISH, lets
    /// the others write theirs, then reads acknowledgements (for whoever they are)
    /// until its own has come.
    async fn publish_confirmed(&self, payload: Bytes) -> Result<()> {
        let id = loop {
            let id = self.next_pkid.get();
            self.next_pkid.set(id.checked_add(1).unwrap_or(1));
            if self.waiting.borrow_mut().insert(id) {
                break id;
            }
        };
        self.conn
            .borrow_mut()
            .publish(&self.topic, &payload, Some(id))?;
        futures_lite::future::yield_now().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !self.waiting.borrow().contains(&id) {
                return Ok(());
            }
            {
                let mut conn = self.conn.borrow_mut();
                conn.s.flush()?;
                while let Some(e) = conn.parse()? {
                    match e {
                        Event::PubAck(acked) => {
                            self.waiting.borrow_mut().remove(&acked);
                        }
                        _ => return Err(err("something other than PUBACK")),
                    }
                }
                if self.waiting.borrow().contains(&id) && !conn.s.fill(deadline)? {
                    return Err(err(format!("no PUBACK for {id} within 10 s")));
                }
            }
            futures_lite::future::yield_now().await;
        }
    }

    async fn close(self) -> Result<()> {
        let mut c = self.conn.into_inner();
        c.s.out.put_slice(&[0xE0, 0]);
        c.s.close(Shutdown::Write)
    }
}

impl super::Subscriber for Sub {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        match self.conn.event(&mut Deadline::after(wait))? {
            Some(Event::Publish(m)) => Ok(Some(m)),
            Some(_) => Err(err("an unasked-for packet")),
            None => Ok(None),
        }
    }

    async fn close(mut self) -> Result<()> {
        self.conn.s.out.put_slice(&[0xE0, 0]);
        self.conn.s.close(Shutdown::Both)
    }
}
