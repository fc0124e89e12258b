//! The client against an in-process broker: every API path.

mod common;

use std::error::Error as _;
use std::time::Duration;

use agora_client::{Client, Error, ErrorCode, Headers, Reconnect, Stats};
use agora_server::Config;
use common::{queue_settles, start, start_with, wait_until, within};
use futures_lite::StreamExt;

async fn stats(c: &Client) -> Stats {
    within(c.stats()).await.expect("stats")
}

fn dest<'a>(s: &'a Stats, kind: &str, name: &str) -> Option<&'a agora_client::DestinationStats> {
    s.destinations
        .iter()
        .find(|d| d.kind == kind && d.name == name)
}

#[test]
fn handshake_info_ping_flush_stats_close() {
    let server = start();
    smol::block_on(async {
        let client = Client::builder()
            .name("tester")
            .connect(server.addr)
            .await
            .unwrap();
        let info = client.server_info();
        assert_eq!(info.server, "agora");
        assert_eq!(info.proto, agora_protocol::PROTOCOL_VERSION);
        assert_eq!(client.generation(), 1);
        within(client.ping()).await.unwrap();
        client.publish("t", "x").await.unwrap();
        within(client.flush()).await.unwrap();
        let raw = within(client.stats_raw()).await.unwrap();
        assert!(raw.starts_with(b"{"));
        let s = stats(&client).await;
        assert_eq!(s.server, "agora");
        assert!(s.clients.tcp >= 1);
        assert!(!client.is_closed());
        within(client.close()).await.unwrap();
        assert!(client.is_closed());
        assert!(matches!(client.publish("t", "x").await, Err(Error::Closed)));
        assert!(matches!(client.ping().await, Err(Error::Closed)));
        // closing twice is fine
        within(client.close()).await.unwrap();
    });
}

#[test]
fn topic_publish_subscribe_headers_and_unsubscribe() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let mut sub = client.subscribe("prices.eu").await.unwrap();
        assert_eq!(sub.destination().to_string(), "topic:prices.eu");
        client.publish("prices.eu", "101.5").await.unwrap();
        let mut h = Headers::new();
        h.insert("Trace-Id", "ab12").unwrap();
        client
            .publish_with_headers("prices.eu", h, &b"102"[..])
            .await
            .unwrap();
        client
            .topic("prices.eu")
            .unwrap()
            .publish_confirmed("103")
            .await
            .unwrap();

        let m = within(sub.next()).await.unwrap();
        assert_eq!(m.payload(), "101.5");
        assert_eq!(m.destination().to_string(), "topic:prices.eu");
        assert!(m.headers().is_empty());
        assert_eq!(m.delivery_count(), 1);
        assert!(!m.redelivered());
        let m = within(sub.next()).await.unwrap();
        assert_eq!(m.headers().get("trace-id"), Some("ab12"));
        assert_eq!(m.into_payload(), "102");
        let m = within(sub.next()).await.unwrap();
        assert_eq!(m.payload(), "103");
        assert_eq!(sub.dropped(), 0);

        within(sub.unsubscribe()).await.unwrap();
        wait_until("the topic has no subscriber", || async {
            dest(&stats(&client).await, "topic", "prices.eu").is_none_or(|d| d.consumers == 0)
        })
        .await;
    });
}

#[test]
fn dropping_a_subscription_sends_unsub() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let sub = client.subscribe("t").await.unwrap();
        let c = client.consume("q", 1).await.unwrap();
        let s = stats(&client).await;
        assert_eq!(dest(&s, "topic", "t").unwrap().consumers, 1);
        assert_eq!(dest(&s, "queue", "q").unwrap().consumers, 1);
        drop(sub);
        drop(c);
        wait_until("both subscriptions are gone", || async {
            let s = stats(&client).await;
            dest(&s, "topic", "t").is_none_or(|d| d.consumers == 0)
                && dest(&s, "queue", "q").is_none_or(|d| d.consumers == 0)
        })
        .await;
    });
}

#[test]
fn slow_topic_subscription_drops_oldest_and_counts() {
    let server = start();
    smol::block_on(async {
        let client = Client::builder()
            .subscription_buffer(4)
            .subscription_overflow(agora_client::Overflow::DropOldest)
            .connect(server.addr)
            .await
            .unwrap();
        let mut sub = client.subscribe("fast").await.unwrap();
        for i in 0..20 {
            client.publish("fast", i.to_string()).await.unwrap();
        }
        wait_until("16 messages were dropped", || async { sub.dropped() == 16 }).await;
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(within(sub.next()).await.unwrap().into_payload());
        }
        assert_eq!(got, ["16", "17", "18", "19"]);
    });
}

