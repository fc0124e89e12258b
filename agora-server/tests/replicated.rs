//! Replicated queues on a cluster of three brokers in one process, over real sockets:
//! confirms from any node once a majority has the message on disk, a leader stopped
//! with deliveries out and the next one delivering everything not acknowledged,
//! consumers on nodes that do not lead (before and after a failover), a node that
//! comes back catching up from its own log, and the configuration's checks.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use agora_protocol::ServerFrame;
use agora_server::auth::Pattern;
use agora_server::{Config, Server};
use common::*;

fn node(id: u64, dir: &Path) -> Config {
    Config {
        data_dir: Some(dir.join(format!("node{id}"))),
        replicated_queues: vec![Pattern::parse("queue:orders").unwrap()],
        ..cluster_node(id)
    }
}

/// [`node`], with `orders`' dead-letter queue replicated too (so any node serves it).
fn node_with_dlq(id: u64, dir: &Path) -> Config {
    Config {
        replicated_queues: vec![
            Pattern::parse("queue:orders").unwrap(),
            Pattern::parse("queue:orders.dlq").unwrap(),
        ],
        ..node(id, dir)
    }
}

/// This node's figures for the replicated queue `orders` (null until it runs it).
fn group(c: &mut Raw) -> serde_json::Value {
    c.stats()["cluster"]["replicated"]["orders"].clone()
}

/// The index (0-based) of the node that serves `orders`, once one does.
fn leader(conns: &mut [(usize, Raw)]) -> usize {
    let mut found = None;
    wait_until("a node leads queue:orders", || {
        found = conns
            .iter_mut()
            .find_map(|(i, c)| (group(c)["serving"] == true).then_some(*i));
        found.is_some()
    });
    found.unwrap()
}

/// Publishes `bodies` to queue:orders with confirms on; every one must be confirmed.
fn publish_confirmed(c: &mut Raw, bodies: &[String]) {
    confirms_on(c);
    let mut batch = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let rid = 100 + i;
        batch.extend_from_slice(
            format!("PUB #{rid} queue:orders {}\r\n{b}\r\n", b.len()).as_bytes(),
        );
    }
    c.send(&batch);
    for i in 0..bodies.len() {
        match c.next() {
            ServerFrame::PubAck { rid, .. } => assert_eq!(rid, Some(100 + i as u64)),
            f => panic!("expected PUBACK #{}, got {f:?}", 100 + i),
        }
    }
}

/// Publishes one confirmed message until one is confirmed (the first client to name
/// the queue makes its group, which elects a leader in a second or two).
fn until_confirmed(c: &mut Raw) {
    confirms_on(c);
    wait_until("a confirmed publish to queue:orders", || {
        c.send(b"PUB #2 queue:orders 4\r\nwarm\r\n");
        match c.next() {
            ServerFrame::PubAck { .. } => true,
            ServerFrame::Err(e) => {
                assert!(e.message.contains("no leader yet"), "{e:?}");
                false
            }
            f => panic!("{f:?}"),
        }
    });
}

/// Three nodes whose queue `orders` has a leader that serves it.
struct Warmed {
    nodes: Vec<TestServer>,
    peers: Vec<(u64, String)>,
    /// A connection to each node, with its index.
    conns: Vec<(usize, Raw)>,
    /// The index of the node that serves `orders`.
    leader: usize,
}

/// Starts three nodes with their data in `dir` and makes `orders` (one warm-up message
/// confirmed), until a node serves it.
fn warmed(dir: &Path) -> Warmed {
    warmed_with((1..=3).map(|id| node(id, dir)).collect())
}

/// [`warmed`], the nodes configured as `configs` say.
fn warmed_with(configs: Vec<Config>) -> Warmed {
    let (nodes, peers) = start_cluster(configs);
    until_confirmed(&mut nodes[0].connect());
    let mut conns: Vec<(usize, Raw)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i, n.connect()))
        .collect();
    let leader = leader(&mut conns);
    Warmed {
        nodes,
        peers,
        conns,
        leader,
    }
}

