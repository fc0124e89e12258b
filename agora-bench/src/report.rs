//! What a run leaves behind: one JSON record per (system, scenario, variant, payload,
//! rate, run), a table per cell on stdout, and for the full suite the book's results
//! page with its SVG charts.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use crate::scenario::{Cell, Measured, Scenario, Settings};
use crate::server::Bins;
use crate::System;

/// Percentiles kept for the latency curves.
const CURVE: [f64; 10] = [
    50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
];

/// One run of one cell on one system, as results.json holds it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    pub(crate) system: &'static str,
    pub(crate) scenario: &'static str,
    pub(crate) variant: &'static str,
    pub(crate) payload_bytes: usize,
    pub(crate) rate: Option<u64>,
    pub(crate) run: u32,
    /// `ok`, `failed` (a promise broken or the run could not finish) or `skipped`.
    pub(crate) status: &'static str,
    pub(crate) reason: Option<String>,
    pub(crate) messages: u64,
    pub(crate) published: u64,
    pub(crate) duration_s: f64,
    pub(crate) msgs_per_sec: f64,
    pub(crate) mb_per_sec: f64,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p90_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) p999_us: Option<f64>,
    pub(crate) max_us: Option<f64>,
    /// `[percentile, µs]` pairs for the latency curves.
    pub(crate) latency_curve_us: Vec<[f64; 2]>,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) client_dropped: u64,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) server_cpu_s_per_million: Option<f64>,
    /// The clients' CPU (the bench process) per million messages.
    #[serde(default)]
    pub(crate) client_cpu_s_per_million: Option<f64>,
    pub(crate) server_peak_rss_mib: Option<f64>,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Record {
    fn empty(system: System, cell: &Cell, run: u32, status: &'static str) -> Record {
        Record {
            system: system.name(),
            scenario: cell.scenario.id(),
            variant: cell.variant,
            payload_bytes: cell.payload,
            rate: cell.rate,
            run,
            status,
            reason: None,
            messages: 0,
            published: 0,
            duration_s: 0.0,
            msgs_per_sec: 0.0,
            mb_per_sec: 0.0,
            p50_us: None,
            p90_us: None,
            p99_us: None,
            p999_us: None,
            max_us: None,
            latency_curve_us: Vec::new(),
            lost: 0,
            duplicated: 0,
            client_dropped: 0,
            server_cpu_s: None,
            server_cpu_s_per_million: None,
            client_cpu_s_per_million: None,
            server_peak_rss_mib: None,
        }
    }

    pub(crate) fn skipped(system: System, cell: &Cell, run: u32, reason: &str) -> Record {
        let mut r = Record::empty(system, cell, run, "skipped");
        r.reason = Some(reason.to_owned());
        r
    }

    pub(crate) fn failed(system: System, cell: &Cell, run: u32, reason: &str) -> Record {
        let mut r = Record::empty(system, cell, run, "failed");
        r.reason = Some(reason.to_owned());
        r
    }

    pub(crate) fn measured(system: System, cell: &Cell, run: u32, m: &Measured) -> Record {
        let mut r = Record::empty(system, cell, run, "ok");
        if let Some(why) = &m.broken {
            r.status = "failed";
            r.reason = Some(why.clone());
        }
        let secs = m.elapsed.as_secs_f64();
        r.messages = m.messages;
        r.published = m.published;
        r.duration_s = secs;
        r.msgs_per_sec = if secs > 0.0 {
            m.messages as f64 / secs
        } else {
            0.0
        };
        r.mb_per_sec = r.msgs_per_sec * cell.payload as f64 / 1e6;
        if let Some(h) = m.latency.as_ref().filter(|h| !h.is_empty()) {
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            r.p50_us = Some(us(0.50));
            r.p90_us = Some(us(0.90));
            r.p99_us = Some(us(0.99));
            r.p999_us = Some(us(0.999));
            r.max_us = Some(h.max() as f64 / 1000.0);
            r.latency_curve_us = CURVE.iter().map(|&p| [p, us(p / 100.0)]).collect();
        }
        r.lost = m.lost;
        r.duplicated = m.duplicated;
        r.client_dropped = m.client_dropped;
        r.server_cpu_s = finite(m.server_cpu_s);
        r.server_cpu_s_per_million = finite(m.server_cpu_s)
            .filter(|_| m.messages > 0)
            .map(|c| c / m.messages as f64 * 1e6);
        r.client_cpu_s_per_million = finite(m.client_cpu_s)
            .filter(|_| m.messages > 0)
            .map(|c| c / m.messages as f64 * 1e6);
        r.server_peak_rss_mib = finite(m.server_peak_rss_mib);
        r
    }

    pub(crate) fn is_cell(&self, c: &Cell) -> bool {
        self.scenario == c.scenario.id()
            && self.variant == c.variant
            && self.payload_bytes == c.payload
            && self.rate == c.rate
    }
}