#[test]
fn queue_two_consumers_share_with_acks_and_a_redelivered_nack() {
    let server = start();
    smol::block_on(async {
        let producer = Client::connect(server.addr).await.unwrap();
        let a = Client::connect(server.addr).await.unwrap();
        let b = Client::connect(server.addr).await.unwrap();
        let mut ca = a.consume("work", 2).await.unwrap();
        let mut cb = b.consume("work", 2).await.unwrap();
        let q = producer.queue("work").unwrap();
        for i in 0..10 {
            q.publish_confirmed(format!("job {i}")).await.unwrap();
        }
        let mut done = Vec::new();
        let mut nacked = None;
        let mut redelivered = None;
        let mut from_a = 0;
        let mut from_b = 0;
        // Each turn takes one delivery from whichever consumer has one; bounded.
        for _ in 0..100 {
            if done.len() == 10 {
                break;
            }
            let (d, from_a_now) = within(futures_lite::future::or(
                async { (ca.next().await.unwrap(), true) },
                async { (cb.next().await.unwrap(), false) },
            ))
            .await;
            if from_a_now {
                from_a += 1;
            } else {
                from_b += 1;
            }
            let text = String::from_utf8(d.payload().to_vec()).unwrap();
            if nacked.is_none() {
                assert!(!d.redelivered());
                nacked = Some(text);
                d.nack().await.unwrap();
                continue;
            }
            if Some(&text) == nacked.as_ref() {
                assert!(d.redelivered());
                assert_eq!(d.delivery_count(), 2);
                redelivered = Some(text.clone());
            } else {
                assert!(!d.redelivered(), "{text} redelivered");
            }
            assert!(!done.contains(&text), "{text} delivered twice");
            done.push(text);
            d.ack().await.unwrap();
        }
        assert_eq!(done.len(), 10);
        assert_eq!(redelivered, nacked);
        assert!(from_a > 0 && from_b > 0, "a got {from_a}, b got {from_b}");
        a.flush().await.unwrap();
        b.flush().await.unwrap();
        wait_until("the queue is empty", || async {
            let s = stats(&producer).await;
            let d = dest(&s, "queue", "work").unwrap();
            d.depth == 0 && d.unacked == 0
        })
        .await;
        assert!(a.errors().try_next().is_none());
    });
}

#[test]
fn acks_made_before_a_consumer_is_dropped_reach_the_broker_before_its_unsub() {
    // Acks are encoded by the thread that makes them, into a buffer the driver writes;
    // the UNSUB of a dropped consumer is a control message. Were the UNSUB written
    // first, the broker would give back what was acked, and deliver it again.
    let server = start();
    smol::block_on(async {
        let producer = Client::connect(server.addr).await.unwrap();
        let q = producer.queue("acked-then-dropped").unwrap();
        for i in 0..200 {
            q.publish(format!("job {i}")).await.unwrap();
        }
        within(producer.flush()).await.unwrap();
        // Each consumer acks 50 and is dropped holding more (its prefetch is 64): those
        // come again, to the next one; no acked one may.
        let mut acked = std::collections::HashSet::new();
        for round in 0..4 {
            let client = Client::connect(server.addr).await.unwrap();
            let mut c = client.consume("acked-then-dropped", 64).await.unwrap();
            for _ in 0..50 {
                let d = within(c.next()).await.unwrap();
                let p = d.payload().clone();
                assert!(!acked.contains(&p), "round {round}: acked {p:?} came again");
                d.ack().await.unwrap();
                acked.insert(p);
            }
            drop(c);
            within(client.close()).await.unwrap();
        }
        assert_eq!(acked.len(), 200);
        let s = stats(&producer).await;
        let d = dest(&s, "queue", "acked-then-dropped").unwrap();
        assert_eq!((d.depth, d.unacked), (0, 0));
    });
}

#[test]
fn a_dropped_consumer_gives_its_unacked_deliveries_to_the_other() {
    let server = start();
    smol::block_on(async {
        let producer = Client::connect(server.addr).await.unwrap();
        let a = Client::connect(server.addr).await.unwrap();
        let b = Client::connect(server.addr).await.unwrap();
        let mut ca = a.consume("hand-off", 5).await.unwrap();
        let q = producer.queue("hand-off").unwrap();
        for i in 0..5 {
            q.publish_confirmed(i.to_string()).await.unwrap();
        }
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(within(ca.next()).await.unwrap());
        }
        let mut cb = b.consume("hand-off", 5).await.unwrap();
        drop(ca);
        let mut got = Vec::new();
        for _ in 0..5 {
            let d = within(cb.next()).await.unwrap();
            assert!(d.redelivered());
            assert_eq!(d.delivery_count(), 2);
            got.push(String::from_utf8(d.payload().to_vec()).unwrap());
            d.ack().await.unwrap();
        }
        got.sort();
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
        drop(held);
    });
}