/// Subscribes `c` to `orders` with manual acks (a window of 1000).
fn subscribe(c: &mut Raw) {
    c.send(b"SUB #3 queue:orders 1 prefetch=1000\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
}

/// Subscribes with manual acks and reads `n` deliveries: (body, delivery id).
fn take(c: &mut Raw, n: usize) -> Vec<(String, u64)> {
    subscribe(c);
    read(c, n)
}

/// Waits until `orders` is empty on each node `conns` reach.
fn empty_everywhere(conns: &mut [(usize, Raw)]) {
    for (i, c) in conns.iter_mut() {
        wait_until(&format!("node {} empty", *i + 1), || depth(c) == 0);
    }
}

/// Acknowledges `dids`; nothing else may come meanwhile.
fn ack(c: &mut Raw, dids: &[u64]) {
    assert_eq!(ack_all(c, dids), Vec::<String>::new());
}

fn depth(c: &mut Raw) -> u64 {
    let st = c.stats();
    dest_stats(&st, "queue", "orders").map_or(u64::MAX, |d| d["depth"].as_u64().unwrap())
}

#[test]
fn a_confirmed_message_outlives_its_leader_and_is_delivered_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let Warmed {
        mut nodes,
        mut conns,
        leader: l,
        ..
    } = warmed(dir.path());
    // Published on a node that does not lead: its proposals go to the leader, and each
    // is confirmed once applied on the node it was published on.
    let f = (l + 1) % 3;
    let bodies: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    let mut p = nodes[f].connect();
    publish_confirmed(&mut p, &bodies);
    // The leader delivers everything (the warm-up messages too); 30 are acknowledged.
    let mut c = nodes[l].connect();
    let got = take(&mut c, 101);
    let (warmups, orders): (Vec<_>, Vec<_>) = got.into_iter().partition(|(b, _)| b == "warm");
    assert_eq!((warmups.len(), orders.len()), (1, 100));
    let first: Vec<u64> = warmups
        .iter()
        .chain(&orders[..30])
        .map(|(_, d)| *d)
        .collect();
    ack(&mut c, &first);
    // Every node applies the acknowledgements: 70 left everywhere.
    for (i, c) in conns.iter_mut() {
        wait_until(&format!("node {} holds 70", *i + 1), || {
            depth(c) == 70 || (group(c)["serving"] == true && depth(c) == 0)
        });
    }
    // The leader stops, 70 deliveries out and unacknowledged.
    nodes[l].shutdown().unwrap();
    drop(c);
    let mut rest: Vec<(usize, Raw)> = conns.into_iter().filter(|(i, _)| *i != l).collect();
    let next = leader(&mut rest);
    assert_ne!(next, l);
    let mut c = nodes[next].connect();
    let again = take(&mut c, 70);
    let seen: BTreeSet<String> = again.iter().map(|(b, _)| b.clone()).collect();
    let want: BTreeSet<String> = (30..100).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want, "each unacknowledged message once");
    ack(&mut c, &again.iter().map(|(_, d)| *d).collect::<Vec<_>>());
    empty_everywhere(&mut rest);
    // And a publish on the survivors is confirmed by their majority of two.
    let mut p = nodes[next].connect();
    publish_confirmed(&mut p, &["after".to_owned()]);
}

/// Reads `n` deliveries (nothing else may come): (body, delivery id).
fn read(c: &mut Raw, n: usize) -> Vec<(String, u64)> {
    (0..n)
        .map(|_| match c.next() {
            ServerFrame::Msg(m) => (String::from_utf8_lossy(&m.payload).into_owned(), m.did),
            f => panic!("expected MSG, got {f:?}"),
        })
        .collect()
}

/// Acknowledges `dids`, each with a request id, and reads until each is answered `OK`;
/// the deliveries that come meanwhile (acknowledging frees the consumer's window) are
/// returned, not acknowledged. An `ERR` fails the test.
fn ack_all(c: &mut Raw, dids: &[u64]) -> Vec<String> {
    for (i, did) in dids.iter().enumerate() {
        c.send(format!("ACK #{} {did}\r\n", 1000 + i).as_bytes());
    }
    let (mut oks, mut more) = (0, Vec::new());
    while oks < dids.len() {
        match c.next() {
            ServerFrame::Ok { .. } => oks += 1,
            ServerFrame::Msg(m) => more.push(String::from_utf8_lossy(&m.payload).into_owned()),
            f => panic!("expected OK, got {f:?}"),
        }
    }
    more
}

