//! Topic patterns bound to queues (`BIND`, `UNBIND`), and their record in the log.

use super::*;

impl Manager {
    /// `BIND`/`UNBIND`: changes the index, then writes the queue's bindings as they
    /// now are to the log (the last word for the queue at the next start).
    pub(super) async fn bind(
        &mut self,
        queue: Destination,
        pattern: crate::auth::Pattern,
        on: bool,
    ) -> Result<(), (ErrorCode, String)> {
        if on {
            // The queue exists from now on, so what the binding routes to it is kept
            // even before any consumer comes.
            self.resolve(queue.clone()).await?;
            if self.wild.bind(&queue, &pattern) {
                log::info!("{queue} bound to {pattern}");
            }
        } else if self.wild.unbind(&queue, &pattern) {
            log::info!("{queue} unbound from {pattern}");
        } else {
            return Err((
                ErrorCode::UnknownDestination,
                format!("{queue} is not bound to {pattern}"),
            ));
        }
        self.keep_bindings(&queue).await;
        Ok(())
    }

    /// Removes every binding of `queue` (it was deleted).
    pub(super) async fn unbind_all(&mut self, queue: &Destination) {
        let patterns = self.wild.bound_patterns(queue.name.as_str());
        if patterns.is_empty() {
            return;
        }
        for p in &patterns {
            if let Ok(p) = crate::auth::Pattern::parse(p) {
                self.wild.unbind(queue, &p);
            }
        }
        log::info!(
            "{queue} deleted: its bindings to {} went with it",
            patterns.join(", ")
        );
        self.keep_bindings(queue).await;
    }

    /// Writes `queue`'s bindings as they are to the log, when there is one.
    pub(super) async fn keep_bindings(&mut self, queue: &Destination) {
        let Some(st) = &self.store else { return };
        let record = Record::Bindings {
            queue: queue.name.as_str().to_owned(),
            patterns: self.wild.bound_patterns(queue.name.as_str()).join(" "),
        };
        keep(st, record).await;
    }
}
