//! A task that never stops waking itself keeps its worker busy, yet the sockets of
//! other tasks are still polled: the worker polls the reactor after every BUDGET tasks.
//! Alone in its test binary, so no other runtime's workers poll the reactor.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use agora_rt::Runtime;
use async_io::Async;
use common::{is_worker, wait_until, Spy, SpyLog, DEADLINE};
use futures_lite::{AsyncReadExt, AsyncWriteExt};

#[test]
fn a_task_that_always_wakes_itself_does_not_starve_sockets() {
    const ROUNDS: u64 = 100;
    // One worker, never idle: the hog is always in the queue. Only the yield after
    // BUDGET tasks lets that worker poll the reactor.
    let rt = Runtime::builder()
        .threads(1)
        .name("rt-hog")
        .build()
        .unwrap();
    let spins = Arc::new(AtomicU64::new(0));
    let s = spins.clone();
    let _hog = rt.spawn(async move {
        loop {
            s.fetch_add(1, SeqCst);
            futures_lite::future::yield_now().await;
        }
    });
    wait_until("the hog runs", || spins.load(SeqCst) > 0);
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let at = listener.get_ref().local_addr().unwrap();
    let log = Arc::new(Mutex::new(SpyLog::default()));
    let echo = rt.spawn(Spy::new(log.clone(), async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 8];
        for _ in 0..ROUNDS {
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(&buf).await.unwrap();
        }
    }));
    let mut client = TcpStream::connect(at).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client.set_nodelay(true).unwrap();
    for i in 0..ROUNDS {
        // Sent only once the echo task waits, so that its arrival is an event.
        wait_until("the echo task waits", || log.lock().unwrap().waiting);
        client.write_all(&i.to_le_bytes()).unwrap();
        let mut back = [0u8; 8];
        client
            .read_exact(&mut back)
            .expect("echo within the deadline");
        assert_eq!(u64::from_le_bytes(back), i);
    }
    futures_lite::future::block_on(echo);
    let before = spins.load(SeqCst);
    wait_until("the hog still runs", || spins.load(SeqCst) > before);
    // async-io's own thread also receives events when it finds the reactor untouched
    // for a while; the worker receives any only because it polls the reactor between
    // tasks (it is never idle: the hog is always queued).
    let log = log.lock().unwrap();
    assert!(
        log.wakes
            .iter()
            .any(|(woke, _)| is_worker(woke.name(), "rt-hog")),
        "the busy worker never polled the reactor: {:?}",
        log.wakes.iter().map(|(w, _)| w.name()).collect::<Vec<_>>()
    );
}