#[test]
fn consume_auto_ack_is_the_brokers_auto_ack() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let q = client.queue("auto").unwrap();
        let mut h = Headers::new();
        h.insert("k", "v").unwrap();
        q.publish_with_headers(h.clone(), "a").await.unwrap();
        q.publish_confirmed_with_headers(h, "b").await.unwrap();
        q.publish("c").await.unwrap();
        let mut c = client.consume_auto_ack("auto", 2).await.unwrap();
        for want in ["a", "b", "c"] {
            let d = within(c.next()).await.unwrap();
            assert_eq!(d.payload(), want);
            assert_eq!(d.destination().to_string(), "queue:auto");
            assert_eq!(d.generation(), 1);
            assert_eq!(d.delivery_id(), 0, "nothing to acknowledge");
            d.ack().await.unwrap(); // a no-op, not an error
        }
        wait_until("everything is acked", || async {
            let s = stats(&client).await;
            let d = dest(&s, "queue", "auto").unwrap();
            d.depth == 0 && d.unacked == 0
        })
        .await;
        within(c.unsubscribe()).await.unwrap();
    });
}

#[test]
fn an_auto_ack_consumer_that_falls_behind_holds_the_broker_back_and_loses_nothing() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let q = client.queue("backpressure").unwrap();
        for i in 0..2000u32 {
            q.publish(i.to_string()).await.unwrap();
        }
        client.flush().await.unwrap();
        // A tiny prefetch and a consumer that takes its time now and then: the client
        // stops reading when its buffer is full instead of dropping.
        let mut c = client.consume_auto_ack("backpressure", 2).await.unwrap();
        for i in 0..2000u32 {
            if i % 500 == 0 {
                async_io::Timer::after(std::time::Duration::from_millis(20)).await;
            }
            let d = within(c.next()).await.unwrap();
            assert_eq!(d.payload(), i.to_string().as_str());
        }
    });
}

#[test]
fn publish_confirmed_on_a_full_queue_returns_queue_full() {
    let server = start_with(Config {
        queue_max_messages: 2,
        ..Config::ephemeral()
    });
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let q = client.queue("small").unwrap();
        q.publish_confirmed("1").await.unwrap();
        q.publish_confirmed("2").await.unwrap();
        let e = q.publish_confirmed("3").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::QueueFull), "{e}");
        assert!(matches!(e, Error::Server { .. }));
        assert!(e.to_string().starts_with("server error queue_full"), "{e}");
    });
}

#[test]
fn an_unconfirmed_refused_publish_reaches_the_error_stream() {
    let server = start_with(Config {
        queue_max_messages: 1,
        ..Config::ephemeral()
    });
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let mut errors = client.errors();
        let q = client.queue("tiny").unwrap();
        q.publish("1").await.unwrap();
        q.publish("2").await.unwrap();
        client.publish("$sys.nope", "x").await.unwrap();
        within(client.flush()).await.unwrap();
        let e = within(errors.next()).await.unwrap();
        assert_eq!(e.code, ErrorCode::QueueFull, "{e}");
        let e = within(errors.next()).await.unwrap();
        assert_eq!(e.code, ErrorCode::NotPermitted, "{e}");
        assert!(errors.try_next().is_none());
    });
}

#[test]
fn local_errors_names_payload_limits_connect_failures() {
    let server = start();
    smol::block_on(async {
        let client = Client::builder()
            .max_payload(8)
            .connect(server.addr)
            .await
            .unwrap();
        let e = client.publish("bad name", "x").await.unwrap_err();
        assert!(matches!(e, Error::InvalidName(_)));
        assert!(e.source().is_some());
        assert!(client.queue("").is_err());
        let e = client.publish("t", "123456789").await.unwrap_err();
        assert!(
            matches!(e, Error::PayloadTooLarge { size: 9, max: 8 }),
            "{e}"
        );
        assert_eq!(e.to_string(), "payload of 9 bytes is over the limit of 8");

        // nothing listens on a port we just freed
        let freed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = Client::connect(freed).await.unwrap_err();
        assert!(
            matches!(&e, Error::Connect { addr, source } if *addr == freed.to_string() && matches!(**source, Error::Io(_))),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("connecting to {freed}: i/o error")),
            "{e}"
        );
        assert!(e.source().is_some());
        assert!(e.is_retryable());
        let e = Client::connect("not an address").await.unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e}");
        for e in [
            Error::Closed,
            Error::Timeout,
            Error::StaleDelivery,
            Error::Disconnected,
        ] {
            let s = e.to_string();
            assert_eq!(s, s.to_lowercase());
            assert!(e.source().is_none());
        }
    });
}

