//! Making a destination on first use (within `--max-destinations`), and removing the
//! idle ones.

use super::*;

impl Manager {
    /// The destinations that count toward `--max-destinations`: all but the broker's
    /// own `$` topics (which sort before every other topic).
    pub(super) fn counted(&self) -> usize {
        let reserved = match Destination::topic("$-") {
            Ok(first) => self
                .registry
                .range(first..)
                .take_while(|(d, _)| d.kind == Kind::Topic && d.name.is_reserved())
                .count(),
            Err(_) => 0,
        };
        self.registry.len() - reserved
    }

    /// A topic named `dest` as this broker makes them (not registered here).
    pub(super) fn topic(&self, dest: Destination) -> Topic {
        let c = &self.config;
        Topic::new(dest, c.slow_consumer, self.budget.clone())
            .with_copy_fanout(c.ablation.copy_fanout)
            .with_wild(self.wild.clone())
    }

    pub(super) async fn resolve(
        &mut self,
        dest: Destination,
    ) -> Result<Handle, (ErrorCode, String)> {
        if let Some(e) = self.registry.get(&dest) {
            if !e.handle.is_closed() {
                return Ok(e.handle.clone());
            }
            self.registry.remove(&dest);
        }
        let c = &self.config;
        // The broker's own `$` names do not count: its metrics topic, and the inboxes,
        // each made only by its own connection's subscription (bounded by the
        // connections, not by the destination limit).
        let brokers = dest.name.is_reserved();
        if self.counted() >= c.max_destinations && !brokers {
            return Err((
                ErrorCode::TooManyDestinations,
                format!(
                    "the broker is at its limit of {} destinations; {dest} was not created",
                    c.max_destinations
                ),
            ));
        }
        let dest = dest.compact();
        let handle = match dest.kind {
            Kind::Queue
                if self
                    .replicated
                    .as_ref()
                    .is_some_and(|g| g.replicates(&dest)) =>
            {
                let groups = self.replicated.clone().expect("checked");
                let settings = c.queue_settings(dest.name.as_str());
                match crate::replicated::spawn(
                    dest.clone(),
                    settings,
                    self.budget.clone(),
                    c.queue_channel,
                    &self.rt,
                    groups,
                    dlq_resolver(self.me.clone()),
                ) {
                    Ok(q) => Handle::Queue(q),
                    Err(why) => {
                        log::error!("{dest}: its replicated queue cannot start: {why}");
                        return Err((
                            ErrorCode::StorageFailed,
                            format!("{dest} cannot start on this node: {why}"),
                        ));
                    }
                }
            }
            Kind::Queue => {
                let settings = c.queue_settings(dest.name.as_str());
                let channel = c.queue_channel;
                let store = self.queue_store(dest.name.as_str(), settings.durable).await;
                Handle::Queue(queue::spawn(
                    dest.clone(),
                    settings,
                    self.budget.clone(),
                    dlq_resolver(self.me.clone()),
                    channel,
                    &self.rt,
                    store,
                ))
            }
            Kind::Topic => Handle::Topic(Arc::new(self.topic(dest.clone()))),
        };
        if let Some(c) = self.chains.get(&dest) {
            handle.chain().set(Some(c.clone()));
        }
        log::debug!("created {dest}");
        if dest.kind == Kind::Topic {
            // Unlisted topics of this name, made before, must not miss its subscribers.
            self.unlisted.generation.fetch_add(1, SeqCst);
        }
        self.registry.insert(
            dest,
            Entry {
                handle: handle.clone(),
                seen_in: 0,
                active_at: Instant::now(),
            },
        );
        Ok(handle)
    }

    pub(super) fn sweep(&mut self) {
        let now = Instant::now();
        let wild = self.wild.clone();
        let idle_for = self.config.idle_timeout;
        self.registry.retain(|dest, e| {
            let msgs_in = match &e.handle {
                Handle::Queue(q) => q.messages_in.load(Relaxed),
                Handle::Topic(t) => t.counts.messages_in.load(Relaxed),
            };
            let idle = match &e.handle {
                // A bound queue stays: its bindings are its reason to be.
                Handle::Queue(q) => q.is_idle() && !wild.is_bound(dest.name.as_str()),
                Handle::Topic(t) => t.subscribers() == 0,
            };
            if msgs_in != e.seen_in || !idle {
                e.seen_in = msgs_in;
                e.active_at = now;
                return true;
            }
            if now.duration_since(e.active_at) < idle_for {
                return true;
            }
            let retired = match &e.handle {
                Handle::Queue(q) => q.try_retire(),
                Handle::Topic(t) => t.try_retire(),
            };
            if retired {
                log::debug!("removed idle {dest}");
            }
            !retired
        });
    }
}

/// A queue's way to its dead-letter queue: a resolve through this registry, which it
/// holds weakly (queues do not keep the registry alive).
fn dlq_resolver(me: async_channel::WeakSender<ManagerCmd>) -> queue::DlqResolver {
    Arc::new(move |dest| {
        let me = me.clone();
        Box::pin(async move {
            let manager = me.upgrade()?;
            match ask(&manager, |reply| ManagerCmd::Resolve { dest, reply }).await? {
                Ok(Handle::Queue(q)) => Some(q),
                _ => None,
            }
        })
    })
}
