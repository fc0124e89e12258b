//! Flow control over real sockets: `HOLD` and `RESUME` of a topic subscription (its
//! messages wait in the broker's subscriber buffer) and of a queue consumer (given
//! nothing new); `DROPPED` notices to protocol-2 clients, where the gap is.

mod common;

use agora_protocol::{ErrorCode, ServerFrame};
use agora_server::Config;
use common::*;

fn ok(c: &mut Raw, rid: u64) {
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(rid) });
}

/// Publishes `n` messages `m0`… to `dest` and waits until the broker has taken them.
fn publish_n(p: &mut Raw, dest: &str, n: usize) {
    for i in 0..n {
        publish(p, dest, format!("m{i}").as_bytes());
    }
    assert!(p.sync(900).is_empty());
}

fn bodies(frames: &[ServerFrame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Msg(m) => Some(String::from_utf8_lossy(&m.payload).into_owned()),
            _ => None,
        })
        .collect()
}

fn read_msgs(c: &mut Raw, n: usize) -> Vec<ServerFrame> {
    (0..n).map(|_| c.next()).collect()
}

#[test]
fn a_held_topic_subscription_gets_nothing_until_resumed_and_loses_nothing() {
    let s = start();
    let mut c = s.connect();
    let mut p = s.connect();
    c.send(b"SUB #1 topic:t 7\r\n");
    ok(&mut c, 1);
    c.send(b"HOLD #2 7\r\n");
    ok(&mut c, 2);
    publish_n(&mut p, "topic:t", 5);
    assert!(c.sync(3).is_empty(), "held: nothing written");
    let st = c.stats();
    assert_eq!(dest_stats(&st, "topic", "t").unwrap()["depth"], 5, "{st}");
    c.send(b"RESUME #4 7\r\n");
    // The OK and the deliveries go different ways to the writer: either may be first.
    let got = read_msgs(&mut c, 6);
    assert!(got.contains(&ServerFrame::Ok { rid: Some(4) }), "{got:?}");
    assert_eq!(bodies(&got), ["m0", "m1", "m2", "m3", "m4"]);
    // Unknown subscriptions are refused.
    c.send(b"HOLD #5 99\r\n");
    c.expect_err(ErrorCode::UnknownSubscription);
}

#[test]
fn a_held_consumer_is_given_nothing_new_and_still_acks_what_it_holds() {
    let s = start();
    let mut c = s.connect();
    let mut p = s.connect();
    publish_n(&mut p, "queue:jobs", 1);
    c.send(b"SUB #1 queue:jobs 3 prefetch=10\r\n");
    let got = read_msgs(&mut c, 2);
    let ServerFrame::Msg(first) = &got[1] else {
        panic!("{got:?}")
    };
    c.send(b"HOLD #2 3\r\n");
    ok(&mut c, 2);
    publish_n(&mut p, "queue:jobs", 3);
    c.send(format!("ACK #3 {}\r\n", first.did).as_bytes());
    ok(&mut c, 3);
    assert!(c.sync(4).is_empty(), "held: no new delivery");
    let st = c.stats();
    assert_eq!(
        dest_stats(&st, "queue", "jobs").unwrap()["depth"],
        3,
        "{st}"
    );
    c.send(b"RESUME #5 3\r\n");
    let got = read_msgs(&mut c, 4);
    assert!(got.contains(&ServerFrame::Ok { rid: Some(5) }), "{got:?}");
    assert_eq!(bodies(&got), ["m0", "m1", "m2"]);
}

/// A protocol-2 client is told how many messages its held subscription lost to the
/// broker's drop-oldest policy, before the deliveries that follow the gap; a client
/// that named no version is not (it would not know the frame).
#[test]
fn dropped_messages_are_told_where_the_gap_is_to_protocol_2_clients() {
    let s = start_with(Config {
        subscriber_buffer: 4,
        ..Config::ephemeral()
    });
    let mut p = s.connect();
    for (proto, sid) in [(Some(2), 5u64), (None, 6)] {
        let mut c = s.connect();
        if let Some(v) = proto {
            c.send(format!("CONNECT #1 proto={v}\r\n").as_bytes());
            ok(&mut c, 1);
        }
        c.send(format!("SUB #2 topic:d {sid}\r\nHOLD #3 {sid}\r\n").as_bytes());
        ok(&mut c, 2);
        ok(&mut c, 3);
        publish_n(&mut p, "topic:d", 10);
        c.send(format!("RESUME #4 {sid}\r\n").as_bytes());
        let mut got = read_msgs(&mut c, if proto.is_some() { 6 } else { 5 });
        got.retain(|f| *f != ServerFrame::Ok { rid: Some(4) });
        if proto.is_some() {
            assert_eq!(got.remove(0), ServerFrame::Dropped { sid, count: 6 });
        }
        assert_eq!(bodies(&got), ["m6", "m7", "m8", "m9"], "{got:?}");
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(c.sync(8).is_empty(), "nothing more");
        c.send(format!("UNSUB #9 {sid}\r\n").as_bytes());
        ok(&mut c, 9);
    }
}