#[test]
fn connect_timeout_applies_to_a_silent_peer() {
    // A listener that accepts (the kernel does) but never says INFO.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    smol::block_on(async {
        let e = Client::builder()
            .connect_timeout(Duration::from_millis(100))
            .connect(addr)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Connect { source, .. } if matches!(**source, Error::Timeout)),
            "{e}"
        );
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    });
}

#[test]
fn a_server_that_is_not_agora_is_named_as_such() {
    // A server that speaks first, and not Agora's INFO (an SMTP-like greeting).
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = other.accept().unwrap();
        s.write_all(b"220 mail.example ESMTP ready\r\n").unwrap();
        // Held open until the client gives up on it.
        let mut b = [0u8; 64];
        let _ = std::io::Read::read(&mut s, &mut b);
    });
    smol::block_on(async {
        let e = Client::connect(addr).await.unwrap_err();
        assert!(
            matches!(&e, Error::Connect { source, .. } if matches!(**source, Error::NotAgora { .. })),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("not an Agora broker") && text.contains("220 mail.example"),
            "{text}"
        );
        assert!(!text.contains("credentials"), "{text}");
        assert_eq!(e.kind(), agora_client::ErrorKind::Protocol);
    });
    t.join().unwrap();
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u32,
    item: String,
}

#[test]
fn typed_topics_round_trip_and_a_bad_payload_is_an_err_item() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let orders = client.typed_topic::<Order>("orders").unwrap();
        let mut sub = orders.subscribe().await.unwrap();
        let o = Order {
            id: 7,
            item: "lamp".into(),
        };
        orders.publish(&o).await.unwrap();
        orders.topic().publish("{not json").await.unwrap();
        orders
            .publish_confirmed(&Order {
                id: 8,
                item: "desk".into(),
            })
            .await
            .unwrap();
        assert_eq!(within(sub.next()).await.unwrap().unwrap(), o);
        let bad = within(sub.next()).await.unwrap().unwrap_err();
        assert!(matches!(bad, Error::Decode(_)), "{bad}");
        assert!(bad.source().is_some());
        assert_eq!(within(sub.next()).await.unwrap().unwrap().id, 8);
        assert_eq!(sub.subscription().dropped(), 0);
        within(sub.unsubscribe()).await.unwrap();

        // Untyped deliveries decode on demand too.
        let q = client.queue("typed-q").unwrap();
        q.publish_confirmed(r#"{"id":1,"item":"pen"}"#)
            .await
            .unwrap();
        let mut c = client.consume("typed-q", 1).await.unwrap();
        let d = within(c.next()).await.unwrap();
        assert_eq!(d.json::<Order>().unwrap().item, "pen");
        d.ack().await.unwrap();
    });
}

#[test]
fn typed_queues_round_trip_and_a_bad_payload_is_nacked_until_dead_lettered() {
    let server = common::start_with(agora_server::Config {
        max_deliveries: 2,
        ..agora_server::Config::ephemeral()
    });
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let jobs = client.typed_queue::<Order>("typed.jobs").unwrap();
        jobs.publish_confirmed(&Order {
            id: 1,
            item: "pen".into(),
        })
        .await
        .unwrap();
        jobs.queue().publish_confirmed("{broken").await.unwrap();
        jobs.publish(&Order {
            id: 2,
            item: "ink".into(),
        })
        .await
        .unwrap();
        let mut c = jobs.consume(4).await.unwrap();
        let first = within(c.next()).await.unwrap().unwrap();
        assert_eq!(first.value.id, 1);
        assert!(!first.delivery().redelivered());
        first.ack().await.unwrap();
        // The broken one comes out with its delivery, twice (nacked by the caller,
        // redelivered), then it reaches its max deliveries and is dead-lettered; the
        // good one gets through.
        let mut errors = 0;
        let mut good = None;
        while good.is_none() || errors < 2 {
            match within(c.next()).await.unwrap() {
                Ok(d) => {
                    assert_eq!(d.value.id, 2);
                    good = Some(d);
                }
                Err(bad) => {
                    assert_eq!(bad.delivery.payload(), "{broken");
                    assert!(bad.to_string().contains("not the expected json"), "{bad}");
                    errors += 1;
                    bad.nack().await.unwrap();
                }
            }
        }
        good.unwrap().ack().await.unwrap();
        let mut dlq = client.consume("typed.jobs.dlq", 1).await.unwrap();
        let dead = within(dlq.next()).await.unwrap();
        assert_eq!(dead.payload(), "{broken");
        dead.ack().await.unwrap();
        // An undecodable one may be acked (dropped) instead; and the consumer ends.
        jobs.queue().publish_confirmed("[]").await.unwrap();
        let bad = within(c.next()).await.unwrap().err().expect("not an Order");
        bad.ack().await.unwrap();
        c.unsubscribe().await.unwrap();
        wait_until("typed.jobs is empty, with no consumer", || async {
            let s = stats(&client).await;
            let q = dest(&s, "queue", "typed.jobs").unwrap();
            (q.depth, q.unacked, q.consumers) == (0, 0, 0)
        })
        .await;
    });
}

