//! What the concurrency primitives the broker is built from cost on this machine:
//! async-channel send → recv between two tasks (same executor thread, and across
//! threads), draining a batch with `try_recv`, spawning a smol task, waking a parked
//! task, `Bytes` clone versus copy, and a registry lookup through a manager task's
//! channel versus a shared read-mostly map.
//!
//! `cargo bench -p agora-server --bench primitives -- --warm-up-time 1 --measurement-time 3`
//!
//! Every figure is time per operation (per message, per task, per lookup). The
//! book's chapter "Evaluation: concurrency" has the results and what they mean; the
//! broker-level effects (batching, zero-copy fan-out, channel capacity) come from
//! agora-bench's ablations.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use smol::LocalExecutor;

/// Messages in the channel benchmarks are what a topic carries: a shared payload.
type Msg = Bytes;

/// Runs a producer and a consumer of `n` messages as two tasks on one thread.
fn stream_same_thread(n: u64, tx: Sender<Msg>, rx: Receiver<Msg>) -> Duration {
    let ex = LocalExecutor::new();
    let payload = Bytes::from_static(&[7u8; 128]);
    let start = Instant::now();
    smol::block_on(ex.run(async {
        let consumer = ex.spawn(async move {
            for _ in 0..n {
                black_box(rx.recv().await.unwrap());
            }
        });
        let producer = ex.spawn(async move {
            for _ in 0..n {
                tx.send(payload.clone()).await.unwrap();
            }
        });
        producer.await;
        consumer.await;
    }));
    start.elapsed()
}

/// The consumer runs on smol's global executor (its own thread), the producer on the
/// benchmark thread.
fn stream_across_threads(n: u64, tx: Sender<Msg>, rx: Receiver<Msg>) -> Duration {
    let payload = Bytes::from_static(&[7u8; 128]);
    let start = Instant::now();
    let consumer = smol::spawn(async move {
        for _ in 0..n {
            black_box(rx.recv().await.unwrap());
        }
    });
    smol::block_on(async move {
        for _ in 0..n {
            tx.send(payload.clone()).await.unwrap();
        }
        consumer.await;
    });
    start.elapsed()
}

/// The broker's delivery queue (`agora_server::deliveries`: a `VecDeque` under a
/// mutex, one stored waker, up to 256 taken per lock): `n` items pushed one by one by
/// the producer, taken in batches by the consumer task. Same-thread: both tasks on one
/// `LocalExecutor`; across threads: the consumer on smol's global executor.
fn mutex_queue(n: u64, across: bool) -> Duration {
    use agora_server::deliveries::{queue, Took};
    let (tx, rx) = queue::<Msg>();
    let payload = Bytes::from_static(&[7u8; 128]);
    let consume = async move {
        let mut batch = std::collections::VecDeque::new();
        let mut got = 0;
        while got < n {
            match rx.take(&mut batch) {
                Took::Some => {
                    while let Some(m) = batch.pop_front() {
                        black_box(m);
                        got += 1;
                    }
                }
                Took::Empty => std::future::poll_fn(|cx| rx.poll_ready(cx)).await,
                Took::Closed => unreachable!("never closed here"),
            }
        }
    };
    let start = Instant::now();
    if across {
        let consumer = smol::spawn(consume);
        for _ in 0..n {
            tx.push(payload.clone()).ok();
        }
        smol::block_on(consumer);
    } else {
        let ex = LocalExecutor::new();
        smol::block_on(ex.run(async {
            let consumer = ex.spawn(consume);
            let producer = ex.spawn(async move {
                for i in 0..n {
                    tx.push(payload.clone()).ok();
                    // Let the consumer in now and then, as a connection task does
                    // between reads.
                    if i % 256 == 255 {
                        smol::future::yield_now().await;
                    }
                }
            });
            producer.await;
            consumer.await;
        }));
    }
    start.elapsed()
}

