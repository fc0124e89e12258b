//! `agora-bench compare`: Agora against itself with one thing changed.
//!
//! Two brokers, A and B, differ only in their arguments (`--ablate …`, `--statsd …`,
//! `--queue-channel …`), their config file, the mutator chain set on the bench's
//! destination, or their binary (`--bin-a/--bin-b`: two builds of the broker). Each run starts a fresh broker; the runs alternate A B B A A B B A … so
//! that drift over the comparison (the neighbours' load, thermal state) falls on both
//! sides alike. Each pair (A and B of the same round) gives a ratio B ÷ A of throughput
//! and of the broker's CPU per million messages; the summary is the median ratio with the
//! lowest and highest. Every run still keeps its scenario's promise (nothing lost or
//! duplicated; with `sample N`, exactly every N-th message), or it is recorded as failed
//! and its pair gives no ratio.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use agora_client::{Client, Destination};
use serde::Serialize;

use crate::drivers;
use crate::report::Spread;
use crate::scenario::{self, Cell, Scenario, ServerView, Settings};
use crate::server::{Bins, Server};
use crate::wire::{self, Format};
use crate::System;

/// The destination every compare run uses; a `--config-a/-b` file names it
/// `[topics.bench]` or `[queues.bench]`.
pub(crate) const DEST: &str = "bench";

/// Agora against itself: brokers A and B, alternating, fresh each run; reports B ÷ A.
///
/// Example: `agora-bench compare --scenario topic-1-1,queue-4 --pairs 5
/// --b "--ablate no-defences"`.
#[derive(clap::Args, Debug)]
pub(crate) struct CompareArgs {
    /// Scenarios to compare, each with its own pairs (flow scenarios only: topic-*,
    /// queue-*, publish, confirm).
    #[arg(long = "scenario", value_enum, value_delimiter = ',', required = true)]
    scenarios: Vec<Scenario>,
    /// The scenarios' variant: requesters for `request-reply` (default 1), publishers
    /// for `durable-confirm` (default 1), `queue` for `publish` into a queue.
    #[arg(long)]
    variant: Option<String>,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    payload: u64,
    /// Pairs of runs (A and B) per scenario; at least 5 for a figure worth quoting.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pairs: u32,
    /// Broker A's extra arguments, split on blanks (`{statsd}` becomes the address of
    /// the StatsD sink of `--statsd-sink`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    a: String,
    /// Broker B's extra arguments (as for `--a`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    b: String,
    /// Mutator chain set (CHAIN SET) on the bench's destination before each A run.
    #[arg(long)]
    chain_a: Option<String>,
    /// Mutator chain set on the bench's destination before each B run.
    #[arg(long)]
    chain_b: Option<String>,
    /// Config file for broker A (`--config`; the destination is called `bench`).
    #[arg(long)]
    config_a: Option<PathBuf>,
    /// Config file for broker B.
    #[arg(long)]
    config_b: Option<PathBuf>,
    /// Create a SQLite database with table `sites(site TEXT PRIMARY KEY, region TEXT)`
    /// holding `s1`, and start both brokers with a config file declaring it as
    /// `[databases] sites` (for `enrich db=sites table=sites key=/site`). Not with
    /// `--config-a/-b`.
    #[arg(long, conflicts_with_all = ["config_a", "config_b"])]
    sites_db: bool,
    /// Publish JSON objects ({"seq":…,"t":…,"temp":42.5,"site":"s1","pad":"…"}) instead
    /// of the binary header, for chains that read JSON fields.
    #[arg(long)]
    json: bool,
    /// Side A keeps only every N-th message (a `sample N` chain): the receivers then
    /// expect exactly messages 0, N, 2N… (one publisher only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    keep_every_a: u64,
    /// Side B keeps only every N-th message (as for `--keep-every-a`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    keep_every_b: u64,
    /// Messages published to the topic before its subscribers join, on both sides
    /// (e.g. to warm an enrichment cache); topic scenarios only.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Seconds each run publishes for.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Drive both brokers with the lean client (`agora-lean`) instead of the SDK, so
    /// that the broker, not the client, bounds the figure (not with `confirm`).
    #[arg(long)]
    lean: bool,
    /// Flow-control window in messages (default: 4 MiB of payload, 64 to 4096).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    window: Option<u64>,
    /// Bind a UDP socket on 127.0.0.1 that receives and discards datagrams (a StatsD
    /// stand-in); `{statsd}` in `--a`/`--b` becomes its address.
    #[arg(long)]
    statsd_sink: bool,
    /// Name of this comparison: the JSON goes to `<out>/compare-<label>.json`.
    #[arg(long, default_value = "ab")]
    label: String,
    /// The `agora` binary (default: next to this one).
    #[arg(long)]
    agora_bin: Option<PathBuf>,
    /// Broker A's binary, e.g. a build of another commit (default: `--agora-bin`).
    #[arg(long)]
    bin_a: Option<PathBuf>,
    /// Broker B's binary (default: `--agora-bin`).
    #[arg(long)]
    bin_b: Option<PathBuf>,
    /// The commit recorded with the results (default: this source tree's, `-dirty`
    /// if it has changes); give it when the binaries come from elsewhere, e.g. a
    /// clean `git archive` of a commit.
    #[arg(long)]
    commit: Option<String>,
    /// Where the JSON goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/agora-bench"))]
    out: PathBuf,
}

