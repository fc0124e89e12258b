//! Test support: a broker in-process on 127.0.0.1:0 and a raw-bytes client.
#![allow(dead_code)]

pub mod http;
pub mod mqtt;
pub mod pki;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_server_with, ClientFrame, ErrorCode, Limits, ServerFrame};
use agora_server::agora_rt::{Runtime, Task};
use agora_server::{Config, Server};

/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A broker on its own runtime, as the binary runs it; stopped (gracefully) on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The MQTT port's address, with `mqtt_port` configured.
    pub mqtt: Option<SocketAddr>,
    /// The WebSocket port's address, with `ws_port` configured.
    pub ws: Option<SocketAddr>,
    /// The HTTP port's address, with `http_port` configured.
    pub http: Option<SocketAddr>,
    stop: Option<async_channel::Sender<()>>,
    served: Option<Task<std::io::Result<()>>>,
    /// Two workers, so that tasks can run elsewhere than where their event arrived.
    /// Dropped (its workers joined) once `serve` has returned.
    rt: Option<Runtime>,
}

pub fn start() -> TestServer {
    start_with(Config::ephemeral())
}

pub fn start_with(config: Config) -> TestServer {
    serve_bound(smol::block_on(Server::bind(config)).expect("bind"))
}

/// The secret the test clusters share.
pub const CLUSTER_SECRET: &str = "the test cluster's secret";

/// A config for node `id` of a test cluster, its cluster port on 127.0.0.1:0 (its
/// `--peers` are set once every node is bound: see [`start_cluster`]).
pub fn cluster_node(id: u64) -> Config {
    Config {
        node_id: Some(id),
        cluster_name: "test".to_owned(),
        cluster_listen: Some("127.0.0.1:0".parse().unwrap()),
        peers: vec![(id, "127.0.0.1:1".to_owned())],
        cluster_secret: Some(agora_server::config::Secret(CLUSTER_SECRET.to_owned())),
        ..Config::ephemeral()
    }
}

/// Starts the nodes `configs` describe as one cluster: binds each, then tells each
/// every node's cluster address (node ids as the configs say) and serves them. Returns
/// the servers with their cluster addresses.
pub fn start_cluster(configs: Vec<Config>) -> (Vec<TestServer>, Vec<(u64, String)>) {
    let mut bound = Vec::new();
    for c in configs {
        let id = c.node_id.expect("a cluster node's config has a node id");
        bound.push((id, smol::block_on(Server::bind(c)).expect("bind")));
    }
    let peers: Vec<(u64, String)> = bound
        .iter()
        .map(|(id, s)| {
            (
                *id,
                s.cluster_addr().expect("a cluster address").to_string(),
            )
        })
        .collect();
    let servers = bound
        .into_iter()
        .map(|(_, mut s)| {
            s.set_peers(peers.clone()).expect("peers");
            serve_bound(s)
        })
        .collect();
    (servers, peers)
}

/// Serves a bound server on a runtime of its own.
pub fn serve_bound(server: Server) -> TestServer {
    let rt = Runtime::new(2);
    let addr = server.local_addr().unwrap();
    let tls = server.is_tls();
    let mqtt = server.mqtt_addr();
    let ws = server.ws_addr();
    let http = server.http_addr();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let served = rt.spawn(server.serve(rt.handle(), async move {
        let _ = stopped.recv().await;
    }));
    // Until `serve` takes the HTTP port over, a thread of the start answers it "not
    // ready" (it does while the log is read back): wait for the broker's own answers.
    if let Some(h) = http.filter(|_| !tls) {
        wait_until("the HTTP port answers /readyz 200", || {
            http::get(h, "/readyz").status == 200
        });
    }
    TestServer {
        addr,
        mqtt,
        ws,
        http,
        stop: Some(stop),
        served: Some(served),
        rt: Some(rt),
    }
}

