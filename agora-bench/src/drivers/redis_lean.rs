//! redis-server through a lean client of RESP on blocking sockets, buffered as the other
//! lean clients are (writes gathered 64 KiB at a time, reads of up to 128 KiB). Publishes
//! are pipelined: up to [`OUTSTANDING`] commands in flight, their replies read as they
//! come. Topics are pub/sub channels; queues are lists, drained with `RPOP <key> <n>`
//! (up to [`POP`] at a time) and, when a list is empty, a blocking `BRPOP` (no acks).
//! The `redis` row (the redis crate) is what an application sees.

use std::collections::VecDeque;
use std::fmt::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::lean::Socket;
use super::{Dest, Mode, Result};
/// Publishes in flight before the publisher reads replies.
const OUTSTANDING: usize = 4096;
/// Elements one `RPOP` takes.
const POP: usize = 512;

#[derive(Clone)]
pub(crate) struct RedisLean {
    pub(crate) addr: String,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("redis-lean: {e}")
}

/// A RESP reply, as far as these commands need.
#[derive(Debug)]
enum Value {
    Simple,
    Int,
    Bulk(Option<Bytes>),
    Array(Option<Vec<Value>>),
}

/// Parses one reply from `b`: the value and the bytes it took, or `None` if incomplete.
fn parse(b: &[u8]) -> Result<Option<(Value, usize)>> {
    let Some(end) = b.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let (kind, line) = (b.first().copied(), &b[1.min(end)..end]);
    let num = || -> Result<i64> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err("a malformed length"))
    };
    let head = end + 2;
    match kind {
        Some(b'+') => Ok(Some((Value::Simple, head))),
        Some(b'-') => Err(err(String::from_utf8_lossy(line))),
        Some(b':') => Ok(Some((Value::Int, head))),
        Some(b'$') => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Value::Bulk(None), head)));
            }
            let n = n as usize;
            if b.len() < head + n + 2 {
                return Ok(None);
            }
            let v = Bytes::copy_from_slice(&b[head..head + n]);
            Ok(Some((Value::Bulk(Some(v)), head + n + 2)))
        }
        Some(b'*') => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Value::Array(None), head)));
            }
            let mut at = head;
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                match parse(&b[at..])? {
                    Some((v, used)) => {
                        items.push(v);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), at)))
        }
        _ => Err(err(format!(
            "an unknown reply {:?}",
            String::from_utf8_lossy(&b[..end])
        ))),
    }
}

pub(crate) struct Conn {
    s: Socket,
}

impl Conn {
    fn connect(addr: &str) -> Result<Conn> {
        Ok(Conn {
            s: Socket::connect(addr, "redis-lean")?,
        })
    }

