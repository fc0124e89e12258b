//! A blocking connection that decodes the broker's frames, for the examples that drive
//! a real broker process (`crash`, `cluster_test`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_server_with, Limits, ServerFrame};

pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Connects and reads the broker's `INFO`; a read waits at most `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut c = Conn {
            stream,
            buf: BytesMut::new(),
        };
        match c.next()? {
            ServerFrame::Info(_) => Ok(c),
            f => Err(std::io::Error::other(format!("expected INFO, got {f:?}"))),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next frame. A read that times out is an error of kind `WouldBlock` or
    /// `TimedOut`; what was read of a frame so far is kept for the next call.
    pub fn next(&mut self) -> std::io::Result<ServerFrame> {
        let limits = Limits::default();
        loop {
            match decode_server_with(&mut self.buf, &limits) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for `OK #rid`, failing on anything else.
    pub fn ok(&mut self, rid: u64) -> std::io::Result<()> {
        match self.next()? {
            ServerFrame::Ok { rid: Some(r) } if r == rid => Ok(()),
            f => Err(std::io::Error::other(format!(
                "expected OK #{rid}, got {f:?}"
            ))),
        }
    }
}
