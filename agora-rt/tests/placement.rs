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
    // Events received by a worker needed, and the most rounds to wait for them: async-io's
    // own thread also polls the reactor, and on a loaded machine it may keep it for
    // long stretches (its events go to the queue, which is not what this test is about).
    const WANT: usize = 100;
    const MAX_ROUNDS: usize = 20_000;
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
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            socket.send_to(&buf[..n], from).await.unwrap();
            if n == 0 {
                break;
            }
        }
    }));
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut on_workers = 0;
    let mut rounds = 0;
    while on_workers < WANT && rounds < MAX_ROUNDS {
        // Sent only once the task waits, so that its arrival is an event in the reactor
        // (not a datagram the task finds already there).
        wait_until("the echo task waits", || log.lock().unwrap().waiting);
        peer.send_to(&(rounds as u64).to_le_bytes(), at).unwrap();
        let mut back = [0u8; 16];
        let n = peer.recv(&mut back).expect("echo within the deadline");
        assert_eq!(back[..n], (rounds as u64).to_le_bytes());
        rounds += 1;
        // The task logged the wake before it echoed.
        let log = log.lock().unwrap();
        let (woke, ran) = log.wakes.last().expect("the datagram woke the task");
        if is_worker(woke.name(), "rt-event") {
            on_workers += 1;
            assert_eq!(
                woke.id(),
                ran.id(),
                "woken on {:?}, run on {:?}",
                woke.name(),
                ran.name()
            );
        }
    }
    wait_until("the echo task waits", || log.lock().unwrap().waiting);
    peer.send_to(&[], at).unwrap();
    futures_lite::future::block_on(echo);
    assert!(
        on_workers >= WANT,
        "only {on_workers} of {rounds} events were received by a worker"
    );
}
