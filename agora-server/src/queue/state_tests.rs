//! Unit tests of the queue's rules, on the plain value: no sockets, no tasks, no clock.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;

use super::*;

/// A consumer's port in tests: what it was given, and whether its connection is gone.
#[derive(Clone, Default)]
pub(super) struct Rec {
    got: Rc<RefCell<Vec<Delivery>>>,
    gone: Rc<RefCell<bool>>,
}

impl Rec {
    pub(super) fn take(&self) -> Vec<Delivery> {
        std::mem::take(&mut self.got.borrow_mut())
    }
}

pub(super) fn push(c: &ConsumerSpec<Rec>, d: Delivery) -> Result<(), Delivery> {
    if *c.port.gone.borrow() {
        return Err(d);
    }
    c.port.got.borrow_mut().push(d);
    Ok(())
}

pub(super) fn settings() -> QueueSettings {
    QueueSettings {
        max_messages: 1000,
        max_bytes: 1 << 20,
        max_deliveries: 0,
        ttl: None,
        ack_timeout: None,
        dead_letter: None,
        durable: true,
        memory_bytes: 1 << 20,
        dedup_window: std::time::Duration::from_secs(120),
        dedup_ids: 100_000,
    }
}

pub(super) fn msg(text: &str, at: Instant) -> Message {
    Message {
        headers: Headers::default(),
        payload: Bytes::copy_from_slice(text.as_bytes()),
        received: at,
    }
}

pub(super) fn text(d: &Delivery) -> &str {
    std::str::from_utf8(&d.msg.payload).unwrap()
}

pub(super) fn consumer(q: &mut QueueState<Rec>, cid: u64, prefetch: u32, auto_ack: bool) -> Rec {
    let port = Rec::default();
    q.subscribe(ConsumerSpec {
        cid,
        sid: cid,
        slot: cid,
        prefetch,
        auto_ack,
        link: false,
        port: port.clone(),
    });
    port
}

#[test]
fn round_robin_within_credit_and_acks_release_bytes() {
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    let a = consumer(&mut q, 1, 2, false);
    let b = consumer(&mut q, 2, 1, false);
    q.enqueue(["m1", "m2", "m3", "m4"].map(|t| msg(t, t0)), t0);
    q.dispatch(t0, push);
    let (ga, gb) = (a.take(), b.take());
    assert_eq!(ga.iter().map(text).collect::<Vec<_>>(), ["m1", "m3"]);
    assert_eq!(gb.iter().map(text).collect::<Vec<_>>(), ["m2"]);
    assert_eq!(
        (q.depth(), q.unacked()),
        (1, 3),
        "credit bounds what is out"
    );
    assert_eq!(q.take_released(), (0, 0));
    assert_eq!(q.ack(1, ga[0].did, true), Acked::Done);
    assert_eq!(q.take_released(), (1, 2));
    assert_eq!(q.ack(1, ga[0].did, true), Acked::Unknown, "acked once only");
    assert_eq!(
        q.ack(2, ga[1].did, true),
        Acked::Unknown,
        "not that consumer's"
    );
    q.dispatch(t0, push);
    assert_eq!(a.take().iter().map(text).collect::<Vec<_>>(), ["m4"]);
    assert_eq!(ga[1].did >> SLOT_SHIFT, 1, "ids carry the consumer's slot");
}

#[test]
fn nack_unsubscribe_and_a_gone_connection_give_back_with_a_higher_count() {
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    let a = consumer(&mut q, 1, 3, false);
    q.enqueue(["x", "y", "z"].map(|t| msg(t, t0)), t0);
    q.dispatch(t0, push);
    let got = a.take();
    assert_eq!(q.ack(1, got[1].did, false), Acked::Done);
    assert!(q.unsubscribe(1).is_some());
    assert!(q.unsubscribe(1).is_none());
    // The departed consumer's outstanding ones go back to the front, in their order,
    // ahead of the one nacked before.
    let b = consumer(&mut q, 2, 10, false);
    q.dispatch(t0, push);
    let again = b.take();
    assert_eq!(again.iter().map(text).collect::<Vec<_>>(), ["x", "z", "y"]);
    assert!(again.iter().all(|d| d.count == 2));
    // A consumer whose connection is gone is dropped at dispatch; nothing is lost.
    *b.gone.borrow_mut() = true;
    assert!(q.unsubscribe(2).is_some());
    let c = consumer(&mut q, 3, 10, false);
    *c.gone.borrow_mut() = true;
    q.dispatch(t0, push);
    assert_eq!((q.consumers(), q.depth()), (0, 3));
}

