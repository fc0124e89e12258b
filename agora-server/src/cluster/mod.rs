//! A cluster of brokers (issue 25), first part: nodes that know each other, links that
//! prove they share the cluster's secret, and topics across nodes.
//!
//! Every node dials every other node's `--cluster-listen` address (so a pair of nodes
//! has two links, one each way). A link, once its handshake is done
//! ([`handshake`]), speaks the native protocol: the dialer subscribes there to the
//! topic patterns its own clients subscribe to ([`crate::interest`]), and publishes what comes
//! back to its own subscribers, as a session of its own whose publishes are marked as
//! from a link. A publish is handed to each link at most once, and never to a link
//! when it came over one, so a message crosses from the node it was published on to
//! each node that wants it, once, and no further (as NATS routes do). Durable queues
//! are not replicated yet: each stays on its node.

pub(crate) mod handshake;
mod link;
pub(crate) mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_channel::{Receiver, Sender};
use async_net::TcpListener;

use crate::config::Config;
use crate::Broker;

pub(crate) use link::dial_all;

/// How long a link's handshake may take, either side.
pub(crate) const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The cluster as this node sees it.
pub(crate) struct Cluster {
    pub me: handshake::Identity,
    /// The other nodes.
    pub peers: Vec<Peer>,
    /// The topic patterns this node's own clients subscribe to.
    pub interest: Arc<crate::interest::Interest>,
    /// Who a link's sessions are: may publish and subscribe to every topic.
    pub user: Arc<crate::auth::User>,
    /// TLS on the links (`--cluster-ca`).
    pub tls: Option<tls::LinkTls>,
}

/// Another node, and the state of the links with it.
pub(crate) struct Peer {
    pub id: u64,
    pub addr: String,
    /// This node's link to it is up (handshake done).
    pub out_up: AtomicBool,
    /// Its links to this node that are up (one, but for a moment while a new one
    /// replaces an old one).
    pub in_up: AtomicU64,
    /// When this node's link to it last came up or went down.
    pub since: Mutex<Instant>,
    /// Messages that came from it over this node's link.
    pub messages_in: AtomicU64,
    /// Times this node's link to it came up.
    pub connects: AtomicU64,
    /// Why the last attempt to link to it failed, or the link ended.
    pub last_error: Mutex<Option<String>>,
    /// While this node's link to it is up: what to write on it (replies to its
    /// clients' inboxes).
    pub out: Mutex<Option<async_channel::Sender<agora_protocol::bytes::Bytes>>>,
    /// Replies to its inboxes that could not go (no link, or its queue full).
    pub replies_lost: AtomicU64,
}

impl Cluster {
    /// The cluster `config` describes; `Ok(None)` when it describes none. Every
    /// mistake is refused with what to change.
    pub fn from_config(config: &Config) -> Result<Option<Cluster>, String> {
        let given = [
            ("--node-id", config.node_id.is_some()),
            ("--cluster-listen", config.cluster_listen.is_some()),
            ("--peers", !config.peers.is_empty()),
            ("--cluster-secret", config.cluster_secret.is_some()),
        ];
        if given.iter().all(|(_, g)| !g) {
            if !config.replicated_queues.is_empty() {
                return Err("--replicated-queues needs a cluster: --node-id, --cluster-listen, --peers and --cluster-secret".to_owned());
            }
            return Ok(None);
        }
        let missing: Vec<&str> = given.iter().filter(|(_, g)| !g).map(|(f, _)| *f).collect();
        if !missing.is_empty() {
            return Err(format!(
                "a node of a cluster needs --node-id, --cluster-listen, --peers and --cluster-secret; missing: {}",
                missing.join(", ")
            ));
        }
        if !config.replicated_queues.is_empty() && config.data_dir.is_none() {
            return Err(
                "--replicated-queues needs --data-dir: each node keeps its replicated queues' Raft logs there"
                    .to_owned(),
            );
        }
        let (Some(node), Some(secret)) = (config.node_id, &config.cluster_secret) else {
            unreachable!("checked above");
        };
        if !config.peers.iter().any(|(id, _)| *id == node) {
            return Err(format!(
                "--peers must list every node of the cluster, this one (--node-id {node}) included"
            ));
        }
        let peers = config
            .peers
            .iter()
            .filter(|(id, _)| *id != node)
            .map(|(id, addr)| Peer {
                id: *id,
                addr: addr.clone(),
                out_up: AtomicBool::new(false),
                in_up: AtomicU64::new(0),
                since: Mutex::new(Instant::now()),
                messages_in: AtomicU64::new(0),
                connects: AtomicU64::new(0),
                last_error: Mutex::new(None),
                out: Mutex::new(None),
                replies_lost: AtomicU64::new(0),
            })
            .collect();
        Ok(Some(Cluster {
            me: handshake::Identity {
                cluster: config.cluster_name.clone(),
                node,
                secret: secret.0.clone(),
                peers: config.peers.iter().map(|(id, _)| *id).collect(),
                same_peers: !config.replicated_queues.is_empty(),
                tick_ms: config.raft_tick.as_millis() as u64,
            },
            peers,
            interest: Arc::default(),
            user: Arc::new(crate::auth::User::cluster(node, &config.replicated_queues)),
            tls: None,
        }))
    }

