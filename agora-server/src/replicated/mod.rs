//! Replicated queues (issue 25): a queue whose name matches `--replicated-queues` is,
//! on a node of a cluster, a Raft group over the cluster's nodes instead of a queue of
//! its node's own log.
//!
//! - [`replica`]: one member of a group (raft-rs's `RawNode`), a plain value, with the
//!   lease its leader serves under;
//! - [`machine`]: the queue as every member applies it from the committed log;
//! - [`raftlog`]: a member's log on disk, one file per queue under `<data-dir>/raft/`;
//! - [`nodes`]: the nodes the queues in `<data-dir>/raft/` were made over, checked at
//!   start (membership changes are not built);
//! - `task`: the task that drives them on a node: commands from connections (as a local
//!   queue's task takes them), Raft messages from the other nodes, ticks, and the
//!   writes it syncs before it lets a vote or an acknowledgement leave;
//! - [`relay`]: what a node that does not lead a queue holds for its own consumers: the
//!   deliveries it takes from the leader over its link, as one consumer there;
//! - [`Groups`] (here): which queues are replicated, which nodes hold each, and the way
//!   to the other nodes' groups (Raft frames over the cluster links, sent through a
//!   function the broker gives, so that this module needs no link of its own), and which
//!   queues this node consumes from which leader.

pub(crate) mod chunks;
mod entry;
pub(crate) mod machine;
pub(crate) mod nodes;
pub(crate) mod raftlog;
pub(crate) mod relay;
pub(crate) mod replica;
pub(crate) mod store;
mod task;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agora_protocol::cluster::raft::{RaftEntry, RaftFrame, RaftMessage};
use agora_protocol::Destination;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};

use crate::auth::Pattern;
use replica::Stamp;

pub(crate) use task::spawn;

/// The topic name Raft frames travel under on a cluster link (a link's session hands
/// them to [`Groups::deliver`], never to a topic).
pub(crate) const RAFT_TOPIC: &str = "$cluster.raft";

/// The header a leader stamps its deliveries to another node's link with: the term it
/// leads (the node takes them only while it follows that leader in that term, and
/// removes the header before its consumers see them).
pub(crate) const TERM_HEADER: &str = "agora-raft-term";

/// Sends a Raft frame's bytes to a node; false when it could not go (no link).
pub(crate) type Send = Box<dyn Fn(u64, Vec<u8>) -> bool + std::marker::Send + Sync>;

/// Writes native frames (`ACK`s and `NACK`s of deliveries a leader made to this node's
/// link) on this node's link to a node, if that link is still the one of the given
/// epoch (its count of connects).
pub(crate) type SendFrame =
    Box<dyn Fn(u64, u64, agora_protocol::bytes::Bytes) -> Sent + std::marker::Send + Sync>;

/// What became of frames given to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// On their way.
    Away,
    /// The link's queue is full: to try again.
    Full,
    /// That link is gone (and the deliveries they answer went with it).
    Gone,
}

/// A delivery a queue's leader made to this node's link (its consumer there), on its way
/// to one of this node's consumers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Remote {
    /// The node it came from, and the epoch of this node's link to it.
    pub from: u64,
    pub epoch: u64,
    /// Its delivery id there (what this node acknowledges it by).
    pub did: u64,
    /// Deliveries of the message so far, this one included.
    pub count: u32,
    /// The term the leader delivered it in (its [`TERM_HEADER`]; 0: not said).
    pub term: u64,
    pub headers: agora_protocol::Headers,
    pub payload: agora_protocol::bytes::Bytes,
}

/// What comes to a group's task from other nodes.
pub(crate) enum Inbound {
    Raft(Box<RaftFrame>),
    Remote(Remote),
    /// This node's link of that epoch to that node ended.
    LinkEnded {
        node: u64,
        epoch: u64,
    },
}