#[test]
fn runs_under_plain_block_on_without_smol() {
    let server = start();
    futures_lite::future::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let mut sub = client.subscribe("plain").await.unwrap();
        client.publish("plain", "no executor").await.unwrap();
        let m = within(sub.next()).await.unwrap();
        assert_eq!(m.payload(), "no executor");
        let q = client.queue("plain").unwrap();
        q.publish_confirmed("job").await.unwrap();
        let mut c = q.consume(1).await.unwrap();
        within(c.next()).await.unwrap().ack().await.unwrap();
        within(client.ping()).await.unwrap();
        within(client.close()).await.unwrap();
    });
}

#[test]
fn close_drains_queued_publishes_before_disconnect() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let q = client.queue("drain").unwrap();
        for i in 0..500 {
            q.publish(i.to_string()).await.unwrap();
        }
        within(client.close()).await.unwrap();
        let other = Client::connect(server.addr).await.unwrap();
        wait_until("all 500 publishes are in the queue", || async {
            dest(&stats(&other).await, "queue", "drain").is_some_and(|d| d.depth == 500)
        })
        .await;
    });
}

#[test]
fn fire_and_forget_and_confirmed_publishes_keep_their_order() {
    let server = start();
    smol::block_on(async {
        let reader = Client::connect(server.addr).await.unwrap();
        let mut sub = reader.subscribe("order").await.unwrap();
        let client = Client::connect(server.addr).await.unwrap();
        let t = client.topic("order").unwrap();
        // Fire-and-forget publishes are encoded by the caller into the publish buffer,
        // confirmed ones go through the driver's command queue: order must hold anyway.
        for i in 0..1000u32 {
            if i % 7 == 3 {
                within(t.publish_confirmed(i.to_string())).await.unwrap();
            } else {
                t.publish(i.to_string()).await.unwrap();
            }
        }
        for i in 0..1000u32 {
            let m = within(sub.next()).await.expect("a message");
            assert_eq!(m.payload(), i.to_string().as_bytes(), "message {i}");
        }
        within(client.flush()).await.unwrap();
        assert!(client.errors().try_next().is_none());
        assert!(sub.try_next().is_none(), "nothing more");
        within(client.close()).await.unwrap();
    });
}

/// Publishes `n` numbered messages to `queue:stream` through a client built by `b`
/// (a queue, so a fast publisher loses nothing to a slow reader), with a flush after
/// them or not, and checks `c` receives them all in order.
async fn stream_through(
    b: agora_client::ClientBuilder,
    addr: std::net::SocketAddr,
    c: &mut agora_client::Consumer,
    n: u32,
    flush: bool,
) {
    let client = b.connect(addr).await.unwrap();
    let q = client.queue("stream").unwrap();
    within(async {
        for i in 0..n {
            q.publish(i.to_string()).await.unwrap();
        }
    })
    .await;
    if flush {
        within(client.flush()).await.unwrap();
    }
    for i in 0..n {
        let m = within(c.next()).await.expect("a message");
        assert_eq!(m.payload(), i.to_string().as_bytes(), "message {i}");
    }
    within(client.close()).await.unwrap();
}

#[test]
fn a_streaming_publishers_last_publishes_go_out_after_the_linger() {
    // A stream makes the driver gather (publishes arrive while it writes): the ones at
    // the end, short of 64 KiB, must still go out, after the linger, with no flush.
    let server = start();
    smol::block_on(async {
        let reader = Client::connect(server.addr).await.unwrap();
        let mut c = reader.consume_auto_ack("stream", 256).await.unwrap();
        for threads in [
            agora_client::Threads::Shared,
            agora_client::Threads::Dedicated,
        ] {
            let b = Client::builder().threads(threads);
            stream_through(b, server.addr, &mut c, 20_000, false).await;
            let b = Client::builder()
                .threads(threads)
                .publish_linger(Duration::ZERO);
            stream_through(b, server.addr, &mut c, 20_000, false).await;
        }
        // A publish buffer smaller than what the driver gathers: a publisher at its
        // limit must wake it, with a linger that would otherwise never end.
        let b = Client::builder()
            .publish_buffer(1000)
            .publish_linger(Duration::from_secs(3600));
        stream_through(b, server.addr, &mut c, 5_000, true).await;
        assert!(c.try_next().is_none(), "nothing more");
    });
}