    /// Sends a reply to `dest`, an address under another node's inbox, to that node
    /// over this node's link to it (a reply is a topic message: at most once; one that
    /// finds no link up, or its link's queue full, is counted and dropped). A reply to
    /// no inbox of a node of this cluster is dropped, as one to an inbox nobody holds.
    pub fn forward_reply(&self, dest: &agora_protocol::Destination, msg: &crate::message::Message) {
        let Some(node) = agora_protocol::reply::inbox_of(dest.name.as_str()).and_then(inbox_node)
        else {
            return;
        };
        let Some(peer) = self.peer(node) else {
            return;
        };
        let out = peer.out.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut frame = agora_protocol::bytes::BytesMut::new();
        agora_protocol::encode_pub(None, dest, &msg.headers, &msg.payload, &mut frame);
        if out.is_none_or(|o| o.try_send(frame.freeze()).is_err()) {
            peer.replies_lost.fetch_add(1, Relaxed);
        }
    }

    /// Sends a Raft frame to node `to` over this node's link to it (at most once: one
    /// that finds no link up, or its link's queue full, is dropped, as the network
    /// would; Raft sends again).
    pub fn send_raft(&self, to: u64, frame: Vec<u8>) -> bool {
        let Some(peer) = self.peer(to) else {
            return false;
        };
        let out = peer.out.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(out) = out else {
            return false;
        };
        let dest = agora_protocol::Destination::topic(crate::replicated::RAFT_TOPIC)
            .expect("a valid name");
        let mut bytes = agora_protocol::bytes::BytesMut::new();
        agora_protocol::encode_pub(
            None,
            &dest,
            &agora_protocol::Headers::new(),
            &frame,
            &mut bytes,
        );
        out.try_send(bytes.freeze()).is_ok()
    }

    /// Writes `frames` (answers to deliveries a queue's leader made to this node's
    /// link) on this node's link to node `to`, if that link is still the one of epoch
    /// `epoch` (the deliveries went with an earlier one).
    pub fn send_frames(
        &self,
        to: u64,
        epoch: u64,
        frames: agora_protocol::bytes::Bytes,
    ) -> crate::replicated::Sent {
        use crate::replicated::Sent;
        let Some(peer) = self.peer(to) else {
            return Sent::Gone;
        };
        let out = peer.out.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match out {
            Some(out) if peer.connects.load(SeqCst) == epoch => match out.try_send(frames) {
                Ok(()) => Sent::Away,
                Err(async_channel::TrySendError::Full(_)) => Sent::Full,
                Err(async_channel::TrySendError::Closed(_)) => Sent::Gone,
            },
            _ => Sent::Gone,
        }
    }

    /// The peer with id `id`.
    pub fn peer(&self, id: u64) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// The cluster for `STATS`.
    pub fn stats(&self) -> serde_json::Value {
        let peers: Vec<serde_json::Value> = self
            .peers
            .iter()
            .map(|p| {
                let since = p.since.lock().unwrap_or_else(|e| e.into_inner());
                serde_json::json!({
                    "node": p.id,
                    "addr": p.addr,
                    "link_out": if p.out_up.load(SeqCst) { "up" } else { "down" },
                    "link_in": if p.in_up.load(SeqCst) > 0 { "up" } else { "down" },
                    "for_s": since.elapsed().as_secs(),
                    "connects": p.connects.load(Relaxed),
                    "messages_in": p.messages_in.load(Relaxed),
                    "last_error": *p.last_error.lock().unwrap_or_else(|e| e.into_inner()),
                    "replies_lost": p.replies_lost.load(Relaxed),
                })
            })
            .collect();
        serde_json::json!({
            "name": self.me.cluster,
            "node": self.me.node,
            "raft_tick_ms": self.me.tick_ms,
            "interest": self.interest.patterns().1.len(),
            "peers": peers,
        })
    }
}

