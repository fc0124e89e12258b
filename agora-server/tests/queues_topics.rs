//! Queue and topic semantics over real sockets.

mod common;

use std::collections::HashSet;

use agora_protocol::{ErrorCode, ServerFrame};
use agora_server::{Config, SlowConsumerPolicy};
use common::*;

/// Reads `n` deliveries; returns (payload as number, delivery) pairs.
fn take(c: &mut Raw, n: usize) -> Vec<(u64, agora_protocol::Delivery)> {
    (0..n)
        .map(|_| match c.next() {
            ServerFrame::Msg(m) => (String::from_utf8_lossy(&m.payload).parse().unwrap(), m),
            f => panic!("expected MSG, got {f:?}"),
        })
        .collect()
}

#[test]
fn queue_delivers_each_message_exactly_once_and_shares_the_load() {
    const N: usize = 4;
    const M: u64 = 4000;
    let s = start();
    let mut consumers: Vec<Raw> = (0..N)
        .map(|i| {
            let mut c = s.connect();
            c.send(format!("SUB #1 queue:work {i} ack=auto prefetch=16\r\n").as_bytes());
            assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
            c
        })
        .collect();
    let mut p = s.connect();
    let mut batch = Vec::new();
    for i in 0..M {
        let body = i.to_string();
        batch.extend_from_slice(format!("PUB queue:work {}\r\n{body}\r\n", body.len()).as_bytes());
    }
    p.send(&batch);
    // Read from all consumers until every message is seen, without assuming a split.
    let mut seen = HashSet::new();
    let mut per = [0u64; N];
    let mut dup = 0;
    for c in &mut consumers {
        c.stream.set_nonblocking(false).unwrap();
    }
    let end = std::time::Instant::now() + DEADLINE;
    while (seen.len() as u64) < M {
        assert!(
            std::time::Instant::now() < end,
            "only {} of {M} delivered",
            seen.len()
        );
        for (i, c) in consumers.iter_mut().enumerate() {
            c.send(b"PINGREQ #0\r\n");
            loop {
                match c.next() {
                    ServerFrame::PingResp { .. } => break,
                    ServerFrame::Msg(m) => {
                        let n: u64 = String::from_utf8_lossy(&m.payload).parse().unwrap();
                        if !seen.insert(n) {
                            dup += 1;
                        }
                        per[i] += 1;
                    }
                    f => panic!("{f:?}"),
                }
            }
        }
    }
    assert_eq!(dup, 0, "a message was delivered twice");
    assert_eq!(seen.len() as u64, M);
    // Round-robin under credit: every consumer has its prefetch (16) of credit when the
    // first publishes arrive, so each gets at least that many. How the rest splits
    // depends on how fast each one's writes go (auto-ack returns credit on write),
    // which the protocol leaves open.
    for (i, n) in per.iter().enumerate() {
        assert!(*n >= 16, "consumer {i} got only {n} of {M}: {per:?}");
    }
}

