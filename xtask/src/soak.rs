//! `cargo xtask soak [--minutes N | --seconds N]`: the release broker under hostile
//! clients beside a normal publisher and consumer, its resident memory sampled every
//! second against the documented bound.
//!
//! The hostile mix, each in its own thread, reconnecting whenever the broker closes it:
//! clients that ask for `STATS` and subscribe to a busy topic but never read;
//! clients that announce a 1 MiB payload, send half and trickle the rest a byte at a
//! time; UDP sources on a new port for every datagram (`STATS`, `SUB`, a publish); a
//! client creating and abandoning topic names; and a flood into a queue whose one
//! consumer takes its prefetch and never acknowledges. Beside them a normal pair:
//! a publisher with confirms into `queue:soak.work`, a consumer acknowledging each.
//!
//! Every second it samples the broker's RSS (`/proc/<pid>/status`) and its `STATS`
//! (`memory.used`, `memory.read_used`, `broker.output_queued`, clients), prints a line
//! and appends it to `target/soak/soak.csv` (the broker's log goes to
//! `target/soak/agora.log`). It fails if RSS passes the bound once, or
//! if a message the broker confirmed to the normal publisher never reaches the normal
//! consumer. It draws `target/soak/soak.svg` (RSS and memory used against the budget).
//! The broker is stopped by its PID whatever happens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{self, Result};
use crate::project_root;

/// The broker's memory budget and read budget in the soak.
const BUDGET: u64 = 64 << 20;
const READ_BUDGET: u64 = 16 << 20;
/// What the process may hold beyond its budgets: code, stacks, per-connection and
/// per-source state (the hostile clients' connections, some 580 UDP sources, the
/// non-readers' replies). The bound is 1.25 × the budgets plus this, issue 17's aim
/// (the book's Operations chapter).
const BASE: u64 = 64 << 20;

fn bound() -> u64 {
    (BUDGET + READ_BUDGET) * 5 / 4 + BASE
}

/// Kills the broker when dropped, so no path leaves it behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        println!("stopped agora (pid {})", self.0.id());
    }
}

