//! The log's one writer: a thread of its own, off the executor, that takes appends from
//! any number of queue tasks and makes them durable in groups.
//!
//! Group commit: the thread waits for the first append, takes every other append
//! already waiting, writes them all with one call and syncs once (with
//! [`Fsync::Always`]); then it tells each append's sender that its records are where
//! the policy says. Appends that arrive during a sync wait for the next one, so under
//! load each sync covers everything that came while the last one ran, and no timer is
//! waited for.
//!
//! Reads of messages a durable queue keeps on disk come through here too, in order with
//! the appends (a read finds every record appended before it): they are answered after
//! the group's records are written and before its sync, so a read never waits for one.
//!
//! A failed write or sync is fatal for durability: the failing group and every later
//! append are answered with the error, and nothing after it is said to be stored (a
//! sync that failed once may have lost pages the kernel will not write again). Except
//! a write that fails for want of space (`ENOSPC`, a quota): its bytes are cut off
//! again, the log is marked full (publishes to durable queues are refused), and the
//! records wait, appended, with their confirms, until a write gets through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};

use super::log::{Log, Stored as Message};
use super::record::Record;
use super::storage::Storage;
pub use crate::config::Fsync;

/// What an append's sender hears: `Ok` once its records are where the policy says.
pub type Stored = Result<(), Arc<str>>;

/// Records to append, and who to tell.
pub struct Append {
    /// Appended in order, with no other append's records between them.
    pub records: Vec<Record>,
    /// Each told once they are stored (or why they never will be): the confirms of
    /// the publishes among the records, say.
    pub done: Vec<Sender<Stored>>,
}

/// Messages to read back, and where the answer goes.
pub struct Read {
    /// The queue's number.
    pub queue: u32,
    /// The messages, in the order wanted.
    pub ids: Vec<u64>,
    /// Hears the messages found (an id no longer live is left out), or why none can be.
    pub reply: Sender<Result<Vec<Message>, Arc<str>>>,
}

/// What the writer thread takes.
enum Job {
    Append(Append),
    Read(Read),
}

/// The writer's figures, for `STATS` and StatsD.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Records appended.
    pub records: AtomicU64,
    /// Groups written (one write call each).
    pub groups: AtomicU64,
    /// Syncs done.
    pub syncs: AtomicU64,
    /// Time spent in syncs, in nanoseconds.
    pub sync_ns: AtomicU64,
    /// The longest sync, in nanoseconds.
    pub sync_max_ns: AtomicU64,
    /// A write or sync failed: nothing more is stored.
    pub failed: AtomicBool,
    /// The log is at `--max-disk`, or its file system has less free than the log keeps
    /// in reserve: publishes to durable queues are refused until there is room.
    pub full: AtomicBool,
    /// Bytes of the segments, and bytes free on their file system, at the last look.
    pub disk_bytes: AtomicU64,
    pub free_bytes: AtomicU64,
    /// Messages read back for queues, and the reads that brought them.
    pub read_messages: AtomicU64,
    pub reads: AtomicU64,
}

/// Appends records through the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: Sender<Job>,
    /// The writer's figures.
    pub stats: Arc<WriterStats>,
    /// The failure that stopped the writer, if one did.
    failure: Arc<Mutex<Option<Arc<str>>>>,
    /// Why the log takes no more, while it is full.
    full: Arc<Mutex<Option<Arc<str>>>>,
}

impl WriterHandle {
    /// Queues an append; waits while the writer's queue is full.
    pub async fn append(&self, a: Append) -> Result<(), Arc<str>> {
        if let Some(why) = self.failure() {
            for done in a.done {
                let _ = done.try_send(Err(why.clone()));
            }
            return Err(why);
        }
        self.tx
            .send(Job::Append(a))
            .await
            .map_err(|_| Arc::from("the log's writer has stopped"))
    }

    /// Reads messages `ids` of queue number `queue` back from the log, after every
    /// append queued before ([`Read`]); the answer comes on the receiver.
    pub async fn read(
        &self,
        queue: u32,
        ids: Vec<u64>,
    ) -> async_channel::Receiver<Result<Vec<Message>, Arc<str>>> {
        let (reply, rx) = async_channel::bounded(1);
        let read = Read { queue, ids, reply };
        if let Err(e) = self.tx.send(Job::Read(read)).await {
            if let Job::Read(r) = e.into_inner() {
                let why = self
                    .failure()
                    .unwrap_or_else(|| Arc::from("the log's writer has stopped"));
                let _ = r.reply.try_send(Err(why));
            }
        }
        rx
    }