#[test]
fn auto_ack_deliveries_leave_when_written() {
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    let a = consumer(&mut q, 1, 2, true);
    q.enqueue(["ab", "cd", "ef"].map(|t| msg(t, t0)), t0);
    q.dispatch(t0, push);
    let got = a.take();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|d| d.did == 0), "no ack expected");
    q.written(1, 5);
    assert_eq!(q.take_released(), (2, 4), "only what was out");
    q.dispatch(t0, push);
    assert_eq!(a.take().len(), 1);
}

#[test]
fn max_deliveries_dead_letters_even_without_consumers() {
    let t0 = Instant::now();
    let mut q = QueueState::new(QueueSettings {
        max_deliveries: 2,
        ..settings()
    });
    let a = consumer(&mut q, 1, 1, false);
    q.enqueue([msg("p", t0)], t0);
    for count in 1..=2 {
        q.dispatch(t0, push);
        let d = a.take().pop().expect("delivered");
        assert_eq!(d.count, count);
        assert_eq!(q.ack(1, d.did, false), Acked::Done);
    }
    q.unsubscribe(1);
    q.dispatch(t0, push);
    let dead = q.take_dead();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].0.count, dead[0].1), (2, MAX_DELIVERIES));
    // A dead-letter queue that refuses it: kept, never dropped.
    for (h, _) in dead {
        q.keep(h);
    }
    assert_eq!(q.depth(), 1);
}

#[test]
fn ttl_and_ack_timeout_follow_the_given_clock() {
    let t0 = Instant::now();
    let mut q = QueueState::new(QueueSettings {
        ttl: Some(Duration::from_secs(10)),
        ack_timeout: Some(Duration::from_secs(5)),
        ..settings()
    });
    assert_eq!(q.tick(), Some(Duration::from_millis(500)));
    q.enqueue([msg("old", t0)], t0);
    q.enqueue([msg("new", t0)], t0 + Duration::from_secs(8));
    q.timers(t0 + Duration::from_secs(10));
    let dead = q.take_dead();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, EXPIRED);
    q.dead_lettered(dead.into_iter().next().unwrap().0);
    assert_eq!(q.take_released(), (1, 3));
    // Delivered at 10 s to a, not acked by 15 s: taken back, and b gets it next.
    let a = consumer(&mut q, 1, 1, false);
    q.dispatch(t0 + Duration::from_secs(10), push);
    assert_eq!(a.take().len(), 1);
    let b = consumer(&mut q, 2, 1, false);
    q.timers(t0 + Duration::from_secs(14));
    assert_eq!(q.unacked(), 1, "not late yet");
    q.timers(t0 + Duration::from_secs(15));
    q.dispatch(t0 + Duration::from_secs(15), push);
    assert!(
        a.take().is_empty(),
        "not straight back to the late consumer"
    );
    let d = b.take().pop().expect("the other consumer gets it");
    assert_eq!((text(&d), d.count), ("new", 2));
}

#[test]
fn purge_and_delete_release_everything_they_drop() {
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    let a = consumer(&mut q, 1, 1, false);
    q.enqueue(["aa", "bbb", "c"].map(|t| msg(t, t0)), t0);
    q.dispatch(t0, push);
    assert_eq!(a.take().len(), 1);
    assert_eq!(q.purge(), 2);
    assert_eq!(q.take_released(), (2, 4));
    let (n, gone) = q.delete();
    assert_eq!((n, gone.len()), (1, 1));
    assert_eq!(q.take_released(), (1, 2));
    assert_eq!((q.depth(), q.unacked(), q.consumers()), (0, 0, 0));
}

