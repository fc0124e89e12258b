//! agora-bench: throughput and latency of Agora, side by side with nats-server,
//! redis-server and a null relay, in one invocation on one machine.
//!
//! ```text
//! main        the command line, the suite, the interleaved schedule, the exit code
//! scenario    what each scenario does and promises, written once for every system
//! drive       each run's driver, and for a cluster the node its clients go to
//! drivers     per system: connect, publish, subscribe (peers behind the `peers` feature)
//! server      broker processes (a cluster's three): start on 127.0.0.1, /proc
//!             accounting, stop by PID
//! tls         the TLS rows' certificate (made at the start) and their clients' rustls
//! wire        the sequence number and timestamp every message carries; lost/duplicated
//! report      tables, results.json, the book's results page and its SVG charts
//! ```
//!
//! This crate measures; it must never assert a speed. A run fails (non-zero exit) only
//! when a system breaks a promise its scenario makes: a message lost or duplicated where
//! delivery is promised, a broker whose memory is not bounded under a stalled consumer.

mod compare;
mod drive;
mod drivers;
mod http_load;
mod report;
mod scenario;
mod server;
mod suite;
mod system;
mod tls;
mod wire;

use suite::suite;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use drive::run_cell;
use report::Record;
use scenario::{Cell, Scenario, ServerView, Settings};
use server::{Bins, Server};
use system::unavailable;
pub(crate) use system::System;

