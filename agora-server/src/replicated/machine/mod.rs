//! A replicated queue's state machine, as a plain value: what every member of the
//! queue's Raft group applies from the committed log, and what its leader hands out.
//!
//! The log holds four kinds of entry ([`Op`]): a message enqueued (with the member that
//! proposed it and that member's number for it, so its publisher is confirmed by that
//! member once it applies it), a message acknowledged, a message given back by a
//! consumer (counted toward its delivery limit), and a purge. A message's id is the index of
//! its entry. Deliveries are **not** in the log: only the member that serves (the leader
//! under its lease, [`Replica::serving`](super::replica::Replica::serving)) hands out
//! messages, and it keeps who holds what to itself. When it stops serving (it lost the
//! lease, another was elected, it crashed) what it handed out is void: its consumers are
//! told, and the next leader, which applied the same log, has every message not
//! acknowledged ready to hand out again. So a message is held by one consumer at a time,
//! and a message confirmed is delivered until one acknowledges it (at least once across
//! a failover).
//!
//! An `Enqueue` applied a second time (a forwarded proposal the network duplicated, so
//! the leader appended it twice) is enqueued once: its (member, number) was seen. Each
//! member's latest [`SEEN_WINDOW`] numbers are remembered, no more (a duplicate comes
//! right after its original, not a million entries later), so this memory stays
//! bounded however long the queue lives.
//!
//! A message whose `agora-msg-id` one of the queue's latest `ids` messages carried (the
//! queue's `--dedup-ids`) is not enqueued again: its publisher is confirmed as for the
//! first. The window is counted in messages, not in time (every member must decide the
//! same from the log alone, and the log holds no clock), so a publisher may retry
//! through a failover without storing twice.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use agora_protocol::bytes::Bytes;

use crate::queue::ID_COST;

mod image;
mod op;

pub(crate) use op::Op;

/// How many of each member's latest proposal numbers are remembered.
pub(crate) const SEEN_WINDOW: usize = 65_536;
/// Who "holds" a message a `NACK` with a delay parked.
const PARKED: u64 = u64::MAX;

/// How many times the queue's bytes the log since the last snapshot must hold before
/// a member compacts it.
pub(crate) const COMPACT_RATIO: usize = 4;

/// Whether a member whose log holds `log` bytes since its last snapshot, of a queue
/// holding `queue` bytes, compacts it now: once the log holds at least `least` bytes and
/// [`COMPACT_RATIO`] times the queue's. So a snapshot (a copy of the queue, written while
/// the queue's task waits) costs at most a quarter of the log it replaces, and a queue
/// that nobody reads, whose log is its messages, is not copied again and again as it
/// grows (its log is then bounded by what it holds).
pub(crate) fn compaction_due(log: usize, queue: usize, least: usize) -> bool {
    log >= least.max(queue.saturating_mul(COMPACT_RATIO))
}

/// A member's latest proposal numbers, oldest first out.
#[derive(Default)]
struct Recent {
    set: HashSet<u64, crate::idhash::IdHash>,
    order: VecDeque<u64>,
}

impl Recent {
    /// Whether `seq` is new (it is remembered from now on).
    fn insert(&mut self, seq: u64) -> bool {
        if !self.set.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > SEEN_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// The message ids of a queue's latest messages, oldest first out, and what they cost
/// the memory budget (as a local queue counts its ids: `ID_COST` each and their
/// lengths).
#[derive(Default)]
struct Ids {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
    bytes: usize,
}

impl Ids {
    /// Whether `id` is new (it is remembered from now on).
    fn insert(&mut self, id: &str) -> bool {
        if self.cap == 0 {
            return true;
        }
        if self.set.contains(id) {
            return false;
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        self.bytes += id.len() + ID_COST;
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.bytes -= old.len() + ID_COST;
                self.set.remove(&old);
            }
        }
        true
    }
}

/// What applying an entry did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A message is in the queue as `id`; member `origin`'s `seq`th proposal (that
    /// member confirms its publisher now).
    Enqueued { origin: u64, seq: u64, id: u64 },
    /// The same proposal appended again: not enqueued twice.
    Duplicate { origin: u64, seq: u64 },
    /// A message whose message id a recent one carried: not enqueued again; member
    /// `origin` confirms its publisher as if it were.
    Repeated { origin: u64, seq: u64 },
    /// Message `id` left the queue (`was_there` false: it had left already). It was
    /// out again with `held_by` (handed out again after the acknowledgement that this
    /// entry is, as its member stopped serving meanwhile): that delivery is over.
    Acked {
        id: u64,
        was_there: bool,
        held_by: Option<u64>,
        /// Its body's length (0 when it had left already).
        bytes: usize,
    },
    /// `PURGE`: these messages (ids) left the queue, of these bytes in all; those out
    /// with a consumer are over (their acknowledgements find them gone).
    Purged { ids: Vec<u64>, bytes: usize },
    /// Message `id` came back from a consumer once more (nothing when it had left).
    Returned { id: u64 },
    /// An entry that is no `Op` (written by a newer broker?): skipped.
    Unknown,
}

