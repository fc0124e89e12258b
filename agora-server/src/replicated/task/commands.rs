//! The commands a replicated queue's task takes: those of a local queue's task, so a
//! connection need not know the difference.

use super::*;

impl Task {
    /// Proposes `msg`; `done` hears once it is applied here (or why not).
    pub(super) fn propose(
        &mut self,
        msg: Message,
        done: Option<async_channel::Sender<crate::store::Outcome>>,
    ) {
        // The room the connection reserved: counted again once applied.
        self.shared.release(1, msg.size());
        self.propose_message(&msg, done);
    }

    /// [`propose`](Task::propose) without the room (taken back already).
    pub(super) fn propose_message(
        &mut self,
        msg: &Message,
        done: Option<async_channel::Sender<crate::store::Outcome>>,
    ) {
        if let Some(why) = &self.failed {
            if let Some(d) = done {
                let _ = d.try_send(Err(format!("not stored: {why}").into()));
            }
            return;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let op = Op::Enqueue {
            origin: self.groups.me,
            seq,
            at: unix_ms(),
            body: encode_message(msg),
        };
        match self.replica.propose(op.encode()) {
            Ok(()) => {
                if let Some(d) = done {
                    let term = self.replica.term();
                    self.waiting.insert(seq, (d, Instant::now(), term));
                }
            }
            Err(_) => {
                if let Some(d) = done {
                    let why = format!(
                        "not stored: {} has no leader yet (an election is under way); try again",
                        self.shared.dest
                    );
                    let _ = d.try_send(Err(why.into()));
                }
            }
        }
    }

    /// Handles one command; true when the task must stop.
    pub(super) fn handle(&mut self, cmd: QueueCmd) -> bool {
        match cmd {
            QueueCmd::Publish(msg) => self.propose(msg, None),
            QueueCmd::PublishMany(msgs) => {
                for m in msgs {
                    self.propose(m, None);
                }
            }
            QueueCmd::PublishStored(msg, done) => self.propose(msg, Some(done)),
            // The other queue's record of the message leaving is not written: after a
            // restart of this node, that queue has it again (at least once). Proposed
            // again until it is applied here: that queue has let it go.
            QueueCmd::DeadLetter { msg, .. } => {
                self.shared.release(1, msg.size());
                let (done, stored) = async_channel::bounded(1);
                self.propose_message(&msg, Some(done));
                self.dead_in.push((stored, msg));
            }
            // Counted by the connection before it sent this (as for a local queue).
            QueueCmd::Subscribe(c) => {
                self.consumers.push(Cons {
                    spec: c,
                    held: false,
                    out: 0,
                    inflight: 0,
                    next_seq: 1,
                });
            }
            QueueCmd::Hold { cid, on, reply } => {
                if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.cid == cid) {
                    c.held = on;
                }
                let _ = reply.try_send(());
            }
            QueueCmd::Unsubscribe { cid } => {
                let before = self.consumers.len();
                self.consumers.retain(|c| c.spec.cid != cid);
                if self.consumers.len() < before {
                    self.shared.consumers.fetch_sub(1, SeqCst);
                }
                // What it held came back: each counts toward `--max-deliveries`.
                for id in self.machine.gone(cid) {
                    self.came_back(id);
                }
                for up in self.relay.gone(cid) {
                    self.answers.push(up, false);
                }
                self.outstanding.retain(|&(c, _), _| c != cid);
                self.by_id.retain(|_, &mut (c, _)| c != cid);
                // What it held is in the queue again (`STATS` counts it there).
                self.shared
                    .unacked
                    .store(self.outstanding.len() + self.relay.outstanding(), Relaxed);
            }
            QueueCmd::Ack {
                cid,
                did,
                ack,
                how,
                reply,
            } => {
                let known = self.answer(cid, did, (!ack).then_some(how));
                self.shared
                    .unacked
                    .store(self.outstanding.len() + self.relay.outstanding(), Relaxed);
                match reply {
                    Some(r) => {
                        let _ = r.try_send(known);
                    }
                    None if !known => {
                        if let Some(c) = self.consumers.iter().find(|c| c.spec.cid == cid) {
                            unknown_delivery(&c.spec.port.outbox, did);
                        }
                    }
                    None => {}
                }
            }
            QueueCmd::Written { cid, n } => {
                if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.cid == cid) {
                    c.inflight = c.inflight.saturating_sub(n);
                }
            }
            QueueCmd::Flush { reply } => {
                let _ = reply.try_send(());
            }
            QueueCmd::Peek { limit, reply } => {
                let now = Instant::now();
                let got = self
                    .machine
                    .peek(limit)
                    .into_iter()
                    .filter_map(|b| decode_message(b, now))
                    .map(|m| (m, 0))
                    .collect();
                let _ = reply.try_send(got);
            }
            QueueCmd::Purge { reply } => {
                let n = self.machine.depth();
                let _ = self.replica.propose(Op::Purge.encode());
                let _ = reply.try_send(n);
            }
            QueueCmd::Delete { reply } => {
                // Stops here only: the group lives on the other nodes (and again here
                // when a client or a node names it).
                self.shared.closed.store(true, SeqCst);
                for c in self.consumers.drain(..) {
                    c.spec.port.outbox.cancel(
                        c.spec.sid,
                        ErrorCode::UnknownDestination,
                        format!(
                            "{} was stopped on this node (a replicated queue is deleted node by node)",
                            self.shared.dest
                        ),
                    );
                    c.spec.port.tx.close();
                }
                self.shared.consumers.store(0, SeqCst);
                self.shared.release_all();
                let _ = reply.try_send(self.machine.depth());
                return true;
            }
        }
        false
    }
}

/// Milliseconds since the Unix epoch on this node's clock (a message's time in its
/// `Enqueue`, which message TTL counts from); at least 1 (0 means none).
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| (d.as_millis() as u64).max(1))
}
