//! `agora`: the broker's command line. Parses flags (each also read from an `AGORA_…`
//! environment variable), then calls [`agora_server::run`] until SIGINT or SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_server::logging::{LogConfig, Logger};
use agora_server::{Config, SlowConsumerPolicy};
use clap::{Parser, ValueEnum};
use futures_lite::StreamExt;

/// Design choices that can be switched off to measure them (see the book's Benchmarks
/// chapter); never needed in normal use.
#[derive(Clone, Copy, ValueEnum)]
enum Ablate {
    /// One write call per frame instead of batches.
    NoBatching,
    /// Copy the payload for each topic subscriber instead of sharing it.
    CopyFanout,
    /// No memory budget accounting, no liveness pings.
    NoDefences,
    /// No latency sampling, no metric manager.
    NoMetrics,
    /// Hand each publish to its destination on its own, not a read's run together.
    NoPublishBatching,
}

#[derive(Clone, Copy, ValueEnum)]
enum SlowConsumer {
    /// Drop the subscriber's oldest buffered message, and count it.
    DropOldest,
    /// End the subscription with CANCEL slow_consumer.
    Disconnect,
}

/// Agora, a message broker: queues with acknowledgements and topics with fan-out.
#[derive(Parser)]
#[command(name = "agora", version)]
struct Cli {
    /// TCP port to listen on (0 picks a free port).
    #[arg(long, env = "AGORA_PORT", default_value_t = agora_protocol::DEFAULT_PORT)]
    port: u16,
    /// Address to listen on. Agora has no authentication yet, so it listens on the
    /// loopback address unless told otherwise.
    #[arg(long, env = "AGORA_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Largest payload a client may publish, in bytes (headers included).
    #[arg(long, env = "AGORA_MAX_PAYLOAD", default_value_t = Config::default().max_payload as u64,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    max_payload: u64,
    /// Most simultaneous client connections.
    #[arg(long, env = "AGORA_MAX_CONNECTIONS", default_value_t = Config::default().max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Most messages a queue holds (pending and unacknowledged together).
    #[arg(long, env = "AGORA_QUEUE_MAX_MESSAGES", default_value_t = Config::default().queue_max_messages as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    queue_max_messages: u64,
    /// Most payload bytes a queue holds (pending and unacknowledged together).
    #[arg(long, env = "AGORA_QUEUE_MAX_BYTES", default_value_t = Config::default().queue_max_bytes as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    queue_max_bytes: u64,
    /// Prefetch of a queue consumer that gives none.
    #[arg(long, env = "AGORA_DEFAULT_PREFETCH", default_value_t = Config::default().default_prefetch,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    default_prefetch: u32,
    /// Messages buffered per topic subscriber before the slow-consumer policy applies.
    #[arg(long, env = "AGORA_SUBSCRIBER_BUFFER", default_value_t = Config::default().subscriber_buffer as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    subscriber_buffer: u64,
    /// What happens to a topic subscriber whose buffer is full.
    #[arg(
        long,
        env = "AGORA_SLOW_CONSUMER",
        value_enum,
        default_value = "drop-oldest"
    )]
    slow_consumer: SlowConsumer,
    /// Seconds an unused, empty destination is kept before it is removed.
    #[arg(long, env = "AGORA_IDLE_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Deliveries after which a queue message goes to its dead-letter queue (0: never).
    #[arg(long, env = "AGORA_MAX_DELIVERIES", default_value_t = Config::default().max_deliveries)]
    max_deliveries: u32,
    /// How long a queue message may wait undelivered before it is dead-lettered
    /// (e.g. 30s, 500ms; default: forever).
    #[arg(long, env = "AGORA_MESSAGE_TTL", value_parser = parse_duration)]
    message_ttl: Option<Duration>,
    /// How long a queue delivery may stay unacknowledged before another consumer gets
    /// it (e.g. 30s; default: until the consumer leaves).
    #[arg(long, env = "AGORA_ACK_TIMEOUT", value_parser = parse_duration)]
    ack_timeout: Option<Duration>,
    /// Most queues and topics at once.
    #[arg(long, env = "AGORA_MAX_DESTINATIONS", default_value_t = Config::default().max_destinations as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_destinations: u64,
    /// Most payload bytes the broker holds in queues and subscriber buffers together.
    #[arg(long, env = "AGORA_MEMORY_BUDGET", default_value_t = Config::default().memory_budget as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    memory_budget: u64,
    /// Most subscriptions on one connection.
    #[arg(long, env = "AGORA_MAX_SUBSCRIPTIONS", default_value_t = Config::default().max_subscriptions as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_subscriptions: u64,
    /// A client silent this long is sent PINGREQ (e.g. 30s).
    #[arg(long, env = "AGORA_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Unanswered pings after which a client is disconnected.
    #[arg(long, env = "AGORA_MAX_MISSED_PINGS", default_value_t = Config::default().max_missed_pings,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_missed_pings: u32,
    /// A UDP client not heard from this long is forgotten (e.g. 60s).
    #[arg(long, env = "AGORA_UDP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    udp_idle_timeout: Duration,
    /// Largest datagram the broker sends to UDP clients, in bytes.
    #[arg(long, env = "AGORA_UDP_MAX_DATAGRAM", default_value_t = Config::default().udp_max_datagram as u64,
          value_parser = clap::value_parser!(u64).range(64..=65_507))]
    udp_max_datagram: u64,
    /// Send metrics to this StatsD server (host:port, UDP).
    #[arg(long, env = "AGORA_STATSD", value_name = "HOST:PORT")]
    statsd: Option<String>,
    /// Prefix of every StatsD metric name.
    #[arg(long, env = "AGORA_STATSD_PREFIX", default_value = "agora")]
    statsd_prefix: String,
    /// How often metrics go to StatsD and to the $sys.metrics topic (e.g. 1s).
    #[arg(long, env = "AGORA_STATSD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    statsd_interval: Duration,
    /// Record a CPU profile for the broker's whole life, written at shutdown in pprof's
    /// protobuf format, with a flamegraph SVG beside it.
    #[arg(long, env = "AGORA_PROFILE")]
    profile: bool,
    /// Where --profile writes (the flamegraph goes to the same path with .svg).
    #[arg(
        long,
        env = "AGORA_PROFILE_PATH",
        default_value = "agora.pprof",
        value_name = "FILE"
    )]
    profile_path: PathBuf,
    /// Executor threads that run the broker's tasks (default: one per core; the
    /// SMOL_THREADS variable is read too when this is not given).
    #[arg(long, env = "AGORA_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    /// Capacity of each queue's command channel (publishers wait when it is full).
    #[arg(long, env = "AGORA_QUEUE_CHANNEL", default_value_t = Config::default().queue_channel as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000), hide = true)]
    queue_channel: u64,
    /// Switch design choices off to measure them (comma-separated).
    #[arg(
        long,
        env = "AGORA_ABLATE",
        value_enum,
        value_delimiter = ',',
        hide = true
    )]
    ablate: Vec<Ablate>,
    /// Seelog-style XML file that configures logging (default: the built-in one, which
    /// is `config/logconfig.xml` in the repository).
    #[arg(long, env = "AGORA_LOG_CONFIG", value_name = "FILE")]
    log_config: Option<PathBuf>,
    /// TOML file declaring destinations, their mutator chains and queue settings, and
    /// the enrichment databases chains may name (see the book's Configuration chapter).
    #[arg(long, env = "AGORA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `duration = number ("ms" / "s" / "m" / "h")`, e.g. `250ms`, `30s`, `5m`; above 0.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{s}' needs a unit: ms, s, m or h"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' must start with a whole number"))?;
    let secs = |per: u64| {
        n.checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("'{s}' is too long"))
    };
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => secs(1)?,
        "m" => secs(60)?,
        "h" => secs(3600)?,
        _ => return Err(format!("unknown unit '{unit}' in '{s}': use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(format!("'{s}' must be above zero"));
    }
    Ok(d)
}