/// What `STATS` shows of one replicated queue on this node.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct Figures {
    /// The node it knows leads the group (0: none known).
    pub leader: u64,
    pub term: u64,
    /// This node serves its consumers (leads under its lease).
    pub serving: bool,
    /// The last index of its log, and the highest committed.
    pub last_index: u64,
    pub commit: u64,
    /// The index its log was last compacted to (or restored from a snapshot at): the
    /// entries before it are in a snapshot (0: none).
    pub compacted: u64,
    /// As leader: entries each other member lacks (its lag).
    pub lag: BTreeMap<u64, u64>,
    /// Voters and learners.
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Why its log cannot be written, once it could not.
    pub failed: Option<String>,
}

/// The replicated queues of this node.
pub(crate) struct Groups {
    /// This node.
    pub me: u64,
    /// Every node of the cluster, this one included, in order.
    pub nodes: Vec<u64>,
    patterns: Vec<Pattern>,
    /// Where their logs are: `<data-dir>/raft`.
    pub dir: PathBuf,
    send: Send,
    send_frame: SendFrame,
    /// Each running group's way in, by queue name.
    inbound: Mutex<HashMap<String, async_channel::Sender<Inbound>>>,
    /// What each shows, by queue name.
    pub figures: Mutex<BTreeMap<String, Figures>>,
    /// The queues this node's consumers take from another node (their leader), by
    /// name; and a signal when that changes (the links follow it).
    consumed: Mutex<BTreeMap<String, u64>>,
    consumed_changed: event_listener::Event,
    /// Log bytes since the last snapshot at which a member compacts (`--raft-compact-bytes`).
    pub compact_bytes: usize,
    /// One tick of every group's clock (`--raft-tick`).
    pub tick: Duration,
    /// The instant every group's ticks are counted from (see [`Groups::tick_boundary`]).
    epoch: Instant,
}

/// Replicas per queue: three, as RabbitMQ's quorum queues and JetStream's R3 streams.
pub(crate) const REPLICAS: usize = 3;

impl Groups {
    pub fn new(
        me: u64,
        mut nodes: Vec<u64>,
        patterns: Vec<Pattern>,
        dir: PathBuf,
        send: Send,
        send_frame: SendFrame,
    ) -> Groups {
        nodes.sort_unstable();
        Groups {
            me,
            nodes,
            patterns,
            dir,
            send,
            send_frame,
            inbound: Mutex::default(),
            figures: Mutex::default(),
            consumed: Mutex::default(),
            consumed_changed: event_listener::Event::new(),
            compact_bytes: 16 << 20,
            tick: Duration::from_millis(100),
            epoch: Instant::now(),
        }
    }

    /// The first tick boundary from now: every group's clock on this node ticks at the
    /// same instants (the epoch and whole ticks after it), so one timer expiry wakes
    /// them all, and their heartbeats to a node leave together. Clocks started at any
    /// instant each woke the node on their own: with 100 queues, 1,000 wake-ups a
    /// second at the default tick.
    pub fn tick_boundary(&self) -> Instant {
        let tick = self.tick.as_nanos().max(1);
        let since = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos();
        let ticks = since.div_ceil(tick);
        self.epoch + Duration::from_nanos((ticks * tick).min(u64::MAX as u128) as u64)
    }

    /// Every group's clock ticks every `tick`.
    pub fn ticking(self, tick: Duration) -> Groups {
        Groups { tick, ..self }
    }

    /// Members compact their logs once they hold `bytes` since the last snapshot (and
    /// more than the queue's messages).
    pub fn compacting(self, bytes: usize) -> Groups {
        Groups {
            compact_bytes: bytes,
            ..self
        }
    }

    /// Records that this node's consumers of queue `name` take its messages from node
    /// `from` (`None`: from no other node); the links follow.
    fn consume(&self, name: &str, from: Option<u64>) {
        let mut c = self.consumed.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match from {
            Some(n) => c.insert(name.to_owned(), n) != Some(n),
            None => c.remove(name).is_some(),
        };
        drop(c);
        if changed {
            self.consumed_changed.notify(usize::MAX);
        }
    }

    /// The queues this node consumes from node `node` (as `queue:<name>`).
    pub fn consumed_from(&self, node: u64) -> Vec<String> {
        let c = self.consumed.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .filter(|(_, &n)| n == node)
            .map(|(name, _)| format!("queue:{name}"))
            .collect()
    }