#[test]
fn consumers_on_two_connections_each_acknowledge_their_own_deliveries() {
    // Delivery ids are numbered per connection: two connections' first subscriptions
    // hand out the same numbers, and the queue must tell them apart by consumer.
    let dir = tempfile::tempdir().unwrap();
    let Warmed {
        nodes,
        mut conns,
        leader: l,
        ..
    } = warmed(dir.path());
    let (mut a, mut b) = (nodes[l].connect(), nodes[l].connect());
    for c in [&mut a, &mut b] {
        c.send(b"SUB #3 queue:orders 1 prefetch=5\r\n");
        assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    }
    let bodies: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    publish_confirmed(&mut nodes[l].connect(), &bodies);
    // Each holds a full window of 5 (21 in the queue with the warm-up message).
    let (got_a, got_b) = (read(&mut a, 5), read(&mut b, 5));
    let dids = |got: &[(String, u64)]| got.iter().map(|(_, d)| *d).collect::<Vec<_>>();
    assert_eq!(dids(&got_a), dids(&got_b), "the same delivery ids on both");
    let mut acked: BTreeSet<String> = BTreeSet::new();
    for (c, got) in [(&mut a, &got_a), (&mut b, &got_b)] {
        ack_all(c, &dids(got));
        acked.extend(got.iter().map(|(body, _)| body.clone()));
    }
    assert_eq!(acked.len(), 10, "ten different messages: {acked:?}");
    // What they were handed and did not acknowledge comes back when they leave: a new
    // consumer gets exactly the other 11, and the queue ends empty everywhere.
    drop((a, b));
    let mut c = nodes[l].connect();
    let rest = take(&mut c, 11);
    let all: BTreeSet<String> = rest.iter().map(|(b, _)| b.clone()).chain(acked).collect();
    assert_eq!(all.len(), 21, "every message once: {all:?}");
    ack(&mut c, &dids(&rest));
    empty_everywhere(&mut conns);
}

#[test]
fn consumers_on_nodes_that_do_not_lead_get_the_queue_and_acknowledge_it_there() {
    let dir = tempfile::tempdir().unwrap();
    let Warmed {
        nodes,
        mut conns,
        leader: l,
        ..
    } = warmed(dir.path());
    let (f, g) = ((l + 1) % 3, (l + 2) % 3);
    // A consumer on a node that does not lead: that node takes the queue's deliveries
    // from the leader over its link and hands them out under its own delivery ids.
    let mut c = nodes[f].connect();
    subscribe(&mut c);
    let bodies: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    publish_confirmed(&mut nodes[g].connect(), &bodies);
    let got = read(&mut c, 101);
    // The leader counts the node's link as its one consumer; the node its client.
    for (i, c) in conns.iter_mut() {
        let st = c.stats();
        let n = dest_stats(&st, "queue", "orders").unwrap()["consumers"].clone();
        assert_eq!(n, [0, 1][(*i == l || *i == f) as usize], "node {}", *i + 1);
    }
    let seen: BTreeSet<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(seen.len(), 101, "each message once");
    let dids: BTreeSet<u64> = got.iter().map(|(_, d)| *d).collect();
    assert_eq!(dids.len(), 101, "each delivery its own id");
    // Half acknowledged there: every node forgets them. (The leader and the consumer's
    // node count the rest as handed out, not waiting.)
    let (done, kept) = got.split_at(50);
    ack(&mut c, &done.iter().map(|(_, d)| *d).collect::<Vec<_>>());
    for (i, c) in conns.iter_mut() {
        wait_until(&format!("node {} holds 51", *i + 1), || {
            let st = c.stats();
            let q = dest_stats(&st, "queue", "orders").unwrap();
            let (depth, unacked) = (q["depth"].as_u64(), q["unacked"].as_u64());
            match *i == g {
                true => depth == Some(51),
                false => (depth, unacked) == (Some(0), Some(51)),
            }
        });
    }
    // An answer to a delivery it no longer holds is refused there, as on a leader.
    c.send(format!("ACK #9 {}\r\n", done[0].1).as_bytes());
    let why = c.expect_err(agora_protocol::ErrorCode::UnknownDelivery);
    assert!(why.contains(&done[0].1.to_string()), "{why}");
    // The consumer leaves with 51 unacknowledged: they go back to the leader, and a
    // consumer on the other node that does not lead gets exactly those.
    drop(c);
    let mut d = nodes[g].connect();
    let rest = take(&mut d, 51);
    let want: BTreeSet<&str> = kept.iter().map(|(b, _)| b.as_str()).collect();
    let again: BTreeSet<&str> = rest.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(again, want);
    ack(&mut d, &rest.iter().map(|(_, d)| *d).collect::<Vec<_>>());
    empty_everywhere(&mut conns);
}