/// Why an acknowledgement was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotHeld {
    /// This consumer holds no such delivery here (never did, or it was made void when
    /// this member stopped serving).
    Unknown,
}

/// A message in the queue: its body as its `Enqueue` carried it, and the time it was
/// published (0: not said). The body is shared, so an [`Image`](image::Image) taken for
/// a snapshot holds it without a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub at: u64,
    pub body: Bytes,
}

/// One member's copy of a replicated queue.
#[derive(Default)]
pub(crate) struct Machine {
    /// Committed and not acknowledged, by id, and their bytes.
    messages: BTreeMap<u64, Stored>,
    bytes: usize,
    /// How often each message came back from consumers, where it did.
    returns: BTreeMap<u64, u32>,
    /// The latest proposal numbers of each member whose messages were enqueued.
    seen: BTreeMap<u64, Recent>,
    /// The message ids of the latest messages (none kept when its cap is 0).
    ids: Ids,
    /// While serving: what is out, and with which consumer.
    out: BTreeMap<u64, u64>,
    /// While serving: acknowledged here, its `Ack` not applied yet (not handed out
    /// again meanwhile).
    acking: BTreeSet<u64>,
    serving: bool,
}

impl Machine {
    /// A queue that remembers its latest `ids` messages' ids (0: none; a repeat is
    /// then enqueued again).
    pub fn with_ids(ids: usize) -> Machine {
        Machine {
            ids: Ids {
                cap: ids,
                ..Ids::default()
            },
            ..Machine::default()
        }
    }

    /// Applies the committed entry at `index`.
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Applied {
        match Op::decode(data) {
            Some(Op::Enqueue {
                origin,
                seq,
                at,
                body,
            }) => {
                if !self.seen.entry(origin).or_default().insert(seq) {
                    return Applied::Duplicate { origin, seq };
                }
                if self.ids.cap > 0 {
                    if let Some(id) = super::entry::msg_id_of(&body) {
                        if !self.ids.insert(id) {
                            return Applied::Repeated { origin, seq };
                        }
                    }
                }
                self.bytes += body.len();
                let body = Bytes::from(body);
                self.messages.insert(index, Stored { at, body });
                Applied::Enqueued {
                    origin,
                    seq,
                    id: index,
                }
            }
            Some(Op::Ack { id }) => {
                self.acking.remove(&id);
                self.returns.remove(&id);
                let bytes = self.messages.remove(&id).map(|m| m.body.len());
                self.bytes -= bytes.unwrap_or(0);
                Applied::Acked {
                    id,
                    held_by: self.out.remove(&id),
                    was_there: bytes.is_some(),
                    bytes: bytes.unwrap_or(0),
                }
            }
            Some(Op::Purge) => {
                let kept = self.messages.split_off(&index);
                let gone = std::mem::replace(&mut self.messages, kept);
                for id in gone.keys() {
                    self.out.remove(id);
                    self.acking.remove(id);
                    self.returns.remove(id);
                }
                let bytes = gone.values().map(|m| m.body.len()).sum();
                self.bytes -= bytes;
                Applied::Purged {
                    bytes,
                    ids: gone.into_keys().collect(),
                }
            }
            Some(Op::Return { id }) => {
                if self.messages.contains_key(&id) {
                    let n = self.returns.entry(id).or_insert(0);
                    *n = n.saturating_add(1);
                }
                Applied::Returned { id }
            }
            None => Applied::Unknown,
        }
    }

