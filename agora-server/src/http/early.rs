//! The HTTP port while the broker starts: bound before the log is read back, answered
//! by a thread of its own until the broker serves (`/healthz` 200, anything else 503),
//! so an orchestrator watching `/readyz` sees a long recovery as "not ready", not as a
//! port that does not answer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the thread looks for a connection (and for being told to stop).
const POLL: Duration = Duration::from_millis(20);

/// See the module documentation.
pub(crate) struct Early {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Early {
    /// Starts answering `listener`.
    pub fn start(listener: &TcpListener) -> std::io::Result<Early> {
        let l = listener.try_clone()?;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("agora-http-early".into())
            .spawn(move || {
                while !s.load(SeqCst) {
                    match l.accept() {
                        Ok((c, _)) => answer(c),
                        Err(_) => std::thread::sleep(POLL),
                    }
                }
            })?;
        Ok(Early {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops answering (within [`POLL`], or the request being answered).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Early {
    fn drop(&mut self) {
        self.halt();
    }
}

fn answer(mut c: TcpStream) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf) {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let (status, body) = match head.starts_with(b"GET /healthz ") {
        true => ("200 OK", "ok\n"),
        false => (
            "503 Service Unavailable",
            "not ready: the broker is starting (reading its log back)\n",
        ),
    };
    let _ = write!(
        c,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut all = String::new();
        c.read_to_string(&mut all).unwrap();
        all
    }

    #[test]
    fn while_starting_health_is_ok_and_readiness_is_not() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let early = Early::start(&l).unwrap();
        assert!(ask(addr, "/healthz").starts_with("HTTP/1.1 200 OK\r\n"));
        let r = ask(addr, "/readyz");
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("reading its log back)\n"), "{r}");
        early.stop();
        // Stopped: a new connection waits in the backlog for whoever serves next.
        l.set_nonblocking(false).unwrap();
        let c = TcpStream::connect(addr).unwrap();
        let (got, _) = l.accept().unwrap();
        assert_eq!(got.peer_addr().unwrap(), c.local_addr().unwrap());
    }
}
