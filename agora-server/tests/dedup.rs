//! Message ids (`agora-msg-id`) over real sockets: a queue confirms a repeat within its
//! window without storing it again, across a restart of a durable queue too; a window
//! passes; a queue bound to a topic takes one copy per id; a bad id is refused.

mod common;

use std::time::Duration;

use agora_protocol::{ErrorCode, ServerFrame};
use agora_server::Config;
use common::*;

fn puback(c: &mut Raw, rid: u64) {
    match c.next() {
        ServerFrame::PubAck { rid: r, filtered } => assert_eq!((r, filtered), (Some(rid), false)),
        f => panic!("expected PUBACK #{rid}, got {f:?}"),
    }
}

/// Waits until queue `name`'s figures are `want`: a memory-only queue's `PUBACK` means
/// the publish was handed to the queue, and `STATS` shows it once the queue has taken
/// it (a figure never seen in time fails the test).
fn settled(c: &mut Raw, name: &str, want: (u64, u64, u64)) {
    wait_until(&format!("queue {name} to show {want:?}"), || {
        figures(c, name) == want
    });
}

/// (depth, duplicates, message_ids) of queue `name`.
fn figures(c: &mut Raw, name: &str) -> (u64, u64, u64) {
    let st = c.stats();
    let q = dest_stats(&st, "queue", name).unwrap_or_else(|| panic!("no queue {name}: {st}"));
    let n = |k: &str| q[k].as_u64().unwrap();
    (n("depth"), n("duplicates"), n("message_ids"))
}

/// Takes the queue's messages with a consumer and acknowledges them: their bodies.
fn drain(c: &mut Raw, dest: &str, n: usize) -> Vec<String> {
    c.send(format!("SUB #2 {dest} 9 prefetch=100\r\n").as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) });
    let mut got = Vec::new();
    for _ in 0..n {
        let ServerFrame::Msg(m) = c.next() else {
            panic!("expected MSG")
        };
        got.push(m);
    }
    let mut bodies = Vec::new();
    for (i, m) in got.iter().enumerate() {
        bodies.push(String::from_utf8_lossy(&m.payload).into_owned());
        c.send(format!("ACK #{} {}\r\n", 10 + i, m.did).as_bytes());
        assert_eq!(
            c.next(),
            ServerFrame::Ok {
                rid: Some(10 + i as u64)
            }
        );
    }
    c.send(b"UNSUB #3 9\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    bodies
}

#[test]
fn a_repeated_id_is_confirmed_and_stored_once_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let durable = || Config {
        data_dir: Some(dir.path().to_owned()),
        ..Config::ephemeral()
    };
    {
        let s = start_with(durable());
        let mut p = s.connect();
        confirms_on(&mut p);
        hpub(&mut p, 5, "queue:orders", "order-1", "first");
        hpub(&mut p, 6, "queue:orders", "order-1", "again");
        hpub(&mut p, 7, "queue:orders", "order-2", "second");
        for rid in 5..=7 {
            puback(&mut p, rid);
        }
        settled(&mut p, "orders", (2, 1, 2));
        // Consumed and acknowledged: the ids are still remembered.
        let mut c = s.connect();
        assert_eq!(drain(&mut c, "queue:orders", 2), ["first", "second"]);
        assert!(c.sync(4).is_empty(), "the repeat was never stored");
        settled(&mut p, "orders", (0, 1, 2));
    } // graceful stop
    let s = start_with(durable());
    let mut p = s.connect();
    confirms_on(&mut p);
    // The retry of a publish whose confirm was lost with the broker.
    hpub(&mut p, 8, "queue:orders", "order-2", "retry");
    hpub(&mut p, 9, "queue:orders", "order-3", "third");
    puback(&mut p, 8);
    puback(&mut p, 9);
    settled(&mut p, "orders", (1, 1, 3));
    let mut c = s.connect();
    assert_eq!(drain(&mut c, "queue:orders", 1), ["third"]);
}

#[test]
fn an_id_is_forgotten_once_its_window_passes_and_its_memory_goes_back() {
    let s = start_with(Config {
        dedup_window: Duration::from_secs(2),
        ..Config::ephemeral()
    });
    let mut p = s.connect();
    confirms_on(&mut p);
    hpub(&mut p, 5, "queue:w", "x", "one");
    hpub(&mut p, 6, "queue:w", "x", "one again");
    puback(&mut p, 5);
    puback(&mut p, 6);
    settled(&mut p, "w", (1, 1, 1));
    let used = p.stats()["memory"]["used"].as_u64().unwrap();
    assert!(used >= ("one".len() + "x".len() + 96) as u64, "{used}");
    // The queue's own timer forgets it.
    wait_until("the id to be forgotten", || figures(&mut p, "w").2 == 0);
    hpub(&mut p, 7, "queue:w", "x", "one, later");
    puback(&mut p, 7);
    settled(&mut p, "w", (2, 1, 1));
    let mut c = s.connect();
    assert_eq!(drain(&mut c, "queue:w", 2), ["one", "one, later"]);
    wait_until("every id forgotten", || figures(&mut p, "w").2 == 0);
    assert_eq!(p.stats()["memory"]["used"], 0, "the budget has it all back");
}

#[test]
fn a_queue_bound_to_a_topic_takes_one_copy_per_id() {
    let s = start();
    let mut p = s.connect();
    confirms_on(&mut p);
    p.send(b"BIND #2 queue:audit topic:orders.>\r\n");
    assert_eq!(p.next(), ServerFrame::Ok { rid: Some(2) });
    hpub(&mut p, 5, "topic:orders.eu", "o-1", "a");
    hpub(&mut p, 6, "topic:orders.eu", "o-1", "a");
    hpub(&mut p, 7, "topic:orders.us", "o-2", "b");
    for rid in 5..=7 {
        puback(&mut p, rid);
    }
    settled(&mut p, "audit", (2, 1, 2));
}

#[test]
fn a_bad_id_is_refused_with_bad_args() {
    let s = start();
    let mut p = s.connect();
    let long = "x".repeat(agora_protocol::msg_id::MAX_MSG_ID + 1);
    hpub(&mut p, 5, "queue:q", &long, "a");
    assert!(p.expect_err(ErrorCode::BadArgs).contains("256"));
    let h = "agora-msg-id: a\r\nagora-msg-id: b\r\n\r\n";
    p.send(format!("HPUB #6 queue:q {} {}\r\n{h}x\r\n", h.len(), h.len() + 1).as_bytes());
    assert!(p.expect_err(ErrorCode::BadArgs).contains("once"));
    // Fire-and-forget, in the middle of a run of plain publishes: refused all the same.
    publish(&mut p, "queue:q", b"plain");
    hpub(&mut p, 7, "queue:q", "", "empty id");
    assert!(p.expect_err(ErrorCode::BadArgs).contains("empty"));
    assert_eq!(figures(&mut p, "q").0, 1);
}
