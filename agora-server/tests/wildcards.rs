//! Wildcard topic subscriptions over real sockets: `*` one token, `>` one or more, the
//! concrete topic named in each delivery, overlapping subscriptions delivered once
//! each, `>` at the root not reaching the broker's `$` names, unsubscribing, refused
//! patterns, chains on concrete names running once, STATS, and the rights of a user.

mod common;

use std::time::Duration;

use agora_protocol::{ErrorCode, ServerFrame};
use agora_server::Config;
use common::*;

/// The deliveries before the answer to a ping: (sid, topic, payload).
fn deliveries(c: &mut Raw, rid: u64) -> Vec<(u64, String, String)> {
    c.sync(rid)
        .into_iter()
        .map(|f| match f {
            ServerFrame::Msg(m) => (
                m.sid,
                m.dest.to_string(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            ),
            f => panic!("expected MSG, got {f:?}"),
        })
        .collect()
}

/// Publishes, then waits (a ping on the publisher) until the broker has taken them.
fn publish_all(p: &mut Raw, msgs: &[(&str, &str)]) {
    for (topic, body) in msgs {
        publish(p, &format!("topic:{topic}"), body.as_bytes());
    }
    assert!(p.sync(999).is_empty());
}

fn sorted(mut v: Vec<(u64, String, String)>) -> Vec<(u64, String, String)> {
    v.sort();
    v
}

fn d(sid: u64, topic: &str, body: &str) -> (u64, String, String) {
    (sid, format!("topic:{topic}"), body.to_owned())
}

#[test]
fn star_is_one_token_and_rest_is_one_or_more() {
    let s = start();
    let mut sub = s.connect();
    sub.send(b"SUB #1 topic:sensors.*.temp 1\r\nSUB #2 topic:sensors.> 2\r\nSUB #3 topic:sensors.a.temp 3\r\n");
    for rid in 1..=3 {
        assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(rid) });
    }
    let mut p = s.connect();
    publish_all(
        &mut p,
        &[
            ("sensors.a.temp", "1"),
            ("sensors.b.temp", "2"),
            ("sensors.a", "3"),
            ("sensors", "4"),
            ("sensors.a.b.temp", "5"),
            ("other.a.temp", "6"),
        ],
    );
    // Each delivery names the topic it was published to.
    let want = vec![
        d(1, "sensors.a.temp", "1"),
        d(1, "sensors.b.temp", "2"),
        d(2, "sensors.a", "3"),
        d(2, "sensors.a.b.temp", "5"),
        d(2, "sensors.a.temp", "1"),
        d(2, "sensors.b.temp", "2"),
        d(3, "sensors.a.temp", "1"),
    ];
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.extend(deliveries(&mut sub, 10 + got.len() as u64));
    }
    assert_eq!(sorted(got), want);
    assert!(deliveries(&mut sub, 99).is_empty(), "nothing more");
}

#[test]
fn overlapping_subscriptions_each_get_the_message() {
    let s = start();
    let mut sub = s.connect();
    sub.send(b"SUB #1 topic:a.* 1\r\nSUB #2 topic:a.> 2\r\nSUB #3 topic:> 3\r\n");
    for rid in 1..=3 {
        assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(rid) });
    }
    let mut p = s.connect();
    publish_all(&mut p, &[("a.b", "x")]);
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(deliveries(&mut sub, 10 + got.len() as u64));
    }
    assert_eq!(
        sorted(got),
        vec![d(1, "a.b", "x"), d(2, "a.b", "x"), d(3, "a.b", "x")]
    );
}

#[test]
fn rest_at_the_root_does_not_reach_the_brokers_names() {
    let mut config = Config::ephemeral();
    config.metrics_interval = Duration::from_millis(20);
    let s = start_with(config);
    let mut sub = s.connect();
    sub.send(b"SUB #1 topic:> 1\r\nSUB #2 topic:$sys.metrics 2\r\n");
    for rid in 1..=2 {
        assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(rid) });
    }
    // Three metric reports reach the subscription that names them; none the other.
    let mut reports = 0;
    while reports < 3 {
        match sub.next() {
            ServerFrame::Msg(m) if m.sid == 2 => reports += 1,
            f => panic!("only the explicit subscription hears the broker: {f:?}"),
        }
    }
}

#[test]
fn unsubscribing_a_wildcard_stops_its_deliveries() {
    let s = start();
    let mut sub = s.connect();
    sub.send(b"SUB #1 topic:t.* 1\r\n");
    assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(1) });
    let mut p = s.connect();
    publish_all(&mut p, &[("t.a", "1")]);
    let mut got = Vec::new();
    while got.is_empty() {
        got = deliveries(&mut sub, 2);
    }
    assert_eq!(got, vec![d(1, "t.a", "1")]);
    sub.send(b"UNSUB #3 1\r\n");
    assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(3) });
    publish_all(&mut p, &[("t.a", "2")]);
    assert!(deliveries(&mut sub, 4).is_empty());
    assert_eq!(sub.stats()["wildcards"]["total"], 0);
}

#[test]
fn bad_patterns_are_refused() {
    let s = start();
    let mut c = s.connect();
    for bad in [
        "SUB #1 topic:sens* 1",
        "SUB #1 topic:a..* 1",
        "SUB #1 topic:.a.* 1",
        "SUB #1 topic:*. 1",
        "SUB #1 topic:a.>.b 1",
        "SUB #1 topic:a.*b 1",
        "SUB #1 queue:jobs.* 1",
        "PUB #1 topic:a.* 1",
        "PUB #1 topic:> 1",
    ] {
        c.send(format!("{bad}\r\n").as_bytes());
        if bad.starts_with("PUB") {
            c.send(b"x\r\n");
        }
        let why = c.expect_err(ErrorCode::BadName);
        assert!(!why.is_empty(), "{bad}");
    }
    assert!(c.sync(2).is_empty(), "the connection goes on");
}