#[test]
fn an_ended_auto_ack_subscription_keeps_what_its_shipper_may_have_written() {
    // The queue finds the subscription's delivery queue closed (UNSUB) while the
    // shipper's report of a written batch is still on its way: those deliveries must
    // not go back (they would be delivered twice); the report settles them, and the
    // unsubscribe that follows gives back only the rest.
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    let a = consumer(&mut q, 1, 2, true);
    q.enqueue(["w1", "w2", "p3"].map(|t| msg(t, t0)), t0);
    q.dispatch(t0, push);
    assert_eq!(a.take().len(), 2);
    *a.gone.borrow_mut() = true;
    q.written(1, 1); // frees one credit: the next push finds the queue closed
    q.dispatch(t0, push);
    assert_eq!(q.consumers(), 1, "kept until its unsubscribe");
    assert_eq!(q.take_released(), (1, 2));
    q.written(1, 1);
    assert_eq!(
        q.take_released(),
        (1, 2),
        "the late report still settles w2"
    );
    assert!(q.unsubscribe(1).is_some());
    assert_eq!(
        (q.depth(), q.unacked()),
        (1, 0),
        "only p3 is left, never delivered twice"
    );
}

/// Messages whose payloads are slices of one buffer, as the broker's read loop makes
/// them, and whether a payload still points into that buffer.
fn sliced(buf: &Bytes, n: usize, at: Instant) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            headers: Headers::default(),
            payload: buf.slice(i * 10..i * 10 + 10),
            received: at,
        })
        .collect()
}

fn in_buffer(buf: &Bytes, m: &Message) -> bool {
    let r = buf.as_ptr_range();
    r.contains(&m.payload.as_ptr())
}

#[test]
fn messages_waiting_for_no_consumer_or_for_a_second_own_their_payloads() {
    let t0 = Instant::now();
    let buf = Bytes::from(vec![7u8; 1000]);
    let pending_in_buffer = |q: &QueueState<Rec>| {
        let mut n = (0, 0);
        q.for_each_held(|p, h| {
            if p == Place::Pending {
                n.0 += 1;
                n.1 += in_buffer(&buf, &h.msg) as usize;
                assert_eq!(&h.msg.payload[..], &[7u8; 10][..]);
            }
        });
        n
    };
    // No consumer: copied at the dispatch after they arrive.
    let mut q = QueueState::<Rec>::new(settings());
    q.enqueue(sliced(&buf, 5, t0), t0);
    q.dispatch(t0, push);
    assert_eq!(pending_in_buffer(&q), (5, 0));
    // With a consumer, nothing is copied: three go straight out as the publisher's
    // slices, and seven wait as they came.
    let mut q = QueueState::new(settings());
    let a = consumer(&mut q, 1, 3, false);
    q.enqueue(sliced(&buf, 10, t0), t0);
    q.dispatch(t0, push);
    let got = a.take();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|d| in_buffer(&buf, &d.msg)));
    assert_eq!(pending_in_buffer(&q), (7, 7));
    // A nacked delivery waits again, copied as it is put back.
    assert_eq!(q.ack(1, got[0].did, false), Acked::Done);
    assert_eq!(pending_in_buffer(&q), (8, 7));
    // A second after the first of them arrived, the ones still waiting are copied too,
    // and the queue's task is told when that is.
    assert_eq!(q.compaction_due(), Some(t0 + COMPACT_AFTER));
    // (The nacked one goes out again: the consumer has room for it.)
    q.dispatch(t0 + COMPACT_AFTER / 2, push);
    assert_eq!(pending_in_buffer(&q), (7, 7));
    q.dispatch(t0 + COMPACT_AFTER, push);
    assert_eq!(pending_in_buffer(&q), (7, 0));
    assert_eq!(q.compaction_due(), None);
    // New ones wait their second from when they came.
    let t1 = t0 + 5 * COMPACT_AFTER;
    q.enqueue(sliced(&buf, 2, t1), t1);
    assert_eq!(q.compaction_due(), Some(t1 + COMPACT_AFTER));
    q.dispatch(t1, push);
    assert_eq!(pending_in_buffer(&q), (9, 2));
    // The consumer leaves: its three come back copied, and the next dispatch, with no
    // consumer left, copies the rest at once.
    assert!(q.unsubscribe(1).is_some());
    assert_eq!(pending_in_buffer(&q), (12, 2));
    q.dispatch(t1, push);
    assert_eq!(pending_in_buffer(&q), (12, 0));
    assert_eq!(q.compaction_due(), None);
}

