//! Test support: waiting with a deadline, counting threads by name, and a future that
//! records which thread woke it and which thread polled it next.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Re-checks `cond` until it holds; fails the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

/// This process's threads whose name (as Linux keeps it: 15 bytes) starts with
/// `prefix`.
pub fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(prefix))
        .count()
}

/// What a [`Spy`] saw.
#[derive(Default)]
pub struct SpyLog {
    /// The thread that called the waker since the last poll.
    woken_on: Option<Thread>,
    /// For every poll after a wake: the thread that woke the task, the one that polled it.
    pub wakes: Vec<(Thread, Thread)>,
    /// The last poll returned `Pending` (the task waits for a wake).
    pub waiting: bool,
    /// Inside the inner future's poll: a wake then is the task's own, not an event.
    polling: bool,
}

/// Wraps a future and records, for every wake, the waking thread and the thread of the
/// poll that follows.
pub struct Spy<F> {
    inner: Pin<Box<F>>,
    log: Arc<Mutex<SpyLog>>,
    /// The recording waker, kept while the task's waker stays the same: a new one at
    /// every poll would make async-io wake the previous one, a wake of the task by
    /// itself that would look like an event.
    waker: Option<(Waker, Waker)>,
}

impl<F: Future> Spy<F> {
    pub fn new(log: Arc<Mutex<SpyLog>>, inner: F) -> Spy<F> {
        Spy {
            inner: Box::pin(inner),
            log,
            waker: None,
        }
    }
}

struct Recorder {
    inner: Waker,
    log: Arc<Mutex<SpyLog>>,
}

impl Wake for Recorder {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Recorded before the task is scheduled, so before it can be polled.
        let mut log = self.log.lock().unwrap();
        if !log.polling {
            log.woken_on = Some(std::thread::current());
        }
        drop(log);
        self.inner.wake_by_ref();
    }
}

impl<F: Future> Future for Spy<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        {
            let mut log = this.log.lock().unwrap();
            log.waiting = false;
            log.polling = true;
            if let Some(w) = log.woken_on.take() {
                log.wakes.push((w, std::thread::current()));
            }
        }
        if !matches!(&this.waker, Some((task, _)) if task.will_wake(cx.waker())) {
            let recorder = Waker::from(Arc::new(Recorder {
                inner: cx.waker().clone(),
                log: this.log.clone(),
            }));
            this.waker = Some((cx.waker().clone(), recorder));
        }
        let waker = &this.waker.as_ref().expect("just set").1;
        let out = this.inner.as_mut().poll(&mut Context::from_waker(waker));
        let mut log = this.log.lock().unwrap();
        log.polling = false;
        log.waiting = out.is_pending();
        out
    }
}

/// Whether a thread of this name is a worker named `<prefix>-<n>`.
pub fn is_worker(name: Option<&str>, prefix: &str) -> bool {
    name.and_then(|n| n.strip_prefix(prefix))
        .and_then(|n| n.strip_prefix('-'))
        .is_some_and(|n| n.parse::<usize>().is_ok())
}
