//! `cargo xtask statsd`: Agora's metrics checked end to end against a real StatsD
//! daemon (the npm package `statsd`, pinned by `ci/statsd/package-lock.json`).
//!
//! It starts StatsD and the broker on free loopback ports, runs a known workload with
//! agora-cli (publish N messages to a queue, consume them), then asks StatsD's
//! management port for its `counters`, `gauges` and `timers` and checks Agora's metrics
//! carry the right totals. StatsD's flush interval is an hour, so its counters are not
//! reset during the check. Both processes are stopped by PID whatever happens.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{self, Result};
use crate::project_root;

/// Messages in the workload.
const N: usize = 100;
/// The queue the workload uses; its StatsD name has `.` turned into `_`.
const QUEUE: &str = "xtask.jobs";
const METRIC: &str = "agora.queue.xtask_jobs";

/// Kills the child when dropped, so no path leaves a process behind.
struct Guard(Child, &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        println!("stopped {} (pid {})", self.1, self.0.id());
    }
}

fn free_port() -> Result<u16> {
    // A port free for both UDP and TCP on loopback, released just before use.
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free loopback port".into())
}

/// Sends one management command and returns its answer (up to `END`).
fn mgmt(port: u16, cmd: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    let mut buf = [0u8; 65_536];
    while !out.contains("END") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    Ok(out)
}

/// The value of `'name': value` in StatsD's `util.inspect` output.
fn value(dump: &str, name: &str) -> Option<f64> {
    let key = format!("'{name}': ");
    let at = dump.find(&key)? + key.len();
    let rest = &dump[at..];
    let end = rest.find([',', '\n', ' ', '}']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

pub(crate) fn run() -> Result<()> {
    let root = project_root();
    let dir = root.join("ci/statsd");
    let has = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has("node") || !has("npm") {
        // Like the pinned mdbook, what the check needs it installs (Debian's packages).
        println!("Node.js or npm is missing: installing them with apt-get");
        process::run(Command::new("apt-get").args(["update", "-qq"]))?;
        process::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "nodejs", "npm"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if !dir.join("node_modules/statsd/stats.js").exists() {
        // Exactly the locked versions; install scripts are not needed (they build an
        // optional syslog backend).
        process::run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
                .current_dir(&dir),
        )
        .map_err(|e| format!("{e} (the StatsD check needs Node.js and npm)"))?;
    }
    process::run(process::cargo().current_dir(&root).args([
        "build",
        "--quiet",
        "--bin",
        "agora",
        "--bin",
        "agora-cli",
    ]))?;
    let (port, mgmt_port) = (free_port()?, free_port()?);
    let tmp = std::env::temp_dir().join(format!("agora-statsd-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let config = tmp.join("config.js");
    std::fs::write(
        &config,
        format!(
            "{{ port: {port}, address: \"127.0.0.1\", mgmt_port: {mgmt_port}, \
             mgmt_address: \"127.0.0.1\", flushInterval: 3600000, backends: [] }}\n"
        ),
    )?;
    let statsd = Command::new("node")
        .arg(dir.join("node_modules/statsd/stats.js"))
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start node: {e}"))?;
    let _statsd = Guard(statsd, "statsd");
    println!("statsd on udp://127.0.0.1:{port}, management on tcp://127.0.0.1:{mgmt_port}");
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", mgmt_port)).is_err() {
        if Instant::now() > end {
            return Err("statsd did not start within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = root.join("target/debug");
    let mut agora = Command::new(target.join("agora"))
        .args(["--memory-only", "--port", "0", "--statsd"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--statsd-interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start agora: {e}"))?;
    let out = agora.stdout.take().ok_or("no stdout")?;
    let _agora = Guard(agora, "agora");
    let mut out = BufReader::new(out);
    let addr = crate::startup::read_listener(&mut out, "tcp")?.to_string();
    // Keep taking the broker's stdout (its second start-up line, its log), so none of
    // its writes meets a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    println!("agora on {addr}");
    let messages: Vec<String> = (0..N).map(|i| format!("job-{i}")).collect();
    process::run(
        Command::new(target.join("agora-cli"))
            .args(["--server", &addr, "pub", "--queue", QUEUE, "--confirm"])
            .args(&messages)
            .stdout(Stdio::null()),
    )?;
    process::run(
        Command::new(target.join("agora-cli"))
            .args(["--server", &addr, "consume", "--queue", QUEUE, "--count"])
            .arg(N.to_string())
            .stdout(Stdio::null()),
    )?;
    let want = N as f64;
    let (mut counters, mut gauges, mut timers);
    loop {
        counters = mgmt(mgmt_port, "counters")?;
        gauges = mgmt(mgmt_port, "gauges")?;
        timers = mgmt(mgmt_port, "timers")?;
        let done = value(&counters, &format!("{METRIC}.messages.in")) == Some(want)
            && value(&counters, &format!("{METRIC}.messages.out")) == Some(want)
            && timers.contains(&format!("'{METRIC}.latency'"));
        if done {
            break;
        }
        if Instant::now() > end {
            return Err(format!(
                "StatsD did not get the workload's totals within 20 s:\n{counters}\n{timers}"
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let bytes_in = value(&counters, &format!("{METRIC}.bytes.in"));
    let expect_bytes: usize = messages.iter().map(String::len).sum();
    if bytes_in != Some(expect_bytes as f64) {
        return Err(format!("{METRIC}.bytes.in is {bytes_in:?}, expected {expect_bytes}").into());
    }
    for g in [
        format!("{METRIC}.pending"),
        format!("{METRIC}.consumers"),
        "agora.broker.clients.tcp".to_owned(),
        "agora.broker.memory.rss".to_owned(),
    ] {
        if value(&gauges, &g).is_none() {
            return Err(format!("StatsD has no gauge {g}:\n{gauges}").into());
        }
    }
    println!(
        "statsd check passed: {METRIC}.messages.in = {N}, messages.out = {N}, bytes.in = {expect_bytes}, latency timings present, gauges present"
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_values_from_util_inspect_output() {
        let dump = "{\n  'statsd.bad_lines_seen': 0,\n  'agora.queue.x_y.messages.in': 3\n}\nEND\n";
        assert_eq!(super::value(dump, "agora.queue.x_y.messages.in"), Some(3.0));
        assert_eq!(super::value("{ 'agora.g': 2 }", "agora.g"), Some(2.0));
        assert_eq!(super::value(dump, "missing"), None);
    }
}
