//! Metrics: StatsD datagrams after a known workload, the `$sys.metrics` topic, the
//! broker section of `STATS`, and a StatsD that cannot be reached.

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use agora_protocol::ServerFrame;
use agora_server::Config;
use common::*;

/// A fake StatsD: a UDP socket on loopback, and what it has received, summed.
struct FakeStatsd {
    sock: UdpSocket,
    counters: HashMap<String, f64>,
    gauges: HashMap<String, f64>,
    timers: HashMap<String, Vec<f64>>,
    datagrams: usize,
}

impl FakeStatsd {
    fn new() -> FakeStatsd {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        FakeStatsd {
            sock,
            counters: HashMap::new(),
            gauges: HashMap::new(),
            timers: HashMap::new(),
            datagrams: 0,
        }
    }

    fn addr(&self) -> String {
        self.sock.local_addr().unwrap().to_string()
    }

    /// Reads datagrams until `done` holds (or fails at the deadline).
    fn until(&mut self, what: &str, done: impl Fn(&FakeStatsd) -> bool) {
        let end = Instant::now() + DEADLINE;
        while !done(self) {
            assert!(Instant::now() < end, "StatsD never saw {what}");
            let mut b = [0u8; 65_536];
            let Ok(n) = self.sock.recv(&mut b) else {
                continue;
            };
            self.datagrams += 1;
            assert!(n <= 1432, "datagram of {n} bytes");
            for line in String::from_utf8_lossy(&b[..n]).lines() {
                let (name, rest) = line.split_once(':').expect("name:value|type");
                let mut parts = rest.split('|');
                let v: f64 = parts.next().unwrap().parse().expect("a number");
                match parts.next() {
                    Some("c") => *self.counters.entry(name.into()).or_default() += v,
                    Some("g") => {
                        self.gauges.insert(name.into(), v);
                    }
                    Some("ms") => self.timers.entry(name.into()).or_default().push(v),
                    t => panic!("unknown type {t:?} in {line}"),
                }
            }
        }
    }
}