    /// Why the writer stopped storing, if it did (one atomic load while it has not).
    pub fn failure(&self) -> Option<Arc<str>> {
        if !self.stats.failed.load(Relaxed) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the log takes no more publishes now, if it is full (one atomic load while
    /// it is not).
    pub fn full(&self) -> Option<Arc<str>> {
        if !self.stats.full.load(Relaxed) {
            return None;
        }
        self.full.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes the queue: the thread writes and syncs what it has (whatever the policy:
    /// a graceful stop loses nothing), then ends.
    pub fn close(&self) {
        self.tx.close();
    }
}

/// Appends waiting for the writer: bounded, so a writer slower than its publishers
/// slows the queue tasks rather than filling memory.
pub const QUEUE: usize = 4096;

/// Starts the writer thread around `log`.
pub fn spawn<S: Storage + 'static>(
    log: Log<S>,
    fsync: Fsync,
    max_disk: Option<u64>,
) -> std::io::Result<(WriterHandle, JoinHandle<()>)> {
    let (tx, rx) = async_channel::bounded(QUEUE);
    let handle = WriterHandle {
        tx,
        stats: Arc::new(WriterStats::default()),
        failure: Arc::new(Mutex::new(None)),
        full: Arc::new(Mutex::new(None)),
    };
    check_space(&log, &handle, max_disk);
    let thread = {
        let h = handle.clone();
        std::thread::Builder::new()
            .name("agora-store".into())
            .spawn(move || run(log, fsync, max_disk, rx, h))?
    };
    Ok((handle, thread))
}

/// While the log is full, how often the writer looks at the disk again when nothing is
/// appended (space freed by something else than the broker).
const RECHECK: Duration = Duration::from_secs(1);

/// Looks at the log's size and its file system's free space, and sets or clears the
/// handle's `full` (refusing or accepting publishes to durable queues). The log keeps
/// two segments' worth free: room to close a segment and to copy one forward.
fn check_space<S: Storage>(log: &Log<S>, h: &WriterHandle, max_disk: Option<u64>) {
    let st = &h.stats;
    let bytes = log.disk_bytes();
    let reserve = 2 * log.segment_bytes();
    let free = log.free_space().unwrap_or(u64::MAX);
    st.disk_bytes.store(bytes, Relaxed);
    st.free_bytes.store(free, Relaxed);
    let why = match max_disk {
        Some(max) if bytes >= max => Some(format!(
            "the log holds {bytes} bytes, at its limit of {max} (--max-disk)"
        )),
        _ if free < reserve => Some(format!(
            "{free} bytes free on the data directory's file system; the log keeps {reserve} free"
        )),
        _ => None,
    };
    let was = st.full.load(Relaxed);
    match why {
        Some(why) => {
            if !was {
                log::warn!("{why}: publishes to durable queues are refused until there is room");
            }
            *h.full.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(why));
            st.full.store(true, SeqCst);
        }
        None if was => {
            st.full.store(false, SeqCst);
            log::info!("the log has room again ({bytes} bytes, {free} free): publishes to durable queues are accepted");
        }
        None => {}
    }
}

fn run<S: Storage>(
    mut log: Log<S>,
    fsync: Fsync,
    max_disk: Option<u64>,
    rx: Receiver<Job>,
    h: WriterHandle,
) {
    let st = &h.stats;
    // With `Every`, when what was written last must be synced by.
    let mut sync_by: Option<Instant> = None;
    // Groups appended but not written for want of space: their senders wait until a
    // write gets through (see `stalled`).
    let mut held: Vec<Append> = Vec::new();
    // The last write failed for want of space.
    let mut stuck = false;
    loop {
        // Woken by the next append, by the time a sync is due, or (while full) to look
        // at the disk again.
        let wake_at = match (fsync, sync_by) {
            _ if stuck => Some(Instant::now() + RECHECK),
            (Fsync::Every(_), Some(at)) => Some(at),
            _ if st.full.load(Relaxed) => Some(Instant::now() + RECHECK),
            _ => None,
        };
        let first = match wake_at {
            Some(at) => smol::block_on(futures_lite::future::or(
                async { rx.recv().await.ok() },
                async {
                    smol::Timer::at(at).await;
                    None
                },
            )),
            None => rx.recv_blocking().ok(),
        };
        let mut group: Vec<Append> = Vec::new();
        let mut reads: Vec<Read> = Vec::new();
        for job in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match job {
                Job::Append(a) => group.push(a),
                Job::Read(r) => reads.push(r),
            }
        }
        let idle = group.is_empty() && reads.is_empty() && sync_by.is_none();
        if idle && rx.is_closed() && (held.is_empty() || rx.is_empty()) {
            break;
        }
        // A segment is closed as soon as it is full, mid-group if need be: a segment is
        // at most its size and one record. Out of space, the records are still
        // appended (and written once there is room).
        let mut filled = Ok(());
        log.set_clock(std::time::Instant::now());
        'fill: for a in &group {
            for r in &a.records {
                log.append(r);
                if log.is_full() && filled.is_ok() {
                    filled = log.write();
                    if filled.as_ref().is_err_and(|e| !e.is_no_space()) {
                        break 'fill;
                    }
                }
            }
            st.records.fetch_add(a.records.len() as u64, Relaxed);
        }
        // Reads find every record appended before them: all of this group's are.
        for r in reads {
            if filled.as_ref().is_err_and(|e| !e.is_no_space()) {
                let _ = r.reply.try_send(Err(Arc::from("the log cannot store")));
                continue;
            }
            match log.read(r.queue, &r.ids) {
                Ok(msgs) => {
                    st.reads.fetch_add(1, Relaxed);
                    st.read_messages.fetch_add(msgs.len() as u64, Relaxed);
                    let _ = r.reply.try_send(Ok(msgs));
                }
                Err(e) => {
                    let why: Arc<str> = Arc::from(format!("the log cannot be read back: {e}"));
                    let _ = r.reply.try_send(Err(why.clone()));
                    filled = Err(e);
                }
            }
        }
        let now = Instant::now();
        let sync = match fsync {
            Fsync::Always => !group.is_empty() || !held.is_empty(),
            Fsync::Every(_) => sync_by.is_some_and(|at| now >= at) || rx.is_closed(),
            Fsync::Never => false,
        };
        let result = match filled {
            Err(e) if !e.is_no_space() => Err(e),
            // Out of space mid-group: the rest is written (and synced) with the group.
            _ if sync => {
                let t = Instant::now();
                let r = log.sync();
                let ns = t.elapsed().as_nanos() as u64;
                st.syncs.fetch_add(1, Relaxed);
                st.sync_ns.fetch_add(ns, Relaxed);
                st.sync_max_ns.fetch_max(ns, Relaxed);
                if r.is_ok() {
                    sync_by = None;
                }
                r
            }
            // Space comes back after writes too: an acknowledgement not yet synced that
            // lets a segment go can only lose a message its consumer acknowledged.
            _ => log.write().and_then(|()| log.reclaim()),
        };
        if !group.is_empty() {
            st.groups.fetch_add(1, Relaxed);
        }
        match result {
            Err(e) if e.is_no_space() => {
                stalled(&mut log, &h, &e);
                stuck = true;
                held.append(&mut group);
                continue;
            }
            Err(e) => {
                let why: Arc<str> = Arc::from(format!("the log cannot store: {e}"));
                log::error!("{why}; nothing more is stored (durable publishes are refused)");
                *h.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                st.failed.store(true, SeqCst);
                held.append(&mut group);
                fail_all(&rx, &why, held);
                return;
            }
            Ok(()) => stuck = false,
        }
        if !group.is_empty() || !held.is_empty() {
            if let (Fsync::Every(d), None) = (fsync, sync_by) {
                sync_by = Some(now + d);
            }
        }
        check_space(&log, &h, max_disk);
        for a in held.drain(..).chain(group) {
            for done in a.done {
                let _ = done.try_send(Ok(()));
            }
        }
        if rx.is_closed() && rx.is_empty() && sync_by.is_none() {
            break;
        }
    }
    match log.sync() {
        Ok(()) => {
            for a in held {
                for done in a.done {
                    let _ = done.try_send(Ok(()));
                }
            }
        }
        Err(e) => {
            log::error!("the log's last sync, at shutdown, failed: {e}");
            let why: Arc<str> = Arc::from(format!("not stored at shutdown: {e}"));
            fail_all_now(&why, held);
        }
    }
}

