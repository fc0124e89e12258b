//! One command to a queue's task: what it changes in the queue's state, and who hears
//! back.

use super::*;

impl Queue {
    /// Handles one command; true when the queue must stop.
    pub(super) fn handle(&mut self, cmd: QueueCmd) -> bool {
        match cmd {
            QueueCmd::Publish(msg) => self.state.enqueue([msg], Instant::now()),
            QueueCmd::PublishStored(msg, done) => {
                self.state.enqueue([msg], Instant::now());
                if self.state.journaled() && self.writer.is_some() {
                    self.waiters.push(done);
                } else {
                    let _ = done.try_send(Ok(()));
                }
            }
            QueueCmd::DeadLetter { msg, ack } => {
                self.state.enqueue_dead_letter(msg, Instant::now());
                self.forwarded.extend(ack);
            }
            QueueCmd::PublishMany(msgs) => self.state.enqueue(msgs, Instant::now()),
            QueueCmd::Subscribe(c) => self.state.subscribe(c),
            QueueCmd::Hold { cid, on, reply } => {
                self.state.hold(cid, on);
                let _ = reply.try_send(());
            }
            QueueCmd::Unsubscribe { cid } => {
                if self.state.unsubscribe(cid).is_some() {
                    self.shared.consumers.fetch_sub(1, SeqCst);
                }
            }
            QueueCmd::Ack {
                cid,
                did,
                ack,
                how,
                reply,
            } => {
                let known = match ack {
                    true => self.state.ack(cid, did, true),
                    false => self.state.nack(cid, did, how, Instant::now()),
                } == Acked::Done;
                // Released (and the unacknowledged count told) before the reply, so a
                // client that reads STATS after its OK sees the message gone.
                self.give_back_released();
                self.shared.unacked.store(self.state.unacked(), Relaxed);
                match reply {
                    Some(r) if !ack && how == agora_protocol::Nack::DeadLetter => {
                        self.rejected.push((r, known));
                    }
                    Some(r) => {
                        let _ = r.try_send(known);
                    }
                    None if !known => {
                        if let Some(port) = outbox_of(&self.state, cid) {
                            unknown_delivery(port, did);
                        }
                    }
                    None => {}
                }
            }
            QueueCmd::Written { cid, n } => self.state.written(cid, n),
            QueueCmd::Flush { reply } => self.flushed.push(reply),
            QueueCmd::Peek { limit, reply } => {
                let _ = reply.try_send(self.state.peek(limit));
            }
            QueueCmd::Purge { reply } => {
                let n = self.state.purge();
                self.give_back_released();
                self.publish_figures();
                let _ = reply.try_send(n);
            }
            QueueCmd::Delete { reply } => {
                self.shared.closed.store(true, SeqCst);
                let (n, consumers) = self.state.delete();
                for c in consumers {
                    c.port.outbox.cancel(
                        c.sid,
                        ErrorCode::UnknownDestination,
                        format!("{} was deleted", self.shared.dest),
                    );
                    c.port.tx.close();
                    self.shared.consumers.fetch_sub(1, SeqCst);
                }
                // Everything reserved goes back, messages still in the channel included.
                self.rebudget();
                let _ = self.state.take_released();
                self.shared.release_all();
                self.shared
                    .budget()
                    .give_back(std::mem::take(&mut self.seen_charged));
                self.publish_figures();
                let _ = reply.try_send(n);
                return true;
            }
        }
        false
    }
}

/// The outbox of consumer `cid`, for a notice about it.
fn outbox_of(state: &QueueState<Port>, cid: u64) -> Option<&Outbox> {
    state.consumer(cid).map(|c| &c.port.outbox)
}

pub(crate) fn unknown_delivery(outbox: &Outbox, did: u64) {
    outbox.notify(&ServerFrame::Err(ErrorReply {
        rid: None,
        code: ErrorCode::UnknownDelivery,
        message: format!("delivery {did} is not outstanding on this subscription"),
    }));
}