#[test]
fn a_consumer_on_a_surviving_node_carries_on_after_failover_without_reconnecting() {
    let dir = tempfile::tempdir().unwrap();
    let Warmed {
        mut nodes,
        conns,
        leader: l,
        ..
    } = warmed(dir.path());
    let f = (l + 1) % 3;
    let mut c = nodes[f].connect();
    subscribe(&mut c);
    let bodies: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    publish_confirmed(&mut nodes[f].connect(), &bodies);
    let first = read(&mut c, 51);
    // The leader stops with all 51 out and unacknowledged. Whichever node leads next
    // (this consumer's own, or the other), the same subscription gets all 51 again.
    nodes[l].shutdown().unwrap();
    drop(conns);
    let again = read(&mut c, 51);
    let a: BTreeSet<&str> = first.iter().map(|(b, _)| b.as_str()).collect();
    let b: BTreeSet<&str> = again.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!((a.len(), a == b), (51, true));
    ack(&mut c, &again.iter().map(|(_, d)| *d).collect::<Vec<_>>());
    let mut rest: Vec<(usize, Raw)> = [f, (l + 2) % 3]
        .into_iter()
        .map(|i| (i, nodes[i].connect()))
        .collect();
    empty_everywhere(&mut rest);
}

#[test]
fn a_cluster_with_a_shorter_raft_tick_elects_and_fails_over_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let fast = |id: u64| Config {
        raft_tick: std::time::Duration::from_millis(50),
        ..node(id, dir.path())
    };
    let Warmed {
        mut nodes,
        mut conns,
        leader: l,
        ..
    } = warmed_with((1..=3).map(fast).collect());
    // Every node says its tick (and they linked: they tick alike).
    for (_, c) in conns.iter_mut() {
        assert_eq!(c.stats()["cluster"]["raft_tick_ms"], 50);
    }
    let bodies: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    publish_confirmed(&mut nodes[(l + 1) % 3].connect(), &bodies);
    nodes[l].shutdown().unwrap();
    // The survivors elect another leader, which confirms again and holds every
    // confirmed message (the warm-up one too).
    let mut rest: Vec<(usize, Raw)> = conns.into_iter().filter(|(i, _)| *i != l).collect();
    let next = leader(&mut rest);
    assert_ne!(next, l);
    until_confirmed(&mut nodes[next].connect());
    let c = &mut rest.iter_mut().find(|(i, _)| *i == next).unwrap().1;
    wait_until("the new leader holds all 22", || depth(c) == 22);
}