#[test]
fn a_message_the_dead_letter_queue_refused_leaves_the_new_ones_before_it_compacted_in_time() {
    let t0 = Instant::now();
    let buf = Bytes::from(vec![7u8; 1000]);
    let ttl = 10 * COMPACT_AFTER;
    let mut q = QueueState::new(QueueSettings {
        ttl: Some(ttl),
        ..settings()
    });
    // A consumer that holds one message and has no room for more.
    let a = consumer(&mut q, 1, 1, false);
    q.enqueue([msg("y", t0)], t0);
    q.dispatch(t0, push);
    assert_eq!(a.take().len(), 1);
    // X waits (copied after its second), and expires; two newer ones arrive as it does.
    q.enqueue(sliced(&buf, 1, t0), t0);
    q.dispatch(t0 + COMPACT_AFTER, push);
    let t1 = t0 + ttl;
    q.enqueue(sliced(&buf, 2, t1), t1);
    q.timers(t1);
    let dead = q.take_dead();
    assert_eq!(dead.len(), 1);
    // The dead-letter queue refuses it: kept, at the back, behind the new ones.
    for (h, _) in dead {
        q.keep(h);
    }
    // A second after the new ones came, every waiting message owns its payload.
    q.dispatch(t1 + COMPACT_AFTER, push);
    let mut waiting = 0;
    q.for_each_held(|p, h| {
        if p == Place::Pending {
            waiting += 1;
            assert!(
                !in_buffer(&buf, &h.msg),
                "a waiting message still in its read buffer"
            );
        }
    });
    assert_eq!(waiting, 3);
}

