//! The null relay and its client: the ceiling that loopback and these CPUs allow.
//!
//! The relay (`agora-bench relay`, a process of its own like the brokers) reads one role
//! byte per connection, `P` or `S`, and then never looks at a byte again: whatever a
//! publisher sends is written, as read, to every subscriber. Clients frame messages as
//! `u32 LE length` + payload, which the relay does not parse. It has no queues, no
//! acknowledgements and no per-subscriber buffers, so scenarios that need them are
//! skipped for it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::lean::Socket;
use super::{Dest, Mode, Result};

/// Runs the relay until killed: prints its address, then serves.
pub(crate) fn relay(port: u16) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let addr = listener.local_addr()?;
    println!("{}", agora_protocol::startup::line("relay", "tcp", addr));
    io::stdout().flush()?;
    let subscribers: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let subscribers = subscribers.clone();
        std::thread::spawn(move || {
            let _ = conn.set_nodelay(true);
            let mut role = [0u8; 1];
            if conn.read_exact(&mut role).is_err() {
                return;
            }
            match role[0] {
                b'S' => {
                    if let Ok(clone) = conn.try_clone() {
                        subscribers.lock().expect("relay lock").push(clone);
                        let _ = conn.write_all(b"+");
                    }
                }
                b'P' => forward(conn, &subscribers),
                _ => {}
            }
        });
    }
    Ok(())
}

fn forward(mut from: TcpStream, subscribers: &Mutex<Vec<TcpStream>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut subs = subscribers.lock().expect("relay lock");
        subs.retain_mut(|s| s.write_all(&buf[..n]).is_ok());
    }
}

#[derive(Clone)]
pub(crate) struct Raw {
    pub(crate) addr: String,
}

/// A client of the relay: the lean drivers' socket, opened with its role byte.
fn connect(addr: &str, role: u8) -> Result<Socket> {
    let mut s = Socket::connect(addr, "raw")?;
    s.out.extend_from_slice(&[role]);
    s.flush()?;
    Ok(s)
}

pub(crate) struct Pub {
    s: Socket,
}

pub(crate) struct Sub {
    s: Socket,
}

impl super::Driver for Raw {
    type Pub = Pub;
    type Sub = Sub;

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        if dest.queue {
            return Err("raw: no queues".into());
        }
        Ok(Pub {
            s: connect(&self.addr, b'P')?,
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        if dest.queue || mode != Mode::Topic {
            return Err("raw: no queues".into());
        }
        let mut s = connect(&self.addr, b'S')?;
        // The relay answers `+` once the subscriber is registered.
        if s.inb.is_empty() && !s.fill(Instant::now() + Duration::from_secs(5))? {
            return Err("raw: no registration within 5 s".into());
        }
        let _ = s.inb.split_to(1);
        Ok(Sub { s })
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| "raw: payload too large")?;
        self.s.out.extend_from_slice(&len.to_le_bytes());
        self.s.out.extend_from_slice(&payload);
        self.s.wrote()
    }

    async fn push(&mut self) -> Result<()> {
        self.s.flush()
    }

    async fn sync(&mut self) -> Result<()> {
        // The relay acknowledges nothing: written is all a client can know.
        self.push().await
    }

    async fn publish_confirmed(&self, _payload: Bytes) -> Result<()> {
        Err("raw: no confirmations".into())
    }

    async fn close(mut self) -> Result<()> {
        self.s.close(Shutdown::Write)
    }
}

impl Sub {
    fn frame(&mut self) -> Option<Bytes> {
        let len = u32::from_le_bytes(self.s.inb.get(..4)?.try_into().ok()?) as usize;
        if self.s.inb.len() < 4 + len {
            return None;
        }
        let frame = self.s.inb.split_to(4 + len).freeze();
        Some(frame.slice(4..))
    }
}

impl super::Subscriber for Sub {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(f) = self.frame() {
                return Ok(Some(f));
            }
            if !self.s.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    async fn close(mut self) -> Result<()> {
        self.s.close(Shutdown::Both)
    }
}
