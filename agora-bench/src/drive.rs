//! Each system's driver for one run of a cell: built from the server's address (a
//! cluster's: the node its queue needs), then the scenario run with it.

use crate::drivers;
use crate::scenario::{self, Cell, Scenario, ServerView, Settings};
use crate::{tls, System};

/// A cluster's view for one run: `leader` leads its queue; the clients go to the
/// leader, or for `cluster-failover` to the node after it (which outlives it).
fn cluster_view(server: &ServerView, cell: &Cell, leader: Option<usize>) -> ServerView {
    let at = match (cell.scenario, leader) {
        (Scenario::ClusterFailover, Some(l)) => (l + 1) % server.nodes.len().max(1),
        (_, Some(l)) => l,
        (_, None) => 0,
    };
    ServerView {
        addr: server
            .nodes
            .get(at)
            .cloned()
            .unwrap_or_else(|| server.addr.clone()),
        nodes: server.nodes.clone(),
        leader,
        pids: server.pids.clone(),
        ..*server
    }
}

pub(crate) fn run_cell(
    server: &ServerView,
    cell: &Cell,
    settings: &Settings,
    name: String,
    tls_client: &Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<scenario::Measured, String> {
    let addr = server.addr.clone();
    // Each system's driver, built from the server's address, runs the same scenario.
    macro_rules! with {
        ($driver:expr) => {
            scenario::run(&$driver, server, cell, settings, name)
        };
    }
    match server.system {
        System::Agora
        | System::AgoraDedicated
        | System::AgoraDurable
        | System::AgoraDurableEvery => {
            with!(drivers::agora::Agora {
                addr,
                threads: server.system.sdk_threads(),
            })
        }
        #[cfg(feature = "peers")]
        System::Jetstream | System::JetstreamDefault => {
            with!(drivers::jetstream::Jetstream {
                addr,
                // durable-confirm was measured on a stream with the default retention.
                work_queue: cell.scenario != Scenario::DurableConfirm,
                replicas: 1,
            })
        }
        #[cfg(not(feature = "peers"))]
        System::Jetstream | System::JetstreamDefault => {
            Err("built without the `peers` feature".into())
        }
        // The clients on the node leading the queue: a replicated queue's consumers
        // are served there (publishes elsewhere would be forwarded to it); the
        // failover's publisher on the next node, which outlives the leader.
        System::AgoraCluster => {
            let at = drivers::agora::cluster_leader(&server.nodes, &name)?;
            let leader = server.nodes.iter().position(|a| *a == at);
            let view = cluster_view(server, cell, leader);
            let driver = drivers::agora::Agora {
                addr: view.addr.clone(),
                threads: server.system.sdk_threads(),
            };
            scenario::run(&driver, &view, cell, settings, name)
        }
        #[cfg(feature = "peers")]
        System::JetstreamCluster => {
            let consumed = cell.scenario == Scenario::ClusterQueue4;
            let mut driver =
                drivers::jetstream::Jetstream::on_leader(&server.nodes, &name, 3, consumed)?;
            let leader = server.nodes.iter().position(|a| *a == driver.addr);
            let view = cluster_view(server, cell, leader);
            driver.addr = view.addr.clone();
            scenario::run(&driver, &view, cell, settings, name)
        }
        // A quorum queue's first leader is the node that declares it: the first.
        #[cfg(feature = "peers")]
        System::RabbitmqCluster => {
            use drivers::{Driver, Publisher};
            let first = drivers::rabbitmq::Rabbitmq { addr, quorum: true };
            let dest = drivers::Dest {
                queue: true,
                name: name.clone(),
            };
            first.block_on(async { first.publisher(&dest).await?.close().await })?;
            let view = cluster_view(server, cell, Some(0));
            let driver = drivers::rabbitmq::Rabbitmq {
                addr: view.addr.clone(),
                quorum: true,
            };
            scenario::run(&driver, &view, cell, settings, name)
        }
        #[cfg(not(feature = "peers"))]
        System::JetstreamCluster | System::RabbitmqCluster => {
            Err("built without the `peers` feature".into())
        }
        #[cfg(feature = "peers")]
        System::RabbitmqQuorum => with!(drivers::rabbitmq::Rabbitmq { addr, quorum: true }),
        #[cfg(feature = "peers")]
        System::RabbitmqClassic => with!(drivers::rabbitmq::Rabbitmq {
            addr,
            quorum: false
        }),
        #[cfg(not(feature = "peers"))]
        System::RabbitmqQuorum | System::RabbitmqClassic => {
            Err("built without the `peers` feature".into())
        }
        System::AgoraLean | System::AgoraLeanHttp => with!(drivers::agora_lean::AgoraLean {
            addr,
            dial: drivers::lean::Plain
        }),
        System::NatsLean => with!(drivers::nats_lean::NatsLean {
            addr,
            dial: drivers::lean::Plain
        }),
        // A fresh dial per run: what it records is this run's connections.
        System::AgoraLeanTls | System::NatsLeanTls => {
            let config = tls_client.clone().ok_or("no TLS client configuration")?;
            let dial = tls::Tls::new(config);
            match server.system {
                System::AgoraLeanTls => with!(drivers::agora_lean::AgoraLean { addr, dial }),
                _ => with!(drivers::nats_lean::NatsLean { addr, dial }),
            }
        }
        System::RedisLean => with!(drivers::redis_lean::RedisLean { addr }),
        System::Raw => with!(drivers::raw::Raw { addr }),
        System::AgoraMqtt | System::Mosquitto => with!(drivers::mqtt_lean::MqttLean { addr }),
        #[cfg(feature = "peers")]
        System::Nats => with!(drivers::nats::Nats { addr }),
        #[cfg(feature = "peers")]
        System::Redis => with!(drivers::redis::Redis { addr }),
        #[cfg(not(feature = "peers"))]
        System::Nats | System::Redis => Err("built without the `peers` feature".into()),
    }
}
