//! The threads a client costs: on the shared I/O threads (the default) fifty clients
//! start no thread of their own; on dedicated threads each costs two. Both modes carry
//! topic messages, confirmed queue publishes, acks, requests and a reconnect. Counted in
//! `/proc/self/task`, so this file holds one test: a second one running beside it
//! would start threads of its own.

mod common;

use std::time::Duration;

use agora_client::{Client, Reconnect, Threads};
use agora_server::Config;
use common::*;
use futures_lite::StreamExt;

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Connects `n` clients, each subscribed to `t`, and checks each gets one message.
async fn clients(addr: std::net::SocketAddr, n: usize, threads: Threads) -> Vec<Client> {
    let mut all = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..n {
        let c = Client::builder()
            .threads(threads)
            .connect(addr)
            .await
            .unwrap();
        subs.push(c.subscribe("t").await.unwrap());
        all.push(c);
    }
    all[0].publish("t", "to all").await.unwrap();
    for s in &mut subs {
        assert_eq!(within(s.next()).await.unwrap().payload(), "to all");
    }
    all
}

/// What one client does in either mode, across a broker restart.
async fn exercise(threads: Threads) {
    let first = start();
    let addr = first.addr;
    let client = Client::builder()
        .threads(threads)
        .reconnect(Reconnect::default().initial_delay(Duration::from_millis(10)))
        .connect(addr)
        .await
        .unwrap();
    let mut news = client.subscribe("news").await.unwrap();
    for i in 0..2000 {
        client.publish("news", format!("{i}")).await.unwrap();
    }
    for i in 0..2000 {
        assert_eq!(
            within(news.next()).await.unwrap().payload(),
            &format!("{i}")
        );
    }
    let mut jobs = client.consume("jobs", 8).await.unwrap();
    let q = client.queue("jobs").unwrap();
    for i in 0..100 {
        q.publish_confirmed(format!("job {i}")).await.unwrap();
    }
    for i in 0..100 {
        let d = within(jobs.next()).await.unwrap();
        assert_eq!(d.payload(), &format!("job {i}"));
        d.ack().await.unwrap();
    }
    let responder = Client::connect(addr).await.unwrap();
    let mut asks = responder.subscribe("echo").await.unwrap();
    let answering = async {
        let r = within(asks.next()).await.unwrap();
        r.respond(r.payload().clone()).await.unwrap();
    };
    let (reply, ()) =
        futures_lite::future::zip(client.request("topic:echo", "hi"), answering).await;
    assert_eq!(reply.unwrap().payload(), "hi");
    drop(responder);

    first.stop();
    let second = start_with(Config {
        port: addr.port(),
        ..Config::ephemeral()
    });
    wait_until("the client reconnected", || async {
        client.generation() == 2 && client.is_connected()
    })
    .await;
    client.publish("news", "after").await.unwrap();
    assert_eq!(within(news.next()).await.unwrap().payload(), "after");
    q.publish_confirmed("job after").await.unwrap();
    within(jobs.next()).await.unwrap().ack().await.unwrap();
    within(client.close()).await.unwrap();
    second.stop();
}

#[test]
fn shared_clients_start_no_threads_and_dedicated_ones_two_each() {
    smol::block_on(async {
        exercise(Threads::Shared).await;
        exercise(Threads::Dedicated).await;

        let server = start();
        // One client first: the shared threads start with it.
        let warm = clients(server.addr, 1, Threads::Shared).await;
        // Half the cores, rounded up, at most four.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            shared_io_threads(),
            cores.div_ceil(2).min(4),
            "{cores} cores"
        );
        let before = threads_now();
        let shared = clients(server.addr, 50, Threads::Shared).await;
        let during = threads_now();
        assert!(
            during <= before + 1,
            "50 clients on the shared threads started {} threads",
            during - before
        );
        drop(shared);
        drop(warm);

        let before = threads_now();
        let dedicated = clients(server.addr, 50, Threads::Dedicated).await;
        let during = threads_now();
        assert!(
            during >= before + 100,
            "50 clients on dedicated threads started {} threads, not 100",
            during.saturating_sub(before)
        );
        drop(dedicated);
    });
}
