//! A cluster row's three nodes: started one after the other with what each must know
//! of the others (Agora's `--peers`, NATS's routes, RabbitMQ's peer list and cookie),
//! and the RabbitMQ cluster checked to be one before it is measured.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Bins, Server};
use crate::System;

/// Which node of a three-node cluster a server is: its index (0, 1, 2) and what the
/// nodes must know of each other before any starts.
#[derive(Clone, Copy)]
pub(super) struct NodeOf<'a> {
    pub(super) index: usize,
    /// Each node's port for the other nodes (Agora's `--cluster-listen`, NATS's routes;
    /// unused by RabbitMQ, whose nodes find each other through their port mapper).
    pub(super) links: &'a [u16],
    /// The port mapper all of a RabbitMQ cluster's nodes share.
    pub(super) epmd: u16,
}

/// Nodes in a cluster row.
const CLUSTER_NODES: usize = 3;
/// The Agora cluster's shared secret: a bench's, on loopback, not a real one.
const CLUSTER_SECRET: &str = "agora-bench cluster secret";
/// The RabbitMQ cluster's Erlang cookie, the same for its three nodes.
const ERLANG_COOKIE: &str = "AGORABENCHCLUSTERCOOKIE";

impl Server {
    /// Starts `system`'s three nodes, one after the other (a RabbitMQ node joins the
    /// ones already running); the first node's `Server` holds the others.
    pub(super) fn start_cluster(
        system: System,
        bins: &Bins,
        log_dir: &Path,
        log_name: &str,
    ) -> Result<Server, String> {
        let links = (0..CLUSTER_NODES)
            .map(|_| free_port())
            .collect::<Result<Vec<u16>, String>>()?;
        let epmd = free_port()?;
        let mut nodes: Vec<Server> = Vec::new();
        for index in 0..CLUSTER_NODES {
            let name = format!("{log_name}-{}", index + 1);
            let extra = match system {
                System::AgoraCluster => {
                    let peers = links
                        .iter()
                        .enumerate()
                        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
                        .collect::<Vec<_>>()
                        .join(",");
                    [
                        "--node-id",
                        &(index + 1).to_string(),
                        "--cluster-listen",
                        &format!("127.0.0.1:{}", links[index]),
                        "--peers",
                        &peers,
                        "--cluster-name",
                        "bench",
                        "--cluster-secret",
                        CLUSTER_SECRET,
                        "--replicated-queues",
                        ">",
                    ]
                    .map(str::to_owned)
                    .to_vec()
                }
                _ => Vec::new(),
            };
            let node = NodeOf {
                index,
                links: &links,
                epmd,
            };
            // On an error the nodes started so far stop as `nodes` drops.
            nodes.push(Server::start_node(
                system,
                bins,
                log_dir,
                &name,
                &extra,
                Some(node),
            )?);
        }
        if system == System::RabbitmqCluster {
            // Peer discovery may boot a node alone: the row counts only as a cluster.
            let home = nodes[0].data.clone().ok_or("the first node's directory")?;
            rabbitmq_wait_clustered(&home, epmd)?;
        }
        let mut first = nodes.remove(0);
        first.others = nodes;
        Ok(first)
    }

    /// Each node's client address, in node order (one for a single broker).
    pub(crate) fn addrs(&self) -> Vec<String> {
        std::iter::once(self.addr.clone())
            .chain(self.others.iter().map(|s| s.addr.clone()))
            .collect()
    }

    /// The broker's processes: the node's (or, under a start-up script, the worker's)
    /// and each other node's.
    pub(crate) fn pids(&self) -> Vec<u32> {
        std::iter::once(self.pid())
            .chain(self.others.iter().map(|s| s.pid()))
            .collect()
    }
}

/// The Erlang node name of a RabbitMQ cluster's node `index`.
pub(super) fn rabbitmq_node(epmd: u16, index: usize) -> String {
    format!("bench{epmd}n{}@localhost", index + 1)
}

/// Waits (60 s at most) until the first node of the RabbitMQ cluster on port mapper
/// `epmd` reports every node running (`rabbitmqctl cluster_status`, with the cookie
/// in `home`).
fn rabbitmq_wait_clustered(home: &Path, epmd: u16) -> Result<(), String> {
    let ctl = Path::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
    let end = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < end {
        let out = Command::new(ctl)
            .args([
                "-n",
                &rabbitmq_node(epmd, 0),
                "cluster_status",
                "--formatter",
                "json",
            ])
            .env("HOME", home)
            .env("ERL_EPMD_PORT", epmd.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", ctl.display()))?;
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let running = status["running_nodes"].as_array().map_or(0, Vec::len);
        if running == CLUSTER_NODES {
            return Ok(());
        }
        last = format!(
            "{running} running: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!(
        "rabbitmq-cluster: not {CLUSTER_NODES} nodes running within 60 s ({last})"
    ))
}

/// rabbitmq.conf lines that make the nodes one cluster: each, on its first start,
/// joins the nodes of the list already running.
pub(super) fn rabbitmq_peers(epmd: u16) -> String {
    let mut conf = "cluster_formation.peer_discovery_backend = classic_config\n".to_owned();
    for i in 0..CLUSTER_NODES {
        conf += &format!(
            "cluster_formation.classic_config.nodes.{} = {}\n",
            i + 1,
            rabbitmq_node(epmd, i)
        );
    }
    conf
}

/// The cluster's Erlang cookie in `home`, readable by its owner only (Erlang refuses
/// it otherwise).
pub(super) fn write_cookie(home: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = home.join(".erlang.cookie");
    fs::write(&path, ERLANG_COOKIE).map_err(|e| format!("{}: {e}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400))
        .map_err(|e| format!("{}: {e}", path.display()))
}