#[test]
fn a_durable_queue_journals_each_change_and_a_memory_one_nothing() {
    use crate::store::Record;
    let t0 = Instant::now();
    let mut plain = QueueState::<Rec>::new(settings());
    plain.enqueue([msg("a", t0)], t0);
    assert!(plain.take_journal().is_empty());

    let mut q = QueueState::new(settings());
    q.journal_as(7, MessageIds::starting_at(100));
    let a = consumer(&mut q, 1, 2, false);
    q.enqueue([msg("a", t0), msg("b", t0), msg("c", t0)], t0);
    q.dispatch(t0, push);
    let got = a.take();
    assert_eq!(q.ack(1, got[0].did, true), Acked::Done);
    assert_eq!(q.ack(1, got[1].did, false), Acked::Done); // a NACK writes nothing
    assert_eq!(q.purge(), 2); // "b" (back) and "c" were waiting
    let kinds: Vec<String> = q
        .take_journal()
        .iter()
        .map(|r| match r {
            Record::Enqueue { queue, id, .. } => format!("enqueue {queue}/{id}"),
            Record::Deliver { id, count, .. } => format!("deliver {id} {count}"),
            Record::Ack { id, .. } => format!("ack {id}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "enqueue 7/100",
            "enqueue 7/101",
            "enqueue 7/102",
            "deliver 100 1",
            "deliver 101 1",
            "ack 100",
            "ack 101",
            "ack 102",
        ]
    );
    assert!(q.take_journal().is_empty(), "taken once");
    q.delete();
    assert!(matches!(
        q.take_journal()[..],
        [Record::Delete { queue: 7 }]
    ));
}

#[test]
fn messages_read_back_from_the_log_wait_with_their_counts_and_ids_continue() {
    use crate::store::{Record, Stored};
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    q.journal_as(3, MessageIds::starting_at(1));
    let stored = |id, count| Stored {
        id,
        count,
        headers: Headers::default(),
        payload: Bytes::from_static(b"p"),
    };
    q.restore(vec![stored(4, 2), stored(9, 0)], t0);
    assert!(q.take_journal().is_empty(), "already in the log");
    let a = consumer(&mut q, 1, 5, false);
    q.dispatch(t0, push);
    let got = a.take();
    // The one delivered twice before the restart comes out as its third delivery.
    assert_eq!(got.iter().map(|d| d.count).collect::<Vec<_>>(), [3, 1]);
    q.enqueue([msg("new", t0)], t0);
    let ids: Vec<u64> = q
        .take_journal()
        .iter()
        .filter_map(|r| match r {
            Record::Enqueue { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [10]);
}

#[test]
fn a_nack_may_hold_a_message_back_for_a_while_or_send_it_to_the_dead_letters() {
    use agora_protocol::Nack;
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    let a = consumer(&mut q, 1, 10, false);
    q.enqueue(["later", "never", "now"].map(|t| msg(t, t0)), t0);
    q.dispatch(t0, push);
    let got = a.take();
    let second = Duration::from_secs(1);
    assert_eq!(q.nack(1, got[0].did, Nack::Delay(second), t0), Acked::Done);
    assert_eq!(q.nack(1, got[1].did, Nack::DeadLetter, t0), Acked::Done);
    assert_eq!(q.nack(1, got[2].did, Nack::Requeue, t0), Acked::Done);
    assert_eq!(q.nack(1, got[2].did, Nack::Requeue, t0), Acked::Unknown);
    // The dead-lettered one waits to be moved, with its reason.
    let dead = q.take_dead();
    assert_eq!(dead.len(), 1);
    assert_eq!((text_of(&dead[0].0), dead[0].1), ("never", REJECTED));
    // Held back: counted in the depth, given to nobody before it is due.
    assert_eq!(q.delay_due(), Some(t0 + second));
    q.dispatch(t0, push);
    assert_eq!(a.take().iter().map(text).collect::<Vec<_>>(), ["now"]);
    assert_eq!(q.depth(), 1);
    q.release_delayed(t0 + second / 2);
    q.dispatch(t0, push);
    assert!(a.take().is_empty());
    q.release_delayed(t0 + second);
    assert_eq!(q.delay_due(), None);
    q.dispatch(t0 + second, push);
    let back = a.take();
    assert_eq!(back.iter().map(text).collect::<Vec<_>>(), ["later"]);
    assert_eq!(back[0].count, 2);
    // A purge takes the held-back ones too.
    assert_eq!(q.nack(1, back[0].did, Nack::Delay(second), t0), Acked::Done);
    assert_eq!(q.depth(), 1);
    assert_eq!(q.purge(), 1);
    assert_eq!((q.depth(), q.delay_due()), (0, None));
}

fn text_of(h: &Held) -> &str {
    std::str::from_utf8(&h.msg.payload).unwrap()
}

#[test]
fn a_nack_unseen_is_not_a_delivery_attempt() {
    use agora_protocol::Nack;
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    let a = consumer(&mut q, 1, 10, false);
    q.enqueue(["m"].map(|t| msg(t, t0)), t0);
    q.dispatch(t0, push);
    let d = a.take().pop().unwrap();
    assert_eq!(d.count, 1);
    assert_eq!(q.nack(1, d.did, Nack::Unseen, t0), Acked::Done);
    q.dispatch(t0, push);
    let again = a.take().pop().unwrap();
    assert_eq!(again.count, 1, "the same count: the first was no attempt");
    assert_eq!(q.nack(1, again.did, Nack::Requeue, t0), Acked::Done);
    q.dispatch(t0, push);
    assert_eq!(a.take().pop().unwrap().count, 2);
}

#[test]
fn a_held_consumer_is_given_nothing_new_and_keeps_what_it_holds() {
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    let a = consumer(&mut q, 1, 2, false);
    let b = consumer(&mut q, 2, 2, false);
    q.enqueue(["m1", "m2"].map(|t| msg(t, t0)), t0);
    q.dispatch(t0, push);
    let (ga, gb) = (a.take(), b.take());
    assert_eq!((ga.len(), gb.len()), (1, 1));
    q.hold(1, true);
    assert!(q.is_held(1));
    q.enqueue(["m3", "m4", "m5"].map(|t| msg(t, t0)), t0);
    q.dispatch(t0, push);
    assert!(a.take().is_empty(), "held: nothing new");
    assert_eq!(b.take().iter().map(text).collect::<Vec<_>>(), ["m3"]);
    // What it holds is still its own to settle.
    assert_eq!(q.ack(1, ga[0].did, true), Acked::Done);
    q.dispatch(t0, push);
    assert!(a.take().is_empty(), "still held after its ack");
    q.hold(1, false);
    q.dispatch(t0, push);
    assert_eq!(a.take().iter().map(text).collect::<Vec<_>>(), ["m4", "m5"]);
}