#[test]
fn a_publisher_waits_at_its_buffer_limit_and_nothing_is_lost() {
    use agora_protocol::bytes::BytesMut;
    use agora_protocol::{decode_client, ClientFrame};
    use std::io::{Read, Write};

    /// Reads from `s` until one frame decodes.
    fn next_frame(s: &mut std::net::TcpStream, buf: &mut BytesMut) -> ClientFrame {
        loop {
            if let Some(f) = decode_client(buf).expect("a well-formed frame") {
                return f;
            }
            let mut chunk = [0u8; 64 * 1024];
            // EINTR: a read with a timeout is not restarted after a signal (signal(7)).
            let n = match s.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.expect("read"),
            };
            assert!(n > 0, "the client closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    // A broker that greets, accepts the CONNECT and then reads nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(common::DEADLINE)).unwrap();
        s.write_all(b"INFO server=fake version=0 proto=1 max_payload=1048576 max_line=4096\r\n")
            .unwrap();
        let mut buf = BytesMut::new();
        assert!(matches!(
            next_frame(&mut s, &mut buf),
            ClientFrame::Connect(_)
        ));
        s.write_all(b"OK #0\r\n").unwrap();
        (s, buf)
    });
    smol::block_on(async {
        let client = Client::builder()
            .publish_buffer(4096)
            .connect(addr)
            .await
            .unwrap();
        let (mut s, mut buf) = peer.join().unwrap();
        let t = client.topic("t").unwrap();
        let payload = vec![b'x'; 1024];
        // Publish until one has to wait: the socket's buffers fill, then the client's
        // 4 KiB. A publish that waits has buffered nothing, so dropping it loses nothing.
        let mut done = 0u32;
        let limit = 200_000u32; // 200 MiB: far beyond any socket buffer
        while done < limit {
            match futures_lite::future::poll_once(t.publish(payload.clone())).await {
                Some(r) => {
                    r.unwrap();
                    done += 1;
                }
                None => {
                    // Pending: the driver may just be mid-write. Pending again after
                    // the driver had time to take the buffer means the socket is full.
                    let waited = futures_lite::future::or(
                        async {
                            t.publish(payload.clone()).await.unwrap();
                            true
                        },
                        async {
                            async_io::Timer::after(Duration::from_millis(200)).await;
                            false
                        },
                    )
                    .await;
                    if !waited {
                        break;
                    }
                    done += 1;
                }
            }
        }
        assert!(
            done < limit,
            "{done} publishes never waited: the buffer is not bounded"
        );
        // Now read: every publish that returned arrives, in order, then one more.
        let last = std::thread::spawn(move || {
            for i in 0..=done {
                match next_frame(&mut s, &mut buf) {
                    ClientFrame::Pub(p) => assert_eq!(p.payload.len(), 1024, "publish {i}"),
                    other => panic!("publish {i}: {other:?}"),
                }
            }
        });
        within(t.publish(payload.clone())).await.unwrap();
        last.join().expect("every publish arrived");
    });
}

#[test]
fn without_reconnect_a_lost_connection_closes_the_client() {
    let server = start();
    let addr = server.addr;
    smol::block_on(async {
        let client = Client::connect(addr).await.unwrap();
        let mut sub = client.subscribe("t").await.unwrap();
        server.stop();
        assert!(within(sub.next()).await.is_none(), "the stream ends");
        wait_until("the client is closed", || async { client.is_closed() }).await;
        assert!(matches!(client.publish("t", "x").await, Err(Error::Closed)));
    });
}

#[test]
fn reconnects_to_a_restarted_broker_resubscribes_and_refuses_stale_acks() {
    let first = start();
    let addr = first.addr;
    smol::block_on(async {
        let client = Client::builder()
            .reconnect(Reconnect::default().initial_delay(Duration::from_millis(10)))
            .connect(addr)
            .await
            .unwrap();
        let mut sub = client.subscribe("news").await.unwrap();
        let mut jobs = client.consume("jobs", 4).await.unwrap();
        client
            .queue("jobs")
            .unwrap()
            .publish_confirmed("before")
            .await
            .unwrap();
        let stale = within(jobs.next()).await.unwrap();
        assert_eq!(stale.generation(), 1);

        first.stop();
        let second = start_with(Config {
            port: addr.port(),
            ..Config::ephemeral()
        });
        wait_until("the client reconnected", || async {
            client.generation() == 2
        })
        .await;
        assert!(!client.is_closed());

        let e = stale.ack().await.unwrap_err();
        assert!(matches!(e, Error::StaleDelivery), "{e}");
        assert!(e.to_string().contains("earlier connection"));

        // The same streams go on, on the new connection.
        client.publish("news", "after").await.unwrap();
        assert_eq!(within(sub.next()).await.unwrap().payload(), "after");
        client
            .queue("jobs")
            .unwrap()
            .publish_confirmed("job 2")
            .await
            .unwrap();
        let d = within(jobs.next()).await.unwrap();
        assert_eq!(d.payload(), "job 2");
        assert_eq!(d.generation(), 2);
        d.ack().await.unwrap();
        let s = stats(&client).await;
        assert_eq!(dest(&s, "topic", "news").unwrap().consumers, 1);
        within(client.close()).await.unwrap();
        second.stop();
    });
}

