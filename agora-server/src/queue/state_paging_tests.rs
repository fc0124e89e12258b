//! Unit tests of a durable queue's paging (`state/paging.rs`), on the plain value, with
//! a map standing in for the log.

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;
use std::time::Instant;

use super::tests::{consumer, msg, push, settings, text, Rec};
use super::*;

/// The log's stand-in for paging tests: every `Enqueue` journaled, by id.
fn logged(q: &mut QueueState<Rec>, log: &mut std::collections::HashMap<u64, Bytes>) {
    for r in q.take_journal() {
        if let crate::store::Record::Enqueue { id, payload, .. } = r {
            log.insert(id, payload);
        }
    }
}

fn read(log: &std::collections::HashMap<u64, Bytes>, ids: &[u64]) -> Vec<crate::store::Stored> {
    ids.iter()
        .filter_map(|id| {
            Some(crate::store::Stored {
                id: *id,
                count: 0,
                headers: Headers::default(),
                payload: log.get(id)?.clone(),
            })
        })
        .collect()
}

/// Paging keeps the queue's order: the newest go to the log first, messages that
/// arrive while any is paged wait behind them, and what is read back joins the head.
#[test]
fn paged_messages_come_back_in_order_and_new_ones_wait_behind_them() {
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    q.journal_as(1, MessageIds::starting_at(1));
    let mut log = std::collections::HashMap::new();
    q.enqueue((0..10).map(|i| msg(&format!("m{i}"), t0)), t0);
    logged(&mut q, &mut log);
    // Each costs its 2 bytes and the budget's bookkeeping.
    let each = 2 + crate::budget::BOOKKEEPING;
    assert_eq!(q.head_cost(), 10 * each);
    assert_eq!(q.page_out(3 * each + 1), 7, "three stay");
    assert_eq!((q.head_cost(), q.paged()), (3 * each, (7, 14)));
    q.enqueue([msg("late", t0)], t0);
    logged(&mut q, &mut log);
    assert_eq!(q.paged(), (8, 18), "behind the paged ones, not in memory");
    assert_eq!(q.depth(), 11);
    let a = consumer(&mut q, 1, 100, true);
    q.dispatch(t0, push);
    let mut got: Vec<String> = a.take().iter().map(|d| text(d).to_owned()).collect();
    assert_eq!(got, ["m0", "m1", "m2"], "only the head is in memory");
    // Reads come back a few bytes at a time, at least one message each.
    for _ in 0..20 {
        let ids = q.to_read(5);
        if ids.is_empty() {
            break;
        }
        q.paged_in(&ids, read(&log, &ids));
        q.dispatch(t0, push);
        got.extend(a.take().iter().map(|d| text(d).to_owned()));
    }
    let want: Vec<String> = (0..10)
        .map(|i| format!("m{i}"))
        .chain(["late".to_owned()])
        .collect();
    assert_eq!(got, want);
    assert_eq!(q.paged(), (0, 0));
}

/// A purge drops the paged messages too, with an `Ack` each in the journal, and
/// counts them released; a read that comes back after it changes nothing.
#[test]
fn a_purge_drops_paged_messages_and_a_late_read_is_ignored() {
    use crate::store::Record;
    let t0 = Instant::now();
    let mut q = QueueState::new(settings());
    q.journal_as(1, MessageIds::starting_at(1));
    let mut log = std::collections::HashMap::new();
    q.enqueue((0..4).map(|i| msg(&format!("m{i}"), t0)), t0);
    logged(&mut q, &mut log);
    q.page_out(2 + crate::budget::BOOKKEEPING);
    let ids = q.to_read(10_000);
    assert_eq!(ids, [2, 3, 4], "the oldest paged first");
    assert_eq!(q.purge(), 4);
    let acks = q
        .take_journal()
        .iter()
        .filter(|r| matches!(r, Record::Ack { .. }))
        .count();
    assert_eq!(acks, 4);
    assert_eq!(q.take_released(), (4, 8));
    q.paged_in(&ids, read(&log, &ids));
    assert_eq!(
        (q.depth(), q.head_cost()),
        (0, 0),
        "the late read is dropped"
    );
    // Restored at start: all paged, ids continuing after the highest.
    let kept = |id| crate::store::Kept {
        id,
        count: 1,
        size: 2,
    };
    q.restore_paged(vec![kept(20), kept(21)], t0);
    assert_eq!(q.paged(), (2, 4));
    q.enqueue([msg("m9", t0)], t0);
    let last = q.take_journal().into_iter().find_map(|r| match r {
        Record::Enqueue { id, .. } => Some(id),
        _ => None,
    });
    assert_eq!(last, Some(22));
    assert_eq!(q.paged(), (3, 6), "behind the restored ones");
}