/// Throughput and latency of Agora next to nats-server, redis-server and a null relay.
///
/// Without arguments it runs the standard suite (every scenario, every system found,
/// 3 runs each, interleaved) and writes target/agora-bench/results.json. Pick single
/// scenarios, systems, sizes and rates with the options below.
#[derive(Parser, Debug)]
#[command(name = "agora-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the null relay (started by the bench itself as the `raw` system).
    #[command(hide = true)]
    Relay {
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Agora against itself with one thing changed (arguments, config file or mutator
    /// chain): fresh brokers A and B alternately, B ÷ A per pair, median and spread.
    Compare(Box<compare::CompareArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// One run of the 128 B scenarios with short durations (about a minute); writes
    /// only under target/.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Systems to run (default: all; a peer missing from PATH is recorded as skipped).
    #[arg(long = "system", value_enum, value_delimiter = ',')]
    systems: Vec<System>,
    /// Payload sizes in bytes for `publish` and `topic-1-1` (the rest use 128 B;
    /// at least 16, the sequence number and timestamp).
    #[arg(long, value_delimiter = ',', default_value = "16,128,1024,16384",
          value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    sizes: Vec<u64>,
    /// Publish rates for `latency-rate`, in messages per second.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,500000",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rates: Vec<u64>,
    /// Runs of each cell; the tables show the median with min and max (default 3,
    /// 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: Option<u32>,
    /// Seconds each throughput run publishes for (default 1, 0.5 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds each latency-rate run publishes for (default 2, 1 with --quick).
    #[arg(long)]
    rate_duration: Option<f64>,
    /// Seconds the slow-consumer run publishes for (default 3, 1.5 with --quick).
    #[arg(long)]
    slow_duration: Option<f64>,
    /// MiB of payload durable-backlog publishes before it drains them (default 1024,
    /// 64 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    backlog_mib: Option<u64>,
    /// Round trips in the rtt scenario.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rtt_rounds: u64,
    /// The most resident memory, in MiB, a broker may reach in the slow-consumer run.
    #[arg(long, default_value_t = 256.0)]
    rss_bound_mib: f64,
    /// The `agora` binary (default: next to this one, i.e. target/release/agora).
    #[arg(long)]
    agora_bin: Option<PathBuf>,
    /// Where results.json goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/agora-bench"))]
    out: PathBuf,
    /// Also write the book's results page (results.md and SVG charts) into this folder
    /// (`cargo xtask bench` passes book/src/benchmarks).
    #[arg(long)]
    book_dir: Option<PathBuf>,
    /// No progress bar (for logs).
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Relay { port }) => {
            return match drivers::raw::relay(port) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("relay: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Compare(args)) => compare::run(*args),
        None => run(cli.run),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("agora-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: RunArgs) -> Result<bool, String> {
    let quick = args.quick;
    let secs = |v: Option<f64>, full: f64, short: f64| {
        Duration::from_secs_f64(v.unwrap_or(if quick { short } else { full }).max(0.05))
    };
    let settings = Settings {
        rtt_rounds: args.rtt_rounds,
        rss_bound_mib: args.rss_bound_mib,
        backlog_bytes: args.backlog_mib.unwrap_or(if quick { 64 } else { 1024 }) << 20,
        ..Settings::new(
            secs(args.duration, 1.0, 0.5),
            secs(args.rate_duration, 2.0, 1.0),
            secs(args.slow_duration, 3.0, 1.5),
        )
    };
    let runs = args.runs.unwrap_or(if quick { 1 } else { 3 });
    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let systems: Vec<System> = if args.systems.is_empty() {
        System::ALL.to_vec()
    } else {
        System::ALL
            .into_iter()
            .filter(|s| args.systems.contains(s))
            .collect()
    };
    // One certificate for every TLS server of the run, made anew each run.
    let certs = match systems.iter().any(|s| s.tls()) {
        true => Some(tls::Certs::make(&args.out.join("tls"))?),
        false => None,
    };
    let tls_client = certs.as_ref().map(tls::Certs::client_config).transpose()?;
    let bins = Bins {
        agora: args
            .agora_bin
            .clone()
            .unwrap_or_else(|| me.with_file_name("agora")),
        relay: me.clone(),
        nats: server::on_path("nats-server"),
        redis: server::on_path("redis-server"),
        jetstream: server::jetstream_bin(&me),
        rabbitmq: server::rabbitmq_bin(),
        mosquitto: server::on_path("mosquitto").or_else(|| {
            Some(std::path::PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.is_file())
        }),
        tls: certs,
    };
    let groups = suite(&args);
    let log_dir = args.out.join("logs");
    let started = std::time::SystemTime::now();

    // Every (system, cell, run) gets a record; count the ones that will run.
    let mut records: Vec<Record> = Vec::new();
    let mut todo = 0u64;
    for cells in &groups {
        for cell in cells {
            for &system in &systems {
                let why = unavailable(system, &bins)
                    .or_else(|| scenario::unsupported(system, cell).map(str::to_owned));
                match why {
                    Some(reason) => {
                        for run in 1..=runs {
                            records.push(Record::skipped(system, cell, run, &reason));
                        }
                    }
                    None => todo += u64::from(runs),
                }
            }
        }
    }
    let bar = if args.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(todo)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut serial = 0u64;
    for cells in &groups {
        for round in 0..runs {
            // Interleave: each round starts with a different system, so drift over the
            // suite (thermal, the neighbours' load) hits every system alike.
            let mut order = systems.clone();
            let len = order.len().max(1);
            order.rotate_left(round as usize % len);
            for system in order {
                if unavailable(system, &bins).is_some() {
                    continue;
                }
                let active: Vec<&Cell> = cells
                    .iter()
                    .filter(|c| scenario::unsupported(system, c).is_none())
                    .collect();
                if active.is_empty() {
                    continue;
                }
                let server = match Server::start_with(system, &bins, &log_dir, system.name(), &[]) {
                    Ok(s) => s,
                    Err(e) => {
                        for cell in active {
                            records.push(Record::failed(system, cell, round + 1, &e));
                            bar.inc(1);
                        }
                        continue;
                    }
                };
                let view = ServerView {
                    system,
                    addr: server.addr.clone(),
                    nodes: server.addrs(),
                    leader: None,
                    pids: server.pids(),
                };
                for cell in active {
                    serial += 1;
                    bar.set_message(format!(
                        "{} {}{} {} B{} run {}",
                        system.name(),
                        cell.scenario.id(),
                        if cell.variant.is_empty() {
                            String::new()
                        } else {
                            format!("/{}", cell.variant)
                        },
                        cell.payload,
                        cell.rate.map(|r| format!(" @{r}/s")).unwrap_or_default(),
                        round + 1
                    ));
                    let name = format!("bench-{serial}");
                    let record = match run_cell(&view, cell, &settings, name, &tls_client) {
                        Ok(m) => Record::measured(system, cell, round + 1, &m),
                        Err(e) => Record::failed(system, cell, round + 1, &e),
                    };
                    if record.status == "failed" {
                        bar.println(format!(
                            "FAILED: {} {} {} B run {}: {}",
                            system.name(),
                            cell.scenario.id(),
                            cell.payload,
                            round + 1,
                            record.reason.as_deref().unwrap_or("")
                        ));
                    }
                    records.push(record);
                    bar.inc(1);
                }
                server.stop();
            }
        }
    }
    bar.finish_and_clear();

    let order: Vec<Cell> = groups.into_iter().flatten().collect();
    records.sort_by_key(|r| {
        (
            order
                .iter()
                .position(|c| r.is_cell(c))
                .unwrap_or(usize::MAX),
            System::ALL
                .iter()
                .position(|s| s.name() == r.system)
                .unwrap_or(usize::MAX),
            r.run,
        )
    });
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let json = args.out.join("results.json");
    let versions = report::versions(&bins, &systems);
    report::write_json(&json, &versions, &records)?;
    let summaries = report::summarize(&order, &records);
    print!("{}", report::tables(&summaries, &versions));
    print!("{}", report::versus_nats(&summaries, report::Style::Text));
    print!("{}", report::tls_table(&summaries, report::Style::Text));
    for v in &versions {
        println!("{}", v.describe(" (", ")"));
    }
    println!("results: {}", json.display());
    if let Some(dir) = &args.book_dir {
        let context = report::Context::gather(&versions, &settings, runs, started);
        report::write_book(dir, &summaries, &records, &context)?;
        println!("book page: {}", dir.join("results.md").display());
    }
    let failed: Vec<&Record> = records.iter().filter(|r| r.status == "failed").collect();
    if failed.is_empty() {
        return Ok(true);
    }
    // A peer's failed run is recorded, with its reason, and reported; only Agora's fail
    // the suite (a peer that cannot finish a run says nothing about Agora).
    let ours = failed
        .iter()
        .filter(|r| r.system.starts_with("agora"))
        .count();
    eprintln!();
    eprintln!(
        "!!! {} run(s) FAILED ({ours} of Agora's): a promise was broken or a run could not finish",
        failed.len()
    );
    for r in failed {
        eprintln!(
            "!!!   {} {}{} {} B run {}: {}",
            r.system,
            r.scenario,
            if r.variant.is_empty() {
                String::new()
            } else {
                format!("/{}", r.variant)
            },
            r.payload_bytes,
            r.run,
            r.reason.as_deref().unwrap_or("")
        );
    }
    Ok(ours == 0)
}
