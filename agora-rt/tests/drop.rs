//! Dropping a runtime ends its threads and drops its unfinished tasks.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use agora_rt::Runtime;
use common::{threads_named, wait_until};

#[test]
fn dropping_the_runtime_joins_its_threads_and_drops_its_tasks() {
    let rt = Runtime::builder()
        .threads(3)
        .name("rt-drop")
        .build()
        .unwrap();
    assert_eq!(rt.threads(), 3);
    wait_until("three named workers", || threads_named("rt-drop-") == 3);
    // One task waits forever, one never stops running: both must go with the runtime.
    let held = Arc::new(());
    let h = held.clone();
    rt.spawn(async move {
        let _h = h;
        futures_lite::future::pending::<()>().await
    })
    .detach();
    let spins = Arc::new(AtomicU64::new(0));
    let s = spins.clone();
    rt.spawn(async move {
        loop {
            s.fetch_add(1, SeqCst);
            futures_lite::future::yield_now().await;
        }
    })
    .detach();
    wait_until("the busy task runs", || spins.load(SeqCst) > 0);
    let handle = rt.handle();
    drop(rt);
    // Joined, so gone; the kernel may list an exited thread a moment longer.
    wait_until("no worker left", || threads_named("rt-drop-") == 0);
    assert_eq!(
        Arc::strong_count(&held),
        1,
        "the waiting task was not dropped"
    );
    assert_eq!(
        Arc::strong_count(&spins),
        1,
        "the busy task was not dropped"
    );
    // A task spawned through a handle that outlived its runtime is dropped at once.
    let late = Arc::new(());
    let l = late.clone();
    handle
        .spawn(async move {
            let _l = l;
        })
        .detach();
    assert_eq!(Arc::strong_count(&late), 1, "a late task was kept");
}

#[test]
fn zero_threads_means_one_per_core() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = Runtime::builder()
        .threads(0)
        .name("rt-cores")
        .build()
        .unwrap();
    assert_eq!(rt.threads(), cores);
    wait_until("a worker per core", || threads_named("rt-cores-") == cores);
    drop(rt);
    wait_until("no worker left", || threads_named("rt-cores-") == 0);
}

#[test]
fn dropping_the_runtime_while_its_tasks_wake_each_other_returns() {
    // A task is woken from inside async-channel, under a lock that dropping the task
    // needs: a runtime that dropped tasks in their wake-up would deadlock here.
    let rt = Runtime::builder()
        .threads(2)
        .name("rt-busy")
        .build()
        .unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    for _ in 0..50 {
        let (ping_tx, ping_rx) = async_channel::bounded::<u64>(1);
        let (pong_tx, pong_rx) = async_channel::bounded::<u64>(1);
        let s = sent.clone();
        rt.spawn(async move {
            let mut n = 0;
            while ping_tx.send(n).await.is_ok() {
                s.fetch_add(1, SeqCst);
                n = pong_rx.recv().await.unwrap_or(0);
            }
        })
        .detach();
        rt.spawn(async move {
            while let Ok(n) = ping_rx.recv().await {
                if pong_tx.send(n + 1).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    wait_until("the tasks run", || sent.load(SeqCst) > 1000);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(rt);
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(common::DEADLINE)
        .expect("the runtime's drop returned");
    assert_eq!(Arc::strong_count(&sent), 1, "a task was not dropped");
}