    /// How often message `id` came back from consumers (its `Return`s applied).
    pub fn returned(&self, id: u64) -> u32 {
        self.returns.get(&id).copied().unwrap_or(0)
    }

    /// What the message ids it remembers cost the memory budget.
    pub fn ids_cost(&self) -> usize {
        self.ids.bytes
    }

    /// Messages in the queue (acknowledged ones whose `Ack` is not applied included).
    pub fn depth(&self) -> usize {
        self.messages.len()
    }

    /// The first `limit` messages in the queue, oldest first (the console's peek).
    pub fn peek(&self, limit: usize) -> Vec<&[u8]> {
        self.messages
            .values()
            .take(limit)
            .map(|m| &m.body[..])
            .collect()
    }

    /// Starts or stops serving. Not serving, every delivery is void (those a lapse
    /// kept too): returns them, (id, consumer), for their consumers to be told.
    pub fn serve(&mut self, on: bool) -> Vec<(u64, u64)> {
        if self.serving != on {
            self.serving = on;
            self.acking.clear();
        }
        if on {
            return Vec::new();
        }
        std::mem::take(&mut self.out).into_iter().collect()
    }

    /// Stops serving while this member still leads its term (its lease lapsed): every
    /// delivery is void but those to the consumers `keep` names, which stay out (another
    /// node's link: that node voids them itself when it follows another leader, and
    /// since it must vote for (or be) that leader first, before that leader serves;
    /// were they voided here, this member serving again in the same term would hand
    /// them out while that node's consumers still hold them). Returns the void ones.
    pub fn lapse(&mut self, keep: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
        if self.serving {
            self.serving = false;
            self.acking.clear();
        }
        let mut void = Vec::new();
        self.out.retain(|&id, &mut c| {
            let k = keep(c);
            if !k {
                void.push((id, c));
            }
            k
        });
        void
    }

    pub fn serving(&self) -> bool {
        self.serving
    }

    /// The next message for `consumer`, now out with it: (id, body). Only while
    /// serving; the oldest not out and not being acknowledged.
    pub fn next_for(&mut self, consumer: u64) -> Option<(u64, &[u8])> {
        if !self.serving {
            return None;
        }
        let (&id, m) = self
            .messages
            .iter()
            .find(|(id, _)| !self.out.contains_key(id) && !self.acking.contains(id))?;
        self.out.insert(id, consumer);
        Some((id, &m.body))
    }

    /// `consumer` is done with `id`: the `Op` to propose (the message leaves the queue
    /// when it is applied, and is not handed out again meanwhile); none when it left
    /// already (an earlier delivery of it was acknowledged, and that `Ack` applied).
    pub fn ack(&mut self, consumer: u64, id: u64) -> Result<Option<Op>, NotHeld> {
        if !self.messages.contains_key(&id) {
            return Ok(None);
        }
        if self.out.get(&id) != Some(&consumer) {
            return Err(NotHeld::Unknown);
        }
        self.out.remove(&id);
        self.acking.insert(id);
        Ok(Some(Op::Ack { id }))
    }

    /// `consumer` gives `id` back: it may be handed out again at once (nothing to do
    /// when it left the queue already).
    pub fn nack(&mut self, consumer: u64, id: u64) -> Result<(), NotHeld> {
        if !self.messages.contains_key(&id) {
            return Ok(());
        }
        if self.out.get(&id) != Some(&consumer) {
            return Err(NotHeld::Unknown);
        }
        self.out.remove(&id);
        Ok(())
    }

    /// `consumer` gives `id` back for later (a `NACK` with a delay): nobody is handed it
    /// until [`unpark`](Machine::unpark), or until this member stops serving (then it
    /// is void with every delivery, and the next leader has it at once).
    pub fn park(&mut self, consumer: u64, id: u64) -> Result<(), NotHeld> {
        if !self.messages.contains_key(&id) {
            return Ok(());
        }
        if self.out.get(&id) != Some(&consumer) {
            return Err(NotHeld::Unknown);
        }
        self.out.insert(id, PARKED);
        Ok(())
    }

    /// A parked message may be handed out again (nothing when it is not parked).
    pub fn unpark(&mut self, id: u64) {
        if self.out.get(&id) == Some(&PARKED) {
            self.out.remove(&id);
        }
    }