#[test]
fn a_publish_repeated_with_its_message_id_is_stored_once_across_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let Warmed {
        mut nodes,
        conns,
        leader: l,
        ..
    } = warmed(dir.path());
    let (f, g) = ((l + 1) % 3, (l + 2) % 3);
    let confirmed = |c: &mut Raw, rid: u64, body: &str| {
        hpub(c, rid, "queue:orders", "order-1", body);
        match c.next() {
            ServerFrame::PubAck { rid: r, .. } => assert_eq!(r, Some(rid)),
            f => panic!("expected PUBACK #{rid}, got {f:?}"),
        }
    };
    let (mut p, mut q) = (nodes[f].connect(), nodes[g].connect());
    confirms_on(&mut p);
    confirms_on(&mut q);
    confirmed(&mut p, 10, "first");
    // The same id on another node: confirmed, and not stored again.
    confirmed(&mut q, 11, "again");
    // The leader stops: the id is in the survivors' log, and a retry there (once a new
    // leader is elected; refused meanwhile) is confirmed and not stored either.
    nodes[l].shutdown().unwrap();
    drop(conns);
    wait_until("a confirmed retry after the failover", || {
        hpub(&mut p, 12, "queue:orders", "order-1", "retry");
        match p.next() {
            ServerFrame::PubAck { .. } => true,
            ServerFrame::Err(e) => {
                assert_eq!(e.code, agora_protocol::ErrorCode::StorageFailed, "{e:?}");
                false
            }
            f => panic!("{f:?}"),
        }
    });
    let mut c = nodes[f].connect();
    let got = take(&mut c, 2);
    let bodies: BTreeSet<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies, BTreeSet::from(["warm", "first"]));
    ack(&mut c, &got.iter().map(|(_, d)| *d).collect::<Vec<_>>());
    // Nothing else was stored: both survivors end empty.
    let mut rest: Vec<(usize, Raw)> = [f, g].map(|i| (i, nodes[i].connect())).into();
    empty_everywhere(&mut rest);
}

#[test]
fn a_node_that_comes_back_catches_up_from_its_own_log() {
    let dir = tempfile::tempdir().unwrap();
    let Warmed {
        mut nodes,
        peers,
        conns,
        leader: l,
    } = warmed(dir.path());
    // A node that does not lead stops; 50 are confirmed by the other two meanwhile.
    let gone = (l + 1) % 3;
    nodes[gone].shutdown().unwrap();
    drop(conns);
    let bodies: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let mut p = nodes[l].connect();
    publish_confirmed(&mut p, &bodies);
    // It comes back at its cluster address, with its data directory: its group is made
    // at start from its log, and the leader brings it up to date.
    let mut again = node(gone as u64 + 1, dir.path());
    again.cluster_listen = Some(peers[gone].1.parse().unwrap());
    again.peers = peers.clone();
    let back = start_with(again);
    let mut b = back.connect();
    wait_until("the node that came back holds all 51", || {
        depth(&mut b) == 51
    });
    let g = group(&mut b);
    assert_eq!(g["voters"], serde_json::json!([1, 2, 3]), "{g}");
    // The leader shows no lag for it once it caught up.
    let mut lc = nodes[l].connect();
    wait_until("no lag", || {
        group(&mut lc)["lag"][(gone + 1).to_string()] == 0
    });
}

#[test]
fn a_node_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let compacting = |id: u64| Config {
        raft_compact_bytes: 4096,
        ..node(id, dir.path())
    };
    let Warmed {
        mut nodes,
        peers,
        leader: l,
        ..
    } = warmed_with((1..=3).map(compacting).collect());
    // A node that does not lead stops; 200 messages of 100 bytes are confirmed, and
    // the first 190 acknowledged, meanwhile: the others compact their logs (which then
    // hold more than four times what the queue does).
    let gone = (l + 1) % 3;
    nodes[gone].shutdown().unwrap();
    let bodies: Vec<String> = (0..200).map(|i| format!("{i:0100}")).collect();
    let mut p = nodes[l].connect();
    publish_confirmed(&mut p, &bodies);
    let mut c = nodes[l].connect();
    let got = take(&mut c, 201);
    let first: Vec<u64> = got
        .iter()
        .filter(|(b, _)| b == "warm" || b.as_str() < bodies[190].as_str())
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(first.len(), 191, "warm and the first 190");
    ack(&mut c, &first);
    drop(c);
    let mut lc = nodes[l].connect();
    wait_until("the leader holds 10 and compacted", || {
        depth(&mut lc) == 10 && group(&mut lc)["compacted"].as_u64().unwrap() > 0
    });
    // Its log file is written anew beside it while it serves, and then starts with the
    // snapshot (a record of form 2: see `raftlog`).
    let raft_of = |i: usize| dir.path().join(format!("node{}/raft/orders.raft", i + 1));
    wait_until(
        "the leader's log file written anew from its snapshot",
        || std::fs::read(raft_of(l)).is_ok_and(|b| b.get(8) == Some(&2)),
    );
    // It comes back: the leader's log no longer has what it lacks, so it gets the
    // leader's snapshot, then the entries after it.
    let mut again = compacting(gone as u64 + 1);
    again.cluster_listen = Some(peers[gone].1.parse().unwrap());
    again.peers = peers.clone();
    let back = start_with(again);
    let mut b = back.connect();
    wait_until(
        "the node that came back holds the 10 from a snapshot",
        || {
            let g = group(&mut b);
            depth(&mut b) == 10 && g["compacted"].as_u64().is_some_and(|c| c > 0)
        },
    );
    // Its log file starts with the leader's snapshot.
    assert_eq!(std::fs::read(raft_of(gone)).unwrap()[8], 2);
    // Its state is the queue's: with the leader stopped, a consumer there gets the 10.
    drop(lc);
    drop(p);
    nodes[l].shutdown().unwrap();
    let mut c = back.connect();
    let got = take(&mut c, 10);
    let want: BTreeSet<&str> = bodies[190..].iter().map(String::as_str).collect();
    let seen: BTreeSet<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(seen, want);
    let dids: Vec<u64> = got.iter().map(|(_, d)| *d).collect();
    ack(&mut c, &dids);
    let third = 3 - l - gone;
    let mut rest: Vec<(usize, Raw)> = vec![(gone, back.connect()), (third, nodes[third].connect())];
    empty_everywhere(&mut rest);
}

