//! Deterministic simulation of the broker's plain state (TigerBeetle's VOPR,
//! FoundationDB's simulator, on a small scale).
//!
//! Queues ([`QueueState`](crate::queue::QueueState) with the real reservation of limits
//! and memory budget), their dead-letter queues and topics (the real
//! [`Topic`](crate::topic::Topic) fan-out into real delivery queues) are driven
//! in-process on a simulated clock by seeded random operations of many clients:
//! publishes, subscriptions, acks, nacks, unsubscribes, disconnects without warning
//! (whose unsubscribe arrives later, or never before the queue notices), auto-ack writes,
//! time passing (TTL expiry, ack timeouts), dead-lettering, purges, deletes, topic
//! subscribers that fall behind. After every operation it checks the invariants in
//! [`world`]: no queue message held twice, none vanishing, delivery counts rising by one
//! per delivery, credit within prefetch, reservations and the memory budget matching
//! what is held, topic order per publisher; at the end everything is given back and the
//! budget must read zero.
//!
//! The same seed replays the same run exactly: nothing here reads the real clock,
//! iterates a randomly ordered map, or depends on thread timing. A failure prints its
//! seed, the operation number and the last operations, and how to replay it
//! (`cargo xtask sim --seed S --ops N`).
//!
//! Queue consumers subscribe through their connection's [`Session`](crate::session)
//! (a few connections share them), which checks the subscription rules and gives the
//! delivery-id slot; every `ACK` and `NACK` is routed by its connection's session, which
//! must find the subscription the delivery was made to.
//!
//! Publishing connections are driven whole (`world/conns.rs`): bytes through the real
//! codec, the session's effects carried out as `conn` does, liveness on the simulated
//! clock; see that module for what it checks. Three clients without the right (one never
//! authenticated, one a user with no right on the world's destinations, and that user's
//! MQTT bridge, which owns its user's MQTT session queues and no one else's) send every
//! kind of frame at them (`world/intruders.rs`): their sessions must refuse all that
//! would change anything (the bridge's must accept a subscription to its own session
//! queue, and refuse every other user's), and the invariants show nothing changed. Wildcard subscriptions
//! (`*`, `>`, a name) join and leave the topics' index: each delivery they get must
//! name a topic their pattern matches, and each publisher's messages must reach them in
//! order across topics; their buffers count in the budget's invariant.

pub mod cluster;
mod world;

use std::fmt;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Seeds the operations; the same seed gives the same run.
    pub seed: u64,
    /// Operations before the final drain.
    pub ops: u64,
}

/// What a run did (all of it checked).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub ops: u64,
    pub published: u64,
    pub refused: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    pub purged: u64,
    pub deleted: u64,
    pub topic_published: u64,
    pub topic_delivered: u64,
    pub topic_dropped: u64,
    pub disconnects: u64,
    /// `PUBACK`s the publishing connections were sent.
    pub confirmed: u64,
    /// Publishes a chain dropped.
    pub filtered: u64,
    /// Pings the connections' liveness rule sent.
    pub pings: u64,
    /// Connections given up as silent.
    pub silent: u64,
    /// Connections that ended (`DISCONNECT` or silent).
    pub conns_ended: u64,
    /// Frames read whole through the read budget.
    pub frames_read: u64,
    /// Publishes that joined a held run by the hot path (`Session::joins_run`).
    pub joined: u64,
    /// Times the queues' log was read back and matched them.
    pub log_checks: u64,
    /// Messages a durable queue paged out of memory, and read back from the log.
    pub paged_out: u64,
    pub read_back: u64,
    /// Frames of clients without the right that their sessions refused.
    pub intruders_refused: u64,
    /// Deliveries to wildcard subscriptions written.
    pub wild_delivered: u64,
    /// Publishes that came over a cluster link, and deliveries to subscriptions made
    /// by a link.
    pub from_link: u64,
    pub link_delivered: u64,
    /// Requests placed (someone listened), and refused `no_responders` (nobody did).
    pub requests: u64,
    pub no_responders: u64,
    /// `NACK delay=` given, and `NACK dlq`'d messages that reached the dead letters.
    pub nack_delayed: u64,
    pub rejected: u64,
    /// `NACK unseen`: given back without counting as a delivery.
    pub unseen: u64,
    /// Publishes repeating a message id within the window: never stored again.
    pub duplicates: u64,
    /// Consumers put under `HOLD`.
    pub holds: u64,
}

/// A broken invariant, with what is needed to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    /// The operation after which the check failed (0-based; `ops` for the final drain).
    pub op: u64,
    pub what: String,
    /// The last operations before it, oldest first.
    pub trail: Vec<String>,
    /// A failure of the cluster simulation ([`cluster`]).
    pub cluster: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation failed: seed {}, after operation {}: {}",
            self.seed, self.op, self.what
        )?;
        writeln!(f, "last operations:")?;
        for t in &self.trail {
            writeln!(f, "  {t}")?;
        }
        write!(
            f,
            "replay: cargo xtask sim {}--seed {} --ops {}",
            if self.cluster { "--cluster " } else { "" },
            self.seed,
            self.op + 1
        )
    }
}

impl std::error::Error for Failure {}

/// Runs one seeded simulation; see the module documentation.
pub fn run(opts: Options) -> Result<Report, Failure> {
    world::World::new(opts.seed).run(opts.ops)
}

pub(crate) use crate::rng::Rng;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_exactly() {
        let a = run(Options { seed: 7, ops: 5000 }).unwrap();
        let b = run(Options { seed: 7, ops: 5000 }).unwrap();
        assert_eq!(a, b);
        assert!(
            a.delivered > 0 && a.acked > 0 && a.topic_delivered > 0,
            "{a:?}"
        );
        // The connections' rules were exercised: confirms, chains, pings, give-ups.
        assert!(
            a.confirmed > 0
                && a.filtered > 0
                && a.pings > 0
                && a.silent > 0
                && a.joined > 0
                && a.log_checks > 0,
            "{a:?}"
        );
        // Backlogs went to the log and came back.
        assert!(a.paged_out > 0 && a.read_back > 0, "{a:?}");
        assert!(a.frames_read > 0, "{a:?}");
        // Clients without the right were refused.
        assert!(a.intruders_refused > 0, "{a:?}");
        // Wildcard subscriptions got messages from the topics they match.
        assert!(a.wild_delivered > 0, "{a:?}");
        // Links subscribed, and messages came over links.
        assert!(a.from_link > 0 && a.link_delivered > 0, "{a:?}");
        // Requests were placed where someone listened, refused where nobody did.
        assert!(a.requests > 0 && a.no_responders > 0, "{a:?}");
        // Messages were held back by NACK delay= and dead-lettered by NACK dlq.
        assert!(
            a.nack_delayed > 0 && a.rejected > 0 && a.unseen > 0 && a.duplicates > 0 && a.holds > 0,
            "{a:?}"
        );
    }
}
