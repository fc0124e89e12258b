//! The [`Logger`] that feeds the outputs (`outputs.rs`): directly for `sync`, through a
//! bounded channel and one writer thread for the async types.
//!
//! A broker task that logs under an async type does at most a `try_send`: it never
//! waits for the channel, a lock held during I/O, or the disk. When the channel is
//! full the record is dropped and counted, and the writer reports the count.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Local};

use super::config::{ConfigError, LogConfig, LoggerKind};
use super::format::Entry;
use super::outputs::{MakeConsole, Outputs};
use super::{Level, LevelSet};

/// Where the time of a record comes from; tests fix it.
pub type Clock = Arc<dyn Fn() -> DateTime<FixedOffset> + Send + Sync>;

/// Records the async channel holds before it drops.
pub const DEFAULT_CAPACITY: usize = 8192;

/// How long [`Logger::shutdown`] waits for an async writer to finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Most records the writer takes from the channel before it writes a drop report and
/// flushes, so a flood cannot postpone flushing for ever.
const BATCH: usize = 1024;

/// The local time, read from the system's zone database on each call. chrono reads
/// `TZ`/`/etc/localtime` itself, so (unlike `time`'s `local-offset`) it works in a
/// multithreaded process, and it follows daylight-saving changes while the broker runs.
fn local_now() -> DateTime<FixedOffset> {
    Local::now().fixed_offset()
}

enum Msg {
    Record(Entry),
    /// Flush everything sent before, then answer.
    Flush(SyncSender<()>),
    /// Write and flush everything sent before, then end the thread.
    Stop,
}

enum Mode {
    Sync(Mutex<Outputs>),
    Async {
        tx: SyncSender<Msg>,
        /// Records dropped because the channel was full, not yet reported.
        dropped: Arc<AtomicU64>,
        thread: Mutex<Option<JoinHandle<()>>>,
    },
}

/// The `log::Log` that writes records the way a [`LogConfig`] says.
pub struct Logger {
    /// Levels of the `<seelog>` element.
    levels: LevelSet,
    /// Union of the levels that reach at least one output, for `log::set_max_level`.
    reachable: LevelSet,
    clock: Clock,
    mode: Mode,
    /// Set by [`Logger::shutdown`]; later records are discarded.
    closed: AtomicBool,
    /// Longest wait for the async writer at shutdown.
    grace: Duration,
}

/// Builds a [`Logger`]; tests replace the clock, the console and the channel size.
pub struct LoggerBuilder<'a> {
    config: &'a LogConfig,
    clock: Clock,
    console: Option<MakeConsole>,
    capacity: usize,
    grace: Duration,
}

impl<'a> LoggerBuilder<'a> {
    /// Uses `clock` for every record's time instead of the local time.
    pub fn clock(
        mut self,
        clock: impl Fn() -> DateTime<FixedOffset> + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sends `<console/>` outputs to writers made by `make` instead of standard error.
    pub fn console(mut self, make: impl FnMut() -> Box<dyn Write + Send> + 'static) -> Self {
        self.console = Some(Box::new(make));
        self
    }

    /// Records the async channel holds before it drops (at least 1).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n.max(1);
        self
    }

    /// Longest time [`Logger::shutdown`] waits for the async writer.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Opens every output (an unwritable path is an error at the output's position)
    /// and, for the async types, starts the writer thread.
    pub fn build(mut self) -> Result<Logger, ConfigError> {
        let config = self.config;
        let outputs = Outputs::open(config, &mut self.console)?;
        let reachable = outputs.levels().and(config.levels);
        let mode = match config.kind {
            LoggerKind::Sync => Mode::Sync(Mutex::new(outputs)),
            LoggerKind::AsyncLoop | LoggerKind::AsyncTimer(_) => {
                let interval = match config.kind {
                    LoggerKind::AsyncTimer(d) => Some(d),
                    _ => None,
                };
                let (tx, rx) = mpsc::sync_channel(self.capacity);
                let dropped = Arc::new(AtomicU64::new(0));
                let d = dropped.clone();
                let clock = self.clock.clone();
                let thread = std::thread::Builder::new()
                    .name("agora-log".into())
                    .spawn(move || writer_thread(rx, outputs, d, clock, interval))
                    .map_err(|e| ConfigError {
                        origin: config.origin.clone(),
                        position: None,
                        problem: format!("cannot start the log writer thread: {e}"),
                    })?;
                Mode::Async {
                    tx,
                    dropped,
                    thread: Mutex::new(Some(thread)),
                }
            }
        };
        Ok(Logger {
            levels: config.levels,
            reachable,
            clock: self.clock,
            mode,
            closed: AtomicBool::new(false),
            grace: self.grace,
        })
    }
}

