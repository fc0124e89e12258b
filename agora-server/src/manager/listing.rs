//! Pages of destinations for `STATS`, and a destination's figures.

use super::*;

/// Destinations a `STATS` page lists when the request does not say.
pub(crate) const DEFAULT_STATS_LIMIT: usize = 1000;
/// Most destinations one `STATS` page lists, whatever the request says.
pub(crate) const MAX_STATS_LIMIT: usize = 10_000;

/// A page of destinations for `STATS`.
pub(crate) struct Listing {
    pub handles: Vec<Handle>,
    /// The last destination listed, when more follow: the next page starts after it.
    pub next: Option<Destination>,
    /// The page size applied.
    pub limit: usize,
    /// Destinations in the broker, all of them.
    pub total: usize,
}

/// A destination's figures, as `STATS` reports them.
#[derive(Serialize)]
pub(crate) struct DestStats {
    pub kind: &'static str,
    pub name: String,
    pub depth: usize,
    pub unacked: usize,
    /// Of `depth`, the messages a durable queue keeps in its log only (read back as
    /// consumers get there).
    pub paged: usize,
    pub consumers: usize,
    pub messages_in: u64,
    pub messages_out: u64,
    pub dropped: u64,
    pub redelivered: u64,
    pub deadlettered: u64,
    /// Queue: publishes not stored because they repeated a message id
    /// (`agora-msg-id`) within the window. Topic: 0.
    pub duplicates: u64,
    /// Queue: message ids remembered now. Topic: 0.
    pub message_ids: usize,
    /// Publishes the destination's mutator chain dropped.
    pub filtered: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Sampled latency of the last metric interval.
    pub latency: crate::metrics::LatencySummary,
}

impl Handle {
    pub fn stats(&self) -> DestStats {
        match self {
            Handle::Queue(q) => DestStats {
                kind: "queue",
                name: q.dest.name.to_string(),
                depth: q.waiting(),
                unacked: q.unacked.load(Relaxed),
                paged: q.paged.load(Relaxed),
                consumers: q.consumers.load(Relaxed),
                messages_in: q.messages_in.load(Relaxed),
                messages_out: q.messages_out.load(Relaxed),
                dropped: 0,
                redelivered: q.redelivered.load(Relaxed),
                deadlettered: q.deadlettered.load(Relaxed),
                duplicates: q.duplicates.load(Relaxed),
                message_ids: q.remembered.load(Relaxed),
                filtered: q.chain.filtered.load(Relaxed),
                bytes_in: q.bytes_in.load(Relaxed),
                bytes_out: q.bytes_out.load(Relaxed),
                latency: q.latency.last(),
            },
            Handle::Topic(t) => {
                let (depth, dropped) = t.buffered_and_dropped();
                DestStats {
                    kind: "topic",
                    name: t.dest.name.to_string(),
                    depth,
                    unacked: 0,
                    paged: 0,
                    consumers: t.subscribers(),
                    messages_in: t.counts.messages_in.load(Relaxed),
                    messages_out: t.counts.messages_out.load(Relaxed),
                    dropped,
                    redelivered: 0,
                    deadlettered: 0,
                    duplicates: 0,
                    message_ids: 0,
                    filtered: t.chain.filtered.load(Relaxed),
                    bytes_in: t.counts.bytes_in.load(Relaxed),
                    bytes_out: t.counts.bytes_out.load(Relaxed),
                    latency: t.latency.last(),
                }
            }
        }
    }
}

impl Manager {
    /// One page of destinations: at most `limit` (the default when not given,
    /// capped at [`MAX_STATS_LIMIT`]) whose name starts with the prefix, after
    /// `after`, in order, among those `only` may see (all without it: `total` then
    /// counts those). Memory per request is the page, not the registry.
    pub(super) fn list(&self, page: &StatsPage, only: Option<&crate::auth::User>) -> Listing {
        let visible = |d: &Destination| only.is_none_or(|u| u.rights.may_see(d));
        let limit = page
            .limit
            .map_or(DEFAULT_STATS_LIMIT, |n| n as usize)
            .min(MAX_STATS_LIMIT);
        let start = match &page.after {
            Some(d) => Bound::Excluded(d.clone()),
            None => Bound::Unbounded,
        };
        let mut handles = Vec::with_capacity(limit.min(64));
        let mut next = None;
        let mut last: Option<&Destination> = None;
        let matching = self
            .registry
            .range((start, Bound::Unbounded))
            .filter(|(d, _)| {
                page.prefix
                    .as_deref()
                    .is_none_or(|p| d.name.as_str().starts_with(p))
                    && visible(d)
            });
        for (d, e) in matching {
            if handles.len() == limit {
                next = last.cloned();
                break;
            }
            handles.push(e.handle.clone());
            last = Some(d);
        }
        Listing {
            handles,
            next,
            limit,
            total: match only {
                None => self.registry.len(),
                Some(_) => self.registry.keys().filter(|d| visible(d)).count(),
            },
        }
    }
}
