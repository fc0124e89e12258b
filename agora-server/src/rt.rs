//! The broker's executor: worker threads over async-io's one reactor, with a
//! scheduling rule that runs a woken task on the thread that woke it.
//!
//! Why not smol's global executor: async-io has one reactor per process, polled by
//! whichever blocked thread holds its lock. async-executor hands every woken task to the
//! thread that went to sleep last, which is rarely the one polling the reactor; that
//! thread then gets no task of its own, gives the reactor up after 500 µs, and from then
//! on async-io's own thread polls it, so every socket event cost one more thread
//! wake-up before its task ran (strace of the `rtt` scenario: `epoll_pwait` returns on
//! one thread, a futex wakes another, the `recvfrom` happens there).
//!
//! Here a worker waiting for work that receives an event in the reactor takes the first
//! task it wakes into its own one-task slot and runs it at once, on the thread that
//! received the event. Everything else — further tasks woken in the same poll, tasks
//! woken by a running task, new tasks — goes to the shared queue and wakes an idle
//! worker, as async-executor does, so a task never waits behind a busy worker's long
//! one and every core works under load. A worker lets its thread poll the reactor
//! after [`BUDGET`] tasks in a row. A task that panics ends only that task (its `Task` handle
//! re-raises the panic when awaited).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::task::{Poll, Waker};

use async_task::Runnable;
pub use async_task::Task;

/// Tasks a worker runs before its thread polls the reactor (without blocking) again.
const BUDGET: u32 = 64;

static THREADS: AtomicUsize = AtomicUsize::new(0);
static POOL: OnceLock<Pool> = OnceLock::new();
static STARTED: Once = Once::new();

struct Pool {
    queue: Mutex<VecDeque<Runnable>>,
    /// `queue.len()`, for a look without the lock.
    queued: AtomicUsize,
    /// Workers waiting for work, with their thread's waker; the latest last.
    idle: Mutex<Vec<(usize, Waker)>>,
}

struct Worker {
    slot: Option<Runnable>,
    /// While the worker waits for work: its thread's waker. A task woken meanwhile on
    /// this thread (by the reactor, which only a waiting worker polls) goes into the
    /// slot and wakes it.
    waiting: Option<Waker>,
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the number of worker threads (default: one per core). Only a call before the
/// first [`spawn`] has an effect.
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), SeqCst);
}

fn pool() -> &'static Pool {
    let pool = POOL.get_or_init(|| Pool {
        queue: Mutex::new(VecDeque::new()),
        queued: AtomicUsize::new(0),
        idle: Mutex::new(Vec::new()),
    });
    STARTED.call_once(|| {
        let n = match THREADS.load(SeqCst) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        for id in 0..n {
            std::thread::Builder::new()
                .name(format!("agora-worker-{id}"))
                .spawn(move || {
                    WORKER.with(|w| {
                        *w.borrow_mut() = Some(Worker {
                            slot: None,
                            waiting: None,
                        })
                    });
                    smol::block_on(work(pool, id))
                })
                .expect("cannot start an executor thread");
        }
    });
    pool
}

/// Runs `future` on the workers.
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pool();
    let (runnable, task) = async_task::Builder::new()
        .propagate_panic(true)
        .spawn(|_| future, schedule);
    runnable.schedule();
    task
}

/// Runs `future` on the workers and waits for it on this thread, which never polls the
/// reactor itself: every socket event is received by a worker.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    futures_lite::future::block_on(spawn(future))
}

fn schedule(runnable: Runnable) {
    let mut runnable = Some(runnable);
    let waker = WORKER
        .try_with(|w| {
            let mut w = w.borrow_mut();
            match w.as_mut() {
                Some(w) if w.slot.is_none() && w.waiting.is_some() => {
                    w.slot = runnable.take();
                    w.waiting.take()
                }
                _ => None,
            }
        })
        .ok()
        .flatten();
    match runnable {
        // In this waiting worker's slot: wake it (it is in the reactor, on this thread).
        None => {
            if let Some(w) = waker {
                w.wake();
            }
        }
        Some(r) => {
            let pool = pool();
            lock(&pool.queue).push_back(r);
            pool.queued.fetch_add(1, SeqCst);
            let idle = lock(&pool.idle).pop();
            if let Some((_, w)) = idle {
                w.wake();
            }
        }
    }
}