impl TestServer {
    /// Triggers graceful shutdown, waits for `serve` to return (a panic in it is
    /// raised here) and stops the runtime.
    pub fn shutdown(&mut self) -> std::io::Result<()> {
        drop(self.stop.take());
        let served = match self.served.take() {
            Some(t) => futures_lite::future::block_on(t),
            None => Ok(()),
        };
        drop(self.rt.take());
        served
    }

    pub fn connect(&self) -> Raw {
        Raw::connect(self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A client that speaks raw bytes and decodes what comes back.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The INFO greeting.
    pub info: ServerFrame,
}

impl Raw {
    /// Connects and reads the INFO greeting.
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let mut r = Raw {
            stream,
            buf: BytesMut::new(),
            info: ServerFrame::Ok { rid: None },
        };
        r.info = r.next();
        assert!(
            matches!(r.info, ServerFrame::Info(_)),
            "expected INFO, got {:?}",
            r.info
        );
        r
    }

    /// Connects without expecting a greeting.
    pub fn connect_bare(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
            info: ServerFrame::Ok { rid: None },
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send_frame(&mut self, f: &ClientFrame) {
        let mut b = BytesMut::new();
        agora_protocol::encode(f, &mut b);
        self.send(&b);
    }

    /// The next frame, or None when the broker closed the connection. Fails the test at
    /// the deadline.
    pub fn try_next(&mut self) -> Option<ServerFrame> {
        let limits = Limits {
            max_line: 1 << 16,
            max_payload: 1 << 26,
        };
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(f) =
                decode_server_with(&mut self.buf, &limits).expect("broker sent a bad frame")
            {
                return Some(f);
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no frame from the broker within {DEADLINE:?}"
            );
            if !self.fill(left) {
                return None;
            }
        }
    }

    pub fn next(&mut self) -> ServerFrame {
        self.try_next().expect("connection closed by the broker")
    }

    /// Reads what arrives within `left` into the buffer; false once the broker closed
    /// the connection (the end of the stream, or an error).
    fn fill(&mut self, left: Duration) -> bool {
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if read_again(&e) => true,
            Err(_) => false,
        }
    }

    /// What the broker has sent within `wait`, and whether it closed the connection
    /// (`true` once the end of the stream is read). For telling closed connections
    /// from open ones after the broker has said (in `STATS`) that it closed some.
    pub fn closed_within(&mut self, wait: Duration) -> (Vec<ServerFrame>, bool) {
        let limits = Limits {
            max_line: 1 << 16,
            max_payload: 1 << 26,
        };
        let end = Instant::now() + wait;
        let mut got = Vec::new();
        loop {
            while let Some(f) =
                decode_server_with(&mut self.buf, &limits).expect("broker sent a bad frame")
            {
                got.push(f);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (got, false);
            }
            if !self.fill(left) {
                return (got, true);
            }
        }
    }

    /// The next frame must be `ERR` with this code; returns its message.
    pub fn expect_err(&mut self, code: ErrorCode) -> String {
        match self.next() {
            ServerFrame::Err(e) if e.code == code => e.message,
            other => panic!("expected ERR {code}, got {other:?}"),
        }
    }

    /// The broker must close the connection (after any frames, which are returned).
    pub fn expect_closed(&mut self) -> Vec<ServerFrame> {
        let mut got = Vec::new();
        while let Some(f) = self.try_next() {
            got.push(f);
            assert!(got.len() < 10_000, "connection never closed");
        }
        got
    }

    /// Sends `PINGREQ #rid` and reads frames until its `PINGRESP`, returning what came
    /// before it: everything the broker had to say about earlier requests.
    pub fn sync(&mut self, rid: u64) -> Vec<ServerFrame> {
        self.send_frame(&ClientFrame::PingReq { rid: Some(rid) });
        let mut before = Vec::new();
        loop {
            match self.next() {
                ServerFrame::PingResp { rid: Some(r) } if r == rid => return before,
                f => before.push(f),
            }
        }
    }