#[test]
fn an_auto_ack_consumer_that_unsubscribes_mid_stream_causes_no_duplicates() {
    // What an auto-ack consumer was written before its UNSUB is its own; only what was
    // never written goes to the next consumer. The first consumer does not read, so its
    // shipper is stuck in the middle of a batch when the UNSUB arrives.
    const M: u64 = 20_000;
    let s = start();
    let mut p = s.connect();
    let q = "queue:handover";
    let mut a = s.connect();
    a.send(format!("SUB #1 {q} 1 ack=auto prefetch=1024\r\n").as_bytes());
    assert_eq!(a.next(), ServerFrame::Ok { rid: Some(1) });
    let pad = "x".repeat(1000);
    let mut batch = Vec::new();
    for i in 0..M {
        let body = format!("{i} {pad}");
        batch.extend_from_slice(format!("PUB {q} {}\r\n{body}\r\n", body.len()).as_bytes());
    }
    p.send(&batch);
    assert!(p.sync(1).is_empty());
    let num = |m: &agora_protocol::Delivery| -> u64 {
        let t = String::from_utf8_lossy(&m.payload);
        t.split(' ').next().unwrap().parse().unwrap()
    };
    // Wait until megabytes went A's way and the queue holds a full prefetch
    // for it: A's socket buffers are full and its shipper waits in a write.
    let mut stats = s.connect();
    wait_until("the first consumer's socket to fill", || {
        let st = stats.stats();
        let d = dest_stats(&st, "queue", "handover").unwrap();
        d["depth"].as_u64().unwrap() < M - 4000 && d["unacked"].as_u64().unwrap() == 1024
    });
    a.send(b"UNSUB #2 1\r\n");
    let mut seen = HashSet::new();
    loop {
        match a.next() {
            ServerFrame::Ok { rid: Some(2) } => break,
            ServerFrame::Msg(m) => assert!(seen.insert(num(&m)), "twice to the first consumer"),
            f => panic!("{f:?}"),
        }
    }
    let first = seen.len();
    let mut b = s.connect();
    b.send(format!("SUB #1 {q} 1 ack=auto prefetch=1024\r\n").as_bytes());
    assert_eq!(b.next(), ServerFrame::Ok { rid: Some(1) });
    while (seen.len() as u64) < M {
        match b.next() {
            ServerFrame::Msg(m) => {
                let n = num(&m);
                assert!(
                    seen.insert(n),
                    "{n} went to both consumers (the first got {first} of {M})"
                );
            }
            f => panic!("{f:?}"),
        }
    }
    assert!(b.sync(9).is_empty(), "more than {M} deliveries");
}

#[test]
fn unacked_messages_of_a_closed_consumer_are_redelivered_to_another() {
    let s = start();
    let mut p = s.connect();
    for i in 0..10u64 {
        publish(&mut p, "queue:jobs", i.to_string().as_bytes());
    }
    let mut a = s.connect();
    a.send(b"SUB queue:jobs 1 prefetch=4\r\n");
    assert_eq!(a.next(), ServerFrame::Ok { rid: None });
    let held: Vec<u64> = take(&mut a, 4).into_iter().map(|(n, _)| n).collect();
    let mut b = s.connect();
    b.send(b"SUB queue:jobs 2 prefetch=100\r\n");
    assert_eq!(b.next(), ServerFrame::Ok { rid: None });
    // b gets the 6 that a could not take.
    let first = take(&mut b, 6);
    assert!(first.iter().all(|(_, m)| m.count == 1));
    drop(a); // vanishes with 4 unacked
    let again = take(&mut b, 4);
    let mut got: Vec<u64> = again.iter().map(|(n, _)| *n).collect();
    got.sort_unstable();
    assert_eq!(got, held);
    for (_, m) in &again {
        assert!(m.redelivered(), "flagged redelivered");
        assert_eq!(m.count, 2);
    }
    for (_, m) in first.iter().chain(&again) {
        b.send(format!("ACK {}\r\n", m.did).as_bytes());
    }
    assert!(b.sync(5).is_empty());
    wait_until("queue emptied", || {
        let st = b.stats();
        let q = dest_stats(&st, "queue", "jobs").unwrap().clone();
        q["depth"] == 0 && q["unacked"] == 0
    });
}

#[test]
fn unsubscribe_gives_unacked_messages_back() {
    let s = start();
    let mut a = s.connect();
    for i in 0..3u64 {
        publish(&mut a, "queue:u", i.to_string().as_bytes());
    }
    a.send(b"SUB queue:u 1 prefetch=10\r\n");
    assert_eq!(a.next(), ServerFrame::Ok { rid: None });
    take(&mut a, 3);
    a.send(b"UNSUB #2 1\r\n");
    // Any deliveries still in flight are fine; the OK must come.
    loop {
        match a.next() {
            ServerFrame::Ok { rid: Some(2) } => break,
            ServerFrame::Msg(_) => {}
            f => panic!("{f:?}"),
        }
    }
    let mut b = s.connect();
    b.send(b"SUB queue:u 1 prefetch=10 ack=auto\r\n");
    assert_eq!(b.next(), ServerFrame::Ok { rid: None });
    let got = take(&mut b, 3);
    assert!(got.iter().all(|(_, m)| m.redelivered()));
}

