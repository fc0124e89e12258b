//! A replicated queue's dead letters. A message delivered `--max-deliveries` times by
//! the node that serves, or rejected by a consumer's `NACK … dlq`, is parked there (no
//! consumer gets it), sent to the dead-letter queue as a confirmed publish, and only
//! once that queue says it is stored (as its durability mode says) does it leave this
//! one (its `Ack` proposed). A crash or a lost lead in between leaves it in both (at
//! least once); a dead-letter queue that cannot take it (none yet, full, or a replicated
//! one still electing its first leader) leaves it parked, sent again a second later,
//! never dropped. Dead letters of other queues into a replicated one are
//! proposed again until they are applied (their queue let them go when it sent them).

use std::sync::atomic::Ordering::SeqCst;

use async_channel::TryRecvError;

use super::*;
use crate::queue::{dead_letter_copy, dlq_of};

/// How long a message the dead-letter queue could not take stays parked before it is
/// sent again.
const RETRY: Duration = Duration::from_secs(1);

impl Task {
    /// Sends the messages parked for the dead-letter queue there. None of them when
    /// this node no longer serves: they were handed back with its deliveries.
    pub(super) async fn dead_letter(&mut self) {
        let now = Instant::now();
        if self.dead.iter().all(|&(.., due)| due > now) {
            return;
        }
        if !self.machine.serving() {
            self.dead.clear();
            return;
        }
        let (dead, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.dead)
            .into_iter()
            .partition(|&(.., due)| due <= now);
        self.dead = later;
        if self.dlq.as_ref().is_none_or(|q| q.closed.load(SeqCst)) {
            self.dlq = match dlq_of(&self.shared.dest, &self.shared.settings) {
                Some(d) => (self.resolver)(d).await,
                None => None,
            };
        }
        let from = self.shared.dest.to_string();
        for (id, reason, _) in dead {
            let Some(body) = self.machine.parked_body(id) else {
                continue;
            };
            let count = self.deliveries(id);
            let Some(msg) = decode_message(body, now) else {
                continue;
            };
            let msg = dead_letter_copy(&msg, &from, reason, count);
            let size = msg.size();
            let (done, stored) = async_channel::bounded(1);
            let sent = match &self.dlq {
                None => {
                    log::warn!("{from}: no dead-letter queue; keeping a message that {reason}");
                    false
                }
                Some(dlq) => match dlq.reserve(size) {
                    Ok(()) => match dlq.tx.try_send(QueueCmd::PublishStored(msg, done)) {
                        Ok(()) => true,
                        Err(_) => {
                            dlq.unreserve(size);
                            false
                        }
                    },
                    Err(_) => {
                        log::warn!(
                            "{from}: dead-letter queue {} refused a message; keeping it",
                            dlq.dest
                        );
                        false
                    }
                },
            };
            match sent {
                true => self.dead_out.push((id, stored, reason)),
                false => self.dead.push((id, reason, now + RETRY)),
            }
        }
    }

    /// The dead-letter queue's answers: a message it stored leaves this queue; one it
    /// did not is tried again later. And other queues' dead letters not applied here
    /// are proposed again.
    pub(super) fn dead_letters_stored(&mut self) {
        let now = Instant::now();
        for (id, stored, reason) in std::mem::take(&mut self.dead_out) {
            match stored.try_recv() {
                Err(TryRecvError::Empty) => self.dead_out.push((id, stored, reason)),
                Ok(Ok(_)) => {
                    self.shared.deadlettered.fetch_add(1, Relaxed);
                    // Still parked here (this node served all along): it leaves. This
                    // node leads, so it takes its own proposal; one lost with a lost
                    // lead leaves the message here too.
                    if let Some(op) = self.machine.settle_parked(id) {
                        let _ = self.replica.propose(op.encode());
                    }
                    log::trace!("{}: dead-lettered message {id}", self.shared.dest);
                }
                Ok(Err(_)) | Err(TryRecvError::Closed) => {
                    log::warn!(
                        "{}: the dead-letter queue did not store a message; keeping it",
                        self.shared.dest
                    );
                    self.dead.push((id, reason, now + RETRY));
                }
            }
        }
        for (stored, msg) in std::mem::take(&mut self.dead_in) {
            match stored.try_recv() {
                Err(TryRecvError::Empty) => self.dead_in.push((stored, msg)),
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(TryRecvError::Closed) => {
                    let (done, stored) = async_channel::bounded(1);
                    self.propose_message(&msg, Some(done));
                    self.dead_in.push((stored, msg));
                }
            }
        }
    }
}