pub(crate) fn write_json(path: &Path, records: &[Record]) -> Result<(), String> {
    let json = serde_json::to_string_pretty(records).map_err(|e| e.to_string())?;
    std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// Median, min and max of a value over runs (also the ratios of `compare`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// Of the finite values in `v`; `None` if there are none.
    pub(crate) fn of(mut v: Vec<f64>) -> Option<Spread> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One system's runs of one cell, summarized.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub(crate) cell: Cell,
    pub(crate) system: System,
    /// `ok` if every run was, else `failed` or `skipped`.
    pub(crate) status: &'static str,
    pub(crate) reason: Option<String>,
    pub(crate) runs: usize,
    pub(crate) msgs: Option<Spread>,
    pub(crate) mb: Option<Spread>,
    pub(crate) p50: Option<Spread>,
    pub(crate) p90: Option<Spread>,
    pub(crate) p99: Option<Spread>,
    pub(crate) p999: Option<Spread>,
    pub(crate) max: Option<Spread>,
    pub(crate) curve: Vec<[f64; 2]>,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) cpu_per_m: Option<Spread>,
    pub(crate) client_cpu_per_m: Option<Spread>,
    pub(crate) rss: Option<Spread>,
}

pub(crate) fn summarize(order: &[Cell], records: &[Record]) -> Vec<Summary> {
    let mut out = Vec::new();
    for cell in order {
        for system in System::ALL {
            let runs: Vec<&Record> = records
                .iter()
                .filter(|r| r.system == system.name() && r.is_cell(cell))
                .collect();
            if runs.is_empty() {
                continue;
            }
            let status = if runs.iter().any(|r| r.status == "failed") {
                "failed"
            } else if runs.iter().all(|r| r.status == "skipped") {
                "skipped"
            } else {
                "ok"
            };
            let reason = runs.iter().find_map(|r| r.reason.clone());
            let ok: Vec<&Record> = runs.iter().copied().filter(|r| r.status == "ok").collect();
            let spread = |f: &dyn Fn(&Record) -> Option<f64>| {
                Spread::of(ok.iter().filter_map(|r| f(r)).collect())
            };
            let curve = CURVE
                .iter()
                .enumerate()
                .filter_map(|(i, &p)| {
                    Spread::of(
                        ok.iter()
                            .filter_map(|r| r.latency_curve_us.get(i).map(|x| x[1]))
                            .collect(),
                    )
                    .map(|s| [p, s.median])
                })
                .collect();
            out.push(Summary {
                cell: cell.clone(),
                system,
                status,
                reason,
                runs: ok.len(),
                msgs: spread(&|r| Some(r.msgs_per_sec)),
                mb: spread(&|r| Some(r.mb_per_sec)),
                p50: spread(&|r| r.p50_us),
                p90: spread(&|r| r.p90_us),
                p99: spread(&|r| r.p99_us),
                p999: spread(&|r| r.p999_us),
                max: spread(&|r| r.max_us),
                curve,
                lost: runs.iter().map(|r| r.lost).sum(),
                duplicated: runs.iter().map(|r| r.duplicated).sum(),
                cpu_per_m: spread(&|r| r.server_cpu_s_per_million),
                client_cpu_per_m: spread(&|r| r.client_cpu_s_per_million),
                rss: spread(&|r| r.server_peak_rss_mib),
            });
        }
    }
    out
}