    /// The body of `id` while it is parked (not once it left the queue, or was
    /// handed back because this member stopped serving).
    pub fn parked_body(&self, id: u64) -> Option<&[u8]> {
        match self.out.get(&id) {
            Some(&PARKED) => self.messages.get(&id).map(|m| &m.body[..]),
            _ => None,
        }
    }

    /// A parked message leaves the queue (its copy reached the dead-letter queue): the
    /// `Ack` to propose; nobody is handed it meanwhile. None when it is not parked.
    pub fn settle_parked(&mut self, id: u64) -> Option<Op> {
        self.parked_body(id)?;
        self.out.remove(&id);
        self.acking.insert(id);
        Some(Op::Ack { id })
    }

    /// Messages published `ttl_ms` or longer before `now_ms` (milliseconds since the
    /// Unix epoch) and not out with a consumer, parked now (as by a `NACK`'s delay:
    /// nobody is handed them) on their way to the dead-letter queue. Only while
    /// serving; a message published without a time never expires.
    pub fn park_expired(&mut self, now_ms: u64, ttl_ms: u64) -> Vec<u64> {
        if !self.serving {
            return Vec::new();
        }
        let expired: Vec<u64> = self
            .messages
            .iter()
            .filter(|(id, m)| {
                m.at > 0
                    && now_ms.saturating_sub(m.at) >= ttl_ms
                    && !self.out.contains_key(id)
                    && !self.acking.contains(id)
            })
            .map(|(&id, _)| id)
            .collect();
        for &id in &expired {
            self.out.insert(id, PARKED);
        }
        expired
    }

    /// Messages out with `consumer`.
    pub fn held_by(&self, consumer: u64) -> usize {
        self.out.values().filter(|&&c| c == consumer).count()
    }

