//! `cargo xtask fuzz`: runs the protocol decoder's cargo-fuzz target for a bounded time.
//!
//! The fuzz crate itself lives in fuzz/ (owned by agora-protocol); this only installs
//! cargo-fuzz when missing, runs the target under nightly, and reports how much it ran.

use std::process::Command;

use crate::process::{self, Result, Stream};
use crate::project_root;

pub(crate) const DEFAULT_SECONDS: u64 = 60;

/// The cargo-fuzz target in fuzz/fuzz_targets/.
const TARGET: &str = "decode";

pub(crate) fn run(seconds: u64) -> Result<()> {
    let root = project_root();
    if !root.join("fuzz/Cargo.toml").is_file() {
        return Err(format!(
            "no fuzz crate at {}: the `{TARGET}` target is expected in fuzz/fuzz_targets/",
            root.join("fuzz").display()
        )
        .into());
    }
    ensure_nightly()?;
    if process::find_executables("cargo-fuzz").is_empty() {
        println!("cargo-fuzz not found; installing it");
        process::run(process::cargo().args(["install", "--locked", "cargo-fuzz"]))?;
    }

    let mut report = Report::default();
    // `+nightly` is understood by rustup's `cargo` proxy, not by the toolchain's own cargo
    // in $CARGO, hence plain `cargo` here. RUSTUP_TOOLCHAIN would be ignored next to
    // `+nightly`, but RUSTC/RUSTDOC pointing into stable would not be, so drop all three.
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", "run", TARGET, "--"])
        .arg(format!("-max_total_time={seconds}"))
        // Final stats carry the execution count, on a crash as well as after a clean run.
        .arg("-print_final_stats=1")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .current_dir(&root);
    let result = process::run_watching(&mut cmd, Stream::Stderr, |line| report.observe(line));
    match report.executions() {
        Some(runs) => println!("fuzz: libFuzzer ran `{TARGET}` {runs} times"),
        None => println!("fuzz: libFuzzer reported no execution count"),
    }
    result
}

fn ensure_nightly() -> Result<()> {
    let output = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map_err(|err| format!("fuzzing needs rustup and a nightly toolchain: {err}"))?;
    let listed = String::from_utf8_lossy(&output.stdout);
    if listed.lines().any(|line| line.starts_with("nightly")) {
        Ok(())
    } else {
        Err("fuzzing needs the nightly toolchain (`rustup toolchain install nightly`)".into())
    }
}

/// The execution count libFuzzer prints, read from its output.
#[derive(Default)]
struct Report {
    /// `stat::number_of_executed_units: N`, from `-print_final_stats=1`, on every exit.
    final_stat: Option<u64>,
    /// `Done N runs in S second(s)`, printed after a run that hit its time limit.
    done: Option<u64>,
}

impl Report {
    fn observe(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
            self.final_stat = rest.trim().parse().ok().or(self.final_stat);
        } else if let Some(rest) = line.strip_prefix("Done ") {
            let runs = rest
                .strip_suffix(")")
                .and_then(|r| r.split_once(" runs in "));
            if let Some((runs, _)) = runs {
                self.done = runs.parse().ok().or(self.done);
            }
        }
    }

    fn executions(&self) -> Option<u64> {
        self.final_stat.or(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    fn report(text: &str) -> Report {
        let mut report = Report::default();
        text.lines().for_each(|line| report.observe(line));
        report
    }

    #[test]
    fn prefers_the_final_stat() {
        let out = "#1048576\tpulse  cov: 310 ft: 900 corp: 80/2Kb exec/s: 349525 rss: 60Mb\n\
                   Done 2097153 runs in 61 second(s)\n\
                   stat::number_of_executed_units: 2097153\n\
                   stat::average_exec_per_sec:     34379\n";
        assert_eq!(report(out).executions(), Some(2097153));
    }

    #[test]
    fn falls_back_to_done_line() {
        let out = "Done 1234 runs in 2 second(s)\n";
        assert_eq!(report(out).executions(), Some(1234));
    }

    #[test]
    fn none_when_libfuzzer_said_nothing() {
        let out = "error: could not compile `agora-protocol`\n";
        assert_eq!(report(out).executions(), None);
    }
}