#[test]
fn a_chain_on_a_concrete_topic_runs_once_for_every_subscription() {
    let s = start();
    let mut admin = s.connect();
    admin.send(b"CHAIN #1 SET topic:room.a 8\r\nsample 2\r\n");
    assert_eq!(admin.next(), ServerFrame::Ok { rid: Some(1) });
    let mut sub = s.connect();
    sub.send(b"SUB #1 topic:room.* 1\r\nSUB #2 topic:room.a 2\r\n");
    for rid in 1..=2 {
        assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(rid) });
    }
    let mut p = s.connect();
    let msgs: Vec<(&str, String)> = (0..10).map(|i| ("room.a", i.to_string())).collect();
    let msgs: Vec<(&str, &str)> = msgs.iter().map(|(t, b)| (*t, b.as_str())).collect();
    publish_all(&mut p, &msgs);
    let mut got = Vec::new();
    while got.len() < 10 {
        got.extend(deliveries(&mut sub, 10 + got.len() as u64));
    }
    // `sample 2` kept every second message, once: both subscriptions got the same five.
    let bodies = |sid| {
        got.iter()
            .filter(|(s, _, _)| *s == sid)
            .map(|(_, _, b)| b.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(bodies(1), vec!["0", "2", "4", "6", "8"]);
    assert_eq!(bodies(2), bodies(1));
    let st = admin.stats();
    assert_eq!(dest_stats(&st, "topic", "room.a").unwrap()["filtered"], 5);
}

#[test]
fn stats_lists_wildcard_patterns() {
    let s = start();
    let mut sub = s.connect();
    sub.send(b"SUB #1 topic:a.* 1\r\nSUB #2 topic:a.* 2\r\nSUB #3 topic:b.> 3\r\n");
    for rid in 1..=3 {
        assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(rid) });
    }
    let w = sub.stats()["wildcards"].clone();
    assert_eq!(w["total"], 2, "{w}");
    assert_eq!(w["patterns"][0]["pattern"], "topic:a.*");
    assert_eq!(w["patterns"][0]["subscriptions"], 2);
    assert_eq!(w["patterns"][1]["pattern"], "topic:b.>");
    // A connection that leaves takes its wildcard subscriptions with it.
    drop(sub);
    let mut c = s.connect();
    wait_until("the subscriptions were let go", || {
        c.stats()["wildcards"]["total"] == 0
    });
}

/// 100,000 per-device topics under one wildcard subscription, on a broker limited to
/// 10 destinations: every message arrives, naming its device's topic; none of the
/// names becomes a destination (a topic with no subscriber of its own and no chain is
/// not one), and STATS counts them together as unlisted topics.
#[test]
fn a_hundred_thousand_device_topics_under_one_wildcard_stay_within_the_limits() {
    let mut config = Config::ephemeral();
    config.max_destinations = 10;
    let s = start_with(config);
    let mut sub = s.connect();
    sub.send(b"SUB #1 topic:devices.*.temp 1\r\n");
    assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(1) });
    let mut p = s.connect();
    const N: usize = 100_000;
    let reader = std::thread::spawn(move || {
        let mut seen = vec![false; N];
        for _ in 0..N {
            match sub.next() {
                ServerFrame::Msg(m) => {
                    let name = m.dest.name.as_str().to_owned();
                    let i: usize = name
                        .strip_prefix("devices.d")
                        .and_then(|r| r.strip_suffix(".temp"))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("{name}"));
                    assert_eq!(&m.payload[..], i.to_string().as_bytes());
                    assert!(!seen[i], "{name} twice");
                    seen[i] = true;
                }
                f => panic!("expected MSG, got {f:?}"),
            }
        }
        sub
    });
    for chunk in 0..N / 1000 {
        let mut b = Vec::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            let body = i.to_string();
            b.extend_from_slice(
                format!("PUB topic:devices.d{i}.temp {}\r\n{body}\r\n", body.len()).as_bytes(),
            );
        }
        p.send(&b);
        assert!(p.sync(chunk as u64).is_empty(), "no publish refused");
    }
    let mut sub = reader.join().unwrap();
    let st = p.stats();
    // (The broker's own $sys.metrics topic may be one.)
    let listed = st["destinations"].as_array().unwrap();
    assert!(
        listed.iter().all(|d| d["name"] != "devices" && !d["name"].as_str().unwrap().starts_with("devices.")),
        "no device topic is a destination: {listed:?}"
    );
    let before = st["page"]["total"].as_u64().unwrap();
    assert!(before <= 1, "{st}");
    assert_eq!(st["unlisted_topics"]["messages_in"], N as u64);
    assert_eq!(st["unlisted_topics"]["messages_out"], N as u64);
    // A subscriber of one device's own makes that topic a destination, and the
    // publisher's next message reaches it and the wildcard both.
    let mut own = s.connect();
    own.send(b"SUB #2 topic:devices.d7.temp 2\r\n");
    assert_eq!(own.next(), ServerFrame::Ok { rid: Some(2) });
    publish(&mut p, "topic:devices.d7.temp", b"again");
    for c in [&mut own, &mut sub] {
        match c.next() {
            ServerFrame::Msg(m) => assert_eq!(&m.payload[..], b"again"),
            f => panic!("{f:?}"),
        }
    }
    assert_eq!(p.stats()["page"]["total"].as_u64(), Some(before + 1));
}
