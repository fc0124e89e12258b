//! Two runtimes in one process: each runs its own tasks on its own threads.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use agora_rt::Runtime;
use common::{is_worker, threads_named, wait_until, DEADLINE};

/// Sleeps on timers `rounds` times (each a reactor event) and returns the name of the
/// thread of every poll after a wake.
async fn ticks(rounds: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..rounds {
        async_io::Timer::after(Duration::from_micros(200)).await;
        seen.push(std::thread::current().name().unwrap_or("?").to_owned());
    }
    seen
}

#[test]
fn two_runtimes_run_their_own_tasks_on_their_own_threads() {
    let a = Runtime::builder().threads(1).name("rt-a").build().unwrap();
    let b = Runtime::builder().threads(3).name("rt-b").build().unwrap();
    wait_until("1 + 3 named workers", || {
        threads_named("rt-a-") == 1 && threads_named("rt-b-") == 3
    });
    // All four workers wait in the same reactor, so one runtime's worker often receives
    // the other's timer events: the task must still go to its own runtime.
    let on_a: Vec<_> = (0..4).map(|_| a.spawn(ticks(100))).collect();
    let on_b: Vec<_> = (0..4).map(|_| b.spawn(ticks(100))).collect();
    for t in on_a {
        for name in futures_lite::future::block_on(t) {
            assert!(is_worker(Some(&name), "rt-a"), "a task of A ran on {name}");
        }
    }
    for t in on_b {
        for name in futures_lite::future::block_on(t) {
            assert!(is_worker(Some(&name), "rt-b"), "a task of B ran on {name}");
        }
    }

    // A's only worker blocked: B goes on; then A goes on once released.
    let (release, blocked) = mpsc::channel::<()>();
    let stuck = Arc::new(Mutex::new(false));
    let s = stuck.clone();
    let block = a.spawn(async move {
        *s.lock().unwrap() = true;
        blocked.recv_timeout(DEADLINE).expect("released");
    });
    wait_until("A's worker is blocked", || *stuck.lock().unwrap());
    assert_eq!(b.block_on(async { 6 * 7 }), 42);
    release.send(()).unwrap();
    futures_lite::future::block_on(block);
    assert_eq!(a.block_on(async { 7 }), 7);

    // Dropping A leaves B working.
    drop(a);
    wait_until("A's worker gone", || threads_named("rt-a-") == 0);
    assert_eq!(threads_named("rt-b-"), 3);
    assert_eq!(b.block_on(async { 8 }), 8);
}
