//! Where a task runs: one woken by a socket event runs on the worker that received the
//! event. Alone in its test binary, so no other runtime's workers poll the reactor.

mod common;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};

use agora_rt::Runtime;
use async_io::Async;
use common::{is_worker, wait_until, Spy, SpyLog, DEADLINE};

#[test]
fn a_task_woken_by_the_reactor_runs_on_the_worker_that_received_the_event() {
    const ROUNDS: usize = 300;
    // Three workers: were woken tasks handed to whichever worker slept last (as
    // async-executor does), the thread that ran them would differ from the one that
    // received the event nearly every time.
    let rt = Runtime::builder()
        .threads(3)
        .name("rt-event")
        .build()
        .unwrap();
    let socket = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
    let at = socket.get_ref().local_addr().unwrap();
    let log = Arc::new(Mutex::new(SpyLog::default()));
    let echo = rt.spawn(Spy::new(log.clone(), async move {
        let mut buf = [0u8; 16];
        for _ in 0..ROUNDS {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            socket.send_to(&buf[..n], from).await.unwrap();
        }
    }));
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    for i in 0..ROUNDS {
        // Sent only once the task waits, so that its arrival is an event in the reactor
        // (not a datagram the task finds already there).
        wait_until("the echo task waits", || log.lock().unwrap().waiting);
        peer.send_to(&(i as u64).to_le_bytes(), at).unwrap();
        let mut back = [0u8; 16];
        let n = peer.recv(&mut back).expect("echo within the deadline");
        assert_eq!(back[..n], (i as u64).to_le_bytes());
    }
    futures_lite::future::block_on(echo);
    let log = log.lock().unwrap();
    // async-io's own thread may receive an event when it finds the reactor free; the
    // rule is about the events a waiting worker receives, which are most of them.
    let on_workers: Vec<_> = log
        .wakes
        .iter()
        .filter(|(woke, _)| is_worker(woke.name(), "rt-event"))
        .collect();
    assert!(
        on_workers.len() >= ROUNDS / 2,
        "only {} of {ROUNDS} events were received by a worker: {:?}",
        on_workers.len(),
        log.wakes.iter().map(|(w, _)| w.name()).collect::<Vec<_>>()
    );
    for (woke, ran) in on_workers {
        assert_eq!(
            woke.id(),
            ran.id(),
            "woken on {:?}, run on {:?}",
            woke.name(),
            ran.name()
        );
    }
}