#[test]
fn poison_message_nacked_repeatedly_keeps_counting() {
    let s = start();
    let mut c = s.connect();
    publish(&mut c, "queue:poison", b"bad");
    c.send(b"SUB queue:poison 1 prefetch=1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: None });
    for n in 1..=5u32 {
        let ServerFrame::Msg(m) = c.next() else {
            panic!()
        };
        assert_eq!(m.count, n);
        c.send(format!("NACK {}\r\n", m.did).as_bytes());
    }
}

#[test]
fn topic_subscribers_each_get_every_message_in_order() {
    const N: usize = 5;
    const M: u64 = 2000;
    let s = start();
    let mut subs: Vec<Raw> = (0..N)
        .map(|i| {
            let mut c = s.connect();
            c.send(format!("SUB #1 topic:prices {i}\r\n").as_bytes());
            assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
            c
        })
        .collect();
    let mut p = s.connect();
    let mut batch = Vec::new();
    for i in 0..M {
        let body = i.to_string();
        batch
            .extend_from_slice(format!("PUB topic:prices {}\r\n{body}\r\n", body.len()).as_bytes());
    }
    p.send(&batch);
    for c in &mut subs {
        let got: Vec<u64> = take(c, M as usize).into_iter().map(|(n, _)| n).collect();
        assert_eq!(got, (0..M).collect::<Vec<_>>());
    }
}

#[test]
fn runs_of_publishes_keep_order_across_destinations_commands_and_a_leaving_client() {
    let s = start();
    let mut a = s.connect();
    a.send(b"SUB #1 topic:a 1\r\n");
    assert_eq!(a.next(), ServerFrame::Ok { rid: Some(1) });
    let mut b = s.connect();
    b.send(b"SUB #1 topic:b 1\r\n");
    assert_eq!(b.next(), ServerFrame::Ok { rid: Some(1) });
    let pub_a = |n: u64| format!("PUB topic:a {}\r\n{n}\r\n", n.to_string().len());
    // One write: a run to a, one to b, more to a, a SUB of the publisher's own, a
    // publish it must then receive, and the publisher leaving right after.
    let mut p = s.connect();
    let mut w = String::new();
    (0..100).for_each(|n| w.push_str(&pub_a(n)));
    w.push_str("PUB topic:b 1\r\nb\r\n");
    (100..200).for_each(|n| w.push_str(&pub_a(n)));
    w.push_str("SUB #5 topic:c 9\r\nPUB topic:c 4\r\nself\r\n");
    (200..300).for_each(|n| w.push_str(&pub_a(n)));
    w.push_str("DISCONNECT\r\n");
    p.send(w.as_bytes());
    let got: Vec<u64> = take(&mut a, 300).into_iter().map(|(n, _)| n).collect();
    assert_eq!(got, (0..300).collect::<Vec<_>>());
    let ServerFrame::Msg(m) = b.next() else {
        panic!()
    };
    assert_eq!(&m.payload[..], b"b");
    let rest = p.expect_closed();
    assert_eq!(rest[0], ServerFrame::Ok { rid: Some(5) }, "{rest:?}");
    assert!(
        matches!(&rest[1], ServerFrame::Msg(m) if &m.payload[..] == b"self"),
        "{rest:?}"
    );
    // A client that writes a run and closes at once: the run is delivered all the same.
    let mut q = s.connect();
    let mut w = String::new();
    (300..700).for_each(|n| w.push_str(&pub_a(n)));
    q.send(w.as_bytes());
    drop(q);
    let got: Vec<u64> = take(&mut a, 400).into_iter().map(|(n, _)| n).collect();
    assert_eq!(got, (300..700).collect::<Vec<_>>());
}

#[test]
fn topic_message_goes_only_to_current_subscribers() {
    let s = start();
    let mut p = s.connect();
    publish(&mut p, "topic:late", b"before");
    // Only once the broker has answered a later request is "before" surely published
    // (the connections are independent: without this, c's SUB could be acted on first).
    assert!(p.sync(1).is_empty());
    let mut c = s.connect();
    c.send(b"SUB #1 topic:late 1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    publish(&mut p, "topic:late", b"after");
    let ServerFrame::Msg(m) = c.next() else {
        panic!()
    };
    assert_eq!(&m.payload[..], b"after");
}

/// One subscriber stops reading; the others still get everything.
fn stalled_subscriber(policy: SlowConsumerPolicy) -> (TestServer, Raw, serde_json::Value) {
    let s = start_with(Config {
        subscriber_buffer: 64,
        slow_consumer: policy,
        ..Config::ephemeral()
    });
    let mut stalled = s.connect();
    stalled.send(b"SUB #1 topic:fast 1\r\n");
    assert_eq!(stalled.next(), ServerFrame::Ok { rid: Some(1) });
    let mut live: Vec<Raw> = (0..2)
        .map(|_| {
            let mut c = s.connect();
            c.send(b"SUB #1 topic:fast 1\r\n");
            assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
            c
        })
        .collect();
    let payload = vec![b'x'; 1024];
    let mut p = s.connect();
    // Far more than the stalled client's socket buffers and subscriber buffer hold.
    const M: usize = 20_000;
    let mut counts = [0usize; 2];
    // Bursts smaller than the buffer, each read by the live subscribers before the
    // next: they never fall behind, the stalled one falls further every round.
    const BURST: usize = 32;
    for round in 0..(M / BURST) {
        let mut batch = Vec::new();
        for _ in 0..BURST {
            batch.extend_from_slice(b"PUB topic:fast 1024\r\n");
            batch.extend_from_slice(&payload);
            batch.extend_from_slice(b"\r\n");
        }
        p.send(&batch);
        for (i, c) in live.iter_mut().enumerate() {
            while counts[i] < (round + 1) * BURST {
                match c.next() {
                    ServerFrame::Msg(_) => counts[i] += 1,
                    f => panic!("{f:?}"),
                }
            }
        }
    }
    assert_eq!(counts, [M, M], "live subscribers got everything");
    let st = p.stats();
    (s, stalled, st)
}

#[test]
fn slow_subscriber_drop_oldest_is_counted_and_isolated() {
    let (_s, _stalled, st) = stalled_subscriber(SlowConsumerPolicy::DropOldest);
    let t = dest_stats(&st, "topic", "fast").unwrap();
    assert!(t["dropped"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["consumers"], 3);
}

#[test]
fn slow_subscriber_disconnect_policy_cancels_it() {
    let (_s, mut stalled, st) = stalled_subscriber(SlowConsumerPolicy::Disconnect);
    let t = dest_stats(&st, "topic", "fast").unwrap();
    assert_eq!(t["consumers"], 2, "{t}");
    // Somewhere after what it had buffered, the stalled client is told why.
    let mut seen = 0;
    loop {
        match stalled.next() {
            ServerFrame::Msg(_) => seen += 1,
            ServerFrame::Cancel { sid, code, .. } => {
                assert_eq!((sid, code), (1, ErrorCode::SlowConsumer));
                break;
            }
            f => panic!("{f:?}"),
        }
        assert!(seen < 20_000);
    }
    // Nothing more for that subscription follows its CANCEL, and its id is free again.
    let after = stalled.sync(7);
    assert!(
        after.iter().all(|f| !matches!(f, ServerFrame::Msg(_))),
        "{after:?}"
    );
    stalled.send(b"SUB #8 topic:fast 1\r\n");
    assert_eq!(stalled.next(), ServerFrame::Ok { rid: Some(8) });
}

#[test]
fn every_ablation_still_delivers_everything() {
    use agora_server::Ablation;
    let all = [
        Ablation {
            no_batching: true,
            ..Ablation::default()
        },
        Ablation {
            copy_fanout: true,
            ..Ablation::default()
        },
        Ablation {
            no_defences: true,
            ..Ablation::default()
        },
        Ablation {
            no_metrics: true,
            ..Ablation::default()
        },
        Ablation {
            no_publish_batching: true,
            ..Ablation::default()
        },
    ];
    for ablation in all {
        let s = start_with(Config {
            ablation,
            queue_channel: 16,
            ..Config::ephemeral()
        });
        let mut subs: Vec<Raw> = (0..2)
            .map(|_| {
                let mut c = s.connect();
                c.send(b"SUB #1 topic:a 1\r\nSUB #2 queue:a 2 ack=auto\r\n");
                assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
                assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) });
                c
            })
            .collect();
        let mut p = s.connect();
        let mut batch = Vec::new();
        for i in 0..300u64 {
            let body = i.to_string();
            batch.extend_from_slice(format!("PUB topic:a {}\r\n{body}\r\n", body.len()).as_bytes());
            batch.extend_from_slice(format!("PUB queue:a {}\r\n{body}\r\n", body.len()).as_bytes());
        }
        p.send(&batch);
        let mut queue_seen = HashSet::new();
        for c in &mut subs {
            let mut topic = Vec::new();
            while topic.len() < 300 {
                match c.next() {
                    ServerFrame::Msg(m) if m.sid == 1 => {
                        topic.push(String::from_utf8_lossy(&m.payload).parse::<u64>().unwrap())
                    }
                    ServerFrame::Msg(m) => assert!(
                        queue_seen.insert(m.payload.clone()),
                        "{ablation:?}: duplicate"
                    ),
                    f => panic!("{f:?}"),
                }
            }
            assert_eq!(topic, (0..300).collect::<Vec<_>>(), "{ablation:?}");
        }
        // The rest of the queue's share arrives too: each message exactly once.
        let end = std::time::Instant::now() + DEADLINE;
        while queue_seen.len() < 300 {
            assert!(
                std::time::Instant::now() < end,
                "{ablation:?}: {} of 300",
                queue_seen.len()
            );
            for c in &mut subs {
                for f in c.sync(9) {
                    match f {
                        ServerFrame::Msg(m) => assert!(queue_seen.insert(m.payload.clone())),
                        f => panic!("{f:?}"),
                    }
                }
            }
        }
    }
}