#[test]
fn reconnect_gives_up_after_max_attempts() {
    let server = start();
    smol::block_on(async {
        let client = Client::builder()
            .reconnect(
                Reconnect::default()
                    .initial_delay(Duration::from_millis(1))
                    .max_delay(Duration::from_millis(5))
                    .max_attempts(Some(3)),
            )
            .connect_timeout(Duration::from_millis(500))
            .connect(server.addr)
            .await
            .unwrap();
        let mut errors = client.errors();
        server.stop();
        wait_until("the client gave up", || async { client.is_closed() }).await;
        assert!(
            within(errors.next()).await.is_none(),
            "the error stream ends"
        );
    });
}

#[test]
fn after_a_lost_connection_unacked_deliveries_come_back_redelivered() {
    let server = start();
    let proxy = common::Proxy::new(server.addr);
    smol::block_on(async {
        let producer = Client::connect(server.addr).await.unwrap();
        let client = Client::builder()
            .reconnect(Reconnect::default().initial_delay(Duration::from_millis(10)))
            .connect(proxy.addr)
            .await
            .unwrap();
        let mut jobs = client.consume("redo", 2).await.unwrap();
        let q = producer.queue("redo").unwrap();
        q.publish_confirmed("a").await.unwrap();
        q.publish_confirmed("b").await.unwrap();
        let held = [
            within(jobs.next()).await.unwrap(),
            within(jobs.next()).await.unwrap(),
        ];
        assert!(held.iter().all(|d| !d.redelivered() && d.generation() == 1));

        proxy.cut();
        let mut again = Vec::new();
        for _ in 0..2 {
            let d = within(jobs.next()).await.unwrap();
            assert!(d.redelivered(), "{:?}", d.payload());
            assert_eq!(d.delivery_count(), 2);
            assert_eq!(d.generation(), 2);
            again.push(d);
        }
        assert_eq!(client.generation(), 2);
        for d in held {
            assert!(matches!(d.ack().await, Err(Error::StaleDelivery)));
        }
        let mut payloads: Vec<_> = again.iter().map(|d| d.payload().clone()).collect();
        payloads.sort();
        assert_eq!(payloads, ["a", "b"]);
        for d in again {
            d.ack().await.unwrap();
        }
        client.flush().await.unwrap();
        queue_settles(&producer, "redo", (0, 0)).await;
        assert!(client.errors().try_next().is_none());
    });
}

#[test]
fn udp_publisher_packs_frames_into_datagrams() {
    let server = common::start();
    smol::block_on(async {
        let client = agora_client::Client::connect(server.addr).await.unwrap();
        let mut sub = client.subscribe("udp.feed").await.unwrap();
        let mut udp = agora_client::UdpPublisher::connect(server.addr)
            .await
            .unwrap()
            .max_datagram(200);
        for i in 0..20 {
            udp.publish_topic("udp.feed", format!("m{i}"))
                .await
                .unwrap();
        }
        udp.flush().await.unwrap();
        use futures_lite::StreamExt;
        for i in 0..20 {
            let m = sub.next().await.unwrap();
            assert_eq!(&m.payload()[..], format!("m{i}").as_bytes());
        }
        assert!(matches!(
            udp.publish_topic("bad name", "x").await,
            Err(agora_client::Error::InvalidName(_))
        ));
        let big = vec![0u8; 70_000];
        assert!(matches!(
            udp.publish_topic("udp.feed", big).await,
            Err(agora_client::Error::PayloadTooLarge { .. })
        ));
    });
}