fn cell_title(c: &Cell) -> String {
    let mut t = c.scenario.id().to_owned();
    if !c.variant.is_empty() {
        t += &format!(" ({})", c.variant);
    }
    t += &format!(", {} B", c.payload);
    if let Some(r) = c.rate {
        t += &format!(", {} msg/s", group_digits(r as f64));
    }
    t
}

fn group_digits(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn rate_with_spread(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!(
            "{} [{}–{}]",
            group_digits(s.median),
            group_digits(s.min),
            group_digits(s.max)
        ),
        None => "–".into(),
    }
}

fn us(s: Option<Spread>) -> String {
    match s {
        Some(s) if s.median >= 1000.0 => format!("{:.0}", s.median),
        Some(s) => format!("{:.1}", s.median),
        None => "–".into(),
    }
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}", a.median / b.median),
        _ => "–".into(),
    }
}

/// The rows of one cell's table: header, then one row per system.
fn rows(cell_summaries: &[&Summary]) -> Vec<Vec<String>> {
    let agora = cell_summaries
        .iter()
        .find(|s| s.system == System::Agora && s.status == "ok");
    let mut rows = vec![[
        "system",
        "msgs/s [min–max]",
        "MB/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "lost",
        "dup",
        "CPU s/M",
        "client CPU s/M",
        "peak RSS MiB",
        "msgs/s ÷ agora",
        "p99 ÷ agora",
    ]
    .map(str::to_owned)
    .to_vec()];
    for s in cell_summaries {
        if s.status == "skipped" {
            rows.push(vec![
                s.system.name().to_owned(),
                format!("skipped: {}", s.reason.as_deref().unwrap_or("")),
            ]);
            continue;
        }
        if s.runs == 0 {
            rows.push(vec![
                s.system.name().to_owned(),
                format!("FAILED: {}", s.reason.as_deref().unwrap_or("")),
            ]);
            continue;
        }
        let mut name = s.system.name().to_owned();
        if s.status == "failed" {
            name += " (FAILED)";
        }
        rows.push(vec![
            name,
            rate_with_spread(s.msgs),
            s.mb.map_or("–".into(), |m| format!("{:.1}", m.median)),
            us(s.p50),
            us(s.p90),
            us(s.p99),
            us(s.p999),
            us(s.max),
            s.lost.to_string(),
            s.duplicated.to_string(),
            s.cpu_per_m
                .map_or("–".into(), |c| format!("{:.2}", c.median)),
            s.client_cpu_per_m
                .map_or("–".into(), |c| format!("{:.2}", c.median)),
            s.rss.map_or("–".into(), |c| format!("{:.0}", c.median)),
            ratio(s.msgs, agora.and_then(|a| a.msgs)),
            ratio(s.p99, agora.and_then(|a| a.p99)),
        ]);
    }
    rows
}

fn cells(summaries: &[Summary]) -> Vec<(Cell, Vec<&Summary>)> {
    let mut out: Vec<(Cell, Vec<&Summary>)> = Vec::new();
    for s in summaries {
        match out.iter_mut().find(|(c, _)| *c == s.cell) {
            Some((_, v)) => v.push(s),
            None => out.push((s.cell.clone(), vec![s])),
        }
    }
    out
}

