//! The null relay and its client: the ceiling that loopback and these CPUs allow.
//!
//! The relay (`agora-bench relay`, a process of its own like the brokers) reads one role
//! byte per connection, `P` or `S`, and then never looks at a byte again: whatever a
//! publisher sends is written, as read, to every subscriber. Clients frame messages as
//! `u32 LE length` + payload, which the relay does not parse. It has no queues, no
//! acknowledgements and no per-subscriber buffers, so scenarios that need them are
//! skipped for it.

use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

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

fn connect(addr: &str, role: u8) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("raw: connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(&[role]).map_err(|e| e.to_string())?;
    Ok(s)
}

pub(crate) struct Pub {
    out: BufWriter<TcpStream>,
}

pub(crate) struct Sub {
    sock: TcpStream,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
}

impl super::Driver for Raw {
    type Pub = Pub;
    type Sub = Sub;

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        if dest.queue {
            return Err("raw: no queues".into());
        }
        let s = connect(&self.addr, b'P')?;
        Ok(Pub {
            out: BufWriter::with_capacity(64 * 1024, s),
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        if dest.queue || mode != Mode::Topic {
            return Err("raw: no queues".into());
        }
        let mut sock = connect(&self.addr, b'S')?;
        let mut ok = [0u8; 1];
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        sock.read_exact(&mut ok)
            .map_err(|e| format!("raw: no registration: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        Ok(Sub {
            sock,
            buf: Vec::with_capacity(256 * 1024),
            start: 0,
        })
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| "raw: payload too large")?;
        self.out
            .write_all(&len.to_le_bytes())
            .and_then(|()| self.out.write_all(&payload))
            .map_err(|e| format!("raw: write: {e}"))
    }

    async fn push(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| format!("raw: write: {e}"))
    }

    async fn sync(&mut self) -> Result<()> {
        // The relay acknowledges nothing: written is all a client can know.
        self.push().await
    }

    async fn publish_confirmed(&self, _payload: Bytes) -> Result<()> {
        Err("raw: no confirmations".into())
    }

    async fn close(mut self) -> Result<()> {
        self.push().await?;
        let _ = self.out.get_ref().shutdown(Shutdown::Write);
        Ok(())
    }
}

impl Sub {
    fn frame(&mut self) -> Option<Bytes> {
        let avail = &self.buf[self.start..];
        let len = u32::from_le_bytes(avail.get(..4)?.try_into().ok()?) as usize;
        let payload = avail.get(4..4 + len)?;
        let out = Bytes::copy_from_slice(payload);
        self.start += 4 + len;
        Some(out)
    }
}

impl super::Subscriber for Sub {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(f) = self.frame() {
                return Ok(Some(f));
            }
            // Compact, then read more.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + 128 * 1024, 0);
            let r = self.sock.read(&mut self.buf[have..]);
            match r {
                Ok(0) => {
                    self.buf.truncate(have);
                    return Err("raw: relay closed the connection".into());
                }
                Ok(n) => self.buf.truncate(have + n),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    self.buf.truncate(have);
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(format!("raw: read: {e}")),
            }
        }
    }

    async fn close(self) -> Result<()> {
        let _ = self.sock.shutdown(Shutdown::Both);
        Ok(())
    }
}