/// A wildcard subscription through the SDK: each message names the topic it was
/// published to.
#[test]
fn subscribe_to_a_pattern() {
    let s = start();
    smol::block_on(within(async {
        let client = Client::connect(s.addr).await.unwrap();
        let mut sub = client.subscribe("prices.*").await.unwrap();
        assert_eq!(sub.destination().to_string(), "topic:prices.*");
        client.publish("prices.eu", "1").await.unwrap();
        client.publish("prices.us", "2").await.unwrap();
        client.publish("prices.us.east", "no").await.unwrap();
        client.publish("volumes.eu", "no").await.unwrap();
        client.flush().await.unwrap();
        let m = within(sub.next()).await.unwrap();
        assert_eq!(
            (m.destination().to_string(), m.payload().clone()),
            ("topic:prices.eu".to_owned(), "1".into())
        );
        let m = within(sub.next()).await.unwrap();
        assert_eq!(m.destination().to_string(), "topic:prices.us");
        assert!(
            client.topic("prices.*").is_err(),
            "no publishing to a pattern"
        );
        client.close().await.unwrap();
    }));
}

#[test]
fn a_queue_bound_to_a_pattern_keeps_matching_messages_for_a_later_consumer() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        client.bind("alerts", "sensors.*.alarm").await.unwrap();
        let t = client.topic("sensors.kitchen.alarm").unwrap();
        t.publish_confirmed("smoke").await.unwrap();
        client
            .topic("sensors.kitchen.temp")
            .unwrap()
            .publish_confirmed("21")
            .await
            .unwrap();
        let mut later = client.consume("alerts", 4).await.unwrap();
        let d = within(later.next()).await.unwrap();
        assert_eq!(&d.payload()[..], b"smoke");
        assert_eq!(d.destination().to_string(), "queue:alerts");
        d.ack().await.unwrap();
        client.unbind("alerts", "sensors.*.alarm").await.unwrap();
        let again = client
            .unbind("alerts", "sensors.*.alarm")
            .await
            .unwrap_err();
        assert_eq!(again.code(), Some(ErrorCode::UnknownDestination), "{again}");
        assert!(client.bind("alerts", "bad*").await.is_err());
    });
}

#[test]
fn typed_stats_carry_wildcards_bindings_and_unlisted_topics() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let _w = client.subscribe("dev.*.temp").await.unwrap();
        client.bind("temps", "dev.>").await.unwrap();
        client
            .topic("dev.d1.temp")
            .unwrap()
            .publish_confirmed("20")
            .await
            .unwrap();
        let s = stats(&client).await;
        assert_eq!(s.wildcards.patterns[0].pattern, "topic:dev.*.temp");
        assert_eq!(s.bindings.queues[0].queue, "temps");
        assert_eq!(s.bindings.queues[0].patterns, ["topic:dev.>"]);
        assert_eq!(s.unlisted_topics.messages_in, 1);
    });
}

#[test]
fn nack_with_a_delay_or_to_the_dead_letters() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let q = client.queue("flaky").unwrap();
        q.publish_confirmed("retry me").await.unwrap();
        q.publish_confirmed("poison").await.unwrap();
        let mut work = client.consume("flaky", 2).await.unwrap();
        let first = within(work.next()).await.unwrap();
        let second = within(work.next()).await.unwrap();
        first
            .nack_with(agora_client::Nack::Delay(Duration::from_millis(5)))
            .await
            .unwrap();
        second
            .nack_with(agora_client::Nack::DeadLetter)
            .await
            .unwrap();
        let again = within(work.next()).await.unwrap();
        assert_eq!(again.payload(), "retry me");
        assert!(again.redelivered());
        again.ack().await.unwrap();
        let mut dead = client.consume("flaky.dlq", 1).await.unwrap();
        let d = within(dead.next()).await.unwrap();
        assert_eq!(d.payload(), "poison");
        assert_eq!(
            d.headers().get("agora-dead-letter-reason"),
            Some("rejected")
        );
        d.ack().await.unwrap();
    });
}

/// What a consumer buffered and the application never took goes back without counting
/// as a delivery (`HOLD`, then `NACK … unseen`, then `UNSUB`): only the one it took
/// counts.
#[test]
fn what_a_consumer_buffered_and_never_took_goes_back_uncounted() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let q = client.queue("batch").unwrap();
        for i in 0..5 {
            q.publish_confirmed(format!("{i}")).await.unwrap();
        }
        for round in 0..2 {
            let mut first = client.consume("batch", 5).await.unwrap();
            let seen = within(first.next()).await.unwrap();
            wait_until("the others are buffered here", || async {
                first.buffered() == 4 - round
            })
            .await;
            seen.ack().await.unwrap();
            // Given back by unsubscribe(), then by drop.
            match round {
                0 => first.unsubscribe().await.unwrap(),
                _ => drop(first),
            }
        }
        // The three never seen come back as first deliveries.
        let mut second = client.consume("batch", 5).await.unwrap();
        for _ in 0..3 {
            let d = within(second.next()).await.unwrap();
            assert_eq!(d.delivery_count(), 1, "{:?}", d.payload());
            d.ack().await.unwrap();
        }
    });
}
