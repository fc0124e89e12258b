//! The task of a replicated queue on one node: it takes the commands a local queue's
//! task takes (so connections need not know the difference), Raft frames from the
//! other nodes, and ticks; it writes what raft-rs asks to its log, syncs it, and only
//! then lets the messages that promise it leave; it applies what is committed to its
//! [`Machine`], confirms its own publishers' messages as they are applied, and, while
//! it serves (leads under its lease), hands messages to its consumers.
//!
//! Time is a tick every `--raft-tick` ([`Groups::tick`]); the ticks the clock owes are
//! made up after a stall (so a leader whose task was held up knows its lease ran out
//! meanwhile).

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::cluster::raft::RaftFrame;
use agora_protocol::{Destination, ErrorCode};

mod applied;
mod commands;
mod dead;
mod deliver;
mod remote;
mod snapshot;

use deliver::Cons;

use super::chunks::{Assembly, Outgoing};
use super::entry::{decode_message, encode_message, file_name};
use super::machine::{compaction_due, Applied, Machine, Op};
use super::raftlog::{RaftLog, Rewrite};
use super::relay::{Answers, Relay, Upstream};
use super::replica::{Out, Replica, Writes};
use super::{from_frame, Figures, Groups, Inbound};
use crate::budget::Budget;
use crate::config::QueueSettings;
use crate::message::{Delivery, Message};
use crate::queue::{
    delivery_id, unknown_delivery, Consumer, DlqResolver, QueueCmd, QueueShared, EXPIRED,
    MAX_DELIVERIES, REJECTED,
};

/// Election timeouts are drawn (by raft-rs, again at each election) from this many
/// ticks to twice as many (1 to 2 s at the default tick of 100 ms).
const ELECTION: usize = 10;
/// The leader's lease: shorter than the shortest election timeout.
const LEASE: u64 = 8;
/// A confirm not heard within this long is answered with an error (the message may
/// still be stored: its publisher may send it again with the same message id).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes queue `dest` a replicated one on this node: its log read back (or made), its
/// group's member made, and its task spawned on `rt`.
pub(crate) fn spawn(
    dest: Destination,
    settings: QueueSettings,
    budget: Arc<Budget>,
    channel: usize,
    rt: &agora_rt::Handle,
    groups: Arc<Groups>,
    resolver: DlqResolver,
) -> Result<Arc<QueueShared>, String> {
    let name = dest.name.as_str().to_owned();
    let path = groups.dir.join(format!("{}.raft", file_name(&name)));
    std::fs::create_dir_all(&groups.dir).map_err(|e| format!("{}: {e}", groups.dir.display()))?;
    let (log, disk, torn) = RaftLog::open(&path).map_err(|e| e.to_string())?;
    if torn > 0 {
        log::warn!(
            "{}: cut off {torn} bytes of a last record never synced",
            path.display()
        );
    }
    let (voters, learners) = groups.members(&name);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // The message ids it remembers: a count (see `Machine`); none when the queue's
    // window is off.
    let ids = match settings.dedup_window.is_zero() {
        true => 0,
        false => settings.dedup_ids,
    };
    let mut machine = Machine::with_ids(ids);
    if disk.base() > 0 {
        machine
            .restore(&disk.snapshot.data)
            .map_err(|why| format!("{}: its snapshot cannot be read: {why}", path.display()))?;
    }
    let replica = Replica::drawn(
        groups.me,
        &voters,
        &learners,
        disk,
        (ELECTION, ELECTION),
        LEASE,
    )?
    .unmirrored();
    let (shared, rx) = QueueShared::new(dest, settings, budget, channel);
    // What its snapshot holds (the entries after it are applied as they come).
    shared.restored(machine.depth(), machine.bytes(), true);
    // Confirms wait for the group (`PublishStored`); and a replicated queue is never
    // retired for being idle (its group lives on the other nodes).
    shared.durable.store(true, SeqCst);
    shared.remembered.store(1, SeqCst);
    let (raft_tx, raft_rx) = async_channel::bounded(4096);
    groups.register(&name, raft_tx);
    log::info!(
        "{}: a replicated queue, voters {voters:?}, learners {learners:?}",
        shared.dest
    );
    let started = groups.tick_boundary();
    let task = Task {
        name,
        shared: shared.clone(),
        groups,
        replica,
        machine,
        log: Some(log),
        failed: None,
        next_seq: seed,
        waiting: HashMap::default(),
        expire_seen: (u64::MAX, 0, false),
        consumers: Vec::new(),
        outstanding: HashMap::new(),
        by_id: HashMap::new(),
        handed_at: HashMap::new(),
        late_checked: 0,
        parked: Vec::new(),
        ids_charged: 0,
        counts: HashMap::new(),
        rr: 0,
        relay: Relay::default(),
        answers: Answers::default(),
        started,
        ticked: 0,
        voters,
        learners,
        sending: Vec::new(),
        assembly: Assembly::default(),
        offered: None,
        resolver,
        dlq: None,
        dead: Vec::new(),
        dead_out: Vec::new(),
        dead_in: Vec::new(),
        rewrite: None,
        encoding: None,
        generation: 0,
    };
    rt.spawn(task.run(rx, raft_rx)).detach();
    Ok(shared)
}