/// The async writer. It blocks in `recv` while the channel is empty, so an idle
/// logger costs nothing whatever the interval. Each wake-up takes everything queued
/// (up to [`BATCH`]), writes it, reports drops, and flushes once.
///
/// Under `asynctimer` the next flush is due `asyncinterval` after this one. Until then
/// the thread waits in `recv_timeout`: records that arrive are written into the
/// outputs' buffers but not flushed; a flush request or shutdown ends the wait at once.
/// An interval shorter than a batch takes to write (the default 1 µs always is) means
/// the wait times out immediately, which degrades to flushing once per batch: still
/// no polling, because the next wake-up is again a blocking `recv`.
fn writer_thread(
    rx: Receiver<Msg>,
    mut outputs: Outputs,
    dropped: Arc<AtomicU64>,
    clock: Clock,
    interval: Option<Duration>,
) {
    let mut acks = Vec::new();
    // A flush request or stop that ended an interval wait, handled first next round.
    let mut carried = None;
    loop {
        let first = match carried.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let mut stop = false;
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(e) => outputs.write(&e),
                Msg::Flush(ack) => acks.push(ack),
                Msg::Stop => stop = true,
            }
            taken += 1;
            // After Stop, drain whatever is left so nothing sent is lost.
            if taken < BATCH || stop {
                next = rx.try_recv().ok();
            }
        }
        report_drops(&dropped, &mut outputs, &clock);
        outputs.flush();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if stop {
            break;
        }
        let Some(interval) = interval else { continue };
        let due = Instant::now() + interval;
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            match rx.recv_timeout(due - now) {
                Ok(Msg::Record(e)) => outputs.write(&e),
                Ok(m) => {
                    carried = Some(m);
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

fn report_drops(dropped: &AtomicU64, outputs: &mut Outputs, clock: &Clock) {
    let n = dropped.swap(0, SeqCst);
    if n > 0 {
        outputs.write(&Entry {
            time: clock(),
            level: Level::Warn,
            msg: format!("log channel full: {n} records dropped"),
            file: Some(file!().to_owned()),
            line: Some(line!()),
        });
    }
}

impl Logger {
    /// A builder for a logger of `config`, with the local clock and the real console.
    pub fn builder(config: &LogConfig) -> LoggerBuilder<'_> {
        LoggerBuilder {
            config,
            clock: Arc::new(local_now),
            console: None,
            capacity: DEFAULT_CAPACITY,
            grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// The most verbose `log` filter any output needs.
    pub fn max_level(&self) -> log::LevelFilter {
        self.reachable.max_filter()
    }

    /// Flushes every output and, for the async types, writes everything queued and
    /// ends the writer thread. Records logged afterwards are discarded.
    ///
    /// An async logger waits at most the shutdown grace ([`DEFAULT_SHUTDOWN_GRACE`]
    /// unless the builder set another) for its writer: an output that never accepts
    /// bytes (standard error piped to a process that does not read it) must not keep the
    /// broker from exiting. Returns whether everything was written. Idempotent; later
    /// calls return `true`.
    pub fn shutdown(&self) -> bool {
        if self.closed.swap(true, SeqCst) {
            return true;
        }
        match &self.mode {
            Mode::Sync(outputs) => {
                lock(outputs).flush();
                true
            }
            Mode::Async { tx, thread, .. } => {
                // The stop is sent and the writer joined on a helper thread, because
                // both block while the writer is stuck in a write.
                let tx = tx.clone();
                let writer = lock(thread).take();
                let (done_tx, done) = mpsc::sync_channel(1);
                let helper = std::thread::Builder::new()
                    .name("agora-log-stop".into())
                    .spawn(move || {
                        let _ = tx.send(Msg::Stop);
                        if let Some(t) = writer {
                            let _ = t.join();
                        }
                        let _ = done_tx.send(());
                    });
                helper.is_ok() && done.recv_timeout(self.grace).is_ok()
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl log::Log for Logger {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        let level = Level::of(meta);
        self.levels.contains(level) && self.reachable.contains(level)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || self.closed.load(Relaxed) {
            return;
        }
        let entry = Entry {
            time: (self.clock)(),
            level: Level::of(record.metadata()),
            msg: record.args().to_string(),
            file: record.file().map(str::to_owned),
            line: record.line(),
        };
        match &self.mode {
            Mode::Sync(outputs) => {
                let mut o = lock(outputs);
                o.write(&entry);
                o.flush();
            }
            Mode::Async { tx, dropped, .. } => match tx.try_send(Msg::Record(entry)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    dropped.fetch_add(1, Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => {}
            },
        }
    }

    fn flush(&self) {
        match &self.mode {
            Mode::Sync(outputs) => lock(outputs).flush(),
            Mode::Async { tx, .. } => {
                if self.closed.load(Relaxed) {
                    return;
                }
                let (ack_tx, ack_rx) = mpsc::sync_channel(1);
                if tx.send(Msg::Flush(ack_tx)).is_ok() {
                    let _ = ack_rx.recv();
                }
            }
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