impl Peer {
    fn set_error(&self, why: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    fn mark_out(&self, up: bool) {
        if self.out_up.swap(up, SeqCst) != up {
            *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

/// The node an inbox of a node of a cluster names: `$inbox.<nonce>_<node>`.
pub(crate) fn inbox_node(inbox: &str) -> Option<u64> {
    let nonce = inbox.strip_prefix(agora_protocol::reply::INBOX_PREFIX)?;
    nonce.rsplit_once('_')?.1.parse().ok()
}

/// Takes the other nodes' links on `listener` until the broker stops: each makes its
/// handshake (bounded by [`HANDSHAKE_TIMEOUT`]) and is then served as a session of the
/// cluster's user. Links beyond two per peer at once are refused.
pub(crate) async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    stop: Receiver<()>,
    alive: Sender<()>,
) {
    let Some(cluster) = broker.cluster.clone() else {
        return;
    };
    let open = Arc::new(AtomicU64::new(0));
    let most = 2 * cluster.peers.len() as u64 + 2;
    let mut backoff = crate::ACCEPT_BACKOFF.0;
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                log::warn!("cluster accept failed: {e}; retrying in {backoff:?}");
                smol::Timer::after(backoff).await;
                backoff = (backoff * 2).min(crate::ACCEPT_BACKOFF.1);
                continue;
            }
        };
        backoff = crate::ACCEPT_BACKOFF.0;
        if open.fetch_add(1, SeqCst) >= most {
            open.fetch_sub(1, SeqCst);
            log::warn!("cluster link from {addr} refused: {most} links are open already");
            continue;
        }
        let (b, c, stop, alive, open) = (
            broker.clone(),
            cluster.clone(),
            stop.clone(),
            alive.clone(),
            open.clone(),
        );
        broker
            .rt
            .spawn(async move {
                let _ = stream.set_nodelay(true);
                let raw = stream.clone();
                // TLS first, when the links use it; then the cluster's handshake.
                let linked = match &c.tls {
                    None => {
                        let mut s = stream.clone();
                        link::accept(&c, &mut s).await.map(|node| {
                            let writer = crate::shipper::Writer::Tcp(stream.clone());
                            (
                                node,
                                crate::conn::Input::Link(stream, c.user.clone()),
                                writer,
                            )
                        })
                    }
                    Some(t) => {
                        let timeout = HANDSHAKE_TIMEOUT;
                        match crate::tls::handshake(&t.acceptor, stream, addr, timeout, &stop).await
                        {
                            None => Err("its TLS handshake failed".to_owned()),
                            Some(mut tls) => link::accept(&c, &mut tls).await.map(|node| {
                                let (read, write) = futures_lite::io::split(tls);
                                let writer = crate::shipper::Writer::Tls {
                                    tls: write,
                                    raw: raw.clone(),
                                };
                                (
                                    node,
                                    crate::conn::Input::LinkTls(read, c.user.clone()),
                                    writer,
                                )
                            }),
                        }
                    }
                };
                match linked {
                    Ok((node, input, writer)) => {
                        log::info!("cluster: node {node} linked from {addr}");
                        let peer = c.peer(node);
                        if let Some(p) = peer {
                            p.in_up.fetch_add(1, SeqCst);
                        }
                        crate::conn::serve_client(&b, input, writer, addr, stop).await;
                        if let Some(p) = peer {
                            p.in_up.fetch_sub(1, SeqCst);
                        }
                        log::info!("cluster: node {node}'s link from {addr} ended");
                    }
                    Err(why) => {
                        log::warn!("cluster link from {addr} refused: {why}");
                        let _ = raw.shutdown(std::net::Shutdown::Both);
                    }
                }
                open.fetch_sub(1, SeqCst);
                drop(alive);
            })
            .detach();
    }
}
