//! Test support: an in-process broker on 127.0.0.1 and waiting with a deadline.
#![allow(dead_code)]

pub mod fake;
pub mod pki;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agora_server::agora_rt::{Runtime, Task};
use agora_server::{Config, Server};

/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A broker on its own runtime, as the binary runs it, serving until dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<async_channel::Sender<()>>,
    served: Option<Task<std::io::Result<()>>>,
    /// Two workers; dropped (its workers joined) once `serve` has returned.
    rt: Option<Runtime>,
}

impl TestServer {
    /// Shuts the broker down and waits for it to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            s.close();
        }
        if let Some(t) = self.served.take() {
            futures_lite::future::block_on(t).expect("serve");
        }
        drop(self.rt.take());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a broker with `config` (use port 0, or a port just freed for restarts).
pub fn start_with(config: Config) -> TestServer {
    serve_bound(smol::block_on(Server::bind(config)).expect("bind"))
}

/// Starts `n` brokers as one cluster (nodes 1 to `n`, their cluster ports on
/// 127.0.0.1:0, each told the others' once all are bound).
pub fn start_cluster(n: u64) -> Vec<TestServer> {
    start_cluster_with(n, |_, c| c)
}

/// As [`start_cluster`], each node's config changed by `f` (given its id) first.
pub fn start_cluster_with(n: u64, f: impl Fn(u64, Config) -> Config) -> Vec<TestServer> {
    let bound: Vec<Server> = (1..=n)
        .map(|id| {
            let config = Config {
                node_id: Some(id),
                cluster_listen: Some("127.0.0.1:0".parse().unwrap()),
                peers: vec![(id, "127.0.0.1:1".to_owned())],
                cluster_secret: Some(agora_server::config::Secret(
                    "the SDK tests' cluster secret".to_owned(),
                )),
                ..Config::ephemeral()
            };
            smol::block_on(Server::bind(f(id, config))).expect("bind")
        })
        .collect();
    let peers: Vec<(u64, String)> = bound
        .iter()
        .zip(1..)
        .map(|(s, id)| (id, s.cluster_addr().unwrap().to_string()))
        .collect();
    bound
        .into_iter()
        .map(|mut s| {
            s.set_peers(peers.clone()).expect("peers");
            serve_bound(s)
        })
        .collect()
}

/// Serves a bound broker on a runtime of its own.
pub fn serve_bound(server: Server) -> TestServer {
    let rt = Runtime::new(2);
    let addr = server.local_addr().expect("local_addr");
    let (tx, rx) = async_channel::bounded::<()>(1);
    let served = rt.spawn(server.serve(rt.handle(), async move {
        let _ = rx.recv().await;
    }));
    TestServer {
        addr,
        stop: Some(tx),
        served: Some(served),
        rt: Some(rt),
    }
}

/// Starts a broker with the test defaults on a free port.
pub fn start() -> TestServer {
    start_with(Config::ephemeral())
}

/// Awaits `f`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    futures_lite::future::or(f, async {
        async_io::Timer::after(DEADLINE).await;
        panic!("timed out after {DEADLINE:?}");
    })
    .await
}

/// Re-checks `cond` every few milliseconds until it holds; fails the test after
/// [`DEADLINE`]. For conditions no event announces (counters in STATS, say).
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if cond().await {
            return;
        }
        async_io::Timer::after(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Waits until `STATS` shows queue `name` with `(depth, unacked)`. A memory-only
/// queue's figures are the ones its task last published: an `ACK` the client sent
/// (handed to the driver, not answered) shows once that task has taken it.
pub async fn queue_settles(client: &agora_client::Client, name: &str, want: (u64, u64)) {
    let end = Instant::now() + DEADLINE;
    let mut last = None;
    while Instant::now() < end {
        let st = within(client.stats()).await.expect("stats");
        let q = st
            .destinations
            .iter()
            .find(|d| d.name == name)
            .map(|d| (d.depth, d.unacked));
        if q == Some(want) {
            return;
        }
        last = q;
        async_io::Timer::after(Duration::from_millis(5)).await;
    }
    panic!("queue {name}: (depth, unacked) stayed {last:?}, not {want:?}");
}

/// A TCP proxy in front of a broker whose connections can be cut: a client loses its
/// connection while the broker, and what its queues hold, stay.
pub struct Proxy {
    pub addr: SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<async_net::TcpStream>>>,
    /// While set, what the broker sends is dropped (a confirm lost on the way).
    muted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: async_channel::Sender<()>,
}

impl Proxy {
    pub fn new(upstream: SocketAddr) -> Proxy {
        let listener = smol::block_on(async_net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let held = conns.clone();
        let muted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mute = muted.clone();
        std::thread::spawn(move || {
            smol::block_on(futures_lite::future::or(
                async move {
                    while let Ok((down, _)) = listener.accept().await {
                        let Ok(up) = async_net::TcpStream::connect(upstream).await else {
                            continue;
                        };
                        held.lock().unwrap().extend([down.clone(), up.clone()]);
                        let (mut d, mut u) = (down.clone(), up.clone());
                        smol::spawn(async move {
                            let _ = futures_lite::io::copy(down, &mut u).await;
                        })
                        .detach();
                        let mute = mute.clone();
                        smol::spawn(async move {
                            use futures_lite::{AsyncReadExt, AsyncWriteExt};
                            let (mut up, mut buf) = (up, vec![0u8; 64 * 1024]);
                            while let Ok(n @ 1..) = up.read(&mut buf).await {
                                if mute.load(std::sync::atomic::Ordering::SeqCst) {
                                    continue;
                                }
                                if d.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            // The broker closed: so does the client's side.
                            let _ = d.shutdown(std::net::Shutdown::Write);
                        })
                        .detach();
                    }
                },
                async move {
                    let _ = stopped.recv().await;
                },
            ))
        });
        Proxy {
            addr,
            conns,
            muted,
            stop,
        }
    }

    /// Drops (true) or passes on (false) what the broker sends from now on.
    pub fn mute(&self, on: bool) {
        self.muted.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cuts every connection made through the proxy so far.
    pub fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.close();
    }
}

/// Threads of this process named `agora-client-io-…` (`comm` keeps 15 bytes): the
/// shared I/O threads.
pub fn shared_io_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter(|t| {
            let comm = t.as_ref().map(|t| t.path().join("comm")).ok();
            comm.and_then(|c| std::fs::read_to_string(c).ok())
                .is_some_and(|name| name.starts_with("agora-client-io"))
        })
        .count()
}