    /// Resolves once what this node consumes from other nodes may have changed.
    pub fn listen(&self) -> event_listener::EventListener {
        self.consumed_changed.listen()
    }

    /// Hands a delivery a leader made to this node's link to queue `name`'s task
    /// (waiting for room: a leader sends no more than the link's prefetch); false when
    /// this node runs no group of that name.
    pub async fn remote(&self, name: &str, r: Remote) -> bool {
        let tx = {
            let inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
            inbound.get(name).cloned()
        };
        match tx {
            Some(tx) => tx.send(Inbound::Remote(r)).await.is_ok(),
            None => false,
        }
    }

    /// Whether `dest` is a replicated queue.
    pub fn replicates(&self, dest: &Destination) -> bool {
        dest.kind == agora_protocol::Kind::Queue && self.patterns.iter().any(|p| p.matches(dest))
    }

    /// The voters of queue `name`'s group (three of the nodes, chosen by rendezvous
    /// hashing of the name, so every node agrees without asking; all when fewer), and
    /// its learners (the other nodes: they get the log and apply it, but do not vote).
    pub fn members(&self, name: &str) -> (Vec<u64>, Vec<u64>) {
        let mut ranked: Vec<(u64, u64)> = self
            .nodes
            .iter()
            .map(|&n| (rendezvous(name, n), n))
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let mut voters: Vec<u64> = ranked.iter().take(REPLICAS).map(|r| r.1).collect();
        let mut learners: Vec<u64> = ranked.iter().skip(REPLICAS).map(|r| r.1).collect();
        voters.sort_unstable();
        learners.sort_unstable();
        (voters, learners)
    }

    /// The replicated queues this node has a log of (in `dir`), which it still
    /// replicates.
    pub fn logged(&self) -> Vec<Destination> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<Destination> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let name = entry::queue_name(file.strip_suffix(".raft")?)?;
                Destination::queue(&name).ok()
            })
            .filter(|d| self.replicates(d))
            .collect();
        out.sort();
        out
    }

    /// Hands a frame that came from another node to its group's task; false when this
    /// node runs no group of that name (yet).
    pub fn deliver(&self, frame: RaftFrame) -> Result<(), Box<RaftFrame>> {
        let inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        match inbound.get(&frame.group) {
            // A full channel drops it, as a lost message: Raft sends again.
            Some(tx) => {
                let _ = tx.try_send(Inbound::Raft(Box::new(frame)));
                Ok(())
            }
            None => Err(Box::new(frame)),
        }
    }

    /// This node's link of epoch `epoch` to `node` ended: every group's task voids what
    /// came over it (told at most once: a task whose channel is full keeps those
    /// deliveries until its node follows another leader; its consumers' answers to
    /// them go nowhere, and the leader gives them again).
    pub fn link_ended(&self, node: u64, epoch: u64) {
        let inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        for tx in inbound.values() {
            let _ = tx.try_send(Inbound::LinkEnded { node, epoch });
        }
    }

    fn register(&self, name: &str, tx: async_channel::Sender<Inbound>) {
        let mut inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        inbound.insert(name.to_owned(), tx);
    }

    fn unregister(&self, name: &str) {
        let mut inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        inbound.remove(name);
        drop(inbound);
        let mut figures = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        figures.remove(name);
        drop(figures);
        self.consume(name, None);
    }

    fn show(&self, name: &str, f: Figures) {
        let mut figures = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        figures.insert(name.to_owned(), f);
    }

    /// Sends `m` of group `name` to its `to`.
    fn send(&self, name: &str, m: Message, stamp: Stamp) {
        let to = m.to;
        let frame = to_frame(name, m, stamp);
        let mut bytes = Vec::new();
        match frame.encode(&mut bytes) {
            Ok(()) => {
                let _ = (self.send)(to, bytes);
            }
            Err(e) => log::warn!("queue:{name}: a Raft message to node {to} not sent: {e}"),
        }
    }

    /// Sends a frame's bytes to `node`: false when they could not go (no link, or its
    /// queue is full).
    pub(crate) fn send_bytes(&self, node: u64, bytes: Vec<u8>) -> bool {
        (self.send)(node, bytes)
    }

    /// Writes `frames` on this node's link of epoch `epoch` to `node`.
    fn send_frames(&self, node: u64, epoch: u64, frames: agora_protocol::bytes::Bytes) -> Sent {
        (self.send_frame)(node, epoch, frames)
    }
}