fn channels(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_recv");
    for (name, cap) in [
        ("bounded_16", Some(16)),
        ("bounded_512", Some(512)),
        ("unbounded", None),
    ] {
        let make = move || match cap {
            Some(cap) => async_channel::bounded(cap),
            None => async_channel::unbounded(),
        };
        g.bench_function(format!("same_thread/{name}"), |b| {
            b.iter_custom(|n| {
                let (tx, rx) = make();
                stream_same_thread(n, tx, rx)
            })
        });
        g.bench_function(format!("across_threads/{name}"), |b| {
            b.iter_custom(|n| {
                let (tx, rx) = make();
                stream_across_threads(n, tx, rx)
            })
        });
    }
    g.bench_function("same_thread/mutex_queue", |b| {
        b.iter_custom(|n| mutex_queue(n, false))
    });
    g.bench_function("across_threads/mutex_queue", |b| {
        b.iter_custom(|n| mutex_queue(n, true))
    });
    g.finish();

    // A shipper's wake-up: the channel holds a batch; take it with `try_recv` until
    // empty, or with one `recv().await` per message.
    const BATCH: usize = 256;
    let mut g = c.benchmark_group("drain_256");
    let fill = || {
        let (tx, rx) = async_channel::bounded::<Msg>(BATCH);
        let payload = Bytes::from_static(&[7u8; 128]);
        for _ in 0..BATCH {
            tx.try_send(payload.clone()).unwrap();
        }
        (tx, rx)
    };
    g.bench_function("try_recv_loop", |b| {
        b.iter_batched(
            fill,
            |(_tx, rx)| {
                let mut n = 0;
                while let Ok(m) = rx.try_recv() {
                    black_box(m);
                    n += 1;
                }
                assert_eq!(n, BATCH);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("recv_await_each", |b| {
        b.iter_batched(
            fill,
            |(_tx, rx)| {
                smol::block_on(async {
                    for _ in 0..BATCH {
                        black_box(rx.recv().await.unwrap());
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn tasks(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn");
    // Spawn n empty tasks on a single-threaded executor and run them all.
    g.bench_function("local_executor", |b| {
        b.iter_custom(|n| {
            let ex = LocalExecutor::new();
            let start = Instant::now();
            smol::block_on(ex.run(async {
                let handles: Vec<_> = (0..n).map(|i| ex.spawn(async move { i })).collect();
                for h in handles {
                    black_box(h.await);
                }
            }));
            start.elapsed()
        })
    });
    // The broker's way: `smol::spawn` onto the global executor, from another thread,
    // and wait for the result (one spawn, one cross-thread wake back).
    g.bench_function("global_spawn_and_await", |b| {
        b.iter(|| smol::block_on(smol::spawn(async { black_box(1u64) })))
    });
    g.finish();

    // Waking a parked task: a ping-pong through two capacity-1 channels, so each side
    // parks until the other answers. One iteration is a round trip: two wake-ups.
    let mut g = c.benchmark_group("wake_round_trip");
    g.bench_function("same_thread", |b| {
        b.iter_custom(|n| {
            let (ping_tx, ping_rx) = async_channel::bounded::<u64>(1);
            let (pong_tx, pong_rx) = async_channel::bounded::<u64>(1);
            let ex = LocalExecutor::new();
            let start = Instant::now();
            smol::block_on(ex.run(async {
                let echo = ex.spawn(async move {
                    while let Ok(v) = ping_rx.recv().await {
                        pong_tx.send(v).await.unwrap();
                    }
                });
                let pinger = ex.spawn(async move {
                    for i in 0..n {
                        ping_tx.send(i).await.unwrap();
                        black_box(pong_rx.recv().await.unwrap());
                    }
                });
                pinger.await;
                echo.await;
            }));
            start.elapsed()
        })
    });
    g.bench_function("across_threads", |b| {
        b.iter_custom(|n| {
            let (ping_tx, ping_rx) = async_channel::bounded::<u64>(1);
            let (pong_tx, pong_rx) = async_channel::bounded::<u64>(1);
            let start = Instant::now();
            let echo = smol::spawn(async move {
                while let Ok(v) = ping_rx.recv().await {
                    pong_tx.send(v).await.unwrap();
                }
            });
            smol::block_on(async move {
                for i in 0..n {
                    ping_tx.send(i).await.unwrap();
                    black_box(pong_rx.recv().await.unwrap());
                }
                drop(ping_tx);
                echo.await;
            });
            start.elapsed()
        })
    });
    g.finish();
}

fn payloads(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload");
    for (name, len) in [("128B", 128), ("16KiB", 16 * 1024)] {
        let payload = Bytes::from(vec![7u8; len]);
        g.bench_function(format!("bytes_clone/{name}"), |b| {
            b.iter(|| black_box(black_box(&payload).clone()))
        });
        g.bench_function(format!("copy/{name}"), |b| {
            b.iter(|| black_box(Bytes::copy_from_slice(black_box(&payload[..]))))
        });
    }
    g.finish();
}

/// What the registry hands out: a shared handle, like the broker's `Handle`.
#[derive(Clone)]
struct Handle(#[allow(dead_code)] Arc<u64>);

/// A request to the manager task, shaped like `ManagerCmd::Resolve`: the name (owned,
/// as the broker sends it) and a capacity-1 channel for the reply.
struct Resolve {
    dest: String,
    reply: Sender<Option<Handle>>,
}

const DESTINATIONS: usize = 1_000;

fn registry() -> HashMap<String, Handle> {
    (0..DESTINATIONS)
        .map(|i| (format!("queue:orders.{i}"), Handle(Arc::new(i as u64))))
        .collect()
}

async fn manager(rx: Receiver<Resolve>, map: HashMap<String, Handle>) {
    while let Ok(Resolve { dest, reply }) = rx.recv().await {
        let _ = reply.try_send(map.get(&dest).cloned());
    }
}

async fn resolve(manager: &Sender<Resolve>, dest: &str) -> Handle {
    let (tx, rx) = async_channel::bounded(1);
    manager
        .send(Resolve {
            dest: dest.to_owned(),
            reply: tx,
        })
        .await
        .unwrap();
    rx.recv().await.unwrap().unwrap()
}

fn lookups(c: &mut Criterion) {
    let names: Vec<String> = (0..DESTINATIONS)
        .map(|i| format!("queue:orders.{}", (i * 7) % DESTINATIONS))
        .collect();
    let mut g = c.benchmark_group("registry_lookup");
    g.bench_function("manager_task/same_thread", |b| {
        b.iter_custom(|n| {
            let ex = LocalExecutor::new();
            let (tx, rx) = async_channel::bounded(1024);
            let start = Instant::now();
            smol::block_on(ex.run(async {
                ex.spawn(manager(rx, registry())).detach();
                for i in 0..n as usize {
                    black_box(resolve(&tx, &names[i % DESTINATIONS]).await);
                }
            }));
            start.elapsed()
        })
    });
    g.bench_function("manager_task/across_threads", |b| {
        b.iter_custom(|n| {
            let (tx, rx) = async_channel::bounded(1024);
            let task = smol::spawn(manager(rx, registry()));
            let start = Instant::now();
            smol::block_on(async {
                for i in 0..n as usize {
                    black_box(resolve(&tx, &names[i % DESTINATIONS]).await);
                }
            });
            let elapsed = start.elapsed();
            drop(tx);
            smol::block_on(task);
            elapsed
        })
    });
    let shared = Arc::new(RwLock::new(registry()));
    g.bench_function("rwlock_hashmap", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % DESTINATIONS;
            black_box(shared.read().unwrap().get(&names[i]).cloned().unwrap())
        })
    });
    // What a connection does first: its own cache of handles, no lock at all.
    let local = registry();
    g.bench_function("local_hashmap", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % DESTINATIONS;
            black_box(local.get(&names[i]).cloned().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, channels, tasks, payloads, lookups);
criterion_main!(benches);