    /// `consumer` left: what it held comes back (those ids).
    pub fn gone(&mut self, consumer: u64) -> Vec<u64> {
        let back: Vec<u64> = self
            .out
            .iter()
            .filter(|&(_, &c)| c == consumer)
            .map(|(&id, _)| id)
            .collect();
        for id in &back {
            self.out.remove(id);
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn enqueue(origin: u64, seq: u64, body: &[u8]) -> Vec<u8> {
        Op::Enqueue {
            origin,
            seq,
            at: 0,
            body: body.to_vec(),
        }
        .encode()
    }

    #[test]
    fn only_a_serving_member_hands_out_and_each_message_to_one_consumer() {
        let mut m = Machine::default();
        assert_eq!(
            m.apply(5, &enqueue(2, 1, b"a")),
            Applied::Enqueued {
                origin: 2,
                seq: 1,
                id: 5
            }
        );
        m.apply(6, &enqueue(1, 1, b"b"));
        assert_eq!(m.next_for(10), None, "not serving");
        m.serve(true);
        assert_eq!(m.next_for(10), Some((5, &b"a"[..])));
        assert_eq!(m.next_for(11), Some((6, &b"b"[..])));
        assert_eq!(m.next_for(10), None, "both out");
        assert_eq!(m.ack(11, 5), Err(NotHeld::Unknown), "not its delivery");
        assert_eq!(m.ack(10, 5), Ok(Some(Op::Ack { id: 5 })));
        assert_eq!(m.next_for(12), None, "5 is being acknowledged");
        assert_eq!(
            m.apply(7, &Op::Ack { id: 5 }.encode()),
            Applied::Acked {
                id: 5,
                was_there: true,
                held_by: None,
                bytes: 1
            }
        );
        assert_eq!(m.ack(10, 5), Ok(None), "acknowledged already");
        assert_eq!(m.nack(11, 6), Ok(()));
        assert_eq!(m.next_for(12), Some((6, &b"b"[..])));
        assert_eq!(m.depth(), 1);
    }

    #[test]
    fn a_lapse_keeps_what_links_hold_and_stopping_voids_it() {
        let mut m = Machine::default();
        for seq in 1..=3 {
            m.apply(seq, &enqueue(1, seq, b"x"));
        }
        m.serve(true);
        m.next_for(7);
        m.next_for(107);
        m.next_for(107);
        assert_eq!((m.held_by(7), m.held_by(107)), (1, 2));
        // The lease lapses: the local consumer's delivery is void, the link's stay out.
        let link = |c: u64| c > 100;
        assert_eq!(m.lapse(link), vec![(1, 7)]);
        assert!(!m.serving());
        assert_eq!(m.lapse(link), vec![], "nothing more, lapsing on");
        assert_eq!(m.next_for(7), None, "not serving");
        // Serving again in the same term: only the void one is handed out again.
        m.serve(true);
        assert_eq!(m.next_for(7).map(|(id, _)| id), Some(1));
        assert_eq!(m.next_for(7), None);
        assert!(m.ack(107, 3).unwrap().is_some(), "still the link's");
        // It no longer leads: everything is void, the link's too.
        let mut void = m.serve(false);
        void.sort();
        assert_eq!(void, vec![(1, 7), (2, 107)]);
        assert_eq!(m.held_by(107), 0);
    }

    #[test]
    fn stopping_voids_every_delivery_and_the_next_leader_has_them_all() {
        // Two members applied the same log; the first serves, then loses its lease.
        let log = [
            enqueue(1, 1, b"a"),
            enqueue(1, 2, b"b"),
            enqueue(2, 1, b"c"),
        ];
        let (mut a, mut b) = (Machine::default(), Machine::default());
        for (i, e) in log.iter().enumerate() {
            a.apply(i as u64 + 1, e);
            b.apply(i as u64 + 1, e);
        }
        a.serve(true);
        a.next_for(7);
        a.next_for(8);
        let ack = a.ack(7, 1).unwrap().unwrap();
        let mut void = a.serve(false);
        void.sort();
        assert_eq!(void, vec![(2, 8)]);
        assert_eq!(a.ack(8, 2), Err(NotHeld::Unknown), "void");
        // The `Ack` of 1 may or may not commit; until it does, 1 is still there.
        b.serve(true);
        let got: Vec<u64> = std::iter::from_fn(|| b.next_for(9).map(|(id, _)| id)).collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(
            b.apply(4, &ack.encode()),
            Applied::Acked {
                id: 1,
                was_there: true,
                held_by: Some(9),
                bytes: 1
            },
            "out again, acknowledged meanwhile"
        );
        assert_eq!(b.depth(), 2);
    }

    #[test]
    fn a_proposal_appended_twice_is_enqueued_once() {
        let mut m = Machine::default();
        m.apply(1, &enqueue(3, 9, b"x"));
        assert_eq!(
            m.apply(2, &enqueue(3, 9, b"x")),
            Applied::Duplicate { origin: 3, seq: 9 }
        );
        assert_eq!(m.depth(), 1);
        assert_eq!(
            m.apply(3, &Op::Ack { id: 2 }.encode()),
            Applied::Acked {
                id: 2,
                was_there: false,
                held_by: None,
                bytes: 0
            }
        );
    }

    #[test]
    fn compaction_waits_for_the_least_and_for_four_times_the_queue() {
        assert!(!compaction_due(999, 0, 1000));
        assert!(compaction_due(1000, 0, 1000));
        assert!(compaction_due(1000, 250, 1000));
        assert!(
            !compaction_due(1000, 251, 1000),
            "the queue is more than a quarter"
        );
        assert!(!compaction_due(usize::MAX - 1, usize::MAX / 2, 1000));
    }

    #[test]
    fn a_parked_message_is_handed_out_only_once_unparked_or_void() {
        let mut m = Machine::default();
        m.apply(1, &enqueue(1, 1, b"a"));
        m.serve(true);
        m.next_for(4);
        assert_eq!(m.park(5, 1), Err(NotHeld::Unknown), "not its delivery");
        assert_eq!(m.park(4, 1), Ok(()));
        assert_eq!(m.next_for(4), None, "parked");
        assert_eq!(m.ack(4, 1), Err(NotHeld::Unknown), "no longer its delivery");
        m.unpark(1);
        assert_eq!(m.next_for(6), Some((1, &b"a"[..])));
        // Parked when its member stops serving: void, and free again once it serves.
        m.park(6, 1).unwrap();
        assert_eq!(m.serve(false), vec![(1, PARKED)]);
        m.serve(true);
        assert_eq!(m.next_for(7).map(|(id, _)| id), Some(1));
    }

    #[test]
    fn a_parked_message_settled_leaves_with_an_ack_and_is_not_handed_out_meanwhile() {
        let mut m = Machine::default();
        m.apply(1, &enqueue(1, 1, b"a"));
        m.apply(2, &enqueue(1, 2, b"b"));
        m.serve(true);
        assert_eq!(m.parked_body(1), None, "not parked");
        assert_eq!(m.settle_parked(1), None, "not parked");
        m.next_for(4);
        m.park(4, 1).unwrap();
        assert_eq!(m.parked_body(1), Some(&b"a"[..]));
        assert_eq!(m.settle_parked(1), Some(Op::Ack { id: 1 }));
        assert_eq!(m.parked_body(1), None, "settled");
        assert_eq!(m.settle_parked(1), None, "once");
        // Not handed out while its Ack is on the way; gone once applied.
        assert_eq!(m.next_for(5).map(|(id, _)| id), Some(2));
        m.nack(5, 2).unwrap();
        m.apply(3, &Op::Ack { id: 1 }.encode());
        assert_eq!(m.depth(), 1);
        // Parked, then void (its member stopped serving): nothing to settle.
        m.next_for(5);
        m.park(5, 2).unwrap();
        m.serve(false);
        assert_eq!(m.parked_body(2), None);
        assert_eq!(m.settle_parked(2), None);
    }

    #[test]
    fn messages_past_their_ttl_and_not_out_are_parked_while_serving() {
        let timed = |seq: u64, at: u64| {
            Op::Enqueue {
                origin: 1,
                seq,
                at,
                body: vec![seq as u8],
            }
            .encode()
        };
        let mut m = Machine::default();
        m.apply(1, &timed(1, 1_000));
        m.apply(2, &timed(2, 1_000));
        m.apply(3, &timed(3, 5_000));
        m.apply(4, &enqueue(1, 4, b"untimed"));
        assert_eq!(
            m.park_expired(9_000, 1_000),
            Vec::<u64>::new(),
            "not serving"
        );
        m.serve(true);
        // Message 1 is out with a consumer: it does not expire there.
        assert_eq!(m.next_for(7).map(|(id, _)| id), Some(1));
        assert_eq!(m.park_expired(5_999, 1_000), vec![2]);
        assert_eq!(m.park_expired(5_999, 1_000), Vec::<u64>::new(), "once");
        assert_eq!(m.parked_body(2), Some(&[2u8][..]));
        assert_eq!(m.settle_parked(2), Some(Op::Ack { id: 2 }));
        // Back from its consumer, past its time: it goes too; 3 once its time comes.
        m.nack(7, 1).unwrap();
        assert_eq!(m.park_expired(6_000, 1_000), vec![1, 3]);
        // The untimed message never expires, and is what is handed out.
        assert_eq!(m.park_expired(u64::MAX, 1), Vec::<u64>::new());
        assert_eq!(m.next_for(7).map(|(id, _)| id), Some(4));
        // Their times are in the image (2's Ack is not applied: it is still there).
        let mut copy = Machine::default();
        copy.restore(&m.image()).unwrap();
        copy.serve(true);
        assert_eq!(copy.park_expired(5_999, 1_000), vec![1, 2]);
        assert_eq!(copy.park_expired(6_000, 1_000), vec![3]);
    }

    #[test]
    fn returns_are_counted_until_the_message_leaves_and_kept_in_the_image() {
        let mut m = Machine::default();
        m.apply(1, &enqueue(1, 1, b"a"));
        assert_eq!(m.returned(1), 0);
        let ret = Op::Return { id: 1 }.encode();
        assert_eq!(m.apply(2, &ret), Applied::Returned { id: 1 });
        m.apply(3, &ret);
        assert_eq!(m.returned(1), 2);
        // The image carries them.
        let mut copy = Machine::default();
        copy.restore(&m.image()).unwrap();
        assert_eq!(copy.returned(1), 2);
        // Once it left, nothing counts.
        m.apply(4, &Op::Ack { id: 1 }.encode());
        m.apply(5, &ret);
        assert_eq!(m.returned(1), 0);
        // A return of a message never there counts nothing either.
        m.apply(6, &Op::Return { id: 99 }.encode());
        assert_eq!(m.returned(99), 0);
    }

    #[test]
    fn a_consumer_that_leaves_gives_back_what_it_held() {
        let mut m = Machine::default();
        m.apply(1, &enqueue(1, 1, b"a"));
        m.serve(true);
        m.next_for(4);
        assert_eq!(m.gone(4), vec![1]);
        assert_eq!(m.next_for(5), Some((1, &b"a"[..])));
    }

    #[test]
    fn a_purge_takes_what_came_before_it_only() {
        let mut m = Machine::default();
        m.apply(1, &enqueue(1, 1, b"a"));
        m.apply(2, &enqueue(1, 2, b"bb"));
        m.serve(true);
        m.next_for(4);
        assert_eq!(
            m.apply(3, &Op::Purge.encode()),
            Applied::Purged {
                ids: vec![1, 2],
                bytes: 3
            }
        );
        m.apply(4, &enqueue(1, 3, b"c"));
        assert_eq!(m.ack(4, 1), Ok(None), "gone");
        assert_eq!(m.peek(5), vec![&b"c"[..]]);
    }

    #[test]
    fn duplicates_are_caught_within_the_window_and_memory_stays_bounded() {
        let mut m = Machine::default();
        let mut index = 0;
        let mut apply = |m: &mut Machine, origin, seq| {
            index += 1;
            m.apply(index, &enqueue(origin, seq, b"x"))
        };
        assert!(matches!(apply(&mut m, 1, 10), Applied::Enqueued { .. }));
        assert!(matches!(apply(&mut m, 2, 10), Applied::Enqueued { .. }));
        assert_eq!(
            apply(&mut m, 1, 10),
            Applied::Duplicate { origin: 1, seq: 10 }
        );
        // A member restarted with a clock that went back: its numbers are still new.
        assert!(matches!(apply(&mut m, 1, 3), Applied::Enqueued { .. }));
        for seq in 100..100 + SEEN_WINDOW as u64 {
            apply(&mut m, 1, seq);
        }
        let r = &m.seen[&1];
        assert_eq!((r.set.len(), r.order.len()), (SEEN_WINDOW, SEEN_WINDOW));
        // The oldest fell out; the latest are still caught.
        assert!(matches!(apply(&mut m, 1, 10), Applied::Enqueued { .. }));
        assert!(matches!(
            apply(&mut m, 1, 99 + SEEN_WINDOW as u64),
            Applied::Duplicate { .. }
        ));
    }

    #[test]
    fn a_repeated_message_id_is_enqueued_once_within_the_latest_ids() {
        let msg = |id: Option<&str>| {
            let mut headers = agora_protocol::Headers::new();
            if let Some(id) = id {
                headers.insert("Agora-Msg-Id", id).unwrap();
            }
            crate::replicated::entry::encode_message(&crate::message::Message {
                headers,
                payload: agora_protocol::bytes::Bytes::from_static(b"p"),
                received: std::time::Instant::now(),
            })
        };
        let mut m = Machine::with_ids(2);
        let mut index = 0;
        let mut apply = |m: &mut Machine, seq, id| {
            index += 1;
            m.apply(index, &enqueue(1, seq, &msg(id)))
        };
        assert!(matches!(
            apply(&mut m, 1, Some("a")),
            Applied::Enqueued { .. }
        ));
        // The same id again, proposed anew (a publisher's retry, on any member).
        assert_eq!(
            apply(&mut m, 2, Some("a")),
            Applied::Repeated { origin: 1, seq: 2 }
        );
        assert!(matches!(apply(&mut m, 3, None), Applied::Enqueued { .. }));
        assert!(matches!(apply(&mut m, 4, None), Applied::Enqueued { .. }));
        assert_eq!(m.depth(), 3);
        // Two newer ids push "a" out of the window of 2: then it is new again.
        assert!(matches!(
            apply(&mut m, 5, Some("b")),
            Applied::Enqueued { .. }
        ));
        assert!(matches!(
            apply(&mut m, 6, Some("c")),
            Applied::Enqueued { .. }
        ));
        // Two ids of one byte remembered: what they cost the memory budget.
        assert_eq!(m.ids_cost(), 2 * (1 + ID_COST));
        assert!(matches!(
            apply(&mut m, 7, Some("a")),
            Applied::Enqueued { .. }
        ));
        // Without a window nothing is caught.
        let mut off = Machine::default();
        off.apply(1, &enqueue(1, 1, &msg(Some("a"))));
        assert!(matches!(
            off.apply(2, &enqueue(1, 2, &msg(Some("a")))),
            Applied::Enqueued { .. }
        ));
    }
}