/// A 64-bit FNV-1a hash of `name` and `node`: each node's rank for a queue.
fn rendezvous(name: &str, node: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(node.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// raft-rs's message kinds, by their number.
const MESSAGE_KINDS: [MessageType; 19] = {
    use MessageType::*;
    [
        MsgHup,
        MsgBeat,
        MsgPropose,
        MsgAppend,
        MsgAppendResponse,
        MsgRequestVote,
        MsgRequestVoteResponse,
        MsgSnapshot,
        MsgHeartbeat,
        MsgHeartbeatResponse,
        MsgUnreachable,
        MsgSnapStatus,
        MsgCheckQuorum,
        MsgTransferLeader,
        MsgTimeoutNow,
        MsgReadIndex,
        MsgReadIndexResp,
        MsgRequestPreVote,
        MsgRequestPreVoteResponse,
    ]
};

/// raft-rs's entry kinds, by their number.
const ENTRY_KINDS: [EntryType; 3] = [
    EntryType::EntryNormal,
    EntryType::EntryConfChange,
    EntryType::EntryConfChangeV2,
];

/// raft-rs's message as a frame.
pub(crate) fn to_frame(group: &str, m: Message, stamp: Stamp) -> RaftFrame {
    RaftFrame {
        group: group.to_owned(),
        sent_at: stamp.sent_at,
        echo: stamp.echo,
        message: RaftMessage {
            kind: m.get_msg_type() as i32 as u8,
            to: m.to,
            from: m.from,
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            commit: m.commit,
            commit_term: m.commit_term,
            reject: m.reject,
            reject_hint: m.reject_hint,
            request_snapshot: m.request_snapshot,
            priority: m.priority,
            context: m.context.to_vec(),
            entries: m
                .entries
                .iter()
                .map(|e| RaftEntry {
                    kind: e.get_entry_type() as i32 as u8,
                    term: e.term,
                    index: e.index,
                    data: e.data.to_vec(),
                    context: e.context.to_vec(),
                })
                .collect(),
            chunk: None,
        },
    }
}

/// A frame as raft-rs's message, with its stamp; `None` for a kind raft-rs does not
/// have (the frame's decoder refused those already).
pub(crate) fn from_frame(f: RaftFrame) -> Option<(Message, Stamp)> {
    let r = f.message;
    let mut m = Message::default();
    m.set_msg_type(*MESSAGE_KINDS.get(r.kind as usize)?);
    m.to = r.to;
    m.from = r.from;
    m.term = r.term;
    m.log_term = r.log_term;
    m.index = r.index;
    m.commit = r.commit;
    m.commit_term = r.commit_term;
    m.reject = r.reject;
    m.reject_hint = r.reject_hint;
    m.request_snapshot = r.request_snapshot;
    m.priority = r.priority;
    m.context = r.context.into();
    if let Some(c) = r.chunk {
        // Only a whole snapshot (see `chunks::Assembly`).
        if c.offset != 0 || c.data.len() as u64 != c.total {
            return None;
        }
        let mut s = raft::eraftpb::Snapshot::default();
        let meta = s.mut_metadata();
        meta.index = c.index;
        meta.term = c.term;
        meta.set_conf_state(raft::eraftpb::ConfState::from((c.voters, c.learners)));
        s.data = c.data.into();
        m.set_snapshot(s);
    }
    for e in r.entries {
        let mut x = Entry::default();
        x.set_entry_type(*ENTRY_KINDS.get(e.kind as usize)?);
        x.term = e.term;
        x.index = e.index;
        x.data = e.data.into();
        x.context = e.context.into();
        m.entries.push(x);
    }
    let stamp = Stamp {
        sent_at: f.sent_at,
        echo: f.echo,
    };
    Some((m, stamp))
}

#[cfg(test)]
mod tests;