/// An auto-ack consumer that leaves (end of stream) while the broker is writing to it:
/// what was written to it is gone from the queue, and none of it is delivered again.
/// The queue must hear of the end from the consumer's shipper, after its last write
/// report; told first, it gave deliveries being written at that moment to the next
/// consumer as well (duplicates in about one bench run in five).
#[test]
fn an_auto_ack_consumer_that_leaves_mid_stream_gets_nothing_delivered_twice() {
    const M: usize = 3000;
    let s = start();
    for round in 0..10 {
        let q = format!("queue:leaving{round}");
        let mut p = s.connect();
        let mut w = String::new();
        for n in 0..M {
            w.push_str(&format!("PUB {q} {}\r\n{n}\r\n", n.to_string().len()));
        }
        p.send(w.as_bytes());
        assert!(p.sync(1).is_empty());
        let mut a = s.connect();
        a.send(format!("SUB #1 {q} 1 ack=auto prefetch=1000\r\n").as_bytes());
        assert_eq!(a.next(), ServerFrame::Ok { rid: Some(1) });
        let mut seen_a: HashSet<u64> = take(&mut a, 50).into_iter().map(|(n, _)| n).collect();
        a.stream.shutdown(std::net::Shutdown::Write).unwrap();
        for f in a.expect_closed() {
            if let ServerFrame::Msg(m) = f {
                seen_a.insert(String::from_utf8_lossy(&m.payload).parse().unwrap());
            }
        }
        let mut b = s.connect();
        b.send(format!("SUB #1 {q} 1 ack=auto prefetch=1000\r\n").as_bytes());
        assert_eq!(b.next(), ServerFrame::Ok { rid: Some(1) });
        for (n, _) in take(&mut b, M - seen_a.len()) {
            assert!(
                !seen_a.contains(&n),
                "round {round}: message {n} delivered twice"
            );
        }
        let more = b.sync(2).len();
        assert_eq!(
            more, 0,
            "round {round}: {more} deliveries more than were sent"
        );
    }
}