mod record;
mod setup;

use record::*;
use setup::*;

pub(crate) fn run(args: CompareArgs) -> Result<bool, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let default_bin = args
        .agora_bin
        .clone()
        .unwrap_or_else(|| me.with_file_name("agora"));
    let bins_of = |bin: &Option<PathBuf>| -> Result<Bins, String> {
        let agora = bin.clone().unwrap_or_else(|| default_bin.clone());
        if !agora.is_file() {
            return Err(format!(
                "{} not found (cargo build --release -p agora-server)",
                agora.display()
            ));
        }
        Ok(Bins {
            agora,
            relay: me.clone(),
            nats: None,
            redis: None,
            jetstream: None,
            rabbitmq: None,
            mosquitto: None,
            tls: None,
        })
    };
    let (bins_a, bins_b) = (bins_of(&args.bin_a)?, bins_of(&args.bin_b)?);
    let format = if args.json {
        Format::Json
    } else {
        Format::Binary
    };
    let payload = args.payload as usize;
    if format == Format::Json && payload < wire::MIN_JSON_PAYLOAD {
        eprintln!(
            "note: JSON payloads below {} B may come out a few bytes longer",
            wire::MIN_JSON_PAYLOAD
        );
    }
    for &s in &args.scenarios {
        use Scenario::*;
        if matches!(s, Rtt | LatencyRate | SlowConsumer | Udp) {
            return Err(format!("compare runs flow scenarios only, not {}", s.id()));
        }
        if args.lean && s == Confirm {
            return Err("the lean client does not wait for confirms: confirm is the SDK's".into());
        }
        if args.warmup > 0 && destination(s)?.kind != agora_client::Kind::Topic {
            return Err(format!("--warmup is for topic scenarios, not {}", s.id()));
        }
        let pubs = if s == Topic4x1 { 4 } else { 1 };
        if (args.keep_every_a > 1 || args.keep_every_b > 1) && (pubs > 1 || s == Publish) {
            return Err(format!(
                "--keep-every needs one publisher and a receiver, not {}",
                s.id()
            ));
        }
    }
    let compare_dir = args.out.join("compare");
    let log_dir = compare_dir.join("logs");
    let sites_config = if args.sites_db {
        Some(sites_db(&compare_dir)?)
    } else {
        None
    };
    let sink = if args.statsd_sink {
        Some(Sink::start()?)
    } else {
        None
    };
    let expand = |text: &str, config: Option<&PathBuf>| -> Vec<String> {
        let mut v: Vec<String> = text
            .split_whitespace()
            .map(|w| match &sink {
                Some(s) => w.replace("{statsd}", &s.addr),
                None => w.to_owned(),
            })
            .collect();
        if let Some(c) = config.or(sites_config.as_ref()) {
            v.push("--config".into());
            v.push(c.display().to_string());
        }
        v
    };
    let sides = [
        (
            "A",
            expand(&args.a, args.config_a.as_ref()),
            args.chain_a.as_deref(),
            args.keep_every_a,
            &bins_a,
        ),
        (
            "B",
            expand(&args.b, args.config_b.as_ref()),
            args.chain_b.as_deref(),
            args.keep_every_b,
            &bins_b,
        ),
    ];
    let duration = Duration::from_secs_f64(args.duration.max(0.05));
    let commit = args.commit.clone().unwrap_or_else(commit);
    let loadavg_before = loadavg();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "compare {}: commit {commit}, load {loadavg_before}, {} B {}, {} pairs of {:.1} s",
        args.label,
        payload,
        if args.json { "JSON" } else { "binary" },
        args.pairs,
        duration.as_secs_f64()
    );
    for (name, argv, chain, _, bins) in &sides {
        println!(
            "  {name}: {} {}{}",
            bins.agora.display(),
            argv.join(" "),
            chain.map(|c| format!("; chain {c:?}")).unwrap_or_default()
        );
    }

    let mut runs = Vec::new();
    let mut summaries = Vec::new();
    for &scenario in &args.scenarios {
        let dest = destination(scenario)?;
        let variant = match (&args.variant, scenario) {
            (Some(v), _) => v.clone(),
            (None, Scenario::RequestReply | Scenario::DurableConfirm) => "1".to_owned(),
            (None, _) => String::new(),
        };
        let cell = Cell {
            scenario,
            variant: Box::leak(variant.into_boxed_str()),
            payload,
            rate: None,
        };
        let mut slot = 0;
        let mut a_runs: Vec<Option<Run>> = Vec::new();
        let mut b_runs: Vec<Option<Run>> = Vec::new();
        for pair in 0..args.pairs {
            // A B, B A, A B, …: each side is first as often as the other.
            let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let (name, argv, chain, keep_every, bins) = &sides[side];
                let settings = Settings {
                    format,
                    keep_every: *keep_every,
                    window: args.window,
                    ..Settings::new(duration, duration, duration)
                };
                // A sample chain's counter is advanced by the warm-up too: keep it a
                // multiple of N so message 0 of the measured run is kept.
                let warmup = args.warmup.div_ceil(*keep_every) * keep_every;
                let statsd0 = sink.as_ref().map_or(0, |s| s.count.load(Relaxed));
                let result = one_run(
                    bins,
                    &log_dir,
                    &format!("{}-{}-{name}", args.label, scenario.id()),
                    argv,
                    &dest,
                    *chain,
                    warmup,
                    &cell,
                    &settings,
                    args.lean,
                );
                let statsd = sink.as_ref().map_or(0, |s| s.count.load(Relaxed)) - statsd0;
                let run = to_run(scenario, pair, name, slot, result, statsd);
                slot += 1;
                println!(
                    "  {} pair {} {name}: {}",
                    scenario.id(),
                    pair + 1,
                    if run.status == "ok" {
                        format!(
                            "{:.0} published/s, {:.0} delivered/s, {:.2} CPU s/M{}{}",
                            run.published_per_s,
                            run.msgs_per_s,
                            run.server_cpu_s_per_million,
                            match (run.p50_us, run.p99_us) {
                                (Some(a), Some(b)) => format!(", p50 {a:.1} µs, p99 {b:.1} µs"),
                                _ => String::new(),
                            },
                            if sink.is_some() {
                                format!(", {} StatsD datagrams", run.statsd_datagrams)
                            } else {
                                String::new()
                            }
                        )
                    } else {
                        format!("FAILED: {}", run.reason.as_deref().unwrap_or(""))
                    }
                );
                let ok = (run.status == "ok").then(|| run.clone());
                if side == 0 {
                    a_runs.push(ok);
                } else {
                    b_runs.push(ok);
                }
                runs.push(run);
            }
        }
        let pairs: Vec<(&Run, &Run)> = a_runs
            .iter()
            .zip(&b_runs)
            .filter_map(|(a, b)| Some((a.as_ref()?, b.as_ref()?)))
            .collect();
        let throughput_ratios: Vec<f64> = pairs
            .iter()
            .map(|(a, b)| b.published_per_s / a.published_per_s)
            .collect();
        let cpu_ratios: Vec<f64> = pairs
            .iter()
            .map(|(a, b)| b.server_cpu_s_per_million / a.server_cpu_s_per_million)
            .collect();
        let per_side =
            |v: &[Option<Run>]| Spread::of(v.iter().flatten().map(|r| r.published_per_s).collect());
        summaries.push(ScenarioSummary {
            scenario: scenario.id(),
            throughput_ratio: Spread::of(throughput_ratios.clone()),
            throughput_ratios,
            cpu_ratio: Spread::of(cpu_ratios.clone()),
            cpu_ratios,
            a_published_per_s: per_side(&a_runs),
            b_published_per_s: per_side(&b_runs),
            failed_runs: a_runs.iter().chain(&b_runs).filter(|r| r.is_none()).count(),
        });
    }
    drop(sink);
    let loadavg_after = loadavg();

    println!();
    println!(
        "{} (commit {commit}, load {loadavg_before} -> {loadavg_after}): B / A, median [min-max] of pairs",
        args.label
    );
    println!(
        "{:<12} {:>12} {:>12} {:>24} {:>24} {:>7}",
        "scenario", "A pub/s", "B pub/s", "throughput B/A", "CPU per msg B/A", "failed"
    );
    let fmt = |s: &Option<Spread>| {
        s.map_or_else(
            || "-".to_owned(),
            |s| format!("{:.3} [{:.3}-{:.3}]", s.median, s.min, s.max),
        )
    };
    for s in &summaries {
        println!(
            "{:<12} {:>12} {:>12} {:>24} {:>24} {:>7}",
            s.scenario,
            s.a_published_per_s
                .map_or("-".into(), |x| format!("{:.0}", x.median)),
            s.b_published_per_s
                .map_or("-".into(), |x| format!("{:.0}", x.median)),
            fmt(&s.throughput_ratio),
            fmt(&s.cpu_ratio),
            s.failed_runs
        );
    }
    let failed = runs.iter().filter(|r| r.status != "ok").count();
    let output = Output {
        label: &args.label,
        commit,
        agora_bin: default_bin.display().to_string(),
        payload_bytes: args.payload,
        format,
        pairs: args.pairs,
        duration_s: duration.as_secs_f64(),
        warmup: args.warmup,
        window: args.window,
        lean: args.lean,
        schedule: "ABBA: pair 1 runs A then B, pair 2 B then A, …; a fresh broker per run",
        a: Side {
            bin: bins_a.agora.display().to_string(),
            args: &args.a,
            chain: args.chain_a.as_deref(),
            config: args
                .config_a
                .as_ref()
                .or(sites_config.as_ref())
                .map(|p| p.display().to_string()),
            keep_every: args.keep_every_a,
        },
        b: Side {
            bin: bins_b.agora.display().to_string(),
            args: &args.b,
            chain: args.chain_b.as_deref(),
            config: args
                .config_b
                .as_ref()
                .or(sites_config.as_ref())
                .map(|p| p.display().to_string()),
            keep_every: args.keep_every_b,
        },
        loadavg_before,
        loadavg_after,
        started_unix_s,
        summaries,
        runs,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let path = args.out.join(format!("compare-{}.json", args.label));
    let json = serde_json::to_string_pretty(&output).map_err(|e| e.to_string())?;
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("results: {}", path.display());
    if failed > 0 {
        eprintln!("!!! {failed} run(s) FAILED: their pairs give no ratio");
    }
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_ratios() {
        let s = Spread::of(vec![1.0, 0.9, f64::NAN, 1.2]).unwrap();
        assert_eq!((s.median, s.min, s.max), (1.0, 0.9, 1.2));
        assert!(Spread::of(vec![]).is_none());
    }

    #[test]
    fn sites_db_has_s1() {
        let dir = std::env::temp_dir().join(format!("agora-bench-sites-{}", std::process::id()));
        let toml = sites_db(&dir).unwrap();
        assert!(std::fs::read_to_string(&toml)
            .unwrap()
            .contains("sites = \"sites.db\""));
        let conn = rusqlite::Connection::open(dir.join("sites.db")).unwrap();
        let region: String = conn
            .query_row("SELECT region FROM sites WHERE site = 's1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(region, "eu-west");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
