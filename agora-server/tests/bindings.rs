//! Queues bound to topic names and patterns (`BIND`, `UNBIND`, `bind` in the config
//! file): a durable subscription. Over real sockets: copies of matching publishes go
//! into the queue whoever else gets them, one copy per queue however many of its
//! patterns match, a run of publishes copied whole; a full bound queue refuses the
//! publisher; a confirmed publish is confirmed once a durable copy is stored; bindings
//! and their messages survive a restart; deleting the queue ends its bindings; only
//! admins bind once users exist.

mod common;

use agora_protocol::{ErrorCode, ServerFrame};
use agora_server::auth::{hash_password, Pattern, Rights, User};
use agora_server::{Config, QueueSettings};
use common::*;

fn ok(c: &mut Raw, line: &str, rid: u64) {
    c.send(format!("{line}\r\n").as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(rid) }, "{line}");
}

fn depth(c: &mut Raw, queue: &str) -> u64 {
    let st = c.stats();
    dest_stats(&st, "queue", queue).map_or(0, |d| d["depth"].as_u64().unwrap())
}

/// Takes `n` deliveries from `queue` (auto-ack) and returns their bodies with topics.
fn drain(c: &mut Raw, queue: &str, n: usize) -> Vec<String> {
    c.send(format!("SUB #90 queue:{queue} 90 ack=auto\r\n").as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(90) });
    (0..n)
        .map(|_| match c.next() {
            ServerFrame::Msg(m) => String::from_utf8_lossy(&m.payload).into_owned(),
            f => panic!("expected MSG, got {f:?}"),
        })
        .collect()
}

#[test]
fn a_bound_queue_keeps_what_matching_topics_get_for_a_consumer_that_comes_later() {
    let s = start();
    let mut admin = s.connect();
    ok(&mut admin, "BIND #1 queue:alerts topic:sensors.*.alarm", 1);
    // A second pattern that also matches: still one copy.
    ok(&mut admin, "BIND #2 queue:alerts topic:sensors.>", 2);
    // Binding again is the same binding.
    ok(&mut admin, "BIND #3 queue:alerts topic:sensors.>", 3);
    // The queue exists from the BIND on.
    assert_eq!(depth(&mut admin, "alerts"), 0);
    assert!(dest_stats(&admin.stats(), "queue", "alerts").is_some());
    let mut live = s.connect();
    ok(&mut live, "SUB #4 topic:sensors.a.alarm 4", 4);
    let mut p = s.connect();
    for (topic, body) in [
        ("sensors.a.alarm", "1"),
        ("sensors.b.temp", "2"),
        ("other.a.alarm", "3"),
    ] {
        publish(&mut p, &format!("topic:{topic}"), body.as_bytes());
    }
    assert!(p.sync(5).is_empty());
    // The live subscriber got its topic's; the queue kept both sensors messages.
    match live.next() {
        ServerFrame::Msg(m) => assert_eq!(&m.payload[..], b"1"),
        f => panic!("{f:?}"),
    }
    assert_eq!(depth(&mut admin, "alerts"), 2);
    let st = admin.stats();
    assert_eq!(st["bindings"]["total"], 2, "{st}");
    assert_eq!(st["bindings"]["queues"][0]["queue"], "alerts");
    // A consumer that comes now finds them, in order.
    let mut later = s.connect();
    assert_eq!(drain(&mut later, "alerts", 2), ["1", "2"]);
    // Unbound, nothing more goes there; unbinding what is not bound is an error.
    ok(&mut admin, "UNBIND #6 queue:alerts topic:sensors.>", 6);
    ok(
        &mut admin,
        "UNBIND #7 queue:alerts topic:sensors.*.alarm",
        7,
    );
    admin.send(b"UNBIND #8 queue:alerts topic:sensors.>\r\n");
    admin.expect_err(ErrorCode::UnknownDestination);
    publish(&mut p, "topic:sensors.a.alarm", b"4");
    assert!(p.sync(9).is_empty());
    assert!(
        later.sync(10).is_empty(),
        "nothing new for the queue's consumer"
    );
    assert_eq!(admin.stats()["bindings"]["total"], 0);
}

#[test]
fn a_run_of_publishes_is_copied_whole_and_a_full_bound_queue_refuses_the_publisher() {
    let mut config = Config::ephemeral();
    config.queues.insert(
        "small".into(),
        QueueSettings {
            max_messages: 3,
            ..config.queue_settings("small")
        },
    );
    let s = start_with(config);
    let mut c = s.connect();
    ok(&mut c, "BIND #1 queue:all topic:feed", 1);
    let mut batch = Vec::new();
    for i in 0..1000 {
        let body = i.to_string();
        batch.extend_from_slice(format!("PUB topic:feed {}\r\n{body}\r\n", body.len()).as_bytes());
    }
    c.send(&batch);
    assert!(c.sync(2).is_empty());
    assert_eq!(depth(&mut c, "all"), 1000);
    // A bound queue at its limit: the publisher is told, naming it.
    ok(&mut c, "BIND #3 queue:small topic:feed", 3);
    ok(&mut c, "SETACK #4 on", 4);
    for rid in 10..13 {
        c.send(format!("PUB #{rid} topic:feed 1\r\nx\r\n").as_bytes());
        assert_eq!(
            c.next(),
            ServerFrame::PubAck {
                rid: Some(rid),
                filtered: false
            }
        );
    }
    c.send(b"PUB #13 topic:feed 1\r\nx\r\n");
    let why = c.expect_err(ErrorCode::QueueFull);
    assert!(
        why.contains("queue:small") && why.contains("topic:feed"),
        "{why}"
    );
}

