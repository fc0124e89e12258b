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

use crate::process::Result;
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
    crate::build_release_agora(&[])?;
    let out_dir = root.join("target/soak");
    std::fs::create_dir_all(&out_dir)?;
    let mut child = Command::new(root.join("target/release/agora"))
        .args([
            "--memory-only",
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

mod chart;
mod clients;
use chart::chart;
use clients::{
    consumer, half_sender, name_churn, non_reader, publisher, udp_rotator, unacked_flood, Admin,
};

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