pub(crate) fn parse(args: &[String]) -> std::result::Result<u64, String> {
    let mut seconds = 60;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (unit, value) = match arg.as_str() {
            "--minutes" => (60, args.next()),
            "--seconds" => (1, args.next()),
            other => return Err(format!("`soak` does not take `{other}`")),
        };
        let n: u64 = value
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{arg}` wants a whole number above 0"))?;
        seconds = n * unit;
    }
    Ok(seconds)
}

/// One sample of the broker.
#[derive(Clone, Copy, Default)]
struct Sample {
    t: f64,
    rss: u64,
    used: u64,
    read_used: u64,
    output_queued: u64,
    tcp: u64,
    udp: u64,
}

pub(crate) fn run(seconds: u64) -> Result<()> {
    let root = project_root();
    process::run(process::cargo().current_dir(&root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "agora-server",
        "--bin",
        "agora",
    ]))?;
    let out_dir = root.join("target/soak");
    std::fs::create_dir_all(&out_dir)?;
    let mut child = Command::new(root.join("target/release/agora"))
        .args([
            "--port",
            "0",
            "--memory-budget",
            &BUDGET.to_string(),
            "--read-budget",
            &READ_BUDGET.to_string(),
            "--max-destinations",
            "2000",
            "--idle-timeout",
            "3",
            "--udp-idle-timeout",
            "3s",
            "--write-timeout",
            "3s",
            "--read-wait",
            "3s",
            "--ping-interval",
            "3s",
            "--subscriber-buffer",
            "1024",
            // The flood fills its queue (32 MiB) and the busy topic's buffers, not the
            // whole budget, so the normal pair's publishes find room.
            "--queue-max-bytes",
            "33554432",
            // The watermark at the soak's own bound: the soak checks the bound itself,
            // and the default (1.5 × a budget this small) would refuse every publish
            // once the hostile clients' connections and sources are counted.
            "--rss-limit",
            &bound().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(out_dir.join("agora.log"))?)
        .spawn()
        .map_err(|e| format!("could not start agora: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let pid = child.id();
    let _guard = Guard(child);
    let mut out = BufReader::new(out);
    let addr = crate::startup::read_listener(&mut out, "tcp")?;
    // The broker logs to stdout: keep taking it (into the log file), or its writes
    // would fail.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(out_dir.join("agora.log"))?;
    thread::spawn(move || std::io::copy(&mut out, &mut log));
    println!(
        "agora (pid {pid}) on {addr}; budget {} MiB, read budget {} MiB, RSS bound {} MiB; {seconds} s",
        BUDGET >> 20,
        READ_BUDGET >> 20,
        bound() >> 20
    );

    let stop = Arc::new(AtomicBool::new(false));
    let confirmed = Arc::new(Mutex::new(Vec::<u64>::new()));
    let received = Arc::new(Mutex::new(std::collections::BTreeSet::<u64>::new()));
    let mut workers = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(f)
            .expect("a thread")
    };
    for i in 0..8 {
        let stop = stop.clone();
        workers.push(spawn(
            "non-reader",
            Box::new(move || non_reader(addr, i, &stop)),
        ));
    }
    for _ in 0..24 {
        let stop = stop.clone();
        workers.push(spawn(
            "half-sender",
            Box::new(move || half_sender(addr, &stop)),
        ));
    }
    let (s1, s2, s3) = (stop.clone(), stop.clone(), stop.clone());
    workers.push(spawn("udp", Box::new(move || udp_rotator(addr, &s1))));
    workers.push(spawn("churn", Box::new(move || name_churn(addr, &s2))));
    workers.push(spawn("flood", Box::new(move || unacked_flood(addr, &s3))));
    let pair_stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (stop, received) = (stop.clone(), received.clone());
        spawn(
            "consumer",
            Box::new(move || consumer(addr, &stop, &received)),
        )
    };
    let publisher = {
        let (stop, confirmed) = (pair_stop.clone(), confirmed.clone());
        spawn(
            "publisher",
            Box::new(move || publisher(addr, &stop, &confirmed)),
        )
    };

    let mut admin = Admin::connect(addr)?;
    let mut samples = Vec::new();
    let mut csv =
        String::from("t_s,rss_bytes,used_bytes,read_used_bytes,output_queued_bytes,tcp,udp\n");
    let start = Instant::now();
    let mut over = None;
    let mut admin_errors = 0;
    let mut next = start;
    while start.elapsed() < Duration::from_secs(seconds) {
        next += Duration::from_secs(1);
        thread::sleep(next.saturating_duration_since(Instant::now()));
        // A broker that died fails the soak here.
        let rss = rss_of(pid).map_err(|e| format!("the broker (pid {pid}) is gone: {e}"))?;
        let st = match admin.stats() {
            Ok(st) => st,
            Err(e) => {
                // Counted and reported, not fatal: the broker may close a connection
                // (write timeout, pings) under this load; a new one is taken.
                admin_errors += 1;
                println!(
                    "t={:>5.0}s the admin connection failed ({e}); reconnecting",
                    start.elapsed().as_secs_f64()
                );
                admin = Admin::connect(addr)?;
                admin.stats()?
            }
        };
        let s = Sample {
            t: start.elapsed().as_secs_f64(),
            rss,
            used: field(&st, "\"used\":"),
            read_used: field(&st, "\"read_used\":"),
            output_queued: field(&st, "\"output_queued\":"),
            tcp: field(&st, "\"tcp\":"),
            udp: field(&st, "\"udp\":"),
        };
        println!(
            "t={:>5.0}s rss={:>4} MiB used={:>3} MiB read={:>3} MiB output={:>5} KiB clients tcp={} udp={} confirmed={} received={}",
            s.t,
            s.rss >> 20,
            s.used >> 20,
            s.read_used >> 20,
            s.output_queued >> 10,
            s.tcp,
            s.udp,
            confirmed.lock().map(|c| c.len()).unwrap_or(0),
            received.lock().map(|r| r.len()).unwrap_or(0),
        );
        csv.push_str(&format!(
            "{:.0},{},{},{},{},{},{}\n",
            s.t, s.rss, s.used, s.read_used, s.output_queued, s.tcp, s.udp
        ));
        if s.rss > bound() && over.is_none() {
            over = Some(s);
        }
        samples.push(s);
    }
    // The normal pair: stop publishing, then give the consumer time to take the rest.
    pair_stop.store(true, SeqCst);
    let _ = publisher.join();
    let want: Vec<u64> = confirmed.lock().map(|c| c.clone()).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut missing: Vec<u64> = Vec::new();
    // Bounded: 30 s of looks, 100 ms apart.
    while Instant::now() < deadline {
        let got = received.lock().map(|r| r.clone()).unwrap_or_default();
        missing = want.iter().copied().filter(|s| !got.contains(s)).collect();
        if missing.is_empty() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, SeqCst);
    for w in workers {
        let _ = w.join();
    }
    let _ = consumer.join();
    std::fs::write(out_dir.join("soak.csv"), &csv)?;
    std::fs::write(out_dir.join("soak.svg"), chart(&samples))?;
    let peak = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    println!(
        "soak: {} s, peak RSS {} MiB (bound {} MiB), {} confirmed, {} missing, {} admin reconnects; target/soak/soak.csv, soak.svg",
        seconds,
        peak >> 20,
        bound() >> 20,
        want.len(),
        missing.len(),
        admin_errors
    );
    if let Some(s) = over {
        return Err(format!(
            "RSS {} MiB passed the bound of {} MiB at t={:.0}s",
            s.rss >> 20,
            bound() >> 20,
            s.t
        )
        .into());
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} confirmed messages never reached the consumer (first: {:?})",
            missing.len(),
            &missing[..missing.len().min(5)]
        )
        .into());
    }
    if want.is_empty() {
        return Err("the normal publisher had no message confirmed".into());
    }
    Ok(())
}

fn rss_of(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;
    Ok(kib * 1024)
}

/// The first number after `key` in a JSON text (the soak's fields are unique enough).
fn field(json: &str, key: &str) -> u64 {
    json.find(key)
        .map(|at| &json[at + key.len()..])
        .and_then(|rest| {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .unwrap_or(0)
}

/// A connection that reads: lines and sized bodies.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let w = TcpStream::connect(addr)?;
        w.set_read_timeout(Some(Duration::from_secs(2)))?;
        w.set_write_timeout(Some(Duration::from_secs(2)))?;
        let r = BufReader::with_capacity(1 << 16, w.try_clone()?);
        let mut c = Conn { w, r };
        c.line()?; // INFO
        Ok(c)
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        if self.r.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l)
    }

    /// Reads to the `PINGRESP #3` of a batch (answering the broker's pings, skipping
    /// refusals); false if the connection failed first.
    fn until_pong(&mut self) -> bool {
        // Bounded: a batch has at most a few hundred answers.
        for _ in 0..1000 {
            match self.line() {
                Ok(l) if l.starts_with("PINGRESP #3") => return true,
                Ok(l) if l.starts_with("PINGREQ") => {
                    let _ = self.w.write_all(b"PINGRESP\r\n");
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn body(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0; n + 2];
        self.r.read_exact(&mut b)?;
        b.truncate(n);
        Ok(b)
    }
}

/// The admin connection the sampler asks `STATS` on (one destination per page: the
/// figures, not the list).
struct Admin(Conn);

impl Admin {
    fn connect(addr: SocketAddr) -> Result<Admin> {
        Ok(Admin(Conn::connect(addr)?))
    }

    fn stats(&mut self) -> Result<String> {
        self.0.w.write_all(b"STATS #1 limit=1\r\n")?;
        // Bounded: the broker pings; answer and read on, a few lines at most.
        for _ in 0..100 {
            let l = self.0.line()?;
            if l.starts_with("PINGREQ") {
                self.0.w.write_all(b"PINGRESP\r\n")?;
                continue;
            }
            if let Some(n) = l.strip_prefix("STATSRESP #1 ") {
                let n: usize = n.trim().parse()?;
                return Ok(String::from_utf8_lossy(&self.0.body(n)?).into_owned());
            }
        }
        Err("no STATSRESP".into())
    }
}

/// Subscribes to the busy topic, asks for `STATS` again and again, never reads.
fn non_reader(addr: SocketAddr, i: u64, stop: &AtomicBool) {
    while !stop.load(SeqCst) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = s.write_all(format!("SUB topic:soak.fan {i}\r\n").as_bytes());
        // Until the broker stops reading it (a write times out) or closes it.
        while !stop.load(SeqCst) {
            if s.write_all(&b"STATS\r\n".repeat(20)).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Announces a 1 MiB payload, sends half, then a byte every 100 ms.
fn half_sender(addr: SocketAddr, stop: &AtomicBool) {
    let half = vec![b'h'; 512 * 1024];
    while !stop.load(SeqCst) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
        let mut ok = s
            .write_all(b"PUB queue:soak.half 1048576\r\n")
            .and_then(|()| s.write_all(&half))
            .is_ok();
        while ok && !stop.load(SeqCst) {
            thread::sleep(Duration::from_millis(100));
            ok = s.write_all(b"h").is_ok();
        }
    }
}

/// A new source port for every datagram: `STATS`, a `SUB`, a publish.
fn udp_rotator(addr: SocketAddr, stop: &AtomicBool) {
    while !stop.load(SeqCst) {
        if let Ok(u) = UdpSocket::bind("127.0.0.1:0") {
            let _ = u.send_to(
                b"STATS\r\nSUB topic:soak.fan 1\r\nPUB topic:soak.fan 5\r\nhello\r\n",
                addr,
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Publishes to ever new topic names, which the broker creates and then sweeps.
fn name_churn(addr: SocketAddr, stop: &AtomicBool) {
    let mut n = 0u64;
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        while !stop.load(SeqCst) {
            let mut b = Vec::new();
            for _ in 0..100 {
                n += 1;
                b.extend_from_slice(
                    format!("PUB topic:churn.{} 1\r\nx\r\n", n % 50_000).as_bytes(),
                );
            }
            b.extend_from_slice(b"PINGREQ #3\r\n");
            if c.w.write_all(&b).is_err() || !c.until_pong() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A consumer that takes its prefetch and never acknowledges, and a flood into its
/// queue (and onto the busy topic) that the budget refuses once full.
fn unacked_flood(addr: SocketAddr, stop: &AtomicBool) {
    thread::scope(|scope| {
        scope.spawn(|| hold_without_acking(addr, stop));
        flood(addr, stop);
    });
}

/// Takes its prefetch of `queue:soak.flood` and never acknowledges.
fn hold_without_acking(addr: SocketAddr, stop: &AtomicBool) {
    consume(
        addr,
        stop,
        "SUB queue:soak.flood 1 prefetch=1000",
        |_, _, _| true,
    );
}

/// Subscribes with `sub` (reconnecting whenever the connection fails) and hands each
/// delivery (the connection, its delivery id, its body) to `on_msg` until the stop;
/// `on_msg` returning false drops the connection. Answers the broker's pings.
fn consume(
    addr: SocketAddr,
    stop: &AtomicBool,
    sub: &str,
    mut on_msg: impl FnMut(&mut Conn, &str, Vec<u8>) -> bool,
) {
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        if c.w.write_all(format!("{sub}\r\n").as_bytes()).is_err() {
            continue;
        }
        while !stop.load(SeqCst) {
            match c.line() {
                Ok(l) if l.starts_with("MSG") => {
                    // MSG <dest> <sid> <did> <count> <n>
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let (Some(did), Some(n)) =
                        (f.get(3), f.get(5).and_then(|n| n.parse::<usize>().ok()))
                    else {
                        break;
                    };
                    let Ok(body) = c.body(n) else { break };
                    if !on_msg(&mut c, did, body) {
                        break;
                    }
                }
                Ok(l) if l.starts_with("PINGREQ") => {
                    let _ = c.w.write_all(b"PINGRESP\r\n");
                }
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(_) => break,
            }
        }
    }
}

/// Publishes into `queue:soak.flood` and onto `topic:soak.fan` as fast as the broker
/// answers, refusals and all.
fn flood(addr: SocketAddr, stop: &AtomicBool) {
    let body = vec![b'f'; 1000];
    let mut frame = Vec::new();
    for i in 0..64 {
        let dest = if i % 4 == 0 {
            "topic:soak.fan"
        } else {
            "queue:soak.flood"
        };
        frame.extend_from_slice(format!("PUB {dest} 1000\r\n").as_bytes());
        frame.extend_from_slice(&body);
        frame.extend_from_slice(b"\r\n");
    }
    frame.extend_from_slice(b"PINGREQ #3\r\n");
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        while !stop.load(SeqCst) && c.w.write_all(&frame).is_ok() && c.until_pong() {}
    }
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Publishes numbered messages with confirms; records the ones confirmed.
fn publisher(addr: SocketAddr, stop: &AtomicBool, confirmed: &Mutex<Vec<u64>>) {
    let seq = AtomicU64::new(1);
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        if c.w.write_all(b"SETACK on\r\n").is_err() {
            continue;
        }
        while !stop.load(SeqCst) {
            let n = seq.fetch_add(1, SeqCst);
            let body = format!("{n:020}");
            let f = format!("PUB #{n} queue:soak.work {}\r\n{body}\r\n", body.len());
            if c.w.write_all(f.as_bytes()).is_err() {
                break;
            }
            // Its answer: PUBACK (kept), or ERR (refused: not kept, not owed).
            let mut answered = false;
            for _ in 0..50 {
                match c.line() {
                    Ok(l) if l.starts_with(&format!("PUBACK #{n}")) => {
                        if let Ok(mut v) = confirmed.lock() {
                            v.push(n);
                        }
                        answered = true;
                        break;
                    }
                    Ok(l) if l.starts_with(&format!("ERR #{n}")) => {
                        answered = true;
                        break;
                    }
                    Ok(l) if l.starts_with("PINGREQ") => {
                        let _ = c.w.write_all(b"PINGRESP\r\n");
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if !answered {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Consumes `queue:soak.work`, acknowledging each message; records what it got.
fn consumer(
    addr: SocketAddr,
    stop: &AtomicBool,
    received: &Mutex<std::collections::BTreeSet<u64>>,
) {
    consume(
        addr,
        stop,
        "SUB queue:soak.work 1 prefetch=100",
        |c, did, body| {
            if let Ok(seq) = String::from_utf8_lossy(&body).trim().parse::<u64>() {
                if let Ok(mut r) = received.lock() {
                    r.insert(seq);
                }
            }
            c.w.write_all(format!("ACK {did}\r\n").as_bytes()).is_ok()
        },
    );
}

/// RSS and memory used over time against the budget and the bound, as an SVG.
fn chart(samples: &[Sample]) -> String {
    let (w, h, pad) = (800.0, 360.0, 50.0);
    let t_max = samples.last().map_or(1.0, |s| s.t.max(1.0));
    let y_max = (bound() as f64 * 1.1).max(samples.iter().map(|s| s.rss).max().unwrap_or(0) as f64);
    let x = |t: f64| pad + t / t_max * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / y_max * (h - 2.0 * pad);
    let line = |f: &dyn Fn(&Sample) -> u64| {
        samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(f(s) as f64)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let hline = |v: u64, label: &str, color: &str| {
        format!(
            "<line x1=\"{pad}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{color}\" text-anchor=\"end\">{label}</text>",
            w - pad,
            y(v as f64),
            y(v as f64),
            w - pad,
            y(v as f64) - 4.0
        )
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    svg.push_str(&format!(
        "<line x1=\"{pad}\" x2=\"{pad}\" y1=\"{pad}\" y2=\"{:.1}\" stroke=\"black\"/><line x1=\"{pad}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
        h - pad,
        w - pad,
        h - pad,
        h - pad
    ));
    svg.push_str(&hline(
        bound(),
        &format!("bound {} MiB", bound() >> 20),
        "#c00",
    ));
    svg.push_str(&hline(
        BUDGET,
        &format!("memory budget {} MiB", BUDGET >> 20),
        "#666",
    ));
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>\n",
        line(&|s| s.rss)
    ));
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"2\" points=\"{}\"/>\n",
        line(&|s| s.used + s.read_used)
    ));
    svg.push_str(&format!(
        "<text x=\"{pad}\" y=\"20\" font-size=\"13\"><tspan fill=\"#1f77b4\">resident memory</tspan>, <tspan fill=\"#2ca02c\">memory.used + memory.read_used</tspan>, over {:.0} s (y: 0–{} MiB)</text>\n",
        t_max,
        (y_max as u64) >> 20
    ));
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_minutes_and_seconds() {
        let p = |a: &[&str]| super::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&[]), Ok(60));
        assert_eq!(p(&["--minutes", "30"]), Ok(1800));
        assert_eq!(p(&["--seconds", "5"]), Ok(5));
        assert!(p(&["--minutes", "0"]).is_err());
        assert!(p(&["--hours", "1"]).is_err());
    }

    #[test]
    fn reads_numbers_out_of_the_stats_json() {
        let j = r#"{"memory":{"used":12,"limit":99,"read_used":7},"broker":{"output_queued":3}}"#;
        assert_eq!(super::field(j, "\"used\":"), 12);
        assert_eq!(super::field(j, "\"read_used\":"), 7);
        assert_eq!(super::field(j, "\"missing\":"), 0);
    }
}