/// Writes the profile as pprof protobuf at `path` and a flamegraph SVG beside it;
/// returns the SVG's path.
fn write_profile(p: &pprof::ProfilerGuard<'_>, path: &std::path::Path) -> Result<PathBuf, String> {
    use pprof::protos::Message;
    let report = p.report().build().map_err(|e| e.to_string())?;
    let profile = report.pprof().map_err(|e| e.to_string())?;
    let bytes = profile.write_to_bytes().map_err(|e| e.to_string())?;
    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
    if report.data.is_empty() {
        return Err("no samples were taken (the broker ran too briefly): the profile is empty and no flamegraph was drawn".into());
    }
    let svg = path.with_extension("svg");
    let file = std::fs::File::create(&svg).map_err(|e| e.to_string())?;
    report.flamegraph(file).map_err(|e| e.to_string())?;
    Ok(svg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Each client costs a file descriptor: take all the system allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let config = Config {
        bind: cli.bind,
        port: cli.port,
        max_payload: cli.max_payload as usize,
        max_connections: cli.max_connections as usize,
        queue_max_messages: cli.queue_max_messages as usize,
        queue_max_bytes: cli.queue_max_bytes as usize,
        default_prefetch: cli.default_prefetch,
        subscriber_buffer: cli.subscriber_buffer as usize,
        slow_consumer: match cli.slow_consumer {
            SlowConsumer::DropOldest => SlowConsumerPolicy::DropOldest,
            SlowConsumer::Disconnect => SlowConsumerPolicy::Disconnect,
        },
        idle_timeout: Duration::from_secs(cli.idle_timeout),
        max_deliveries: cli.max_deliveries,
        message_ttl: cli.message_ttl,
        ack_timeout: cli.ack_timeout,
        max_destinations: cli.max_destinations as usize,
        memory_budget: cli.memory_budget as usize,
        max_subscriptions: cli.max_subscriptions as usize,
        ping_interval: cli.ping_interval,
        max_missed_pings: cli.max_missed_pings,
        udp_idle_timeout: cli.udp_idle_timeout,
        udp_max_datagram: cli.udp_max_datagram as usize,
        statsd: cli.statsd,
        statsd_prefix: cli.statsd_prefix,
        metrics_interval: cli.statsd_interval,
        queue_channel: cli.queue_channel as usize,
        ablation: {
            let mut a = agora_server::Ablation::default();
            for x in &cli.ablate {
                match x {
                    Ablate::NoBatching => a.no_batching = true,
                    Ablate::CopyFanout => a.copy_fanout = true,
                    Ablate::NoDefences => a.no_defences = true,
                    Ablate::NoMetrics => a.no_metrics = true,
                    Ablate::NoPublishBatching => a.no_publish_batching = true,
                }
            }
            a
        },
        ..Config::default()
    };
    // The config file adds to what the flags say; a bad entry stops the broker here.
    let config = match cli.config.as_deref() {
        None => config,
        Some(file) => {
            let mut config = config;
            if let Err(e) = agora_server::config_file::load(file, &mut config) {
                eprintln!("agora: bad config file {e}");
                return ExitCode::from(2);
            }
            config
        }
    };
    // --threads, else SMOL_THREADS (read before the broker had its own executor), else
    // one worker thread per core.
    let threads = cli.threads.map(|n| n as usize).or_else(|| {
        std::env::var("SMOL_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    });
    // The logger is installed before anything logs (and after the environment is set:
    // its writer thread reads TZ); a bad file stops the broker before it listens.
    let logger = match cli
        .log_config
        .as_deref()
        .map_or_else(|| Ok(LogConfig::builtin()), LogConfig::from_file)
        .and_then(|c| Logger::builder(&c).build())
    {
        Ok(l) => agora_server::logging::install(l).expect("no logger installed yet"),
        Err(e) => {
            eprintln!("agora: bad log configuration: {e}");
            return ExitCode::from(2);
        }
    };
    log::info!(
        "agora {} starting: bind {}:{}, max payload {} B, max connections {}, queue limits {} messages / {} B, default prefetch {}, subscriber buffer {}, slow consumer {:?}, idle timeout {:?}",
        env!("CARGO_PKG_VERSION"),
        config.bind,
        config.port,
        config.max_payload,
        config.max_connections,
        config.queue_max_messages,
        config.queue_max_bytes,
        config.default_prefetch,
        config.subscriber_buffer,
        config.slow_consumer,
        config.idle_timeout,
    );
    let signals =
        match async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("agora: cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
    let shutdown = async move {
        let mut signals = signals;
        signals.next().await;
    };
    // Sampling at 99 Hz (not 100) keeps the samples from beating against timers.
    let profiler = match cli.profile {
        false => None,
        true => match pprof::ProfilerGuardBuilder::default()
            .frequency(99)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
        {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("agora: cannot start the CPU profiler: {e}");
                return ExitCode::from(1);
            }
        },
    };
    // Built here (`0`: one worker per core; SMOL_THREADS=0 meant one thread) and
    // dropped, its workers stopped and joined, as soon as the broker has stopped.
    let rt = agora_server::agora_rt::Runtime::new(threads.map_or(0, |n| n.max(1)));
    let result = rt.block_on(agora_server::run(config, rt.handle(), shutdown));
    drop(rt);
    if let Some(p) = profiler {
        match write_profile(&p, &cli.profile_path) {
            Ok(svg) => log::info!(
                "CPU profile written to {} (flamegraph: {})",
                cli.profile_path.display(),
                svg.display()
            ),
            Err(e) => log::error!(
                "could not write the CPU profile to {}: {e}",
                cli.profile_path.display()
            ),
        }
    }
    match &result {
        Ok(()) => log::info!("stopped"),
        Err(e) => log::error!("stopped: {e}"),
    }
    // Everything queued for the log reaches its outputs before the process ends, unless
    // an output has stopped taking bytes (then nothing more can be said there anyway).
    let _ = logger.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agora: {e}");
            ExitCode::from(1)
        }
    }
}
