//! A cluster of brokers in one process, over real sockets: topics across nodes (each
//! message once per subscription, only where it is wanted, never round again), the
//! link handshake (strangers and wrong secrets refused), links that come back after a
//! node restarts, and the configuration's checks.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use agora_protocol::cluster::{self, Line};
use agora_protocol::ServerFrame;
use agora_server::{Config, Server};
use common::*;

/// A subscription on a node: `SUB #1 <dest> <sid>`, answered OK.
fn sub(c: &mut Raw, dest: &str, sid: u64) {
    c.send(format!("SUB #{sid} {dest} {sid}\r\n").as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(sid) });
}

/// How many subscriptions `pattern` has on the node `c` is connected to: its own
/// clients' and the other nodes' links'.
fn subscriptions(c: &mut Raw, pattern: &str) -> u64 {
    let stats = c.stats();
    let name = pattern.strip_prefix("topic:").unwrap();
    if name.contains('*') || name.contains('>') {
        stats["wildcards"]["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pattern"] == pattern)
            .map_or(0, |p| p["subscriptions"].as_u64().unwrap())
    } else {
        dest_stats(&stats, "topic", name).map_or(0, |d| d["consumers"].as_u64().unwrap())
    }
}

/// Waits until `pattern` has `n` subscriptions on `c`'s node.
fn wait_for_subscriptions(c: &mut Raw, pattern: &str, n: u64) {
    wait_until(&format!("{n} subscriptions to {pattern}"), || {
        subscriptions(c, pattern) == n
    });
}

/// The next `n` deliveries' (sid, topic, payload).
fn deliveries(c: &mut Raw, n: usize) -> Vec<(u64, String, String)> {
    (0..n)
        .map(|_| match c.next() {
            ServerFrame::Msg(m) => (
                m.sid,
                m.dest.name.as_str().to_owned(),
                String::from_utf8(m.payload.to_vec()).unwrap(),
            ),
            other => panic!("expected a delivery, got {other:?}"),
        })
        .collect()
}