#[test]
fn statsd_receives_counters_gauges_and_timings_after_a_workload() {
    let mut statsd = FakeStatsd::new();
    let s = start_with(Config {
        statsd: Some(statsd.addr()),
        metrics_interval: Duration::from_millis(100),
        ..Config::ephemeral()
    });
    let mut c = s.connect();
    c.send(b"SUB queue:orders.eu 1 ack=auto\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: None });
    const N: usize = 50;
    for i in 0..N {
        publish(&mut c, "queue:orders.eu", format!("{i:03}").as_bytes());
    }
    for _ in 0..N {
        assert!(matches!(c.next(), ServerFrame::Msg(_)));
    }
    // `.` in a name becomes `_`, so it is one Graphite node.
    let q = "agora.queue.orders_eu";
    statsd.until("the workload's counters", |s| {
        s.counters.get(&format!("{q}.messages.in")) == Some(&(N as f64))
            && s.counters.get(&format!("{q}.messages.out")) == Some(&(N as f64))
    });
    // Read one whole flush (its last line is the CPU gauge) to see every gauge.
    for _ in 0..2 {
        statsd.gauges.clear();
        statsd.until("the end of a flush", |s| {
            s.gauges.contains_key("agora.broker.cpu.percent")
        });
    }
    assert_eq!(statsd.counters[&format!("{q}.bytes.in")], (N * 3) as f64);
    assert_eq!(statsd.gauges[&format!("{q}.consumers")], 1.0);
    assert_eq!(statsd.gauges[&format!("{q}.pending")], 0.0);
    assert!(statsd.gauges.contains_key(&format!("{q}.unacked")));
    assert_eq!(statsd.gauges["agora.broker.clients.tcp"], 1.0);
    assert!(statsd.gauges["agora.broker.memory.rss"] > 0.0);
    assert!(statsd.gauges.contains_key("agora.broker.cpu.percent"));
    assert!(statsd.counters["agora.broker.bytesin.tcp"] > 0.0);
    assert!(statsd.counters["agora.broker.bytesout"] > 0.0);
    statsd.until("latency timings", |s| {
        s.timers.contains_key(&format!("{q}.latency"))
    });
    let lat = &statsd.timers[&format!("{q}.latency")];
    assert!(
        !lat.is_empty() && lat.iter().all(|ms| *ms >= 0.0 && *ms < 10_000.0),
        "{lat:?}"
    );
    // Counters are deltas: more intervals with no traffic add nothing.
    let before = statsd.datagrams;
    statsd.until("three more intervals", |s| s.datagrams >= before + 3);
    assert_eq!(statsd.counters[&format!("{q}.messages.in")], N as f64);
    // Errors are counted by code.
    c.send(b"FROB\r\n");
    statsd.until("the error counter", |s| {
        s.counters.get("agora.broker.errors.unknown_command") == Some(&1.0)
    });
}

#[test]
fn the_metrics_topic_carries_snapshots_and_stats_has_the_broker_section() {
    let s = start_with(Config {
        metrics_interval: Duration::from_millis(50),
        ..Config::ephemeral()
    });
    let mut c = s.connect();
    // A queue published to is a destination, listed in the snapshot.
    publish(&mut c, "queue:seen", b"x");
    c.send(b"SUB #1 topic:$sys.metrics 1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    for _ in 0..2 {
        match c.next() {
            ServerFrame::Msg(m) => {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(v["server"], "agora");
                assert!(dest_stats(&v, "queue", "seen").is_some(), "{v}");
                assert!(v["broker"]["rss_bytes"].as_u64().unwrap() > 0);
            }
            f => panic!("{f:?}"),
        }
    }
    // Publishing there, or making other $ names, is not allowed.
    c.send(b"PUB topic:$sys.metrics 1\r\nx\r\nSUB #2 topic:$sys.other 2\r\n");
    let mut errs = 0;
    while errs < 2 {
        match c.next() {
            ServerFrame::Msg(_) => {}
            ServerFrame::Err(e) => {
                assert_eq!(e.code, agora_protocol::ErrorCode::NotPermitted);
                errs += 1;
            }
            f => panic!("{f:?}"),
        }
    }
    let st = c.stats();
    assert_eq!(st["broker"]["errors"]["not_permitted"], 2);
    assert!(st["broker"]["bytes_in_tcp"].as_u64().unwrap() > 0);
    assert!(st["broker"]["cpu_seconds"].as_f64().is_some());
}

#[test]
fn an_unreachable_statsd_costs_only_a_counted_error() {
    let s = start_with(Config {
        statsd: Some("no-such-host.invalid:8125".into()),
        metrics_interval: Duration::from_millis(50),
        ..Config::ephemeral()
    });
    let mut c = s.connect();
    wait_until("a counted StatsD error", || {
        c.stats()["broker"]["statsd_errors"].as_u64().unwrap() > 0
    });
    assert!(c.sync(1).is_empty());
}

#[test]
fn profile_writes_pprof_protobuf_and_a_flamegraph_at_shutdown() {
    use pprof::protos::Message;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.pprof");
    let path_s = path.to_str().unwrap().to_owned();
    let (mut child, port, _out) = spawn_agora(&["--profile", "--profile-path", &path_s]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut sub = Raw::connect(addr);
    sub.send(b"SUB #1 topic:work 1\r\n");
    assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(1) });
    let mut p = Raw::connect(addr);
    let burst: Vec<u8> = (0..500)
        .flat_map(|_| b"PUB topic:work 5\r\nhello\r\n".to_vec())
        .collect();
    // Enough work for the 99 Hz sampler to see the broker's own code.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        p.send(&burst);
        for _ in 0..500 {
            assert!(matches!(sub.next(), ServerFrame::Msg(_)));
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    let bytes = std::fs::read(&path).expect("profile written at shutdown");
    let profile = pprof::protos::Profile::parse_from_bytes(&bytes).expect("pprof protobuf");
    assert!(!profile.sample.is_empty(), "no samples");
    let names: Vec<&str> = profile
        .function
        .iter()
        .map(|f| profile.string_table[f.name as usize].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("agora_server")),
        "no broker function among {} functions",
        names.len()
    );
    let svg = std::fs::read_to_string(path.with_extension("svg")).expect("flamegraph written");
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "not an SVG"
    );
}