#[test]
fn a_delivery_not_acknowledged_in_time_or_nacked_with_a_delay_is_handed_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let timing_out = |id: u64| Config {
        ack_timeout: Some(std::time::Duration::from_millis(500)),
        ..node(id, dir.path())
    };
    let Warmed {
        nodes,
        mut conns,
        leader: l,
        ..
    } = warmed_with((1..=3).map(timing_out).collect());
    // A consumer on the leader takes the message and does not answer.
    let mut c = nodes[l].connect();
    c.send(b"SUB #3 queue:orders 1 prefetch=1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    let first = read(&mut c, 1);
    assert_eq!(first[0].0, "warm");
    // Past the timeout the leader takes it back and hands it out again (to the same
    // consumer, the only one), under another delivery id, as a second delivery.
    let again = match c.next() {
        ServerFrame::Msg(m) => m,
        f => panic!("expected the message again, got {f:?}"),
    };
    assert_eq!(&again.payload[..], b"warm");
    assert_ne!(again.did, first[0].1);
    assert_eq!(again.count, 2);
    // The late answer to the first delivery is refused; the second one's is taken.
    c.send(format!("ACK #8 {}\r\n", first[0].1).as_bytes());
    let why = c.expect_err(agora_protocol::ErrorCode::UnknownDelivery);
    assert!(why.contains(&first[0].1.to_string()), "{why}");
    ack(&mut c, &[again.did]);
    // A NACK with a delay: given back for later, then handed out again.
    publish_confirmed(&mut nodes[l].connect(), &["later".to_owned()]);
    let first = read(&mut c, 1);
    assert_eq!(first[0].0, "later");
    c.send(format!("NACK #9 {} delay=300ms\r\n", first[0].1).as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(9) });
    let again = match c.next() {
        ServerFrame::Msg(m) => m,
        f => panic!("expected the message again, got {f:?}"),
    };
    assert_eq!((&again.payload[..], again.count), (&b"later"[..], 2));
    ack(&mut c, &[again.did]);
    empty_everywhere(&mut conns);
}