/// This node's figures for its link with node `id`.
fn peer(c: &mut Raw, id: u64) -> serde_json::Value {
    let stats = c.stats();
    stats["cluster"]["peers"]
        .as_array()
        .expect("a cluster section")
        .iter()
        .find(|p| p["node"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("node {id} in {stats}"))
}

fn three() -> Vec<TestServer> {
    start_cluster(vec![cluster_node(1), cluster_node(2), cluster_node(3)]).0
}

fn links_up(nodes: &[TestServer]) {
    for (i, n) in nodes.iter().enumerate() {
        let mut c = n.connect();
        for other in 1..=nodes.len() as u64 {
            if other != i as u64 + 1 {
                wait_until(&format!("node {} linked with node {other}", i + 1), || {
                    let p = peer(&mut c, other);
                    p["link_out"] == "up" && p["link_in"] == "up"
                });
            }
        }
    }
}

#[test]
fn a_publish_on_one_node_reaches_every_matching_subscription_on_every_node_once() {
    let nodes = three();
    links_up(&nodes);
    let (mut n1, mut n2, mut n3) = (nodes[0].connect(), nodes[1].connect(), nodes[2].connect());
    // Node 1: its own subscriber; node 2: two overlapping subscriptions; node 3: one
    // concrete topic.
    sub(&mut n1, "topic:sensors.>", 1);
    sub(&mut n2, "topic:sensors.>", 1);
    sub(&mut n2, "topic:sensors.*.temp", 2);
    sub(&mut n3, "topic:sensors.kitchen.temp", 1);
    // Node 1 sees node 2's interest (its link's subscriptions) and node 3's.
    let mut probe = nodes[0].connect();
    wait_for_subscriptions(&mut probe, "topic:sensors.>", 2);
    wait_for_subscriptions(&mut probe, "topic:sensors.*.temp", 1);
    wait_for_subscriptions(&mut probe, "topic:sensors.kitchen.temp", 1);

    let mut p = nodes[0].connect();
    for i in 0..100 {
        publish(
            &mut p,
            "topic:sensors.kitchen.temp",
            format!("t{i}").as_bytes(),
        );
    }
    p.sync(1);
    let want: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let got = deliveries(&mut n1, 100);
    assert!(got
        .iter()
        .all(|(sid, topic, _)| *sid == 1 && topic == "sensors.kitchen.temp"));
    assert_eq!(got.iter().map(|d| d.2.clone()).collect::<Vec<_>>(), want);
    // Node 2: each message once per subscription (its link took it once), in order
    // per subscription.
    let got = deliveries(&mut n2, 200);
    for sid in [1, 2] {
        let mine: Vec<String> = got
            .iter()
            .filter(|d| d.0 == sid)
            .map(|d| d.2.clone())
            .collect();
        assert_eq!(mine, want, "node 2's subscription {sid}");
    }
    let got = deliveries(&mut n3, 100);
    assert_eq!(got.iter().map(|d| d.2.clone()).collect::<Vec<_>>(), want);

    // Node 2 published nothing to node 3: what it got over a link it kept. A message
    // published on node 2 follows on that link, so anything node 2 had sent on
    // before it would be counted already.
    let mut p2 = nodes[1].connect();
    publish(&mut p2, "topic:sensors.kitchen.temp", b"from node 2");
    assert_eq!(deliveries(&mut n3, 1)[0].2, "from node 2");
    assert_eq!(peer(&mut n3, 2)["messages_in"], 1);
    assert_eq!(peer(&mut n3, 1)["messages_in"], 100);
    // Node 2's own subscribers had it, and node 1's.
    assert_eq!(deliveries(&mut n2, 2).len(), 2);
    assert_eq!(deliveries(&mut n1, 1)[0].2, "from node 2");
}

#[test]
fn a_node_sends_a_message_only_to_nodes_that_want_it() {
    let nodes = three();
    links_up(&nodes);
    let mut n2 = nodes[1].connect();
    sub(&mut n2, "topic:wanted", 1);
    let mut probe = nodes[0].connect();
    wait_for_subscriptions(&mut probe, "topic:wanted", 1);
    let mut p = nodes[0].connect();
    for i in 0..50 {
        publish(&mut p, "topic:unwanted", format!("u{i}").as_bytes());
    }
    publish(&mut p, "topic:wanted", b"w");
    assert_eq!(deliveries(&mut n2, 1)[0].2, "w");
    // The link carried the wanted one only (the unwanted went before it on it).
    assert_eq!(peer(&mut n2, 1)["messages_in"], 1);
    let mut n3 = nodes[2].connect();
    assert_eq!(peer(&mut n3, 1)["messages_in"], 0);
    // An unsubscribed pattern is given up on the other nodes.
    n2.send(b"UNSUB #9 1\r\n");
    assert_eq!(n2.next(), ServerFrame::Ok { rid: Some(9) });
    wait_for_subscriptions(&mut probe, "topic:wanted", 0);
}

/// Reads one handshake line from a raw socket (or `None` once it is closed).
fn line(s: &mut TcpStream) -> Option<Line> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(_) => buf.push(b[0]),
        }
        if let Some((l, _)) = cluster::decode(&buf).expect("a handshake line") {
            return Some(l);
        }
    }
}

#[test]
fn strangers_and_clients_are_refused_at_the_cluster_port() {
    let (nodes, peers) = start_cluster(vec![cluster_node(1), cluster_node(2)]);
    let port = &peers[0].1;
    let hello = |node: u64, cluster: &str| Line::Hello {
        cluster: cluster.to_owned(),
        node,
        nonce: "00112233445566778899aabbccddeeff".to_owned(),
        proof: None,
        peers: None,
        tick: None,
    };
    for (l, why) in [
        (hello(9, "test"), "node 9 is not one of this node's --peers"),
        (hello(2, "other"), "not other"),
        (hello(1, "test"), "node 1 is this node"),
    ] {
        let mut s = TcpStream::connect(port.as_str()).unwrap();
        s.write_all(&cluster::encode(&l)).unwrap();
        match line(&mut s) {
            Some(Line::Err(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("expected ERR, got {other:?}"),
        }
        assert_eq!(line(&mut s), None, "closed after the refusal");
    }
    // A native client at the cluster port is refused the same way.
    let mut s = TcpStream::connect(port.as_str()).unwrap();
    s.write_all(b"CONNECT name=lost\r\n").unwrap();
    assert_eq!(line(&mut s), None);
    // A node 2 that answers the handshake but cannot prove: refused after its proof.
    let mut s = TcpStream::connect(port.as_str()).unwrap();
    s.write_all(&cluster::encode(&hello(2, "test"))).unwrap();
    assert!(matches!(
        line(&mut s),
        Some(Line::Hello { proof: Some(_), .. })
    ));
    s.write_all(&cluster::encode(&Line::Proof("ab".repeat(32))))
        .unwrap();
    match line(&mut s) {
        Some(Line::Err(m)) => assert!(m.contains("proof is wrong"), "{m}"),
        other => panic!("expected ERR, got {other:?}"),
    }
    // The real node 2 is linked all along.
    let mut c = nodes[0].connect();
    wait_until("node 2 linked", || peer(&mut c, 2)["link_in"] == "up");
}

#[test]
fn a_node_with_another_secret_is_not_linked_and_stats_says_why() {
    let mut wrong = cluster_node(2);
    wrong.cluster_secret = Some(agora_server::config::Secret(
        "not the test cluster's".into(),
    ));
    let (nodes, _) = start_cluster(vec![cluster_node(1), wrong]);
    let mut c1 = nodes[0].connect();
    let mut c2 = nodes[1].connect();
    wait_until("node 1 gives up on node 2's proof", || {
        peer(&mut c1, 2)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("node 2's proof is wrong"))
    });
    wait_until("node 2 gives up on node 1's proof", || {
        peer(&mut c2, 1)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("node 1's proof is wrong"))
    });
    for (c, other) in [(&mut c1, 2), (&mut c2, 1)] {
        let p = peer(c, other);
        assert_eq!(
            (p["link_out"].as_str(), p["link_in"].as_str()),
            (Some("down"), Some("down"))
        );
    }
}