/// Plain-text tables, one per cell.
pub(crate) fn tables(summaries: &[Summary]) -> String {
    let mut out = String::new();
    for (cell, group) in cells(summaries) {
        let rows = rows(&group);
        let _ = writeln!(out, "\n== {}", cell_title(&cell));
        let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|i| {
                rows.iter()
                    .filter(|r| r.len() > 2)
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if row.len() == 2 && i == 1 {
                        c.clone()
                    } else {
                        format!("{:>w$}", c, w = widths[i])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
    }
    out
}

fn markdown_table(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let cols = rows.first().map_or(0, Vec::len);
    for (i, row) in rows.iter().enumerate() {
        let mut cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        cells.resize(cols, String::new());
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let _ = writeln!(out, "|{}", "---|".repeat(cols));
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Text,
    Markdown,
}

/// Agora against nats-server at 128 B: the numbers later issues set their bars in.
pub(crate) fn versus_nats(summaries: &[Summary], style: Style) -> String {
    let find = |scenario: Scenario, system: System| {
        summaries.iter().find(|s| {
            s.cell.scenario == scenario
                && s.cell.payload == 128
                && s.cell.variant.is_empty()
                && s.system == system
                && s.status != "skipped"
                && s.runs > 0
        })
    };
    type Pick = fn(&Summary) -> Option<Spread>;
    let metrics: [(&str, Scenario, Pick, bool); 6] = [
        ("topic-1-1 msgs/s", Scenario::Topic1x1, |s| s.msgs, true),
        ("topic-1-4 msgs/s", Scenario::Topic1x4, |s| s.msgs, true),
        ("queue-4 msgs/s", Scenario::Queue4, |s| s.msgs, true),
        ("rtt p99 µs", Scenario::Rtt, |s| s.p99, false),
        (
            "topic-1-1 server CPU s/M msgs",
            Scenario::Topic1x1,
            |s| s.cpu_per_m,
            false,
        ),
        (
            "queue-4 server CPU s/M msgs",
            Scenario::Queue4,
            |s| s.cpu_per_m,
            false,
        ),
    ];
    let fmt = |s: Spread| {
        if s.median >= 100.0 {
            format!(
                "{} [{}–{}]",
                group_digits(s.median),
                group_digits(s.min),
                group_digits(s.max)
            )
        } else {
            format!("{:.2} [{:.2}–{:.2}]", s.median, s.min, s.max)
        }
    };
    let mut rows = vec![vec![
        "metric (128 B)".to_owned(),
        "agora (lean client) median [min–max]".to_owned(),
        "nats (lean client) median [min–max]".to_owned(),
        "agora ÷ nats (median)".to_owned(),
        "range of the ratio".to_owned(),
        "better".to_owned(),
    ]];
    for (label, scenario, pick, higher_better) in metrics {
        // The lean clients' rows: the brokers, not client libraries, bound them.
        let a = find(scenario, System::AgoraLean).and_then(pick);
        let n = find(scenario, System::NatsLean).and_then(pick);
        let (ratio, range) = match (a, n) {
            (Some(a), Some(n)) if n.median > 0.0 && n.min > 0.0 => (
                format!("{:.2}", a.median / n.median),
                format!("{:.2}–{:.2}", a.min / n.max, a.max / n.min),
            ),
            _ => ("–".into(), "–".into()),
        };
        rows.push(vec![
            label.to_owned(),
            a.map_or("–".into(), fmt),
            n.map_or("–".into(), fmt),
            ratio,
            range,
            if higher_better { "higher" } else { "lower" }.to_owned(),
        ]);
    }
    match style {
        Style::Markdown => markdown_table(&rows),
        Style::Text => {
            let mut out = String::from("\n== agora vs nats-server at 128 B\n");
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
                .collect();
            for r in rows {
                let line: Vec<String> = r
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
                    .collect();
                let _ = writeln!(out, "{}", line.join("  ").trim_end());
            }
            out
        }
    }
}

/// How the run was made, for the book page.
pub(crate) struct Context {
    machine: String,
    versions: Vec<(String, String)>,
    settings: String,
    date: String,
    load: String,
}

fn command_output(program: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let text = if text.is_empty() {
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    } else {
        text
    };
    Some(text.lines().next().unwrap_or("").to_owned())
}

impl Context {
    pub(crate) fn gather(
        bins: &Bins,
        settings: &Settings,
        runs: u32,
        started: SystemTime,
    ) -> Context {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown CPU")
            .trim()
            .to_owned();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|k| k.parse::<f64>().ok())
            })
            .map_or("?".into(), |k| format!("{:.0} GiB", k / 1024.0 / 1024.0));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut versions = vec![(
            "agora".to_owned(),
            command_output(&bins.agora, &["--version"]).unwrap_or_else(|| "?".into()),
        )];
        if let Some(n) = &bins.nats {
            versions.push((
                "nats-server".into(),
                command_output(n, &["--version"]).unwrap_or_default(),
            ));
        }
        if let Some(r) = &bins.redis {
            versions.push((
                "redis-server".into(),
                command_output(r, &["--version"]).unwrap_or_default(),
            ));
        }
        versions.push((
            "clients".into(),
            "agora-client (this workspace), async-nats 0.46, redis-rs 1.8".into(),
        ));
        if let Some(rustc) = command_output(Path::new("rustc"), &["--version"]) {
            versions.push(("rustc".into(), rustc));
        }
        let secs = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = command_output(
            Path::new("date"),
            &["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d %H:%M UTC"],
        )
        .unwrap_or_else(|| format!("{secs} (Unix time)"));
        let load = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        Context {
            machine: format!("{model}, {cpus} CPUs, {mem} memory, Linux {kernel}"),
            versions,
            settings: format!(
                "{runs} runs per cell, interleaved; throughput runs publish for {:.1} s, latency-rate for {:.1} s, slow-consumer for {:.1} s; rtt {} rounds",
                settings.duration.as_secs_f64(),
                settings.rate_duration.as_secs_f64(),
                settings.slow_duration.as_secs_f64(),
                settings.rtt_rounds
            ),
            date,
            load,
        }
    }
}

