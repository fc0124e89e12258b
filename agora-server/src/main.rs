//! `agora`: the broker's command line. Resolves its settings (flags, `AGORA_…`
//! variables, `[broker]` in the config file, defaults: see [`agora_server::settings`]),
//! then calls [`agora_server::run`] until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use agora_server::logging::{LogConfig, Logger};
use agora_server::settings::{self, Settings};
use futures_lite::StreamExt;

// jemalloc unless mimalloc is asked for instead (both on: jemalloc).
#[cfg(all(feature = "alloc-mimalloc", not(feature = "alloc-jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "alloc-jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long jemalloc keeps freed pages before giving them back to the system.
#[cfg(feature = "alloc-jemalloc")]
const DIRTY_DECAY_MS: isize = 1000;

/// jemalloc gives freed pages back to the system as they decay, but by default over
/// 10 s and only when something allocates: an idle broker whose 256 MiB backlog had
/// drained kept 158 MiB. Its background thread returns them on time, and a 1 s decay
/// keeps a flood's freed read buffers from piling up (book: Operations, "Memory").
/// (Through jemalloc's control interface: the workspace forbids the `unsafe` that a
/// `malloc_conf` symbol would take.)
#[cfg(feature = "alloc-jemalloc")]
fn tune_jemalloc() -> Result<(), tikv_jemalloc_ctl::Error> {
    use tikv_jemalloc_ctl::{Access, AsName};
    tikv_jemalloc_ctl::background_thread::write(true)?;
    "arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS)?;
    "arenas.muzzy_decay_ms\0".name().write(0isize)?;
    // Arenas made before this (the main thread's) keep their own settings.
    let arenas: u32 = "arenas.narenas\0".name().read()?;
    for i in 0..arenas {
        // An arena not made yet takes the defaults above when it is.
        let _ = format!("arena.{i}.dirty_decay_ms\0")
            .name()
            .write(DIRTY_DECAY_MS);
        let _ = format!("arena.{i}.muzzy_decay_ms\0").name().write(0isize);
    }
    Ok(())
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

/// `agora passwd`: prints the argon2id hash of a password read from the terminal (twice,
/// without echo) or from the first line of standard input.
fn passwd(args: &[std::ffi::OsString]) -> ExitCode {
    if !args.is_empty() {
        let help = args.iter().any(|a| a == "-h" || a == "--help");
        eprintln!(
            "usage: agora passwd  (reads the password from the terminal, or a line of standard input; prints its argon2id hash for `password = \"…\"` under [users.<name>] in the config file)"
        );
        return ExitCode::from(if help { 0 } else { 2 });
    }
    match agora_server::auth::read_password().and_then(|p| agora_server::auth::hash_password(&p)) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agora passwd: {e}");
            ExitCode::from(1)
        }
    }
}

/// A config file holding password hashes that others may read: the warning to log.
#[cfg(unix)]
fn readable_by_others(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} holds password hashes and is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
fn readable_by_others(_: &std::path::Path) -> Option<String> {
    None
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "passwd") {
        return passwd(&args[2..]);
    }
    // The command line is made from the settings table; clap checks flags and
    // variables with the table's own functions, and exits 2 on a bad one.
    let matches = settings::command().get_matches();
    #[cfg(feature = "alloc-jemalloc")]
    if let Err(e) = tune_jemalloc() {
        eprintln!("agora: jemalloc could not be tuned ({e}); freed memory goes back to the system more slowly");
    }
    // Each client costs a file descriptor: take all the system allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // Flag, else variable, else `[broker]` in the config file, else default; a bad
    // entry in the file stops the broker here.
    let settings = match settings::resolve(&settings::flags(&matches), &|k| std::env::var_os(k)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("agora: {e}");
            return ExitCode::from(2);
        }
    };
    // The binary keeps durable queues in `agora-data` unless told otherwise; the
    // library's own default (tests) is memory-only.
    let data_dir = settings.storage();
    let Settings {
        mut config,
        threads,
        profile,
        profile_path,
        log_config,
        config_file,
        ..
    } = settings;
    config.data_dir = data_dir;
    // --threads (or its variable, or `threads` in the config file), else SMOL_THREADS
    // (read before the broker had its own executor), else one worker thread per core.
    let threads = threads.or_else(|| {
        std::env::var("SMOL_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    });
    // The logger is installed before anything logs (and after the environment is set:
    // its writer thread reads TZ); a bad file stops the broker before it listens.
    let logger = match log_config
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
        "agora {} starting: bind {}:{}, max payload {} B, max connections {}, queue limits {} messages / {} B (durable: {} / {} B, {} B in memory), default prefetch {}, subscriber buffer {}, slow consumer {:?}, idle timeout {:?}",
        env!("CARGO_PKG_VERSION"),
        config.bind,
        config.port,
        config.max_payload,
        config.max_connections,
        config.queue_max_messages,
        config.queue_max_bytes,
        config.durable_queue_max_messages,
        config.durable_queue_max_bytes,
        config.durable_queue_memory,
        config.default_prefetch,
        config.subscriber_buffer,
        config.slow_consumer,
        config.idle_timeout,
    );
    if let Some(file) = config_file.filter(|_| config.users.has_passwords()) {
        if let Some(warning) = readable_by_others(&file) {
            log::warn!("{warning}");
        }
    }
    match config.users.len() {
        0 => log::info!(
            "no users: every client may do everything (bind is {})",
            config.bind
        ),
        n => log::info!(
            "{n} users; clients authenticate within {:?}",
            config.auth_timeout
        ),
    }
    match &config.data_dir {
        Some(dir) => log::info!(
            "durable queues in {} (fsync {})",
            dir.display(),
            config.fsync
        ),
        None => log::info!("memory-only (--memory-only): a restart loses every queued message"),
    }
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
    let profiler = match profile {
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
        match write_profile(&p, &profile_path) {
            Ok(svg) => log::info!(
                "CPU profile written to {} (flamegraph: {})",
                profile_path.display(),
                svg.display()
            ),
            Err(e) => log::error!(
                "could not write the CPU profile to {}: {e}",
                profile_path.display()
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
