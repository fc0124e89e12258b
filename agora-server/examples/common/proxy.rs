//! A link proxy for the cluster test: node `from`'s connections to node `to` go through
//! it, so the test can cut them. Every node dials every other one, so one proxy per
//! ordered pair carries all of a pair's traffic one way of dialing; cutting every proxy
//! a node is at either end of cuts the node off while it runs.
//!
//! A cut is silent, as a pulled cable: nothing is forwarded and nothing is closed, so
//! each side's writes pile up in the socket buffers and neither hears of it. Healing
//! closes the connections that were open during the cut (TCP would have given up on
//! them) and lets new ones through; while cut, a new connection is closed at once.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a blocked read or accept waits before looking at the proxy's state.
const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct State {
    cut: AtomicBool,
    /// Incremented by each heal: connections of an older epoch close.
    epoch: AtomicU64,
    stop: AtomicBool,
}

pub struct Proxy {
    /// Where node `from` dials node `to`.
    pub addr: SocketAddr,
    pub from: u64,
    pub to: u64,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1 forwarding to `target`.
    pub fn start(from: u64, to: u64, target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let s = state.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(SeqCst) {
                match listener.accept() {
                    Ok((client, _)) if !s.cut.load(SeqCst) => {
                        let _ = client.set_nonblocking(false);
                        forward(client, target, s.clone());
                    }
                    // Cut: closed at once.
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        });
        Ok(Proxy {
            addr,
            from,
            to,
            state,
            accept: Some(accept),
        })
    }

    /// Stops forwarding, silently.
    pub fn cut(&self) {
        self.state.cut.store(true, SeqCst);
    }

    /// Closes what was open during the cut and forwards new connections again.
    pub fn heal(&self) {
        self.state.epoch.fetch_add(1, SeqCst);
        self.state.cut.store(false, SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, SeqCst);
        self.state.epoch.fetch_add(1, SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Connects to `target` and pumps both ways, each on a thread of its own.
fn forward(client: TcpStream, target: SocketAddr, state: Arc<State>) {
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        return;
    };
    // Each write goes at once, as the nodes' own sockets do (Nagle's algorithm would
    // hold a small write until the last was acknowledged: up to 40 ms a hop).
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let epoch = state.epoch.load(SeqCst);
    for (a, b) in [(&client, &server), (&server, &client)] {
        let (Ok(from), Ok(to)) = (a.try_clone(), b.try_clone()) else {
            return;
        };
        let state = state.clone();
        std::thread::spawn(move || pump(from, to, &state, epoch));
    }
}

/// Copies `from` to `to` until either closes, the proxy stops, or a heal ends the
/// epoch the connection was made in; while cut, reads nothing.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &State, epoch: u64) {
    let _ = from.set_read_timeout(Some(POLL));
    // A node that stopped reading (stopped with SIGSTOP, say) does not hold the pump.
    let _ = to.set_write_timeout(Some(Duration::from_secs(1)));
    let mut buf = vec![0u8; 64 * 1024];
    while state.epoch.load(SeqCst) == epoch {
        if state.cut.load(SeqCst) {
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