/// Writes results.md and the charts into `dir`.
pub(crate) fn write_book(
    dir: &Path,
    summaries: &[Summary],
    records: &[Record],
    ctx: &Context,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut md = String::new();
    let _ = writeln!(md, "# Results of the latest run\n");
    let _ = writeln!(
        md,
        "Written by `cargo xtask bench` on {}; do not edit by hand. How the numbers are made, and what \
         each scenario promises, is on the [Benchmarks](../benchmarks.md) page.\n",
        ctx.date
    );
    let _ = writeln!(md, "- **Machine:** {}", ctx.machine);
    let _ = writeln!(md, "- **Load average when the run started:** {} (the machine is shared; a neighbour's build skews every system alike, since runs are interleaved)", ctx.load);
    for (name, v) in &ctx.versions {
        let _ = writeln!(md, "- **{name}:** {v}");
    }
    let _ = writeln!(md, "- **Settings:** {}", ctx.settings);
    let _ = writeln!(
        md,
        "- **Commands:** `cargo xtask bench` (which runs `cargo build --release -p agora-server -p agora-bench`, then \
         `target/release/agora-bench --book-dir book/src/benchmarks`); raw records: `target/agora-bench/results.json`\n"
    );
    let failed = records.iter().filter(|r| r.status == "failed").count();
    let _ = writeln!(
        md,
        "Runs: {} ok, {} failed, {} skipped.\n",
        records.iter().filter(|r| r.status == "ok").count(),
        failed,
        records.iter().filter(|r| r.status == "skipped").count()
    );
    let _ = writeln!(md, "## Agora against nats-server at 128 B\n");
    let _ = writeln!(
        md,
        "Medians of the runs, with the lowest and highest run in brackets. \"Range of the ratio\" pairs \
         Agora's worst run with NATS's best and the other way round. CPU is the broker process's own \
         (user + system, from /proc), per million messages delivered.\n"
    );
    md += &versus_nats(summaries, Style::Markdown);
    let _ = writeln!(md, "\n## Charts\n");
    charts::throughput(&dir.join("throughput-by-payload.svg"), summaries)?;
    charts::latency(&dir.join("latency-percentiles.svg"), summaries)?;
    let _ = writeln!(
        md,
        "![topic-1-1 and publish throughput by payload size](throughput-by-payload.svg)\n"
    );
    let _ = writeln!(
        md,
        "![latency percentiles: rtt and latency-rate](latency-percentiles.svg)\n"
    );
    let _ = writeln!(md, "## Every cell\n");
    let _ = writeln!(
        md,
        "msgs/s is the median run, with [min–max]; MB/s is 10⁶ payload bytes a second; latencies \
         are the medians of each run's percentiles; lost and dup are summed over the runs; CPU s/M is \
         the broker's CPU seconds per million messages, client CPU s/M the bench process's (every \
         client role of the run); \"÷ agora\" is each system's median over Agora's.\n"
    );
    for (cell, group) in cells(summaries) {
        let _ = writeln!(md, "### {}\n", cell_title(&cell));
        md += &markdown_table(&rows(&group));
        md.push('\n');
    }
    let path = dir.join("results.md");
    std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))
}