#[test]
fn a_message_delivered_too_often_or_rejected_goes_to_the_dead_letter_queue() {
    let dir = tempfile::tempdir().unwrap();
    let limited = |id: u64| Config {
        max_deliveries: 2,
        ..node_with_dlq(id, dir.path())
    };
    let Warmed {
        nodes,
        mut conns,
        leader: l,
        ..
    } = warmed_with((1..=3).map(limited).collect());
    // A consumer on a node that does not lead: its NACKs go up its node's link.
    let f = (l + 1) % 3;
    let mut c = nodes[f].connect();
    c.send(b"SUB #3 queue:orders 1 prefetch=1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    let mut inc = Incoming::new();
    for count in 1..=2 {
        let m = inc.next(&mut c);
        assert_eq!((&m.payload[..], m.count), (&b"warm"[..], count));
        inc.answer(&mut c, "NACK", m.did);
    }
    // Delivered twice: not a third time. One rejected goes at its first delivery.
    publish_confirmed(&mut nodes[l].connect(), &["bad".to_owned()]);
    let bad = inc.next(&mut c);
    assert_eq!(
        &bad.payload[..],
        b"bad",
        "the first message did not come a third time"
    );
    c.send(format!("NACK #10 {} dlq\r\n", bad.did).as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(10) });
    empty_everywhere(&mut conns);
    // Both are in the dead-letter queue, read on the third node, with why.
    let mut d = nodes[(l + 2) % 3].connect();
    d.send(b"SUB #4 queue:orders.dlq 1\r\n");
    assert_eq!(d.next(), ServerFrame::Ok { rid: Some(4) });
    let mut got = Vec::new();
    for _ in 0..2 {
        match d.next() {
            ServerFrame::Msg(m) => {
                let h = |k: &str| m.headers.get(k).unwrap_or_default().to_owned();
                got.push((
                    String::from_utf8_lossy(&m.payload).into_owned(),
                    h("agora-dead-letter-from"),
                    h("agora-dead-letter-reason"),
                    h("agora-dead-letter-deliveries"),
                ));
            }
            f => panic!("expected a dead letter, got {f:?}"),
        }
    }
    got.sort();
    let row = |p: &str, why: &str, n: &str| {
        (
            p.to_owned(),
            "queue:orders".to_owned(),
            why.to_owned(),
            n.to_owned(),
        )
    };
    assert_eq!(
        got,
        vec![
            row("bad", "rejected", "1"),
            row("warm", "max_deliveries", "2")
        ]
    );
    let st = conns[l].1.stats();
    let orders = dest_stats(&st, "queue", "orders").unwrap();
    assert_eq!(orders["deadlettered"], 2, "{orders}");
}

/// Deliveries as they come to `c`, some perhaps read early (before an answer's `OK`).
struct Incoming {
    early: std::collections::VecDeque<agora_protocol::Delivery>,
}

impl Incoming {
    fn new() -> Incoming {
        Incoming {
            early: Default::default(),
        }
    }

    fn next(&mut self, c: &mut Raw) -> agora_protocol::Delivery {
        if let Some(d) = self.early.pop_front() {
            return d;
        }
        match c.next() {
            ServerFrame::Msg(m) => m,
            f => panic!("expected a delivery, got {f:?}"),
        }
    }

    /// Answers delivery `did` with `frame` (`ACK` or `NACK`, request id 9) and reads
    /// until its `OK`: a delivery that comes first (the next one, or this one again)
    /// is kept for `next`.
    fn answer(&mut self, c: &mut Raw, frame: &str, did: u64) {
        c.send(format!("{frame} #9 {did}\r\n").as_bytes());
        loop {
            match c.next() {
                ServerFrame::Ok { rid: Some(9) } => return,
                ServerFrame::Msg(m) => self.early.push_back(m),
                f => panic!("expected OK #9, got {f:?}"),
            }
        }
    }
}

