//! The writer thread on the simulated disk: stored means synced, groups, failures.

use super::*;

/// Appends one enqueue per id through the writer, each with its own `done`.
fn queue_appends(
    ids: std::ops::Range<u64>,
    queue: u32,
) -> (Vec<Append>, Vec<async_channel::Receiver<Outcome>>) {
    ids.map(|id| {
        let (tx, rx) = async_channel::bounded(1);
        let a = Append {
            records: vec![enqueue(queue, id, b"m")],
            done: vec![tx],
        };
        (a, rx)
    })
    .unzip()
}

#[test]
fn the_writer_says_stored_only_once_the_records_are_synced_and_syncs_in_groups() {
    let disk = SimDisk::new();
    let (mut log, _) = open(&disk, 1 << 20).unwrap();
    let q = log.declare("jobs");
    log.sync().unwrap();
    let (w, thread) = spawn_writer(log, Fsync::Always, None).unwrap();
    // One at a time: each is on disk (what a crash must keep) when its sender hears.
    for id in 1..=5 {
        let (appends, dones) = queue_appends(id..id + 1, q);
        for a in appends {
            smol::block_on(w.append(a)).unwrap();
        }
        assert_eq!(dones[0].recv_blocking().unwrap(), Ok(()));
        let (_, rec) = open(&disk.synced_copy(), 1 << 20).unwrap();
        assert_eq!(rec.queues["jobs"].len(), id as usize, "after id {id}");
    }
    // A burst sent while a sync is under way is stored by the next one (group
    // commit): 200 appends, at most two syncs; every sender hears.
    let syncs = disk.syncs();
    disk.hold_syncs(true);
    let (appends, dones) = queue_appends(6..206, q);
    smol::block_on(async {
        for a in appends {
            w.append(a).await.unwrap();
        }
    });
    assert!(dones.iter().all(|d| d.is_empty()), "told before any sync");
    disk.hold_syncs(false);
    for d in &dones {
        assert_eq!(d.recv_blocking().unwrap(), Ok(()));
    }
    let used = disk.syncs() - syncs;
    assert!(used <= 2, "200 appends took {used} syncs");
    assert_eq!(
        w.stats.records.load(std::sync::atomic::Ordering::Relaxed),
        205
    );
    w.close();
    thread.join().unwrap();
    let (_, rec) = open(&disk.synced_copy(), 1 << 20).unwrap();
    let ids: Vec<u64> = rec.queues["jobs"].iter().map(|m| m.id).collect();
    assert_eq!(ids, (1..206).collect::<Vec<_>>());
}

#[test]
fn a_failed_sync_is_told_to_its_group_and_to_every_later_append() {
    let disk = SimDisk::new();
    let (mut log, _) = open(&disk, 1 << 20).unwrap();
    let q = log.declare("jobs");
    log.sync().unwrap();
    let (w, thread) = spawn_writer(log, Fsync::Always, None).unwrap();
    disk.fail_syncs(1);
    let (appends, dones) = queue_appends(1..2, q);
    for a in appends {
        smol::block_on(w.append(a)).unwrap();
    }
    let told = dones[0].recv_blocking().unwrap();
    assert!(
        told.as_ref()
            .is_err_and(|why| why.contains("simulated sync error")),
        "{told:?}"
    );
    assert!(w.failure().is_some());
    // Later appends are refused, and told so, even though the disk works again.
    let (appends, dones) = queue_appends(2..3, q);
    for a in appends {
        assert!(smol::block_on(w.append(a)).is_err());
    }
    assert!(dones[0].recv_blocking().unwrap().is_err());
    w.close();
    thread.join().unwrap();
}

/// Out of space, the writer does not fail: the log is full (publishes are refused),
/// the confirms wait, and once there is room what was appended is written and they
/// hear it is stored.
#[test]
fn out_of_space_the_writer_waits_for_room_and_loses_nothing() {
    let disk = SimDisk::new();
    let (mut log, _) = open(&disk, 1 << 20).unwrap();
    let q = log.declare("jobs");
    log.sync().unwrap();
    let (w, thread) = spawn_writer(log, Fsync::Always, None).unwrap();
    disk.set_space(Some(disk.used() + 10));
    let (appends, dones) = queue_appends(1..4, q);
    for a in appends {
        smol::block_on(w.append(a)).unwrap();
    }
    wait_for("the log to be full", || w.full().is_some());
    assert!(w.failure().is_none(), "not a failure");
    assert!(dones.iter().all(|d| d.is_empty()), "nobody told yet");
    // Reads are answered meanwhile.
    let got = smol::block_on(async { w.read(q, vec![1, 2, 3]).await.recv().await });
    assert_eq!(got.unwrap().unwrap().len(), 3);
    disk.set_space(None);
    for d in &dones {
        assert_eq!(
            d.recv_blocking().unwrap(),
            Ok(()),
            "stored once there is room"
        );
    }
    wait_for("the log to take publishes again", || w.full().is_none());
    w.close();
    thread.join().unwrap();
    let (_, rec) = open(&disk, 1 << 20).unwrap();
    assert_eq!(rec.queues["jobs"].len(), 3);
}

