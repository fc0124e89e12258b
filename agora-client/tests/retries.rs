//! Confirmed publishes across a lost connection and a broker restart: under a
//! reconnect policy the SDK gives each an `agora-msg-id` and publishes again the ones
//! the lost connection never answered, and the broker keeps each once.

mod common;

use std::time::Duration;

use agora_client::{Client, Event, Headers, Reconnect};
use agora_server::Config;
use common::*;
use futures_lite::StreamExt;

fn fast() -> Reconnect {
    Reconnect::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
}

/// (depth, duplicates) of queue `name`.
async fn figures(c: &Client, name: &str) -> (u64, u64) {
    let st = within(c.stats()).await.expect("stats");
    st.destinations
        .iter()
        .find(|d| d.kind == "queue" && d.name == name)
        .map_or((0, 0), |d| (d.depth, d.duplicates))
}

/// The events of one lost connection and its return, in order.
async fn lost_then_back(events: &mut agora_client::EventStream) {
    assert!(matches!(
        within(events.next()).await,
        Some(Event::Disconnected { .. })
    ));
    assert!(matches!(
        within(events.next()).await,
        Some(Event::Reconnected { generation: 2, .. })
    ));
}

/// The confirm is lost on its way back and the connection breaks: the SDK publishes
/// again with the same id, the broker answers it as a duplicate, the call returns
/// `Ok`, and the queue holds the message once.
#[test]
fn a_publish_whose_confirm_was_lost_is_sent_again_and_kept_once() {
    let s = start();
    let proxy = Proxy::new(s.addr);
    smol::block_on(async {
        let client = Client::builder()
            .reconnect(fast())
            .connect(proxy.addr)
            .await
            .unwrap();
        let watcher = Client::connect(s.addr).await.unwrap();
        let mut events = client.events();
        let jobs = client.queue("jobs").unwrap();
        proxy.mute(true);
        let publish = smol::spawn(async move { jobs.publish_confirmed("once").await });
        wait_until("the broker holds it", || async {
            figures(&watcher, "jobs").await.0 == 1
        })
        .await;
        proxy.cut();
        proxy.mute(false);
        within(publish)
            .await
            .expect("confirmed after the reconnect");
        assert_eq!(figures(&watcher, "jobs").await, (1, 1), "kept once");
        lost_then_back(&mut events).await;
        // An id the application gives is the one used (and kept across its own retries).
        let mut h = Headers::new();
        h.insert("agora-msg-id", "job-7").unwrap();
        let jobs = client.queue("jobs").unwrap();
        for _ in 0..3 {
            jobs.publish_confirmed_with_headers(h.clone(), "seven")
                .await
                .unwrap();
        }
        assert_eq!(figures(&watcher, "jobs").await, (2, 3));
        let mut c = jobs.consume(10).await.unwrap();
        for want in ["once", "seven"] {
            let d = within(c.next()).await.unwrap();
            assert_eq!(d.payload(), want);
            assert!(d.headers().get("agora-msg-id").is_some());
            d.ack().await.unwrap();
        }
        client.close().await.unwrap();
    });
}

/// A service publishing confirmed messages while its broker restarts (a graceful stop,
/// then a new broker on the same port and data directory), the confirm of the publish
/// in flight lost on the way: every call returns `Ok`, the one in flight is published
/// again after the restart and found a duplicate there (its id came back with the
/// log), and the queue holds each message exactly once, in order.
#[test]
fn a_broker_restart_under_a_running_publisher_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let durable = |port: u16| Config {
        port,
        data_dir: Some(dir.path().to_owned()),
        ..Config::ephemeral()
    };
    let first = start_with(durable(0));
    let addr = first.addr;
    let proxy = Proxy::new(addr);
    const N: usize = 300;
    smol::block_on(async {
        let client = Client::builder()
            .reconnect(fast())
            .request_timeout(Duration::from_secs(20))
            .connect(proxy.addr)
            .await
            .unwrap();
        let mut events = client.events();
        let jobs = client.queue("jobs").unwrap();
        let (progress, sent) = async_channel::unbounded();
        let publisher = smol::spawn(async move {
            for i in 0..N {
                jobs.publish_confirmed(format!("m{i}")).await?;
                let _ = progress.send(i).await;
            }
            Ok::<(), agora_client::Error>(())
        });
        for _ in 0..N / 3 {
            within(sent.recv()).await.unwrap();
        }
        // The next confirm is lost; the broker holds its message when it stops.
        proxy.mute(true);
        let watcher = Client::connect(addr).await.unwrap();
        // Confirmed so far, counted as the publisher reports them: the broker holds
        // one more once the publisher waits on a confirm that will not come.
        let confirmed = std::cell::Cell::new(N / 3);
        wait_until("the unanswered one is held", || async {
            while sent.try_recv().is_ok() {
                confirmed.set(confirmed.get() + 1);
            }
            figures(&watcher, "jobs").await.0 as usize == confirmed.get() + 1
        })
        .await;
        drop(watcher);
        first.stop();
        let second = start_with(durable(addr.port()));
        proxy.cut();
        proxy.mute(false);
        within(publisher).await.expect("every publish confirmed");
        assert_eq!(
            figures(&client, "jobs").await,
            (N as u64, 1),
            "sent again, kept once"
        );
        lost_then_back(&mut events).await;
        let mut c = client.queue("jobs").unwrap().consume(1000).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..N {
            let d = within(c.next()).await.unwrap();
            got.push(String::from_utf8_lossy(d.payload()).into_owned());
            d.ack().await.unwrap();
        }
        let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
        assert_eq!(got, want, "each once, in order");
        assert_eq!(figures(&client, "jobs").await.0, 0, "nothing more");
        client.close().await.unwrap();
        second.stop();
    });
}