    fn command(&mut self, args: &[&[u8]]) -> Result<()> {
        let out = &mut self.s.out;
        let _ = write!(out, "*{}\r\n", args.len());
        for a in args {
            let _ = write!(out, "${}\r\n", a.len());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.s.wrote()
    }

    /// The next reply; `None` if none came before `deadline`. What was gathered goes
    /// out before a wait.
    fn reply(&mut self, deadline: Instant) -> Result<Option<Value>> {
        loop {
            if let Some((v, used)) = parse(&self.s.inb)? {
                let _ = self.s.inb.split_to(used);
                return Ok(Some(v));
            }
            if !self.s.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    /// The next reply, within 10 s.
    fn answer(&mut self) -> Result<Value> {
        self.reply(Instant::now() + Duration::from_secs(10))?
            .ok_or_else(|| err("no reply within 10 s"))
    }
}

pub(crate) struct Pub {
    conn: Conn,
    dest: Dest,
    /// Commands sent whose replies have not been read.
    outstanding: usize,
}

pub(crate) enum Sub {
    Topic(Conn),
    Queue {
        conn: Conn,
        key: String,
        popped: VecDeque<Bytes>,
    },
}

impl super::Driver for RedisLean {
    type Pub = Pub;
    type Sub = Sub;

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        Ok(Pub {
            conn: Conn::connect(&self.addr)?,
            dest: dest.clone(),
            outstanding: 0,
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        let mut conn = Conn::connect(&self.addr)?;
        match mode {
            Mode::Topic => {
                conn.command(&[b"SUBSCRIBE", dest.name.as_bytes()])?;
                // Returns once Redis confirmed the subscription.
                match conn.answer()? {
                    Value::Array(Some(_)) => Ok(Sub::Topic(conn)),
                    v => Err(err(format!("SUBSCRIBE answered {v:?}"))),
                }
            }
            Mode::AutoAck { .. } => Ok(Sub::Queue {
                conn,
                key: dest.name.clone(),
                popped: VecDeque::new(),
            }),
            Mode::Ack { .. } => Err(err("lists have no consumer acks")),
        }
    }
}

impl Pub {
    /// Reads replies until at most `keep` are outstanding.
    fn settle(&mut self, keep: usize) -> Result<()> {
        while self.outstanding > keep {
            self.conn.answer()?;
            self.outstanding -= 1;
        }
        Ok(())
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        let verb: &[u8] = if self.dest.queue {
            b"LPUSH"
        } else {
            b"PUBLISH"
        };
        self.conn
            .command(&[verb, self.dest.name.as_bytes(), &payload])?;
        self.outstanding += 1;
        if self.outstanding >= OUTSTANDING {
            self.settle(OUTSTANDING / 2)?;
        }
        Ok(())
    }

    async fn push(&mut self) -> Result<()> {
        self.conn.s.flush()
    }

    async fn sync(&mut self) -> Result<()> {
        self.settle(0)
    }

    async fn publish_confirmed(&self, _payload: Bytes) -> Result<()> {
        Err(err(
            "the lean driver has no concurrent confirmed publishes (the redis row has them)",
        ))
    }

    async fn close(mut self) -> Result<()> {
        self.settle(0)?;
        self.conn.s.close(Shutdown::Write)
    }
}

impl super::Subscriber for Sub {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        let deadline = Instant::now() + wait;
        match self {
            Sub::Topic(conn) => loop {
                match conn.reply(deadline)? {
                    None => return Ok(None),
                    // ["message", channel, payload]
                    Some(Value::Array(Some(mut v))) if v.len() == 3 => {
                        if let Some(Value::Bulk(Some(p))) = v.pop() {
                            return Ok(Some(p));
                        }
                    }
                    Some(_) => {}
                }
            },
            Sub::Queue { conn, key, popped } => {
                if let Some(p) = popped.pop_front() {
                    return Ok(Some(p));
                }
                let n = POP.to_string();
                conn.command(&[b"RPOP", key.as_bytes(), n.as_bytes()])?;
                if let Value::Array(Some(items)) = conn.answer()? {
                    popped.extend(items.into_iter().filter_map(|v| match v {
                        Value::Bulk(b) => b,
                        _ => None,
                    }));
                }
                if let Some(p) = popped.pop_front() {
                    return Ok(Some(p));
                }
                // Empty: block for one, up to `wait` (fractions of a second since Redis 6).
                let secs = format!("{:.3}", wait.as_secs_f64().max(0.01));
                conn.command(&[b"BRPOP", key.as_bytes(), secs.as_bytes()])?;
                let until = deadline + Duration::from_secs(5);
                match conn.reply(until)? {
                    Some(Value::Array(Some(mut kv))) if kv.len() == 2 => match kv.pop() {
                        Some(Value::Bulk(Some(p))) => Ok(Some(p)),
                        _ => Ok(None),
                    },
                    Some(_) => Ok(None),
                    None => Err(err("BRPOP did not return")),
                }
            }
        }
    }

    async fn close(self) -> Result<()> {
        let (Sub::Topic(mut conn) | Sub::Queue { mut conn, .. }) = self;
        conn.s.close(Shutdown::Both)
    }
}