    /// Asks for STATS and returns the parsed document.
    pub fn stats(&mut self) -> serde_json::Value {
        self.send(b"STATS #424242\r\n");
        loop {
            if let ServerFrame::StatsResp {
                rid: Some(424242),
                json,
            } = self.next()
            {
                return serde_json::from_slice(&json).expect("STATS is JSON");
            }
        }
    }
}

/// Polls `cond` until it holds or the deadline passes (then panics with `what`).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Looks up one destination in a STATS document.
pub fn dest_stats<'a>(
    stats: &'a serde_json::Value,
    kind: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    stats["destinations"]
        .as_array()?
        .iter()
        .find(|d| d["kind"] == kind && d["name"] == name)
}

/// Publishes `n` messages (`m0`, `m1`, …) to `queue:<q>`, each confirmed.
pub fn fill(s: &TestServer, q: &str, n: usize) {
    let mut c = s.connect();
    c.send(b"SETACK #1 on\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    for i in 0..n {
        publish(&mut c, &format!("queue:{q}"), format!("m{i}").as_bytes());
        assert!(matches!(c.next(), ServerFrame::PubAck { .. }));
    }
}

/// `HPUB` of a request to `dest` with the reply address `reply_to`.
pub fn request(c: &mut Raw, rid: u64, dest: &str, reply_to: &str, body: &str) {
    let headers = format!("agora-reply-to: {reply_to}\r\n\r\n");
    let total = headers.len() + body.len();
    let frame = format!(
        "HPUB #{rid} {dest} {} {total}\r\n{headers}{body}\r\n",
        headers.len()
    );
    c.send(frame.as_bytes());
}

/// Turns publisher confirms on (`SETACK #1 on`).
pub fn confirms_on(c: &mut Raw) {
    c.send(b"SETACK #1 on\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
}

/// Sends a publish of `body` to `dest` with message id `id` (request id `rid`).
pub fn hpub(c: &mut Raw, rid: u64, dest: &str, id: &str, body: &str) {
    let h = format!("agora-msg-id: {id}\r\n\r\n");
    let total = h.len() + body.len();
    c.send(format!("HPUB #{rid} {dest} {} {total}\r\n{h}{body}\r\n", h.len()).as_bytes());
}

pub fn publish(raw: &mut Raw, dest: &str, payload: &[u8]) {
    let mut b = Vec::new();
    b.extend_from_slice(format!("PUB {dest} {}\r\n", payload.len()).as_bytes());
    b.extend_from_slice(payload);
    b.extend_from_slice(b"\r\n");
    raw.send(&b);
}

/// Runs the real binary, reads its start-up line, and returns it with the port.
/// A broker process that is killed (by its PID) if the test ends without stopping it,
/// a failed assertion included.
pub struct Agora(std::process::Child);

impl std::ops::Deref for Agora {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Agora {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl From<std::process::Child> for Agora {
    fn from(c: std::process::Child) -> Agora {
        Agora(c)
    }
}

impl Drop for Agora {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn spawn_agora(args: &[&str]) -> (Agora, u16, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .args(["--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agora");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let tcp = agora_protocol::startup::read_listener(&mut out, "tcp").expect("start-up line");
    let udp = agora_protocol::startup::read_listener(&mut out, "udp").expect("start-up line");
    assert_eq!(tcp, udp, "TCP and UDP share the address and port");
    (Agora(child), tcp.port(), out)
}

/// Runs the `agora` binary (memory-only) with `args` and `envs` until it exits (it must,
/// within the deadline): its status and what it wrote to stderr.
pub fn agora_exit(
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &std::ffi::OsStr)],
) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .envs(envs.iter().copied())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agora");
    let status = wait_exit(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

/// Whether a read with a timeout failed only for want of bytes yet (or a signal): a
/// read with SO_RCVTIMEO fails with EINTR when any signal reaches the thread, SA_RESTART
/// or not (signal(7)); the test process gets SIGCHLD when a broker process another test
/// started exits.
pub fn read_again(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

pub fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(std::time::Instant::now() < end, "agora did not exit");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The resident set size of a process, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}