struct Task {
    name: String,
    shared: Arc<QueueShared>,
    groups: Arc<Groups>,
    replica: Replica,
    machine: Machine,
    /// Out while a write is being synced on a blocking thread.
    log: Option<RaftLog>,
    /// Why the log cannot be written: the member stops promising anything.
    failed: Option<String>,
    /// Its next proposal's number (from the clock at start: unique across restarts).
    next_seq: u64,
    /// Confirms waiting for their message to be applied here: since when, and the
    /// term it was proposed in.
    waiting: HashMap<
        u64,
        (async_channel::Sender<crate::store::Outcome>, Instant, u64),
        crate::idhash::IdHash,
    >,
    /// The tick, term and whether its leader's term had an entry applied here when
    /// `waiting` was last looked through (`expire`): once per tick, or when those
    /// change, not after every batch.
    expire_seen: (u64, u64, bool),
    consumers: Vec<Cons>,
    /// (consumer, delivery id) → message id, while serving. Delivery ids are unique
    /// on their connection only: two consumers' may be the same number.
    outstanding: HashMap<(u64, u64), u64>,
    /// Message id → (consumer, delivery id).
    by_id: HashMap<u64, (u64, u64)>,
    /// When each delivery in `outstanding` was made (with `--ack-timeout`; entries
    /// no longer outstanding are dropped when next looked at), and the tick they were
    /// last looked at.
    handed_at: HashMap<(u64, u64), Instant>,
    late_checked: u64,
    /// Messages a `NACK` with a delay parked, and when they are free again.
    parked: Vec<(Instant, u64)>,
    /// What the message ids its machine remembers are charged to the memory budget.
    ids_charged: usize,
    /// Deliveries of each message while this node serves.
    counts: HashMap<u64, u32>,
    rr: usize,
    /// What this node's consumers take from the leader while this node does not lead.
    relay: Relay,
    /// Its consumers' answers on their way back to the leader.
    answers: Answers,
    started: Instant,
    ticked: u64,
    voters: Vec<u64>,
    learners: Vec<u64>,
    /// Snapshots on their way to members behind the compacted log.
    sending: Vec<Outgoing>,
    /// The snapshot coming to this member, in pieces.
    assembly: Assembly,
    /// The tick a snapshot was offered at (raft-rs asked for one).
    offered: Option<u64>,
    /// Finds the dead-letter queue (through the registry), and the one found.
    resolver: DlqResolver,
    dlq: Option<Arc<QueueShared>>,
    /// Messages parked on their way to the dead-letter queue, with why and from when;
    /// and those sent there, until it says they are stored.
    dead: Vec<(u64, &'static str, Instant)>,
    dead_out: Vec<(
        u64,
        async_channel::Receiver<crate::store::Outcome>,
        &'static str,
    )>,
    /// Dead letters of other queues proposed here, until applied.
    dead_in: Vec<(async_channel::Receiver<crate::store::Outcome>, Message)>,
    /// The log being written anew after a compaction, on a blocking thread.
    rewrite: Option<(smol::Task<std::io::Result<Rewrite>>, Rewriting)>,
    /// A compaction's snapshot being encoded on a blocking thread, before the log is
    /// compacted to it.
    encoding: Option<Encoding>,
    /// Counts snapshots written to the log at once (a leader's): a rewrite begun
    /// before one is out of date.
    generation: u64,
}

/// A compaction whose log is being written beside the log.
struct Rewriting {
    generation: u64,
    /// The snapshot's index, the bytes of entries it replaced, and its size.
    index: u64,
    kept: usize,
    size: usize,
    /// When the compaction began, how long the task took (to take the queue's state,
    /// then to compact the log to it), and how long the encoding took on a blocking
    /// thread.
    began: Instant,
    made: Duration,
    encoded: Duration,
}

/// A compaction's snapshot: the queue's state taken at entry `index` in the task,
/// encoded on a blocking thread (the copy of every byte the queue holds), then the log
/// compacted to it once no write waits for a sync.
struct Encoding {
    /// The encoding under way (its bytes, and how long it took); `None` once they
    /// are in `data`.
    task: Option<smol::Task<(Vec<u8>, Duration)>>,
    data: Option<agora_protocol::bytes::Bytes>,
    generation: u64,
    index: u64,
    /// The bytes of entries the log held when it began.
    kept: usize,
    began: Instant,
    made: Duration,
    encoded: Duration,
}

enum Wake {
    Cmd(Option<QueueCmd>),
    In(Inbound),
    Tick,
}

impl Task {
    async fn run(mut self, rx: crate::chan::Rx<QueueCmd>, raft: async_channel::Receiver<Inbound>) {
        let tick = self.groups.tick;
        let mut ticker = smol::Timer::interval_at(self.started + tick, tick);
        'serve: loop {
            let wake = futures_lite::future::or(
                async { Wake::Cmd(rx.recv().await.ok()) },
                futures_lite::future::or(
                    async {
                        match raft.recv().await {
                            Ok(f) => Wake::In(f),
                            Err(_) => futures_lite::future::pending().await,
                        }
                    },
                    async {
                        futures_lite::StreamExt::next(&mut ticker).await;
                        Wake::Tick
                    },
                ),
            )
            .await;
            match wake {
                Wake::Cmd(None) => break,
                Wake::Cmd(Some(cmd)) => {
                    if self.handle(cmd) {
                        break;
                    }
                }
                Wake::In(f) => self.inbound(f),
                Wake::Tick => {}
            }
            for _ in 0..4096 {
                match rx.try_recv() {
                    Ok(cmd) => {
                        if self.handle(cmd) {
                            break 'serve;
                        }
                    }
                    Err(_) => break,
                }
            }
            for _ in 0..4096 {
                match raft.try_recv() {
                    Ok(f) => self.inbound(f),
                    Err(_) => break,
                }
            }
            self.tick();
            self.advance().await;
            self.snapshots().await;
            self.take_back_late();
            self.dispatch();
            self.dead_letter().await;
            self.dead_letters_stored();
            self.send_answers();
            self.expire();
            self.show();
        }
        self.groups.unregister(&self.name);
        self.shared.budget().give_back(self.ids_charged);
        for (_, (w, _, _)) in self.waiting.drain() {
            let _ = w.try_send(Err(
                "the queue stopped on this node before it was stored".into()
            ));
        }
        rx.close();
        while rx.try_recv().is_ok() {}
    }

