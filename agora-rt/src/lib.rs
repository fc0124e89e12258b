//! The Agora broker's executor: worker threads over async-io's one reactor, with a
//! scheduling rule that runs a task woken by a socket event on the thread that received
//! the event.
//!
//! Why not smol's global executor: async-io has one reactor per process, polled by
//! whichever blocked thread holds its lock. async-executor hands every woken task to the
//! thread that went to sleep last, which is rarely the one polling the reactor; that
//! thread then gets no task of its own, gives the reactor up after 500 µs, and from then
//! on async-io's own thread polls it, so every socket event cost one more thread
//! wake-up before its task ran (strace of the `rtt` scenario: `epoll_pwait` returns on
//! one thread, a futex wakes another, the `recvfrom` happens there). Running the task
//! where the event arrived took about 20 µs off the broker's round trip (the book's
//! Performance chapter, third round).
//!
//! The rule: a worker waiting for work that receives an event in the reactor takes the
//! first task it wakes into its own one-task slot and runs it at once, on the thread
//! that received the event. Everything else — further tasks woken in the same poll,
//! tasks woken by a running task, new tasks — goes to the runtime's shared queue and
//! wakes an idle worker, as async-executor does, so a task never waits behind a busy
//! worker's long one and every core works under load. A worker lets its thread poll the
//! reactor (without blocking) after [`BUDGET`] tasks in a row, so a task that keeps
//! waking itself cannot starve socket I/O. A task that panics ends only that task (its
//! [`Task`] handle re-raises the panic when awaited).
//!
//! A [`Runtime`] is a value: its threads start when it is built and are stopped and
//! joined when it is dropped, and its pending tasks are dropped with it. Nothing here is
//! process-global. The one thread-local, a worker's slot, is set only on the runtime's
//! own worker threads and names its runtime, so a task of another runtime woken there
//! goes to its own runtime's queue: several runtimes in one process run independently
//! (the reactor is still async-io's, shared by all).
//!
//! ```
//! let rt = agora_rt::Runtime::new(2);
//! let handle = rt.handle();
//! let answer = rt.block_on(async move { handle.spawn(async { 6 * 7 }).await });
//! assert_eq!(answer, 42);
//! ```
#![warn(missing_docs, rust_2018_idioms)]

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;

use async_task::Runnable;
pub use async_task::Task;

/// Tasks a worker runs in a row before its thread polls the reactor (without blocking).
pub const BUDGET: u32 = 64;

/// Settings for a [`Runtime`]: its number of worker threads and their names.
#[derive(Debug, Clone)]
pub struct Builder {
    threads: usize,
    name: String,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            threads: 0,
            name: "agora-worker".to_owned(),
        }
    }
}

impl Builder {
    /// Worker threads; `0` (the default) means one per core.
    pub fn threads(mut self, n: usize) -> Builder {
        self.threads = n;
        self
    }

    /// The workers' thread names are `<prefix>-0`, `<prefix>-1`, … (default prefix
    /// `agora-worker`; Linux shows the first 15 bytes).
    pub fn name(mut self, prefix: impl Into<String>) -> Builder {
        self.name = prefix.into();
        self
    }

    /// Starts the worker threads. An error means a thread could not start; those
    /// already started are stopped and joined.
    pub fn build(self) -> io::Result<Runtime> {
        let n = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut rt = Runtime {
            pool: Arc::new(Pool {
                queue: Mutex::new(VecDeque::new()),
                queued: AtomicUsize::new(0),
                stopped: AtomicBool::new(false),
                idle: Mutex::new(Vec::new()),
                active: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
            workers: Vec::with_capacity(n),
        };
        for id in 0..n {
            let pool = rt.pool.clone();
            let t = std::thread::Builder::new()
                .name(format!("{}-{id}", self.name))
                .spawn(move || worker(pool, id))?;
            rt.workers.push(t);
        }
        Ok(rt)
    }
}

/// Worker threads that run tasks; stopped and joined on drop.
///
/// Dropping it stops the workers (each finishes the poll it is in), joins their
/// threads, and drops every task not finished: queued, waiting for an event, or spawned
/// later through a [`Handle`]. Awaiting the [`Task`] of a dropped task panics. Drop it
/// outside its own tasks (a worker cannot join itself; it would be left to end alone).
pub struct Runtime {
    pool: Arc<Pool>,
    workers: Vec<JoinHandle<()>>,
}

/// Spawns tasks on a [`Runtime`]'s workers; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    pool: Arc<Pool>,
}

struct Pool {
    queue: Mutex<VecDeque<Runnable>>,
    /// `queue.len()`, for a look without the lock.
    queued: AtomicUsize,
    /// Set, under the queue's lock, when the runtime is dropped: workers stop, and a
    /// task spawned from then on is dropped instead of queued.
    stopped: AtomicBool,
    /// Workers waiting for work, with their thread's waker; the latest last.
    idle: Mutex<Vec<(usize, Waker)>>,
    /// Every unfinished task's waker, so that dropping the runtime can drop the tasks
    /// that wait for an event (each removes itself when it ends).
    active: Mutex<HashMap<u64, Waker>>,
    /// Source of keys for `active`.
    next_id: AtomicU64,
}

/// A worker thread's own state.
struct Worker {
    /// The runtime this thread works for: only its tasks may take the slot.
    pool: Arc<Pool>,
    slot: Option<Runnable>,
    /// While the worker waits for work: its thread's waker. A task woken meanwhile on
    /// this thread (by the reactor, which only a waiting worker polls) goes into the
    /// slot and wakes it.
    waiting: Option<Waker>,
}

thread_local! {
    /// Set only on a runtime's worker threads, for their lifetime.
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runtime {
    /// Starts `threads` workers (`0`: one per core) named `agora-worker-<n>`.
    ///
    /// # Panics
    ///
    /// If a thread cannot start; [`Builder::build`] returns the error instead.
    pub fn new(threads: usize) -> Runtime {
        Runtime::builder()
            .threads(threads)
            .build()
            .expect("cannot start an executor thread")
    }

    /// Settings other than the thread count.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A handle that spawns tasks on this runtime.
    pub fn handle(&self) -> Handle {
        Handle {
            pool: self.pool.clone(),
        }
    }

    /// The number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Runs `future` on the workers; the same as `self.handle().spawn(future)`.
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn(&self.pool, future)
    }

    /// Runs `future` on the workers and waits for it on this thread, which never polls
    /// the reactor itself: every socket event is received by a worker. Call it outside
    /// the runtime's tasks (on a worker it would block that worker).
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        futures_lite::future::block_on(self.spawn(future))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        {
            let _q = lock(&self.pool.queue);
            self.pool.stopped.store(true, SeqCst);
        }
        // A worker that registers as idle after this looks at `stopped` again.
        let idle = std::mem::take(&mut *lock(&self.pool.idle));
        idle.into_iter().for_each(|(_, w)| w.wake());
        let me = std::thread::current().id();
        for t in self.workers.drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        // The unfinished tasks are dropped here, on this thread and outside every lock,
        // never in a wake-up: a waker may be called with a lock held (an async-channel's,
        // say) that the task's drop needs. A waiting task, woken, lands in the queue;
        // dropping one may wake others; so until nothing is left.
        loop {
            let queued = {
                let mut q = lock(&self.pool.queue);
                self.pool.queued.store(0, SeqCst);
                std::mem::take(&mut *q)
            };
            let waiting: Vec<Waker> = lock(&self.pool.active).drain().map(|(_, w)| w).collect();
            if queued.is_empty() && waiting.is_empty() {
                break;
            }
            drop(queued);
            waiting.into_iter().for_each(Waker::wake);
        }
    }
}

