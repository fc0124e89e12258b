//! Tasks that wake each other all finish; a task that panics ends only itself.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use agora_rt::Runtime;

#[test]
fn many_tasks_that_wake_each_other_all_finish() {
    let rt = Runtime::new(2);
    let sum = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let sum = sum.clone();
            let (tx, rx) = async_channel::bounded::<u64>(1);
            let consumer = rt.spawn(async move {
                while let Ok(v) = rx.recv().await {
                    sum.fetch_add(v, SeqCst);
                }
            });
            let producer = rt.spawn(async move {
                for k in 0..100 {
                    tx.send(i * k).await.unwrap();
                }
            });
            (producer, consumer)
        })
        .collect();
    rt.block_on(async move {
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
    let rt = Runtime::new(2);
    // More panics than workers: a panic that took its worker down would leave none.
    for _ in 0..8 {
        let bad = rt.spawn(async { panic!("on purpose") });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            futures_lite::future::block_on(bad)
        }));
        assert!(caught.is_err());
    }
    let answer = futures_lite::future::block_on(futures_lite::future::or(
        async { Some(rt.spawn(async { 7 }).await) },
        async {
            async_io::Timer::after(Duration::from_secs(10)).await;
            None
        },
    ));
    assert_eq!(answer, Some(7), "no worker ran the task within 10 s");
}