/// Polls `cond` (every millisecond, at most 10 s).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 10 s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn without_always_a_sender_hears_once_written_and_the_sync_follows() {
    for fsync in [
        Fsync::Never,
        Fsync::Every(std::time::Duration::from_millis(1)),
    ] {
        let disk = SimDisk::new();
        let (mut log, _) = open(&disk, 1 << 20).unwrap();
        let q = log.declare("jobs");
        log.sync().unwrap();
        let syncs = disk.syncs();
        let (w, thread) = spawn_writer(log, fsync, None).unwrap();
        let (appends, dones) = queue_appends(1..4, q);
        for a in appends {
            smol::block_on(w.append(a)).unwrap();
        }
        for d in &dones {
            assert_eq!(d.recv_blocking().unwrap(), Ok(()));
        }
        if fsync == Fsync::Never {
            assert_eq!(disk.syncs(), syncs, "{fsync:?} synced before its stop");
        }
        // A graceful stop syncs what was written, whatever the policy.
        w.close();
        thread.join().unwrap();
        let (_, rec) = open(&disk.synced_copy(), 1 << 20).unwrap();
        assert_eq!(rec.queues["jobs"].len(), 3, "{fsync:?}");
    }
}

#[test]
fn fsync_policies_read_and_print_as_the_flag_takes_them() {
    use std::time::Duration;
    for (text, policy) in [
        ("always", Fsync::Always),
        ("never", Fsync::Never),
        ("every=200ms", Fsync::Every(Duration::from_millis(200))),
        ("every=2s", Fsync::Every(Duration::from_secs(2))),
    ] {
        assert_eq!(text.parse::<Fsync>(), Ok(policy), "{text}");
        assert_eq!(policy.to_string(), text);
    }
    for bad in ["sometimes", "every=", "every=0s", "every=5"] {
        let err = bad.parse::<Fsync>().expect_err(bad);
        assert!(!err.is_empty(), "{bad}");
    }
    assert!("sometimes"
        .parse::<Fsync>()
        .unwrap_err()
        .contains("always, never or every=<duration>"));
}

/// With `never` (and between `every` syncs) the writer gives space back after its
/// writes: published and acknowledged messages do not pile up segments until a stop.
#[test]
fn without_syncs_space_still_comes_back() {
    let disk = SimDisk::new();
    let seg = 4096;
    let (mut log, _) = open(&disk, seg).unwrap();
    let q = log.declare("jobs");
    log.sync().unwrap();
    let (w, thread) = spawn_writer(log, Fsync::Never, None).unwrap();
    // About 50 segments' worth, each message acknowledged in its own append.
    for id in 1..2001 {
        let (tx, rx) = async_channel::bounded(1);
        let records = vec![enqueue(q, id, &[0; 60]), Record::Ack { queue: q, id }];
        smol::block_on(w.append(Append {
            records,
            done: vec![tx],
        }))
        .unwrap();
        assert_eq!(rx.recv_blocking().unwrap(), Ok(()));
    }
    let files = disk.used() as u64;
    assert!(
        files <= 4 * seg,
        "{files} bytes on disk after 2,000 acknowledged"
    );
    w.close();
    thread.join().unwrap();
}

/// One large group of appends does not make one large segment: segments are closed as
/// they fill, mid-group, so reclaiming space works segment by segment.
#[test]
fn a_large_group_is_spread_over_segments_of_their_size() {
    let disk = SimDisk::new();
    let seg = 4096;
    let (mut log, _) = open(&disk, seg).unwrap();
    let q = log.declare("jobs");
    log.sync().unwrap();
    let (w, thread) = spawn_writer(log, Fsync::Always, None).unwrap();
    // 200 enqueues of 200 B in one append: about ten segments' worth.
    let records = (1..=200).map(|id| enqueue(q, id, &[7; 200])).collect();
    let (tx, rx) = async_channel::bounded(1);
    smol::block_on(w.append(Append {
        records,
        done: vec![tx],
    }))
    .unwrap();
    assert_eq!(rx.recv_blocking().unwrap(), Ok(()));
    w.close();
    thread.join().unwrap();
    let (log, rec) = open(&disk, seg).unwrap();
    assert_eq!(rec.queues["jobs"].len(), 200);
    assert!(log.segments().len() >= 8, "{:?}", log.segments());
    for name in log.segments() {
        let len = disk.len_of(name);
        assert!(len <= seg as usize + 512, "{name}: {len} bytes");
    }
}