    /// Makes up the ticks the clock owes.
    fn tick(&mut self) {
        let due = (self.started.elapsed().as_millis() / self.groups.tick.as_millis()) as u64;
        // A long stall is made up at once: the lease and elections see the time.
        while self.ticked < due {
            self.ticked += 1;
            self.replica.tick();
        }
    }

    fn inbound(&mut self, f: Inbound) {
        match f {
            Inbound::Raft(f) => self.step(*f),
            Inbound::Remote(r) => {
                if let Some(r) = self.relay.take(r) {
                    // Void here (this node follows another leader now, or none): given
                    // back (its node has it back anyway once the link's subscription
                    // ends).
                    self.answers.push(Upstream::of(&r), false);
                }
            }
            Inbound::LinkEnded { node, epoch } => {
                self.replica.link_lost(node);
                if self.relay.link_ended(node, epoch) > 0 {
                    for c in &mut self.consumers {
                        c.out = self.relay.held(c.spec.cid);
                    }
                }
            }
        }
    }

    fn step(&mut self, f: RaftFrame) {
        let f = match f.message.chunk {
            Some(_) => match self.assembly.take(f) {
                Some(whole) => whole,
                None => return,
            },
            None => f,
        };
        if let Some((m, stamp)) = from_frame(f) {
            self.replica.step(m, stamp);
        }
    }

