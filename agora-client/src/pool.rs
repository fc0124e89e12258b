//! The process's shared I/O threads ([`Threads::Shared`](crate::Threads::Shared)).
//!
//! Half the cores (rounded up), at most [`MAX_THREADS`], unless the application
//! ([`set_shared_threads`]) or the environment (`AGORA_CLIENT_THREADS`) says otherwise;
//! started by the first client that needs them and kept for the life of the process
//! (asleep while no client has work).
//!
//! Why not one per core: async-io has one reactor per process, polled by one thread at
//! a time. With two threads, a socket event for a client on the thread that is not
//! polling reaches it through the one that is, by one more wake-up; with one thread
//! there is no such hop, and the application's own threads keep a core. Measured on a
//! 2-core machine against two threads (client chapter): round trips 10–30 % more a
//! second, `topic-1-1` 6–17 % and `queue-4` 3–7 % more messages, 10–16 % less client
//! CPU.
//!
//! Each runs a `LocalExecutor` under `async_io::block_on`, so a thread with nothing to
//! run polls async-io's reactor itself. A client's driver goes to the threads in turn
//! and stays on its thread for its life: its futures borrow its state across awaits
//! and are not `Send`, so what crosses to the thread is the closure that makes them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::OnceLock;

use async_channel::{Receiver, Sender};

/// The most shared I/O threads a process starts by default.
pub(crate) const MAX_THREADS: usize = 4;

/// The most it starts when told to ([`set_shared_threads`], `AGORA_CLIENT_THREADS`).
pub const MAX_SHARED_THREADS: usize = 64;

/// The variable that sets how many shared threads start, when the application has not.
pub(crate) const THREADS_VAR: &str = "AGORA_CLIENT_THREADS";

/// What [`set_shared_threads`] asked for; 0: not asked.
static ASKED: AtomicUsize = AtomicUsize::new(0);

/// What a shared thread runs: made there, run there until it ends.
pub(crate) type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

struct Pool {
    threads: Vec<Sender<Job>>,
    next: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Sets how many shared I/O threads ([`Threads::Shared`](crate::Threads::Shared)) the
/// process starts, 1 to [`MAX_SHARED_THREADS`] (more is taken as that many; 0 restores
/// the default, half the cores rounded up, at most four). It must be called before the
/// first client on the shared threads connects: they start then and are never resized,
/// so a later call changes nothing and returns false. It takes precedence over the
/// `AGORA_CLIENT_THREADS` variable.
///
/// ```
/// // A process that runs many busy connections on a large machine.
/// assert!(agora_client::set_shared_threads(4));
/// ```
pub fn set_shared_threads(n: usize) -> bool {
    if POOL.get().is_some() {
        return false;
    }
    ASKED.store(n.min(MAX_SHARED_THREADS), SeqCst);
    POOL.get().is_none()
}

/// The default: half of `cores`, rounded up, at most [`MAX_THREADS`].
fn default_size(cores: usize) -> usize {
    cores.div_ceil(2).clamp(1, MAX_THREADS)
}

/// `AGORA_CLIENT_THREADS`'s value: a count from 1 to [`MAX_SHARED_THREADS`].
fn parse_size(v: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_SHARED_THREADS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{THREADS_VAR}={v:?} is not a thread count from 1 to {MAX_SHARED_THREADS}"
        )),
    }
}

/// How many shared threads the pool starts with.
fn size() -> usize {
    let asked = ASKED.load(SeqCst);
    if asked > 0 {
        return asked;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match std::env::var(THREADS_VAR) {
        Ok(v) => parse_size(&v).unwrap_or_else(|e| {
            log::warn!("agora client: {e}; starting {}", default_size(cores));
            default_size(cores)
        }),
        Err(_) => default_size(cores),
    }
}

fn start() -> Pool {
    let mut threads = Vec::new();
    for i in 0..size() {
        let (tx, rx) = async_channel::unbounded();
        let started = std::thread::Builder::new()
            .name(format!("agora-client-io-{i}"))
            .spawn(move || run(rx));
        match started {
            Ok(_) => threads.push(tx),
            Err(e) => log::warn!("agora client: could not start shared I/O thread {i}: {e}"),
        }
    }
    Pool {
        threads,
        next: AtomicUsize::new(0),
    }
}

fn run(jobs: Receiver<Job>) {
    let ex = async_executor::LocalExecutor::new();
    async_io::block_on(ex.run(async {
        while let Ok(job) = jobs.recv().await {
            ex.spawn(job()).detach();
        }
    }));
}

/// Runs `job` on the next shared thread, starting the threads first if need be.
pub(crate) fn spawn(job: Job) -> io::Result<()> {
    let pool = POOL.get_or_init(start);
    if pool.threads.is_empty() {
        return Err(io::Error::other("no shared I/O thread could be started"));
    }
    let i = pool.next.fetch_add(1, Relaxed) % pool.threads.len();
    pool.threads[i]
        .try_send(job)
        .map_err(|_| io::Error::other("the shared I/O thread has stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_cores_rounded_up_at_most_four() {
        let want = [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (8, 4), (64, 4)];
        for (cores, threads) in want {
            assert_eq!(default_size(cores), threads, "{cores} cores");
        }
    }

    #[test]
    fn the_variable_takes_a_count_from_1_to_64() {
        assert_eq!(parse_size("1"), Ok(1));
        assert_eq!(parse_size(" 8\n"), Ok(8));
        assert_eq!(parse_size("64"), Ok(64));
        for bad in ["0", "65", "-1", "two", ""] {
            let e = parse_size(bad).unwrap_err();
            assert!(
                e.contains("AGORA_CLIENT_THREADS") && e.contains("1 to 64"),
                "{e}"
            );
        }
    }
}