#[test]
fn links_come_back_when_a_node_restarts() {
    let (mut nodes, peers) = start_cluster(vec![cluster_node(1), cluster_node(2)]);
    links_up(&nodes);
    let mut c1 = nodes[0].connect();
    nodes[1].shutdown().unwrap();
    wait_until("node 1 sees node 2 go", || {
        let p = peer(&mut c1, 2);
        p["link_out"] == "down" && p["link_in"] == "down"
    });
    // Node 2 again, at its cluster address; a subscriber there gets node 1's publishes.
    let mut again = cluster_node(2);
    again.cluster_listen = Some(peers[1].1.parse().unwrap());
    again.peers = peers.clone();
    let node2 = start_with(again);
    let mut n2 = node2.connect();
    sub(&mut n2, "topic:back", 1);
    wait_for_subscriptions(&mut c1, "topic:back", 1);
    wait_until("node 1 linked to node 2 again", || {
        peer(&mut c1, 2)["connects"].as_u64().unwrap() >= 2
    });
    let mut p = nodes[0].connect();
    publish(&mut p, "topic:back", b"hello again");
    assert_eq!(deliveries(&mut n2, 1)[0].2, "hello again");
}

#[test]
fn metrics_show_each_link() {
    let one = Config {
        http_port: Some(0),
        ..cluster_node(1)
    };
    let (nodes, _) = start_cluster(vec![one, cluster_node(2), cluster_node(3)]);
    links_up(&nodes);
    let web = nodes[0].http.unwrap();
    let text = String::from_utf8(common::http::get(web, "/metrics").body).unwrap();
    for node in [2, 3] {
        assert!(
            text.contains(&format!("agora_cluster_link_up{{node=\"{node}\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("agora_cluster_link_in_up{{node=\"{node}\"}} 1\n")),
            "{text}"
        );
    }
    assert!(
        text.contains("# TYPE agora_cluster_received_messages_total counter"),
        "{text}"
    );
}

#[test]
fn a_half_configured_cluster_is_refused_with_what_is_missing() {
    let bind = |c: Config| {
        smol::block_on(Server::bind(c))
            .err()
            .expect("refused")
            .to_string()
    };
    let half = Config {
        node_id: Some(1),
        ..Config::ephemeral()
    };
    let e = bind(half);
    assert!(
        e.contains("missing: --cluster-listen, --peers, --cluster-secret"),
        "{e}"
    );
    let mut not_listed = cluster_node(1);
    not_listed.peers = vec![(2, "127.0.0.1:1".into())];
    let e = bind(not_listed);
    assert!(e.contains("this one (--node-id 1) included"), "{e}");
}

#[test]
fn a_request_on_one_node_is_answered_by_a_responder_on_another() {
    let nodes = three();
    links_up(&nodes);
    // The responder is on node 2; the requester on node 1, its inbox naming node 1.
    let mut responder = nodes[1].connect();
    sub(&mut responder, "topic:svc.echo", 1);
    let mut requester = nodes[0].connect();
    let ServerFrame::Info(info) = requester.info.clone() else {
        panic!()
    };
    let inbox = info.inbox.expect("an inbox");
    assert!(inbox.ends_with("_1"), "{inbox}");
    sub(&mut requester, &format!("topic:{inbox}"), 7);
    wait_for_subscriptions(&mut requester, "topic:svc.echo", 1);
    for i in 0..20 {
        let address = format!("topic:{inbox}.{i}");
        request(
            &mut requester,
            100 + i,
            "topic:svc.echo",
            &address,
            &format!("q{i}"),
        );
        let m = match responder.next() {
            ServerFrame::Msg(m) => m,
            f => panic!("expected the request, got {f:?}"),
        };
        assert_eq!(&m.payload[..], format!("q{i}").as_bytes());
        let reply_to = m.headers.get("agora-reply-to").expect("the reply address");
        assert_eq!(reply_to, address);
        // The responder answers on node 2; the reply goes to node 1 over its link.
        publish(&mut responder, reply_to, format!("a{i}").as_bytes());
        let mut got = None;
        for _ in 0..2 {
            match requester.next() {
                ServerFrame::Msg(m) => got = Some(m),
                ServerFrame::PubAck { .. } | ServerFrame::Ok { .. } => {}
                f => panic!("expected the reply, got {f:?}"),
            }
            if got.is_some() {
                break;
            }
        }
        let m = got.expect("the reply");
        assert_eq!(
            (m.sid, m.dest.to_string(), &m.payload[..]),
            (7, address, format!("a{i}").as_bytes())
        );
    }
    // A request to a topic nobody on any node listens to is still refused at once.
    request(
        &mut requester,
        200,
        "topic:svc.nobody",
        &format!("topic:{inbox}.x"),
        "q",
    );
    requester.expect_err(agora_protocol::ErrorCode::NoResponders);
    let mut c2 = nodes[1].connect();
    assert_eq!(peer(&mut c2, 1)["replies_lost"], 0);
}

/// Node `id` of a cluster whose links are TLS, with a certificate `pki` signed for
/// 127.0.0.1.
fn tls_node(id: u64, pki: &pki::Pki, ca: &std::path::Path) -> Config {
    let issued = pki.issue(&format!("node{id}"));
    Config {
        cluster_ca: Some(ca.to_owned()),
        cluster_cert: Some(issued.cert),
        cluster_key: Some(issued.key),
        ..cluster_node(id)
    }
}

#[test]
fn links_over_tls_carry_topics_and_refuse_a_node_the_cluster_ca_did_not_sign() {
    let pki = pki::Pki::new("cluster");
    let stranger = pki::Pki::new("elsewhere");
    let ca = pki.ca_file();
    // Node 3 has the cluster's secret but a certificate from another CA.
    let (nodes, peers) = start_cluster(vec![
        tls_node(1, &pki, &ca),
        tls_node(2, &pki, &ca),
        tls_node(3, &stranger, &ca),
    ]);
    let mut c1 = nodes[0].connect();
    wait_until("nodes 1 and 2 linked over TLS", || {
        let p = peer(&mut c1, 2);
        p["link_out"] == "up" && p["link_in"] == "up"
    });
    wait_until("node 1 refuses node 3's certificate", || {
        peer(&mut c1, 3)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("TLS to") && e.contains("certificate"))
    });
    // Nor does node 3 get in: its certificate is checked at node 1's port too.
    let mut c3 = nodes[2].connect();
    wait_until("node 3 is refused at node 1", || {
        peer(&mut c3, 1)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("UnknownCA"))
    });
    assert_eq!(peer(&mut c1, 3)["link_in"], "down");
    let mut n2 = nodes[1].connect();
    sub(&mut n2, "topic:private", 1);
    wait_for_subscriptions(&mut c1, "topic:private", 1);
    let mut p = nodes[0].connect();
    publish(&mut p, "topic:private", b"over TLS");
    assert_eq!(deliveries(&mut n2, 1)[0].2, "over TLS");
    // The cluster port speaks TLS first: a clear handshake line gets no answer.
    let mut s = TcpStream::connect(peers[0].1.as_str()).unwrap();
    let hello = Line::Hello {
        cluster: "test".to_owned(),
        node: 2,
        nonce: "00112233445566778899aabbccddeeff".to_owned(),
        proof: None,
        peers: None,
        tick: None,
    };
    s.write_all(&cluster::encode(&hello)).unwrap();
    assert!(!matches!(line(&mut s), Some(Line::Hello { .. })));
}

