//! A durable queue's storage two ways, on the work a queue does: publish a batch of
//! messages, make it durable, then take the oldest ones (the head), acknowledge them,
//! make that durable.
//!
//! - **log**: the broker's own segmented log (`store::Log` on real files): records
//!   appended, one `fdatasync` per batch; the head is in memory.
//! - **fjall**: an LSM key-value store (fjall 2), one key per message (the id, big
//!   endian), an ack a `remove` (a tombstone), `persist(SyncData)` per batch; the head
//!   either read from the tree (`first_key_value`: queues are an LSM's known hard case,
//!   the head is always just past the newest tombstones) or kept in memory as the log's
//!   is.
//!
//! Each with a sync per batch (what `--fsync always` does) and without (the CPU cost).
//! Every figure is time per round: 64 messages of 128 B published and acknowledged.
//!
//! `cargo bench -p agora-server --bench store -- --warm-up-time 2 --measurement-time 10`
//!
//! The book's Durability chapter has the figures and the decision they led to.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;
use agora_server::store::{Disk, Log, LogOptions, Record};
use criterion::{criterion_group, criterion_main, Criterion};

const BATCH: u64 = 64;
const PAYLOAD: [u8; 128] = [7u8; 128];

struct LogQueue {
    log: Log<Disk>,
    queue: u32,
    next_id: u64,
    head: VecDeque<u64>,
    _dir: tempfile::TempDir,
}

impl LogQueue {
    fn new() -> LogQueue {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let disk = Arc::new(Disk::new(dir.path()));
        let (mut log, _) = Log::open(disk, LogOptions::default()).expect("a new log");
        let queue = log.declare("bench");
        LogQueue {
            log,
            queue,
            next_id: 1,
            head: VecDeque::new(),
            _dir: dir,
        }
    }

    fn round(&mut self, sync: bool) {
        for _ in 0..BATCH {
            let id = self.next_id;
            self.next_id += 1;
            self.log.append(&Record::Enqueue {
                queue: self.queue,
                id,
                count: 0,
                headers: Headers::new(),
                payload: Bytes::from_static(&PAYLOAD),
            });
            self.head.push_back(id);
        }
        self.durable(sync);
        for _ in 0..BATCH {
            let id = self.head.pop_front().expect("published");
            self.log.append(&Record::Ack {
                queue: self.queue,
                id,
            });
        }
        self.durable(sync);
    }

    fn durable(&mut self, sync: bool) {
        if sync {
            self.log.sync().expect("synced");
        } else {
            self.log.write().expect("written");
        }
    }
}

struct FjallQueue {
    keyspace: fjall::Keyspace,
    part: fjall::PartitionHandle,
    next_id: u64,
    /// The ids published and not yet taken, when the head is kept in memory (as the
    /// log's is) instead of read from the tree.
    head: Option<VecDeque<u64>>,
    _dir: tempfile::TempDir,
}

impl FjallQueue {
    fn new(head_in_memory: bool) -> FjallQueue {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let keyspace = fjall::Config::new(dir.path()).open().expect("a keyspace");
        let part = keyspace
            .open_partition("bench", fjall::PartitionCreateOptions::default())
            .expect("a partition");
        FjallQueue {
            keyspace,
            part,
            next_id: 1,
            head: head_in_memory.then(VecDeque::new),
            _dir: dir,
        }
    }

    fn round(&mut self, sync: bool) {
        for _ in 0..BATCH {
            let id = self.next_id;
            self.next_id += 1;
            self.part
                .insert(id.to_be_bytes(), PAYLOAD)
                .expect("inserted");
            if let Some(h) = &mut self.head {
                h.push_back(id);
            }
        }
        self.durable(sync);
        for _ in 0..BATCH {
            match &mut self.head {
                Some(h) => {
                    let id = h.pop_front().expect("published");
                    self.part.remove(id.to_be_bytes()).expect("removed");
                }
                None => {
                    let (k, v) = self
                        .part
                        .first_key_value()
                        .expect("read")
                        .expect("published");
                    black_box(v);
                    self.part.remove(k).expect("removed");
                }
            }
        }
        self.durable(sync);
    }

    fn durable(&self, sync: bool) {
        let mode = if sync {
            fjall::PersistMode::SyncData
        } else {
            fjall::PersistMode::Buffer
        };
        self.keyspace.persist(mode).expect("persisted");
    }
}

/// Times `iters` rounds on a store made by `fresh` (each of criterion's samples gets a
/// fresh one, in a temporary directory removed after it).
fn rounds<Q>(iters: u64, fresh: impl Fn() -> Q, round: impl Fn(&mut Q)) -> Duration {
    let mut q = fresh();
    let t = Instant::now();
    for _ in 0..iters {
        round(&mut q);
    }
    t.elapsed()
}

fn store(c: &mut Criterion) {
    let mut g = c.benchmark_group("enqueue-then-ack, 64 x 128 B");
    for sync in [false, true] {
        let label = if sync { "synced" } else { "no sync" };
        g.bench_function(format!("log, {label}"), |b| {
            b.iter_custom(|iters| rounds(iters, LogQueue::new, |q| q.round(sync)))
        });
        g.bench_function(format!("fjall, head read from the tree, {label}"), |b| {
            b.iter_custom(|iters| rounds(iters, || FjallQueue::new(false), |q| q.round(sync)))
        });
        g.bench_function(format!("fjall, head in memory, {label}"), |b| {
            b.iter_custom(|iters| rounds(iters, || FjallQueue::new(true), |q| q.round(sync)))
        });
    }
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