#[test]
fn bindings_and_what_they_kept_survive_a_restart_and_go_with_their_queue() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = Config {
            data_dir: Some(dir.path().to_owned()),
            ..Config::ephemeral()
        };
        // From the config file's `bind`: until BIND/UNBIND say otherwise.
        c.bindings.push((
            agora_protocol::Destination::queue("configured").unwrap(),
            Pattern::parse("topic:conf.>").unwrap(),
        ));
        c
    };
    {
        let s = start_with(config());
        let mut c = s.connect();
        ok(&mut c, "BIND #1 queue:orders topic:orders.*.paid", 1);
        ok(&mut c, "UNBIND #2 queue:configured topic:conf.>", 2);
        // Confirmed: the PUBACK comes once the durable copy is stored.
        ok(&mut c, "SETACK #3 on", 3);
        c.send(b"PUB #4 topic:orders.eu.paid 2\r\nm1\r\n");
        assert_eq!(
            c.next(),
            ServerFrame::PubAck {
                rid: Some(4),
                filtered: false
            }
        );
    }
    let s = start_with(config());
    let mut c = s.connect();
    let st = c.stats();
    let queues = st["bindings"]["queues"].as_array().unwrap().clone();
    assert_eq!(
        queues.len(),
        1,
        "the unbound configured queue stays unbound: {st}"
    );
    assert_eq!(queues[0]["queue"], "orders");
    assert_eq!(queues[0]["patterns"][0], "topic:orders.*.paid");
    // What it kept came back; what is published now goes there too.
    publish(&mut c, "topic:orders.us.paid", b"m2");
    assert!(c.sync(5).is_empty());
    let mut consumer = s.connect();
    assert_eq!(drain(&mut consumer, "orders", 2), ["m1", "m2"]);
    // Deleting the queue ends its bindings (and the log remembers).
    ok(&mut c, "DELETE #6 queue:orders", 6);
    assert_eq!(c.stats()["bindings"]["total"], 0);
    drop(consumer);
    drop(c);
    drop(s);
    let s = start_with(config());
    let mut c = s.connect();
    assert_eq!(c.stats()["bindings"]["total"], 0);
}

#[test]
fn binding_is_for_admins_and_takes_a_queue_then_a_topic() {
    let mut config = Config::ephemeral();
    let hash = hash_password("pw").unwrap();
    let p = |l: &[&str]| l.iter().map(|p| Pattern::parse(p).unwrap()).collect();
    for (name, admin) in [("alice", false), ("ops", true)] {
        let rights = Rights {
            publish: p(&["topic:>"]),
            subscribe: p(&["queue:>", "topic:>"]),
            admin,
        };
        config
            .users
            .insert(User::new(name, Some(&hash), None, rights).unwrap())
            .unwrap();
    }
    let s = start_with(config);
    let login =
        |c: &mut Raw, user: &str| ok(c, &format!("CONNECT #77 user={user} password=pw"), 77);
    let mut alice = s.connect();
    login(&mut alice, "alice");
    alice.send(b"BIND #1 queue:q topic:t.>\r\n");
    alice.expect_err(ErrorCode::NotPermitted);
    let mut ops = s.connect();
    login(&mut ops, "ops");
    for (line, code) in [
        ("BIND #2 topic:t topic:u", ErrorCode::BadArgs),
        ("BIND #3 queue:q queue:r", ErrorCode::BadArgs),
        ("BIND #4 queue:$q topic:t", ErrorCode::NotPermitted),
        ("BIND #5 queue:q topic:bad*", ErrorCode::BadName),
    ] {
        ops.send(format!("{line}\r\n").as_bytes());
        ops.expect_err(code);
    }
    ok(&mut ops, "BIND #6 queue:q topic:t.>", 6);
}

#[test]
fn a_bound_queue_is_not_removed_when_idle_and_delete_ends_its_bindings() {
    let s = start_with(Config {
        idle_timeout: std::time::Duration::from_millis(20),
        ..Config::ephemeral()
    });
    let mut c = s.connect();
    ok(&mut c, "BIND #1 queue:kept topic:k.>", 1);
    // An unbound empty queue goes within a few sweeps; the bound one stays.
    publish(&mut c, "queue:loose", b"x");
    ok(&mut c, "PURGE #2 queue:loose", 2);
    wait_until("the idle queue is removed", || {
        dest_stats(&c.stats(), "queue", "loose").is_none()
    });
    assert!(dest_stats(&c.stats(), "queue", "kept").is_some());
    ok(&mut c, "DELETE #3 queue:kept", 3);
    assert_eq!(c.stats()["bindings"]["total"], 0);
    // A binding's topic has no empty token.
    c.send(b"BIND #4 queue:q topic:a..b\r\n");
    c.expect_err(ErrorCode::BadName);
}
