//! `cargo xtask ci`: the whole pipeline, the README's test command, what `.ci/run` runs.
//!
//! Steps run in order, cheapest first, and the first failure stops the run with a non-zero
//! exit naming the step. The last line is a test tally (`tests: N passed, N failed`) so
//! whoever reads only the end of the log still sees what the test step did.

use std::process::Command;

use crate::process::{self, Result, Stream};
use crate::{book, project_root};

/// One step of the pipeline.
#[derive(Clone, Copy)]
enum Step {
    Fmt,
    Clippy,
    /// No import cycle between modules of the server or the client.
    Cycles,
    Test,
    /// The deterministic simulation, 10 seeds of 20,000 operations (release build), and
    /// the cluster simulation, 10 seeds of 20,000 steps.
    Sim,
    /// The crash test, 10 kills of the release broker (`cargo xtask crash`).
    Crash,
    /// The cluster test, 3 faults (`cargo xtask cluster-test`).
    ClusterTest,
    Statsd,
    Book,
    /// `bench --quick` with Agora alone, built without the peer drivers: a smoke test
    /// that every scenario delivers what it promises. It never judges speed.
    BenchQuick,
    /// One minute of `soak`: hostile clients beside a normal pair, RSS against its
    /// bound, no confirmed message lost.
    Soak,
}

/// The pipeline, in order.
const STEPS: &[Step] = &[
    Step::Fmt,
    Step::Clippy,
    Step::Cycles,
    Step::Test,
    Step::Sim,
    Step::Crash,
    Step::ClusterTest,
    Step::Statsd,
    Step::Book,
    Step::BenchQuick,
    Step::Soak,
];

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Cycles => "cycles",
            Step::Test => "test",
            Step::Sim => "sim",
            Step::Crash => "crash",
            Step::ClusterTest => "cluster-test",
            Step::Statsd => "statsd",
            Step::Book => "book",
            Step::BenchQuick => "bench --quick",
            Step::Soak => "soak",
        }
    }

    fn run(self, tally: &mut Tally) -> Result<()> {
        let cargo = || {
            let mut cmd = process::cargo();
            cmd.current_dir(project_root());
            cmd
        };
        match self {
            Step::Fmt => process::run(cargo().args(["fmt", "--all", "--", "--check"])),
            Step::Clippy => process::run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
            Step::Test => {
                let mut cmd: Command = cargo();
                cmd.args(["test", "--workspace"]);
                process::run_watching(&mut cmd, Stream::Stdout, |line| tally.observe(line))
            }
            Step::Cycles => crate::cycles::run(),
            Step::Sim => crate::sim(&["--seeds", "10", "--ops", "20000"].map(String::from))
                .and_then(|()| {
                    crate::sim(&["--cluster", "--seeds", "10", "--ops", "20000"].map(String::from))
                }),
            Step::Crash => crate::crash(&["--iterations", "10"].map(String::from)),
            Step::ClusterTest => crate::cluster_test(&["--faults", "3"].map(String::from)),
            Step::Statsd => crate::statsd::run(),
            Step::Book => book::run(),
            Step::BenchQuick => crate::bench::run(&crate::bench::Options {
                quick: true,
                no_peers: true,
                ..Default::default()
            }),
            Step::Soak => crate::soak::run(60),
        }
    }
}

pub(crate) fn run() -> Result<()> {
    let mut tally = Tally::default();
    for (index, step) in STEPS.iter().enumerate() {
        println!();
        println!("==> ci step {}/{}: {}", index + 1, STEPS.len(), step.name());
        if let Err(err) = step.run(&mut tally) {
            if tally.seen {
                println!("{}", tally.line());
            }
            return Err(format!("ci step `{}` failed: {err}", step.name()).into());
        }
    }
    println!();
    let names: Vec<&str> = STEPS.iter().map(|step| step.name()).collect();
    println!("==> ci passed: {}", names.join(", "));
    println!("{}", tally.line());
    Ok(())
}

/// Test counts summed over every `test result:` line cargo test prints (one per test
/// binary and one per crate's doctests).
#[derive(Default)]
struct Tally {
    seen: bool,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Reads `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; …`.
    fn observe(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        self.seen = true;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }

    fn line(&self) -> String {
        format!(
            "tests: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn sums_every_test_binary() {
        let mut tally = Tally::default();
        for line in [
            "running 3 tests",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ] {
            tally.observe(line);
        }
        assert!(tally.seen);
        assert_eq!(tally.line(), "tests: 8 passed, 2 failed, 1 skipped");
    }

    #[test]
    fn ignores_other_lines() {
        let mut tally = Tally::default();
        tally.observe("test codec::round_trip ... ok");
        tally.observe("   Doc-tests agora_protocol");
        assert!(!tally.seen);
    }
}
