//! Connection state through the SDK: the event stream (lost, made again, closed,
//! messages dropped in the client, broker errors), `is_connected`, several broker
//! addresses tried in turn, and the reconnect policy applied to the first connection.

mod common;

use std::time::Duration;

use agora_client::{Client, Event, Reconnect};
use agora_server::Config;
use common::*;
use futures_lite::StreamExt;

fn fast() -> Reconnect {
    Reconnect::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
}

/// A port nothing listens on (one the system just gave and took back).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn events_tell_a_lost_connection_its_return_and_the_close() {
    let first = start();
    let addr = first.addr;
    smol::block_on(async {
        let client = Client::builder()
            .reconnect(fast())
            .connect(addr)
            .await
            .unwrap();
        let mut events = client.events();
        assert!(client.is_connected());
        first.stop();
        match within(events.next()).await.unwrap() {
            Event::Disconnected { addr: a, reason } => {
                assert_eq!(a, addr.to_string());
                assert!(!reason.is_empty());
            }
            e => panic!("{e:?}"),
        }
        // Down until a broker answers on the port again.
        wait_until("the client sees the loss", || async {
            !client.is_connected()
        })
        .await;
        assert!(!client.is_closed());
        let second = start_with(Config {
            port: addr.port(),
            ..Config::ephemeral()
        });
        match within(events.next()).await.unwrap() {
            Event::Reconnected {
                addr: a,
                generation,
            } => {
                assert_eq!((a, generation), (addr.to_string(), 2));
            }
            e => panic!("{e:?}"),
        }
        wait_until("connected again", || async { client.is_connected() }).await;
        // A broker error no call waits for is an event too.
        client.queue("$nope").unwrap().publish("x").await.unwrap();
        client.flush().await.unwrap();
        match within(events.next()).await.unwrap() {
            Event::ServerError(e) => assert_eq!(e.code, agora_client::ErrorCode::NotPermitted),
            e => panic!("{e:?}"),
        }
        within(client.close()).await.unwrap();
        assert_eq!(within(events.next()).await, Some(Event::Closed));
        assert!(!client.is_connected());
        second.stop();
    });
}

#[test]
fn messages_dropped_in_the_client_are_an_event() {
    let server = start();
    smol::block_on(async {
        let client = Client::builder()
            .subscription_buffer(4)
            .subscription_overflow(agora_client::Overflow::DropOldest)
            .connect(server.addr)
            .await
            .unwrap();
        let mut events = client.events();
        let mut sub = client.subscribe("flood").await.unwrap();
        let t = client.topic("flood").unwrap();
        for i in 0..200 {
            t.publish(format!("{i}")).await.unwrap();
        }
        t.publish("end").await.unwrap();
        // Nobody reads: 201 messages cannot all wait in a buffer of 4.
        wait_until("messages are dropped", || async { sub.dropped() > 0 }).await;
        // The last is never the one dropped (the oldest go); once it is read, every
        // drop has happened, and its event is sent right after it is counted.
        for _ in 0..=200 {
            if within(sub.next()).await.unwrap().payload() == "end" {
                break;
            }
        }
        let mut total = 0;
        wait_until("an event for every drop", || {
            while let Some(e) = events.try_next() {
                match e {
                    Event::Dropped { destination, count } => {
                        assert_eq!(destination.to_string(), "topic:flood");
                        total += count;
                    }
                    e => panic!("{e:?}"),
                }
            }
            let done = total == sub.dropped();
            async move { done }
        })
        .await;
    });
}

#[test]
fn several_addresses_are_tried_in_turn_at_connect_and_on_reconnect() {
    let a = start();
    let b = start();
    smol::block_on(async {
        // The first refuses: the second answers.
        let dead = format!("127.0.0.1:{}", closed_port());
        let client = Client::connect(format!("{dead}, {}", b.addr))
            .await
            .unwrap();
        assert!(client.is_connected());
        client.close().await.unwrap();
        // Connected to a; when a goes, the next is b.
        let client = Client::builder()
            .reconnect(fast())
            .connect(format!("{},{}", a.addr, b.addr))
            .await
            .unwrap();
        let mut events = client.events();
        let mut sub = client.subscribe("news").await.unwrap();
        a.stop();
        let mut reconnected = None;
        for _ in 0..2 {
            if let Event::Reconnected { addr, .. } = within(events.next()).await.unwrap() {
                reconnected = Some(addr);
            }
        }
        assert_eq!(reconnected, Some(b.addr.to_string()));
        client.publish("news", "on b").await.unwrap();
        assert_eq!(within(sub.next()).await.unwrap().payload(), "on b");
        // No address at all is an error.
        assert!(Client::connect(" , ").await.is_err());
    });
}

#[test]
fn the_reconnect_policy_may_cover_the_first_connection() {
    let port = closed_port();
    let addr = format!("127.0.0.1:{port}");
    smol::block_on(async {
        // Off by default: the first refusal is the answer.
        let refused = Client::builder().reconnect(fast()).connect(&addr).await;
        assert!(refused.is_err());
        // On: it keeps trying until a broker is there.
        let connecting = {
            let addr = addr.clone();
            std::thread::spawn(move || {
                smol::block_on(
                    Client::builder()
                        .reconnect(fast())
                        .retry_on_initial_connect(true)
                        .connect(addr),
                )
            })
        };
        let server = start_with(Config {
            port,
            ..Config::ephemeral()
        });
        let client = connecting.join().unwrap().unwrap();
        assert!(client.is_connected());
        client.ping().await.unwrap();
        // With a limit, it gives up and says why.
        drop(server);
        let gave_up = Client::builder()
            .reconnect(fast().max_attempts(Some(2)))
            .retry_on_initial_connect(true)
            .connect(&addr)
            .await;
        assert!(gave_up.is_err());
    });
}
