//! What the bench reads of a broker's processes in /proc: CPU time, peak resident set,
//! a start-up script's worker, and RabbitMQ's port mapper to stop by its PID.

use std::fs;
use std::process::Command;

/// Linux reports /proc times in USER_HZ ticks, 100 a second on every architecture it
/// supports (the kernel's `sysconf(_SC_CLK_TCK)` is fixed to it for user space).
const TICKS_PER_SECOND: f64 = 100.0;

/// Stops the Erlang port mapper a RabbitMQ node started on `port`: it left the node's
/// process group (a daemon), so it is found by its environment in /proc and killed by
/// its PID.
pub(super) fn kill_epmd(port: u16) {
    let want = format!("ERL_EPMD_PORT={port}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "epmd" {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// The first child process of `pid` (from /proc), once it is there.
pub(super) fn child_of(pid: u32) -> Option<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of `pid` from /proc/<pid>/stat, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold blanks: count fields after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 overall, utime 14 and stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Peak resident set of `pid` since it started, in MiB (VmHWM).
pub(crate) fn peak_rss_of(pid: u32) -> Option<f64> {
    status_kib(pid, "VmHWM:").map(|k| k as f64 / 1024.0)
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_cpu_time() {
        let me = std::process::id();
        assert!(super::cpu_seconds(me).is_some());
        assert!(super::status_kib(me, "VmHWM:").is_some());
    }
}