impl Handle {
    /// Runs `future` on the runtime's workers. If the runtime has been dropped, the
    /// task is dropped at once.
    pub fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn(&self.pool, future)
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("threads", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

/// Removes a task from `Pool::active` when its future is dropped (finished, cancelled
/// or dropped by the runtime).
struct Registered {
    pool: Arc<Pool>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let waker = lock(&self.pool.active).remove(&self.id);
        drop(waker);
    }
}

fn spawn<F>(pool: &Arc<Pool>, future: F) -> Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let id = pool.next_id.fetch_add(1, Relaxed);
    let registered = Registered {
        pool: pool.clone(),
        id,
    };
    let future = async move {
        let _registered = registered;
        future.await
    };
    let p = pool.clone();
    let (runnable, task) = async_task::Builder::new()
        .propagate_panic(true)
        .spawn(move |_| future, move |r| schedule(&p, r));
    lock(&pool.active).insert(id, runnable.waker());
    // Queued as `schedule` would (a new task never takes a slot), unless the runtime is
    // gone; then dropped here, where no lock is held.
    if let Err(r) = pool.push(runnable, false) {
        drop(r);
    }
    task
}

fn schedule(pool: &Arc<Pool>, runnable: Runnable) {
    let mut runnable = Some(runnable);
    let waker = WORKER
        .try_with(|w| {
            let mut w = w.borrow_mut();
            match w.as_mut() {
                Some(w)
                    if w.slot.is_none() && w.waiting.is_some() && Arc::ptr_eq(&w.pool, pool) =>
                {
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
        // Queued even once the runtime is gone: its drop takes them out.
        Some(r) => {
            let _ = pool.push(r, true);
        }
    }
}

impl Pool {
    /// Queues `r` and wakes an idle worker; once the runtime is dropped, only if
    /// `after_stop`, else `r` comes back.
    fn push(&self, r: Runnable, after_stop: bool) -> Result<(), Runnable> {
        let mut q = lock(&self.queue);
        if !after_stop && self.stopped.load(SeqCst) {
            return Err(r);
        }
        q.push_back(r);
        self.queued.fetch_add(1, SeqCst);
        drop(q);
        let idle = lock(&self.idle).pop();
        if let Some((_, w)) = idle {
            w.wake();
        }
        Ok(())
    }

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

fn take_slot() -> Option<Runnable> {
    WORKER.with(|w| w.borrow_mut().as_mut().and_then(|w| w.slot.take()))
}

/// A worker thread: runs tasks until the runtime is dropped.
fn worker(pool: Arc<Pool>, id: usize) {
    WORKER.with(|w| {
        *w.borrow_mut() = Some(Worker {
            pool: pool.clone(),
            slot: None,
            waiting: None,
        })
    });
    // async-io's `block_on` polls the reactor whenever `work` is pending.
    async_io::block_on(work(&pool, id));
    // Taken out before it is dropped: a task in the slot, dropped, may wake others.
    let w = WORKER.with(|w| w.borrow_mut().take());
    drop(w);
}

async fn work(pool: &Pool, id: usize) {
    let mut ran = 0;
    while !pool.stopped.load(SeqCst) {
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

/// Waits until this worker's slot or the shared queue has a task, or the runtime stops.
async fn idle(pool: &Pool, id: usize) {
    let ready = |pool: &Pool| {
        let slot = WORKER.with(|w| w.borrow().as_ref().is_some_and(|w| w.slot.is_some()));
        slot || pool.queued.load(SeqCst) > 0 || pool.stopped.load(SeqCst)
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
            // Look again: a task queued (or a stop) between the look and the
            // registration woke nobody.
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
