//! The SDK against a cluster of three in-process brokers: a subscriber on one node gets
//! what is published on another, follows its subscription to the next broker of its
//! list when its own stops, a request made on one node is answered on another, and a
//! replicated queue confirms on one node and is delivered by its leader.

mod common;

use agora_client::{Client, Reconnect};
use common::*;
use futures_lite::StreamExt;

/// Waits until the broker `client` is connected to counts `n` subscriptions (its own
/// clients' and other nodes' links') to topic `name`.
async fn subscribed(client: &Client, name: &str, n: u64) {
    wait_until(&format!("{n} subscriptions to {name}"), || async {
        let st = within(client.stats()).await.expect("stats");
        st.destinations
            .iter()
            .find(|d| d.name == name)
            .map_or(0, |d| d.consumers)
            == n
    })
    .await;
}

#[test]
fn a_subscriber_gets_what_another_node_publishes_and_follows_its_list_when_its_node_stops() {
    let mut nodes = start_cluster(3);
    let list = format!("{},{},{}", nodes[0].addr, nodes[1].addr, nodes[2].addr);
    smol::block_on(async {
        // Connected to node 1 (the first of its list), reconnecting through the rest.
        let subscriber = Client::builder()
            .reconnect(Reconnect::default())
            .connect(list.as_str())
            .await
            .unwrap();
        let mut orders = subscriber.subscribe("orders.eu").await.unwrap();
        let publisher = Client::connect(nodes[2].addr).await.unwrap();
        subscribed(&publisher, "orders.eu", 1).await;
        let topic = publisher.topic("orders.eu").unwrap();
        for i in 0..50 {
            topic.publish(format!("o{i}")).await.unwrap();
        }
        for i in 0..50 {
            let m = within(orders.next()).await.unwrap();
            assert_eq!(m.payload(), format!("o{i}").as_bytes());
        }
        // Node 1 stops: the subscriber moves to node 2 and subscribes again there.
        nodes.remove(0).stop();
        wait_until("the subscriber is connected again", || async {
            subscriber.is_connected() && subscriber.generation() >= 2
        })
        .await;
        // Node 3 has let node 1's links (and their subscription) go, and has node 2's.
        wait_until("node 3 sees node 1 gone", || async {
            let st = within(publisher.stats()).await.expect("stats");
            let c = st.cluster.expect("a cluster section");
            let p = c.peers.iter().find(|p| p.node == 1).expect("node 1");
            p.link_in == "down" && p.link_out == "down"
        })
        .await;
        subscribed(&publisher, "orders.eu", 1).await;
        for i in 50..100 {
            topic.publish(format!("o{i}")).await.unwrap();
        }
        for i in 50..100 {
            let m = within(orders.next()).await.unwrap();
            assert_eq!(m.payload(), format!("o{i}").as_bytes());
        }
    });
}

#[test]
fn a_request_made_on_one_node_is_answered_on_another() {
    let nodes = start_cluster(3);
    smol::block_on(async {
        let responder = Client::connect(nodes[1].addr).await.unwrap();
        let mut requests = responder.subscribe("svc.time").await.unwrap();
        let answering = std::thread::spawn(move || {
            smol::block_on(async {
                while let Some(req) = requests.next().await {
                    let mut answer = b"node 2: ".to_vec();
                    answer.extend_from_slice(req.payload());
                    if req.respond(answer).await.is_err() {
                        break;
                    }
                }
            })
        });
        let requester = Client::connect(nodes[0].addr).await.unwrap();
        subscribed(&requester, "svc.time", 1).await;
        for i in 0..20 {
            let reply = within(requester.request("topic:svc.time", format!("{i}")))
                .await
                .unwrap();
            assert_eq!(reply.payload(), format!("node 2: {i}").as_bytes());
        }
        responder.close().await.unwrap();
        let _ = answering.join();
    });
}

#[test]
fn a_replicated_queue_confirms_on_any_node_and_its_leader_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(3, |id, c| agora_server::Config {
        data_dir: Some(dir.path().join(format!("node{id}"))),
        replicated_queues: vec![agora_server::auth::Pattern::parse("queue:orders").unwrap()],
        ..c
    });
    smol::block_on(async {
        let clients: Vec<Client> = futures_lite::stream::iter(&nodes)
            .then(|n| async move { Client::connect(n.addr).await.unwrap() })
            .collect()
            .await;
        // The first publish makes the group; it elects a leader in a second or two.
        let q = clients[0].queue("orders").unwrap();
        wait_until("a confirmed publish", || async {
            q.publish_confirmed("first").await.is_ok()
        })
        .await;
        for i in 0..20 {
            q.publish_confirmed(format!("o{i}")).await.unwrap();
        }
        // Every node's STATS names the same leader.
        let leaders = || async {
            let mut seen = Vec::new();
            for c in &clients {
                let st = within(c.stats()).await.expect("stats");
                let r = st.cluster.expect("a cluster section").replicated;
                seen.push(r.get("orders").map_or(0, |g| g.leader));
            }
            seen
        };
        wait_until("every node knows the leader", || async {
            let seen = leaders().await;
            seen[0] != 0 && seen.iter().all(|&l| l == seen[0])
        })
        .await;
        let leader = leaders().await[0];
        let on_leader = &clients[leader as usize - 1];
        wait_until("the leader serves", || async {
            let st = within(on_leader.stats()).await.unwrap();
            let g = st.cluster.unwrap().replicated["orders"].clone();
            assert_eq!(g.voters, vec![1, 2, 3]);
            g.serving
        })
        .await;
        // Its consumer gets all 21, in order.
        let mut c = clients[leader as usize - 1]
            .consume("orders", 100)
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..21 {
            let d = within(c.next()).await.unwrap();
            got.push(String::from_utf8(d.payload().to_vec()).unwrap());
            d.ack().await.unwrap();
        }
        let want: Vec<String> = std::iter::once("first".to_owned())
            .chain((0..20).map(|i| format!("o{i}")))
            .collect();
        assert_eq!(got, want);
    });
}