/// The disk is out of space: what could not be written stays appended and is tried
/// again at the next append or look at the disk; meanwhile publishes to durable queues
/// are refused as full (`storage_full`), and their confirms wait. Segments nothing live
/// is in are given back at once (acknowledgements appended count).
fn stalled<S: Storage>(log: &mut Log<S>, h: &WriterHandle, e: &super::log::LogError) {
    let why = format!("the disk is full: {e}");
    if !h.stats.full.load(Relaxed) {
        log::warn!("{why}: publishes to durable queues are refused until there is room; what was appended is written then");
    }
    *h.full.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(why));
    h.stats.full.store(true, SeqCst);
    if let Err(e) = log.reclaim() {
        if !e.is_no_space() {
            log::warn!("giving space back failed: {e}");
        }
    }
}

/// Tells the senders of `groups` that their records were never stored.
fn fail_all_now(why: &Arc<str>, groups: Vec<Append>) {
    for a in groups {
        for done in a.done {
            let _ = done.try_send(Err(why.clone()));
        }
    }
}

/// After a failure: the failing group, what is queued and whatever comes later hear
/// why, until every handle is gone.
fn fail_all(rx: &Receiver<Job>, why: &Arc<str>, groups: Vec<Append>) {
    fail_all_now(why, groups);
    while let Ok(job) = rx.recv_blocking() {
        match job {
            Job::Append(a) => fail_all_now(why, vec![a]),
            Job::Read(r) => {
                let _ = r.reply.try_send(Err(why.clone()));
            }
        }
    }
}
