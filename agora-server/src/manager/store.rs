//! The registry's part in durable queues: numbering queues in the log, and handing each
//! queue what the start read back for it.

use super::*;

/// The broker's log as the registry uses it: it numbers durable queues (declaring
/// each in the log before its first record), and hands each queue what was read back
/// for it at start.
pub(crate) struct Store {
    pub writer: WriterHandle,
    /// Durable queues' numbers by name, as declared in the log.
    pub numbers: BTreeMap<String, u32>,
    /// The next number free.
    pub next_number: u32,
    /// Where message ids come from, shared by every durable queue.
    pub ids: MessageIds,
    /// Messages the log kept at start, by queue name, until their queue is made.
    pub recovered: BTreeMap<String, Vec<Kept>>,
    /// Chains set (or, empty, cleared) at run time before the start, by destination:
    /// they override the config file's.
    pub chains: BTreeMap<String, String>,
    /// Queues' bindings as last changed at run time before the start, by queue name
    /// (patterns separated by spaces; empty: none): they override the config file's.
    pub bindings: BTreeMap<String, String>,
    /// The message ids the log held at start, by queue name, until their queue is made.
    pub seen: BTreeMap<String, Vec<String>>,
}

impl Manager {
    /// Makes every queue the log holds messages for, before anything is served.
    pub(super) async fn recover(&mut self) {
        let Some(st) = &mut self.store else { return };
        let names: Vec<String> = std::mem::take(&mut st.recovered)
            .into_iter()
            .filter(|(_, msgs)| !msgs.is_empty())
            .map(|(name, msgs)| {
                st.recovered.insert(name.clone(), msgs);
                name
            })
            .collect();
        for name in names {
            let dest = match Destination::queue(&name) {
                Ok(d) => d,
                Err(e) => {
                    // Names are checked before they are declared; never expected.
                    log::error!("the log names a queue '{name}' that is not a valid name ({e}); its messages stay in the log");
                    continue;
                }
            };
            match self.resolve(dest).await {
                Ok(Handle::Queue(q)) => log::info!(
                    "{}: {} messages kept in the log (its head is read back as it starts)",
                    q.dest,
                    q.held().0
                ),
                Ok(_) => {}
                Err((_, why)) => log::error!("queue {name} not made at start: {why}"),
            }
        }
    }

    /// What a queue called `name` is given of the log: its number (declared now if
    /// new) when `durable`, and its messages read back at start. A queue no longer
    /// durable has its number deleted from the log (its messages stay in memory).
    pub(super) async fn queue_store(&mut self, name: &str, durable: bool) -> Option<QueueStore> {
        let st = self.store.as_mut()?;
        let mut kept = st.recovered.remove(name).unwrap_or_default();
        let mut restore = Vec::new();
        let mut records = Vec::new();
        let journal = match (durable, st.numbers.get(name)) {
            (true, Some(&n)) => Some((n, st.ids.clone())),
            (true, None) => {
                let n = st.next_number;
                st.next_number += 1;
                st.numbers.insert(name.to_owned(), n);
                records.push(Record::Declare {
                    queue: n,
                    name: name.to_owned(),
                });
                Some((n, st.ids.clone()))
            }
            (false, Some(&n)) => {
                // Read whole before the log forgets them.
                let ids = std::mem::take(&mut kept).iter().map(|k| k.id).collect();
                restore = match st.writer.read(n, ids).await.recv().await {
                    Ok(Ok(msgs)) => msgs,
                    Ok(Err(why)) => {
                        log::error!("queue {name}: its messages cannot be read back ({why}); they stay in the log");
                        return None;
                    }
                    Err(_) => return None,
                };
                log::warn!(
                    "queue {name} is no longer durable (durable = false): its {} stored messages are kept in memory only from now on",
                    restore.len()
                );
                st.numbers.remove(name);
                records.push(Record::Delete { queue: n });
                None
            }
            (false, None) => None,
        };
        if !records.is_empty() {
            // Queued before the queue exists, so before any record of its own.
            let _ = st
                .writer
                .append(Append {
                    records,
                    done: Vec::new(),
                })
                .await;
        }
        Some(QueueStore {
            writer: st.writer.clone(),
            journal,
            kept,
            restore,
            seen: st.seen.remove(name).unwrap_or_default(),
        })
    }
}
