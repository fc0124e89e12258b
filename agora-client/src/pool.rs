//! The process's shared I/O threads ([`Threads::Shared`](crate::Threads::Shared)).
//!
//! One thread per core, at most [`MAX_THREADS`], started by the first client that
//! needs them and kept for the life of the process (asleep while no client has work).
//! Each runs a `LocalExecutor` under `async_io::block_on`, so a thread with nothing to
//! run polls async-io's reactor itself. A client's driver goes to the threads in turn
//! and stays on its thread for its life: its futures borrow its state across awaits
//! and are not `Send`, so what crosses to the thread is the closure that makes them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use async_channel::{Receiver, Sender};

/// The most shared I/O threads a process starts.
pub(crate) const MAX_THREADS: usize = 4;

/// What a shared thread runs: made there, run there until it ends.
pub(crate) type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

struct Pool {
    threads: Vec<Sender<Job>>,
    next: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// How many shared threads there are, or will be once a client starts them.
pub(crate) fn size() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
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
