//! What comes back besides messages: chains set at run time, and the repair that sets
//! damage aside.

use super::*;

/// Chains set or cleared at run time come back, the last word for each destination,
/// even once the segments that first said so are gone.
#[test]
fn chains_come_back_and_outlive_their_segments() {
    let disk = SimDisk::new();
    let seg = 1024;
    let (mut log, _) = open(&disk, seg).unwrap();
    let chain = |dest: &str, text: &str| Record::Chain {
        dest: dest.into(),
        text: text.into(),
    };
    log.append(&chain("topic:a", "sample 2"));
    log.append(&chain("queue:b", "sample 3"));
    log.append(&chain("queue:b", ""));
    let q = log.declare("jobs");
    log.sync().unwrap();
    // Enough published and acknowledged to fill and reclaim the first segments.
    for id in 1..200 {
        log.append(&enqueue(q, id, &[0; 40]));
        log.append(&Record::Ack { queue: q, id });
        log.sync().unwrap();
    }
    assert!(
        !log.segments()
            .contains(&"00000000000000000001.seg".to_owned()),
        "the first segment is gone: {:?}",
        log.segments()
    );
    let (_, rec) = open(&disk, seg).unwrap();
    let want: std::collections::BTreeMap<String, String> = [
        ("queue:b".to_owned(), String::new()),
        ("topic:a".to_owned(), "sample 2".to_owned()),
    ]
    .into();
    assert_eq!(rec.chains, want);
}

/// The repair asked for at start sets damage aside instead of refusing: from the first
/// bad record on (the rest of its segment and every later one), and foreign files; the
/// log opens with what comes before, nothing is deleted, and a plain opening works
/// afterwards.
#[test]
fn the_repair_sets_damage_aside_and_opens_with_what_comes_before() {
    let disk = SimDisk::new();
    let segs = twenty_in_small_segments(&disk);
    assert!(segs.len() >= 4, "{segs:?}");
    // Damage in the second segment's first record (whole records after it), and a
    // stray file.
    disk.flip(&segs[1], HEADER + 12);
    disk.put("notes.txt", b"an operator's file");
    let before: usize = segs.iter().map(|s| disk.len_of(s)).sum();
    assert!(open(&disk, 256).is_err(), "a plain opening refuses");
    let (_, rec, moved) = Log::open_repairing(
        Arc::new(disk.clone()),
        LogOptions {
            segment_bytes: 256,
            ..Default::default()
        },
    )
    .unwrap();
    // What the first segment holds comes back; the rest is set aside, not lost.
    let first_ids: Vec<u64> = rec.queues["jobs"].iter().map(|m| m.id).collect();
    assert!(
        !first_ids.is_empty() && first_ids.len() < 20,
        "{first_ids:?}"
    );
    assert!(first_ids.windows(2).all(|w| w[1] == w[0] + 1) && first_ids[0] == 1);
    let files: Vec<&str> = moved.iter().map(|m| m.file.as_str()).collect();
    assert!(files.contains(&"notes.txt"), "{moved:?}");
    for s in &segs[1..] {
        assert!(files.contains(&s.as_str()), "{s} set aside: {moved:?}");
    }
    assert!(moved.iter().all(|m| !m.why.is_empty()));
    let parts = disk.set_aside_parts();
    let kept: usize = segs.iter().map(|s| disk.len_of(s)).sum();
    let aside: usize = parts
        .iter()
        .filter(|(to, _)| to.contains(".seg"))
        .map(|(_, b)| b.len())
        .sum();
    assert_eq!(kept + aside, before, "every byte is kept or set aside");
    // The directory is whole again: a plain opening gives the same.
    let (_, again) = open(&disk, 256).unwrap();
    assert_eq!(again.queues["jobs"].len(), first_ids.len());
}

/// Message ids come back with every record the log holds, acknowledged or not, and a
/// segment holding one is kept for `keep_ids` after it (or after an opening), so that
/// a window of ids is never cut short by the reclaiming of acknowledged messages.
#[test]
fn message_ids_come_back_and_keep_their_segments_for_the_window() {
    let disk = SimDisk::new();
    let seg = 1024;
    let keep = std::time::Duration::from_secs(120);
    let opts = LogOptions {
        segment_bytes: seg,
        keep_ids: keep,
    };
    let (mut log, _) = Log::open(Arc::new(disk.clone()), opts).unwrap();
    let t0 = std::time::Instant::now();
    log.set_clock(t0);
    let q = log.declare("jobs");
    let mut with_id = Headers::new();
    with_id
        .insert(agora_protocol::msg_id::MSG_ID, "order-1")
        .unwrap();
    log.append(&Record::Enqueue {
        queue: q,
        id: 1,
        count: 0,
        headers: with_id,
        payload: Bytes::from_static(b"x"),
    });
    log.append(&Record::Ack { queue: q, id: 1 });
    log.sync().unwrap();
    let first = log.segments()[0].clone();
    // Enough published and acknowledged (without ids) to fill many segments.
    for id in 2..200 {
        log.append(&enqueue(q, id, &[0; 40]));
        log.append(&Record::Ack { queue: q, id });
        log.sync().unwrap();
    }
    assert_eq!(log.segments()[0], first, "kept for its id");
    assert!(log.segments().len() > 5);
    let (_, rec) = Log::open(Arc::new(disk.clone()), opts).unwrap();
    assert_eq!(rec.seen["jobs"], ["order-1"]);
    assert!(rec.queues["jobs"].is_empty(), "acknowledged");
    // Once the window has passed, it goes with the rest.
    log.set_clock(t0 + keep);
    log.sync().unwrap();
    assert!(!log.segments().contains(&first), "{:?}", log.segments());
    assert_eq!(log.segments().len(), 1);
    let (_, rec) = Log::open(Arc::new(disk.clone()), opts).unwrap();
    assert!(!rec.seen.contains_key("jobs"));
}
