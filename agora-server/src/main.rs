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
          value_parser = clap::value_parser!(u32).range(1..))]
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
    /// Seelog-style XML file that configures logging (default: the built-in one, which
    /// is `config/logconfig.xml` in the repository).
    #[arg(long, env = "AGORA_LOG_CONFIG", value_name = "FILE")]
    log_config: Option<PathBuf>,
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
        ..Config::default()
    };
    // One executor thread per core unless SMOL_THREADS says otherwise.
    if std::env::var_os("SMOL_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("SMOL_THREADS", n.to_string());
    }
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
    let result = smol::block_on(agora_server::run(config, shutdown));
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