    /// Readies, writes, syncs and applies until raft-rs has nothing more.
    async fn advance(&mut self) {
        for _ in 0..8 {
            let out = self.replica.ready();
            let mut moved = !out.is_empty();
            self.out(out);
            let w = self.replica.take_writes();
            if !w.is_empty() {
                moved = true;
                if !self.write(w).await {
                    return;
                }
            }
            let out = self.replica.synced();
            moved |= !out.is_empty();
            self.out(out);
            if !moved {
                break;
            }
        }
    }

    /// Writes `w` to the log and syncs it; false when that failed (or had failed):
    /// this member then stays silent, and its publishers waiting are told.
    async fn write(&mut self, w: Writes) -> bool {
        if self.failed.is_some() {
            // Nothing written counts.
            return false;
        }
        let Some(mut log) = self.log.take() else {
            return false;
        };
        if w.snapshot.is_some() {
            self.generation += 1;
        }
        let (log, wrote) = smol::unblock(move || {
            let r = log.write(&w).and_then(|()| log.sync());
            (log, r)
        })
        .await;
        self.log = Some(log);
        if let Err(e) = wrote {
            self.stop_taking_part(format!("its Raft log cannot be written: {e}"));
            return false;
        }
        true
    }

    /// Its log failed (`why`): this member stays silent from now on, and its publishers
    /// waiting are told.
    pub(super) fn stop_taking_part(&mut self, why: String) {
        log::error!(
            "{}: {why}; this node no longer takes part in its group",
            self.shared.dest
        );
        for (_, (w, _, _)) in self.waiting.drain() {
            let _ = w.try_send(Err(format!("not stored: {why}").into()));
        }
        self.failed = Some(why);
    }

    fn out(&mut self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Send(m, stamp)
                    if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot =>
                {
                    let o = Outgoing::new(&self.name, m, stamp);
                    self.sending.retain(|s| s.to() != o.to());
                    self.sending.push(o);
                }
                Out::Send(m, stamp) => self.groups.send(&self.name, m, stamp),
                Out::Apply { index, data } => self.apply(index, &data),
                Out::Restore { index, data } => self.restore(index, &data),
            }
        }
    }

    fn show(&mut self) {
        // The message ids remembered, charged to the memory budget as a local queue's
        // are (taken whatever the budget says: the publishes are stored).
        let cost = self.machine.ids_cost();
        if cost != self.ids_charged {
            match cost > self.ids_charged {
                true => self.shared.budget().take(cost - self.ids_charged),
                false => self.shared.budget().give_back(self.ids_charged - cost),
            }
            self.ids_charged = cost;
        }
        let (last_index, commit) = self.replica.indexes();
        let f = Figures {
            leader: self.replica.leader(),
            term: self.replica.term(),
            serving: self.machine.serving(),
            last_index,
            commit,
            compacted: self.replica.compacted(),
            lag: self
                .replica
                .matched()
                .into_iter()
                .map(|(n, m)| (n, last_index.saturating_sub(m)))
                .collect(),
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            failed: self.failed.clone(),
        };
        self.groups.show(&self.name, f);
    }
}
