//! The book's results page: what the run ran on, the tables and the charts.

use super::*;

/// How the run was made, for the book page.
pub(crate) struct Context {
    machine: String,
    /// The servers' versions (also in results.json).
    servers: Vec<Version>,
    /// Clients and the compiler.
    versions: Vec<(String, String)>,
    settings: String,
    date: String,
    load: String,
}

impl Context {
    pub(crate) fn gather(
        servers: &[Version],
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
        let mut versions = Vec::new();
        versions.push((
            "clients".into(),
            "agora-client (this workspace), async-nats 0.46, redis-rs 1.8, lapin 4.12".into(),
        ));
        if let Some(rustc) = first_line(Path::new("rustc"), &["--version"]) {
            versions.push(("rustc".into(), rustc));
        }
        let secs = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = first_line(
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
            servers: servers.to_vec(),
            versions,
            settings: format!(
                "{runs} runs per cell, interleaved; throughput runs publish for {:.1} s, latency-rate for {:.1} s, slow-consumer for {:.1} s; rtt {} rounds; durable-backlog {} MiB",
                settings.duration.as_secs_f64(),
                settings.rate_duration.as_secs_f64(),
                settings.slow_duration.as_secs_f64(),
                settings.rtt_rounds,
                settings.backlog_bytes >> 20
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
    let _ = writeln!(md, "- **Servers:**");
    for v in &ctx.servers {
        let _ = writeln!(md, "  - {}", v.describe(" — ", ""));
    }
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
    let tls = tls_table(summaries, Style::Markdown);
    if !tls.is_empty() {
        let _ = writeln!(md, "\n## TLS at 128 B\n");
        let _ = writeln!(
            md,
            "agora-lean-tls and nats-lean-tls: both servers on one certificate, both driven by the \
             same lean client over rustls (TLS 1.3, one cipher suite offered). Each ratio is of the \
             medians, with the lowest and highest pairing of runs in brackets; \"TLS ÷ clear\" sets \
             each TLS row against the same server's clear row (agora-lean, nats-lean).\n"
        );
        md += &tls;
    }
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
         client role of the run); \"÷ agora\" is each system's median over Agora's (over \
         agora-durable's in the durable cells). In durable-queue-4 msgs/s is what the consumers \
         received and the latencies are publish to confirm; in durable-backlog the latencies are \
         the publish phase's confirms, msgs/s and MB/s each phase's own, and CPU covers both \
         phases. A RabbitMQ release out of upstream support says so beside its rows.\n"
    );
    for (cell, group) in cells(summaries) {
        let _ = writeln!(md, "### {}\n", cell_title(&cell));
        md += &markdown_table(&rows(&group, &ctx.servers));
        md.push('\n');
    }
    let path = dir.join("results.md");
    std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))
}