#[test]
fn tls_on_links_needs_all_three_files() {
    let pki = pki::Pki::new("cluster");
    let issued = pki.issue("node1");
    let half = Config {
        cluster_ca: Some(pki.ca_file()),
        cluster_cert: Some(issued.cert),
        ..cluster_node(1)
    };
    let e = smol::block_on(Server::bind(half))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("needs all of --cluster-ca, --cluster-cert and --cluster-key"),
        "{e}"
    );
}

/// A node of a cluster with replicated queues links only to nodes that list the same
/// nodes in `--peers` (a queue's voters follow from them), and a node whose data
/// directory holds replicated queues made over other nodes does not start.
#[test]
fn a_replicating_cluster_keeps_the_nodes_it_was_made_over() {
    let dir = tempfile::tempdir().unwrap();
    let node = |id: u64| Config {
        data_dir: Some(dir.path().join(format!("node{id}"))),
        replicated_queues: vec![agora_server::auth::Pattern::parse("queue:orders").unwrap()],
        ..cluster_node(id)
    };
    let (mut nodes, peers) = start_cluster(vec![node(1), node(2), node(3)]);
    // At the cluster port: a node 2 that lists a fourth node, or does not say (an
    // earlier Agora), is refused, told why.
    let hello = |peers: Option<String>| Line::Hello {
        cluster: "test".to_owned(),
        node: 2,
        nonce: "00112233445566778899aabbccddeeff".to_owned(),
        proof: None,
        peers,
        tick: None,
    };
    // One that ticks faster than this node's 100 ms (--raft-tick): refused too.
    let fast = Line::Hello {
        cluster: "test".to_owned(),
        node: 2,
        nonce: "00112233445566778899aabbccddeeff".to_owned(),
        proof: None,
        peers: Some(cluster::peers_digest(&[1, 2, 3])),
        tick: Some(25),
    };
    let mut s = TcpStream::connect(peers[0].1.as_str()).unwrap();
    s.write_all(&cluster::encode(&fast)).unwrap();
    match line(&mut s) {
        Some(Line::Err(m)) => assert!(
            m.contains("node 2 ticks every 25 ms and this node every 100 ms"),
            "{m}"
        ),
        other => panic!("expected ERR, got {other:?}"),
    }
    for (said, why) in [
        (
            Some(cluster::peers_digest(&[1, 2, 3, 4])),
            "node 2 lists other nodes in its --peers than this node (1,2,3)",
        ),
        (None, "does not say which nodes its --peers lists"),
    ] {
        let mut s = TcpStream::connect(peers[0].1.as_str()).unwrap();
        s.write_all(&cluster::encode(&hello(said))).unwrap();
        match line(&mut s) {
            Some(Line::Err(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("expected ERR, got {other:?}"),
        }
    }
    // The same nodes: answered.
    let mut s = TcpStream::connect(peers[0].1.as_str()).unwrap();
    s.write_all(&cluster::encode(&hello(Some(cluster::peers_digest(&[
        3, 2, 1,
    ])))))
    .unwrap();
    assert!(matches!(
        line(&mut s),
        Some(Line::Hello {
            proof: Some(_),
            peers: Some(_),
            ..
        })
    ));
    drop(s);
    // Every node stops; node 1 started again with a fourth node in --peers: refused,
    // saying what to do.
    for n in &mut nodes {
        n.shutdown().unwrap();
    }
    let mut grown = peers.clone();
    grown.push((4, "127.0.0.1:1".to_owned()));
    let mut again = node(1);
    again.cluster_listen = Some(peers[0].1.parse().unwrap());
    let mut bound = smol::block_on(Server::bind(again.clone())).unwrap();
    bound.set_peers(grown).unwrap();
    let why = serve_bound(bound).shutdown().unwrap_err().to_string();
    assert!(
        why.contains("made by a cluster of nodes 1,2,3")
            && why.contains("--peers now lists nodes 1,2,3,4")
            && why.contains("membership changes are not built"),
        "{why}"
    );
    // With the nodes it was made over, it starts.
    let mut bound = smol::block_on(Server::bind(again)).unwrap();
    bound.set_peers(peers).unwrap();
    let mut n = serve_bound(bound);
    n.connect().stats();
    n.shutdown().unwrap();
}