#[test]
fn a_message_s_delivery_count_carries_over_to_the_next_leader() {
    let dir = tempfile::tempdir().unwrap();
    let limited = |id: u64| Config {
        max_deliveries: 5,
        ..node_with_dlq(id, dir.path())
    };
    let Warmed {
        mut nodes,
        leader: l,
        ..
    } = warmed_with((1..=3).map(limited).collect());
    // Given back twice on the leader; the third delivery is held when it stops.
    let mut c = nodes[l].connect();
    c.send(b"SUB #3 queue:orders 1 prefetch=1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    let mut inc = Incoming::new();
    for count in 1..=3 {
        let m = inc.next(&mut c);
        assert_eq!((&m.payload[..], m.count), (&b"warm"[..], count));
        if count < 3 {
            inc.answer(&mut c, "NACK", m.did);
        }
    }
    // A publish confirmed after them: the two returns before it are committed.
    publish_confirmed(&mut nodes[l].connect(), &["after".to_owned()]);
    nodes[l].shutdown().unwrap();
    drop(c);
    // The next leader counts on from there (the third delivery counts too if its
    // consumer's leaving was committed before the stop: 4, else 3), not from 1; given
    // back until its fifth, it goes to the dead-letter queue. "after" may come between
    // (through a node's link, what is given back comes again behind what it holds).
    let s = (l + 1) % 3;
    let mut c = nodes[s].connect();
    c.send(b"SUB #3 queue:orders 1 prefetch=1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    let mut inc = Incoming::new();
    let mut warm = Vec::new();
    let mut after = false;
    for _ in 0..20 {
        if after && warm.last() == Some(&5) {
            break;
        }
        let m = inc.next(&mut c);
        match &m.payload[..] {
            b"warm" => {
                warm.push(m.count);
                inc.answer(&mut c, "NACK", m.did);
            }
            b"after" => {
                assert!(!after, "after came twice");
                after = true;
                inc.answer(&mut c, "ACK", m.did);
            }
            p => panic!("{p:?}"),
        }
    }
    assert!(after, "{warm:?}");
    assert!(
        (3..=4).contains(&warm[0]) && warm.windows(2).all(|w| w[1] == w[0] + 1),
        "deliveries {warm:?} after the failover"
    );
    assert_eq!(warm.last(), Some(&5), "{warm:?}");
    let mut d = nodes[(l + 2) % 3].connect();
    d.send(b"SUB #4 queue:orders.dlq 1\r\n");
    assert_eq!(d.next(), ServerFrame::Ok { rid: Some(4) });
    match d.next() {
        ServerFrame::Msg(m) => {
            assert_eq!(&m.payload[..], b"warm");
            let h = |k: &str| m.headers.get(k).unwrap_or_default().to_owned();
            assert_eq!(h("agora-dead-letter-reason"), "max_deliveries");
            assert_eq!(h("agora-dead-letter-deliveries"), "5");
        }
        f => panic!("expected the dead letter, got {f:?}"),
    }
}

#[test]
fn a_message_waiting_past_its_ttl_goes_to_the_dead_letter_queue() {
    let dir = tempfile::tempdir().unwrap();
    let expiring = |id: u64| Config {
        message_ttl: Some(std::time::Duration::from_millis(300)),
        ..node_with_dlq(id, dir.path())
    };
    let (nodes, _) = start_cluster((1..=3).map(expiring).collect());
    // Nobody consumes the warm-up message: it expires on whichever node serves.
    until_confirmed(&mut nodes[0].connect());
    let mut conns: Vec<(usize, Raw)> = (0..3).map(|i| (i, nodes[i].connect())).collect();
    empty_everywhere(&mut conns);
    let mut d = nodes[2].connect();
    d.send(b"SUB #4 queue:orders.dlq 1\r\n");
    assert_eq!(d.next(), ServerFrame::Ok { rid: Some(4) });
    match d.next() {
        ServerFrame::Msg(m) => {
            assert_eq!(&m.payload[..], b"warm");
            let h = |k: &str| m.headers.get(k).unwrap_or_default().to_owned();
            assert_eq!(h("agora-dead-letter-reason"), "expired");
            assert_eq!(h("agora-dead-letter-deliveries"), "0");
            assert_eq!(h("agora-dead-letter-from"), "queue:orders");
        }
        f => panic!("expected the expired message, got {f:?}"),
    }
}

#[test]
fn replicated_queues_need_a_cluster_and_a_data_directory() {
    let bind = |c: Config| {
        smol::block_on(Server::bind(c))
            .err()
            .expect("refused")
            .to_string()
    };
    let alone = Config {
        replicated_queues: vec![Pattern::parse("queue:orders").unwrap()],
        ..Config::ephemeral()
    };
    assert!(bind(alone).contains("--replicated-queues needs a cluster"));
    let diskless = Config {
        replicated_queues: vec![Pattern::parse("queue:orders").unwrap()],
        ..cluster_node(1)
    };
    assert!(bind(diskless).contains("--replicated-queues needs --data-dir"));
}