mod charts {
    //! SVG only, and no font files: plotters lays text out with its built-in metrics and
    //! the SVG names a generic `sans-serif` family, which whatever shows the page draws.

    use std::path::Path;

    use plotters::prelude::*;

    use super::Summary;
    use crate::scenario::Scenario;
    use crate::System;

    fn color(system: System) -> RGBColor {
        match system {
            System::Agora => RGBColor(0xd9, 0x48, 0x1c),
            System::AgoraLean => RGBColor(0xe6, 0xab, 0x02),
            System::Nats => RGBColor(0x27, 0x6f, 0xbf),
            System::NatsLean => RGBColor(0x1b, 0x9e, 0x77),
            System::Redis => RGBColor(0x8a, 0x3f, 0xb0),
            System::RedisLean => RGBColor(0xe7, 0x29, 0x8a),
            System::Raw => RGBColor(0x55, 0x55, 0x55),
        }
    }

    fn e(err: impl std::fmt::Display) -> String {
        format!("chart: {err}")
    }

    fn size_label(bytes: usize) -> String {
        if bytes >= 1024 && bytes % 1024 == 0 {
            format!("{} KiB", bytes / 1024)
        } else {
            format!("{bytes} B")
        }
    }

    /// Messages and megabytes a second by payload size: topic-1-1 and publish.
    pub(super) fn throughput(path: &Path, summaries: &[Summary]) -> Result<(), String> {
        let root = SVGBackend::new(path, (1100, 800)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let panels = root.split_evenly((2, 2));
        let plots: [(Scenario, &str, bool); 4] = [
            (Scenario::Topic1x1, "topic-1-1: messages/s", false),
            (Scenario::Topic1x1, "topic-1-1: MB/s", true),
            (Scenario::Publish, "publish (topic): messages/s", false),
            (Scenario::Publish, "publish (topic): MB/s", true),
        ];
        for (area, (scenario, title, mb)) in panels.iter().zip(plots) {
            let mut sizes: Vec<usize> = summaries
                .iter()
                .filter(|s| s.cell.scenario == scenario && s.cell.variant.is_empty())
                .map(|s| s.cell.payload)
                .collect();
            sizes.sort_unstable();
            sizes.dedup();
            let series: Vec<(System, Vec<(f64, f64)>)> = System::ALL
                .iter()
                .map(|&sys| {
                    let pts = sizes
                        .iter()
                        .enumerate()
                        .filter_map(|(i, &size)| {
                            let s = summaries.iter().find(|s| {
                                s.system == sys
                                    && s.cell.scenario == scenario
                                    && s.cell.variant.is_empty()
                                    && s.cell.payload == size
                                    && s.runs > 0
                            })?;
                            let v = if mb { s.mb? } else { s.msgs? };
                            (v.median > 0.0).then_some((i as f64, v.median))
                        })
                        .collect();
                    (sys, pts)
                })
                .filter(|(_, p): &(System, Vec<(f64, f64)>)| !p.is_empty())
                .collect();
            let all: Vec<f64> = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|x| x.1))
                .collect();
            if all.is_empty() {
                continue;
            }
            let lo = all.iter().copied().fold(f64::MAX, f64::min) / 2.0;
            let hi = all.iter().copied().fold(0.0, f64::max) * 2.0;
            let n = sizes.len().max(1) as f64;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.3f64..(n - 0.7), (lo..hi).log_scale())
                .map_err(e)?;
            let labels = sizes.clone();
            chart
                .configure_mesh()
                .x_labels(sizes.len().max(2))
                .x_label_formatter(&move |x| {
                    let i = x.round();
                    if (x - i).abs() < 0.01 && i >= 0.0 {
                        labels
                            .get(i as usize)
                            .map(|&b| size_label(b))
                            .unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|y| super::group_digits(*y))
                .x_desc("payload")
                .draw()
                .map_err(e)?;
            for (sys, pts) in series {
                let c = color(sys);
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(e)?
                    .label(sys.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(e)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(e)?;
        }
        root.present().map_err(e)
    }

    /// Latency percentile curves: rtt, and latency-rate at each rate.
    pub(super) fn latency(path: &Path, summaries: &[Summary]) -> Result<(), String> {
        let mut panels: Vec<(String, Vec<&Summary>)> = Vec::new();
        let rtt: Vec<&Summary> = summaries
            .iter()
            .filter(|s| s.cell.scenario == Scenario::Rtt && !s.curve.is_empty())
            .collect();
        if !rtt.is_empty() {
            panels.push(("rtt (one message at a time)".into(), rtt));
        }
        let mut rates: Vec<u64> = summaries
            .iter()
            .filter(|s| s.cell.scenario == Scenario::LatencyRate)
            .filter_map(|s| s.cell.rate)
            .collect();
        rates.sort_unstable();
        rates.dedup();
        for r in rates {
            let group: Vec<&Summary> = summaries
                .iter()
                .filter(|s| {
                    s.cell.scenario == Scenario::LatencyRate
                        && s.cell.rate == Some(r)
                        && !s.curve.is_empty()
                })
                .collect();
            if !group.is_empty() {
                panels.push((
                    format!("latency-rate at {} msg/s", super::group_digits(r as f64)),
                    group,
                ));
            }
        }
        let rows = panels.len().div_ceil(2).max(1);
        let root = SVGBackend::new(path, (1100, 400 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let areas = root.split_evenly((rows, 2));
        // x: "nines" of the percentile: 50 -> 0.3, 90 -> 1, 99 -> 2, 99.9 -> 3 ...
        let nines = |p: f64| -(1.0 - (p / 100.0).min(0.99999)).log10();
        for (area, (title, group)) in areas.iter().zip(panels) {
            let all: Vec<f64> = group
                .iter()
                .flat_map(|s| s.curve.iter().map(|c| c[1]))
                .filter(|v| *v > 0.0)
                .collect();
            if all.is_empty() {
                continue;
            }
            let lo = all.iter().copied().fold(f64::MAX, f64::min) / 2.0;
            let hi = all.iter().copied().fold(0.0, f64::max) * 2.0;
            let mut chart = ChartBuilder::on(area)
                .caption(&title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(70)
                .build_cartesian_2d(0.2f64..5.1, (lo..hi).log_scale())
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_labels(6)
                .x_label_formatter(&|x| {
                    let p = 100.0 * (1.0 - 10f64.powf(-x));
                    if *x > 4.9 {
                        "max".into()
                    } else {
                        format!("p{}", (p * 100.0).round() / 100.0)
                    }
                })
                .y_desc("µs")
                .draw()
                .map_err(e)?;
            for s in group {
                let c = color(s.system);
                let pts: Vec<(f64, f64)> = s
                    .curve
                    .iter()
                    .filter(|p| p[1] > 0.0)
                    .map(|p| (if p[0] >= 100.0 { 5.0 } else { nines(p[0]) }, p[1]))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(e)?
                    .label(s.system.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(e)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(e)?;
        }
        root.present().map_err(e)
    }
}