/// `NACK <did> delay=…` holds the message back (counted in the depth, delivered to
/// nobody) until it is due; `NACK <did> dlq` sends it to the dead-letter queue at once,
/// its reason `rejected`; an unknown option is `bad_args`.
#[test]
fn nack_options_hold_a_message_back_or_dead_letter_it() {
    let s = start();
    let mut p = s.connect();
    for body in [b"a", b"b"] {
        publish(&mut p, "queue:retry", body);
    }
    assert!(p.sync(1).is_empty());
    let mut c = s.connect();
    c.send(b"SUB #2 queue:retry 1 prefetch=10\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) });
    let take = |c: &mut Raw| match c.next() {
        ServerFrame::Msg(m) => m,
        f => panic!("expected MSG, got {f:?}"),
    };
    let (a, b) = (take(&mut c), take(&mut c));
    c.send(format!("NACK #3 {} delay=60m\r\nNACK #4 {} dlq\r\n", a.did, b.did).as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(4) });
    // Held back: in the depth, not out, and nothing comes.
    assert!(c.sync(5).is_empty());
    let st = c.stats();
    let q = dest_stats(&st, "queue", "retry").unwrap();
    assert_eq!(
        (q["depth"].as_u64(), q["unacked"].as_u64()),
        (Some(1), Some(0)),
        "{q}"
    );
    // Dead-lettered at once, saying why.
    let mut dlq = s.connect();
    dlq.send(b"SUB #6 queue:retry.dlq 6\r\n");
    assert_eq!(dlq.next(), ServerFrame::Ok { rid: Some(6) });
    let dead = take(&mut dlq);
    assert_eq!(&dead.payload[..], b"b");
    assert_eq!(
        dead.headers.get("agora-dead-letter-reason"),
        Some("rejected")
    );
    // A short delay: it comes back, redelivered.
    publish(&mut p, "queue:retry", b"c");
    let c2 = take(&mut c);
    c.send(format!("NACK #7 {} delay=1ms\r\n", c2.did).as_bytes());
    // The redelivery (1 ms later) may come before the OK or after it.
    let (first, second) = (c.next(), c.next());
    let (ok, again) = match (first, second) {
        (ServerFrame::Msg(m), ok) | (ok, ServerFrame::Msg(m)) => (ok, m),
        other => panic!("expected OK #7 and a MSG, got {other:?}"),
    };
    assert_eq!(ok, ServerFrame::Ok { rid: Some(7) });
    assert_eq!((&again.payload[..], again.count), (&b"c"[..], 2));
    // Options that are not.
    for bad in ["delay=0s", "delay=2h", "delay=5", "later"] {
        c.send(format!("NACK #8 {} {bad}\r\n", again.did).as_bytes());
        let why = c.expect_err(ErrorCode::BadArgs);
        assert!(
            why.contains("NACK") || why.contains("delay="),
            "{bad}: {why}"
        );
    }
}
