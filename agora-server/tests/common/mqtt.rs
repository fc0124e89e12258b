//! A raw MQTT client for tests: packets built byte by byte from the specifications
//! (not through the broker's codec), so a test checks the broker's bytes, not the
//! codec against itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use super::DEADLINE;

fn varint(mut n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            return v;
        }
    }
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// A packet: its first byte and body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend(varint(body.len()));
    p.extend_from_slice(body);
    p
}

/// What a test's CONNECT says.
#[derive(Default, Clone)]
pub struct Hello<'a> {
    /// 4 (3.1.1) or 5.
    pub level: u8,
    pub id: &'a str,
    pub keep_alive: u16,
    pub clean: bool,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// (topic, payload, qos)
    pub will: Option<(&'a str, &'a str, u8)>,
    /// MQTT 5's Session Expiry Interval.
    pub session_expiry: Option<u32>,
}

impl Hello<'_> {
    pub fn v311(id: &str) -> Hello<'_> {
        Hello {
            level: 4,
            id,
            clean: true,
            ..Hello::default()
        }
    }

    pub fn v5(id: &str) -> Hello<'_> {
        Hello {
            level: 5,
            ..Hello::v311(id)
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let v5 = self.level == 5;
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some((_, _, q)) = self.will {
            flags |= 0x04 | (q << 3);
        }
        if self.user.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        let mut b = string(b"MQTT");
        b.push(self.level);
        b.push(flags);
        b.extend(self.keep_alive.to_be_bytes());
        if v5 {
            match self.session_expiry {
                Some(e) => {
                    b.extend([5, 0x11]);
                    b.extend(e.to_be_bytes());
                }
                None => b.push(0),
            }
        }
        b.extend(string(self.id.as_bytes()));
        if let Some((t, p, _)) = self.will {
            if v5 {
                b.push(0);
            }
            b.extend(string(t.as_bytes()));
            b.extend(string(p.as_bytes()));
        }
        if let Some(u) = self.user {
            b.extend(string(u.as_bytes()));
        }
        if let Some(p) = self.password {
            b.extend(string(p.as_bytes()));
        }
        packet(0x10, &b)
    }
}

/// A PUBLISH (no properties on 5).
pub fn publish(v5: bool, topic: &str, payload: &[u8], qos: u8, pkid: u16, retain: bool) -> Vec<u8> {
    let mut b = string(topic.as_bytes());
    if qos > 0 {
        b.extend(pkid.to_be_bytes());
    }
    if v5 {
        b.push(0);
    }
    b.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &b)
}

/// A SUBSCRIBE of one filter.
pub fn subscribe(v5: bool, pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if v5 {
        b.push(0);
    }
    b.extend(string(filter.as_bytes()));
    b.push(qos);
    packet(0x82, &b)
}

/// A PUBLISH as received: (topic, payload, qos, retain, packet id).
#[derive(Debug, PartialEq, Eq)]
pub struct Got {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub pkid: Option<u16>,
}

pub struct Mqtt {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pub v5: bool,
    /// The CONNACK's session present flag.
    pub present: bool,
}

impl Mqtt {
    /// Connects and sends `hello`; returns the client and the CONNACK's code.
    pub fn connect(addr: SocketAddr, hello: &Hello<'_>) -> (Mqtt, u8) {
        let stream = TcpStream::connect(addr).expect("connect");
        let mut m = Mqtt {
            stream,
            buf: Vec::new(),
            v5: hello.level == 5,
            present: false,
        };
        m.send(&hello.bytes());
        let (first, body) = m.next().expect("a CONNACK");
        assert_eq!(first, 0x20, "CONNACK expected: {body:?}");
        m.present = body[0] & 1 == 1;
        (m, body[1])
    }

    /// Connects, expecting success.
    pub fn open(addr: SocketAddr, hello: &Hello<'_>) -> Mqtt {
        let (m, code) = Mqtt::connect(addr, hello);
        assert_eq!(code, 0, "CONNACK code");
        m
    }

    pub fn send(&mut self, b: &[u8]) {
        self.stream.write_all(b).expect("write");
    }

    /// The next packet (first byte, body), or `None` once the broker closed.
    pub fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        let end = Instant::now() + DEADLINE;
        loop {
            if self.buf.len() >= 2 {
                let mut len = 0usize;
                let mut i = 1;
                let mut complete = false;
                while i < self.buf.len() && i <= 4 {
                    len |= ((self.buf[i] & 0x7F) as usize) << (7 * (i - 1));
                    if self.buf[i] & 0x80 == 0 {
                        complete = true;
                        break;
                    }
                    i += 1;
                }
                if complete && self.buf.len() > i + len {
                    let first = self.buf[0];
                    let body = self.buf[i + 1..i + 1 + len].to_vec();
                    self.buf.drain(..i + 1 + len);
                    return Some((first, body));
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "nothing from the broker within {DEADLINE:?}"
            );
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    panic!("nothing from the broker within {DEADLINE:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// The next packet, which must be of `kind` (the first byte's upper half).
    pub fn expect(&mut self, kind: u8) -> Vec<u8> {
        let (first, body) = self.next().expect("a packet, not the end");
        assert_eq!(first >> 4, kind, "packet type (body {body:?})");
        body
    }

    /// The next packet, which must be a PUBLISH; acknowledges it at QoS 1.
    pub fn received(&mut self) -> Got {
        let (first, body) = self.next().expect("a PUBLISH, not the end");
        assert_eq!(first >> 4, 3, "PUBLISH expected, got {first:#x} {body:?}");
        let qos = (first >> 1) & 3;
        let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
        let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
        let mut at = 2 + tlen;
        let pkid = (qos > 0).then(|| {
            at += 2;
            u16::from_be_bytes([body[at - 2], body[at - 1]])
        });
        if self.v5 {
            // Skip the properties (their length is a variable byte integer).
            let mut len = 0usize;
            let mut shift = 0;
            loop {
                let b = body[at];
                at += 1;
                len |= ((b & 0x7F) as usize) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            at += len;
        }
        if let Some(id) = pkid {
            let mut ack = id.to_be_bytes().to_vec();
            if self.v5 {
                ack.push(0);
            }
            self.send(&packet(0x40, &ack));
        }
        Got {
            topic,
            payload: body[at..].to_vec(),
            qos,
            retain: first & 1 == 1,
            pkid,
        }
    }

    /// Subscribes to `filter` and returns the SUBACK's code.
    pub fn subscribe(&mut self, pkid: u16, filter: &str, qos: u8) -> u8 {
        self.send(&subscribe(self.v5, pkid, filter, qos));
        let body = self.expect(9);
        assert_eq!(u16::from_be_bytes([body[0], body[1]]), pkid);
        *body.last().unwrap()
    }

    /// Publishes at QoS 1 and waits for its PUBACK; returns its reason code (0 on
    /// 3.1.1).
    pub fn publish_confirmed(
        &mut self,
        topic: &str,
        payload: &[u8],
        pkid: u16,
        retain: bool,
    ) -> u8 {
        self.send(&publish(self.v5, topic, payload, 1, pkid, retain));
        let body = self.expect(4);
        assert_eq!(u16::from_be_bytes([body[0], body[1]]), pkid);
        body.get(2).copied().unwrap_or(0)
    }

    /// Waits for the broker to close the connection; what it sent before, in order.
    pub fn closed(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        while let Some(p) = self.next() {
            got.push(p);
        }
        got
    }
}
