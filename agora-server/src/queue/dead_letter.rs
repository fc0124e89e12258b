//! A queue's dead letters: moved to its dead-letter queue (configured, or
//! `<queue>.dlq`), or kept, never dropped, when that queue cannot take them.

use super::*;

/// The dead-letter queue of the queue `dest`: configured, or `<queue>.dlq` (a queue is
/// never its own: it would wait on itself). A replicated queue's too.
pub(crate) fn dlq_of(dest: &Destination, settings: &QueueSettings) -> Option<Destination> {
    let own = dest.name.as_str();
    let name = match &settings.dead_letter {
        Some(n) => Name::try_from(n.as_str()).ok(),
        None => Name::try_from(format!("{own}.dlq")).ok(),
    }?;
    (name.as_str() != own).then_some(Destination {
        kind: Kind::Queue,
        name,
    })
}

/// A message on its way to a dead-letter queue, with why (`reason`) and after how many
/// deliveries, as the headers say.
pub(crate) fn dead_letter_copy(msg: &Message, from: &str, reason: &str, count: u32) -> Message {
    let mut msg = msg.clone();
    let _ = msg.headers.insert(DEAD_LETTER_FROM, from);
    let _ = msg.headers.insert(DEAD_LETTER_REASON, reason);
    let _ = msg
        .headers
        .insert(DEAD_LETTER_DELIVERIES, &count.to_string());
    msg
}

impl Queue {
    /// Moves messages to the dead-letter queue. A message the dead-letter queue cannot
    /// take (full, or no valid name) stays here, at the back, and is tried again later:
    /// never dropped.
    pub(super) async fn dead_letter(&mut self, dead: Vec<(Held, &'static str)>) {
        if self.dlq.as_ref().is_none_or(|q| q.closed.load(SeqCst)) {
            self.dlq = self.resolve_dlq().await;
        }
        let from = self.shared.dest.to_string();
        for (h, reason) in dead {
            let Some(dlq) = &self.dlq else {
                log::warn!("{from}: no dead-letter queue; keeping a message that {reason}");
                self.state.keep(h);
                continue;
            };
            let msg = dead_letter_copy(&h.msg, &from, reason, h.count);
            let size = msg.size();
            let ack = self.state.moved(h.id);
            match dlq.reserve(size) {
                Ok(()) => {
                    if dlq.tx.send(QueueCmd::DeadLetter { msg, ack }).await.is_ok() {
                        self.state.dead_lettered(h);
                        self.shared.deadlettered.fetch_add(1, Relaxed);
                        log::trace!("{from}: dead-lettered a message ({reason})");
                    } else {
                        dlq.unreserve(size);
                        self.state.keep(h);
                    }
                }
                Err(_) => {
                    log::warn!(
                        "{from}: dead-letter queue {} refused a message; keeping it",
                        dlq.dest
                    );
                    self.state.keep(h);
                }
            }
        }
    }

    async fn resolve_dlq(&self) -> Option<Arc<QueueShared>> {
        let dlq = dlq_of(&self.shared.dest, &self.shared.settings)?;
        (self.resolver)(dlq).await
    }
}
