//! A queue's dead letters: moved to its dead-letter queue (configured, or
//! `<queue>.dlq`), or kept, never dropped, when that queue cannot take them.

use super::*;

impl Queue {
    /// The dead-letter queue's name: configured, or `<queue>.dlq`.
    fn dlq_name(&self) -> Option<Name> {
        let own = self.shared.dest.name.as_str();
        let name = match &self.shared.settings.dead_letter {
            Some(n) => Name::try_from(n.as_str()).ok(),
            None => Name::try_from(format!("{own}.dlq")).ok(),
        }?;
        // A queue is never its own dead-letter queue (it would wait on itself).
        (name.as_str() != own).then_some(name)
    }

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
            let mut msg = h.msg.clone();
            let _ = msg.headers.insert(DEAD_LETTER_FROM, &from);
            let _ = msg.headers.insert(DEAD_LETTER_REASON, reason);
            let _ = msg
                .headers
                .insert(DEAD_LETTER_DELIVERIES, &h.count.to_string());
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
        let name = self.dlq_name()?;
        (self.resolver)(Destination {
            kind: Kind::Queue,
            name,
        })
        .await
    }
}