fn take_slot() -> Option<Runnable> {
    WORKER.with(|w| w.borrow_mut().as_mut().and_then(|w| w.slot.take()))
}

impl Pool {
    fn pop(&self) -> Option<Runnable> {
        if self.queued.load(SeqCst) == 0 {
            return None;
        }
        let r = lock(&self.queue).pop_front();
        if r.is_some() {
            self.queued.fetch_sub(1, SeqCst);
        }
        r
    }
}

async fn work(pool: &'static Pool, id: usize) {
    let mut ran = 0;
    loop {
        // The slot is only filled while the worker waits, so it holds at most the one
        // task that ended the wait.
        match take_slot().or_else(|| pool.pop()) {
            Some(r) => {
                r.run();
                ran += 1;
                if ran >= BUDGET {
                    ran = 0;
                    futures_lite::future::yield_now().await;
                }
            }
            None => {
                ran = 0;
                idle(pool, id).await;
            }
        }
    }
}

/// Waits until this worker's slot or the shared queue has a task.
async fn idle(pool: &'static Pool, id: usize) {
    let ready = |pool: &Pool| {
        let slot = WORKER.with(|w| w.borrow().as_ref().is_some_and(|w| w.slot.is_some()));
        slot || pool.queued.load(SeqCst) > 0
    };
    std::future::poll_fn(|cx| {
        if !ready(pool) {
            WORKER.with(|w| {
                if let Some(w) = w.borrow_mut().as_mut() {
                    w.waiting = Some(cx.waker().clone());
                }
            });
            {
                let mut idle = lock(&pool.idle);
                idle.retain(|(i, _)| *i != id);
                idle.push((id, cx.waker().clone()));
            }
            // Look again: a task queued between the look and the registration woke
            // nobody.
            if !ready(pool) {
                return Poll::Pending;
            }
        }
        WORKER.with(|w| {
            if let Some(w) = w.borrow_mut().as_mut() {
                w.waiting = None;
            }
        });
        lock(&pool.idle).retain(|(i, _)| *i != id);
        Poll::Ready(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn many_tasks_that_wake_each_other_all_finish() {
        let sum = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                let sum = sum.clone();
                let (tx, rx) = async_channel::bounded::<u64>(1);
                let consumer = spawn(async move {
                    while let Ok(v) = rx.recv().await {
                        sum.fetch_add(v, SeqCst);
                    }
                });
                let producer = spawn(async move {
                    for k in 0..100 {
                        tx.send(i * k).await.unwrap();
                    }
                });
                (producer, consumer)
            })
            .collect();
        block_on(async move {
            for (p, c) in tasks {
                p.await;
                c.await;
            }
        });
        let want: u64 = (0..200u64).map(|i| i * (0..100u64).sum::<u64>()).sum();
        assert_eq!(sum.load(SeqCst), want);
    }

    #[test]
    fn tasks_that_panic_end_only_themselves() {
        // More panics than workers: a panic that took its worker down would leave none.
        for _ in 0..8 {
            let bad = spawn(async { panic!("on purpose") });
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                futures_lite::future::block_on(bad)
            }));
            assert!(caught.is_err());
        }
        let answer = futures_lite::future::block_on(futures_lite::future::or(
            async { Some(spawn(async { 7 }).await) },
            async {
                smol::Timer::after(std::time::Duration::from_secs(10)).await;
                None
            },
        ));
        assert_eq!(answer, Some(7), "no worker ran the task within 10 s");
    }
}
