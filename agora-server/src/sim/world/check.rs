//! The simulation's invariants, checked after every operation, and the final drain.

use std::collections::BTreeMap;

use super::{msg_id, Check, World};
use crate::queue::Place;

impl World {
    /// Everything leaves: consumers unsubscribe, queues are purged, topic subscribers
    /// are drained and leave. Then nothing may be held anywhere.
    pub(super) fn drain_all(&mut self) -> Check {
        for _ in 0..10_000 {
            if self.consumers.is_empty() {
                break;
            }
            self.unsubscribe(false);
        }
        for q in 0..self.queues.len() {
            self.purge(q);
        }
        self.settle()?;
        for t in 0..self.topics.len() {
            while !self.topics[t].subs.is_empty() {
                self.topic_drain(t);
                self.topic_unsubscribe(t);
            }
        }
        while !self.wild_subs.is_empty() {
            self.wild_drain();
            self.wild_unsubscribe();
        }
        self.report.topic_dropped = self
            .topics
            .iter()
            .map(|t| t.topic.buffered_and_dropped().1)
            .sum();
        if !self.live.is_empty() {
            return Err(format!(
                "{} accepted messages unaccounted for",
                self.live.len()
            ));
        }
        if self.budget.used() != 0 {
            return Err(format!("{} bytes of budget still used", self.budget.used()));
        }
        self.drain_reads()
    }

    /// The invariants, after every operation.
    pub(super) fn check(&self) -> Check {
        self.check_reads()?;
        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        let mut queue_bytes = 0;
        for (q, sq) in self.queues.iter().enumerate() {
            let (mut n, mut bytes) = (0, 0);
            let mut per: BTreeMap<u64, u32> = BTreeMap::new();
            let mut pinning = 0;
            let idle = sq.state.consumers() == 0;
            sq.state.for_each_held(|p, h| {
                *seen.entry(msg_id(&h.msg)).or_default() += 1;
                // A waiting message of a short payload owns it (it holds no read
                // buffer) in a queue without consumers, or once it has waited a second.
                let waited =
                    self.now.saturating_duration_since(h.enqueued) >= crate::queue::COMPACT_AFTER;
                if p == Place::Pending
                    && (idle || waited)
                    && !h.msg.payload.is_empty()
                    && h.msg.payload.len() < crate::message::COPY_BELOW
                    && !h.msg.payload.is_unique()
                {
                    pinning += 1;
                }
                n += 1;
                bytes += h.msg.size();
                if let Place::Outstanding(cid, _) = p {
                    *per.entry(cid).or_default() += 1;
                }
            });
            // Paged messages are held (in the queue's limits) but not in memory (not in
            // the budget).
            let (in_memory, in_memory_bytes) = (n, bytes);
            let mut unmapped = None;
            sq.state
                .for_each_paged(|p| match self.log_ids.get(&(sq.number, p.id)) {
                    Some(id) => {
                        *seen.entry(*id).or_default() += 1;
                        n += 1;
                        bytes += p.size;
                    }
                    None => unmapped = Some(p.id),
                });
            if let Some(id) = unmapped {
                return Err(format!("queue {q}: paged message {id} was never logged"));
            }
            if pinning > 0 {
                return Err(format!(
                    "queue {q}: {pinning} waiting messages share their payload's buffer"
                ));
            }
            if sq.shared.held() != (n, bytes) {
                return Err(format!(
                    "queue {q} reserved {:?} but holds {:?}",
                    sq.shared.held(),
                    (n, bytes)
                ));
            }
            for (cid, out) in per {
                let prefetch = self.consumers.get(&cid).map_or(u32::MAX, |c| c.prefetch);
                if out > prefetch {
                    return Err(format!(
                        "consumer {cid} holds {out} over prefetch {prefetch}"
                    ));
                }
            }
            // Each held message is charged its size and what holding it costs.
            queue_bytes +=
                in_memory_bytes + in_memory * crate::budget::per_message(&sq.shared.dest);
        }
        if let Some((id, n)) = seen.iter().find(|(_, n)| **n > 1) {
            return Err(format!("#{id} held in {n} places at once"));
        }
        if let Some(id) = self.live.iter().find(|id| !seen.contains_key(id)) {
            return Err(format!("accepted #{id} vanished"));
        }
        if let Some(id) = seen.keys().find(|id| !self.live.contains(id)) {
            return Err(format!("#{id} is held but was finished or never accepted"));
        }
        let topic_bytes: usize = self
            .topics
            .iter()
            .flat_map(|t| t.subs.iter())
            .chain(self.wild_subs.iter().map(|w| &w.sub))
            .map(|s| s.sub.tx.charged())
            .sum();
        if self.budget.used() != queue_bytes + topic_bytes {
            return Err(format!(
                "budget reads {} but queues hold {queue_bytes} and topic buffers {topic_bytes}",
                self.budget.used()
            ));
        }
        Ok(())
    }
}
