//! Durable queues over real sockets and a real data directory: what was confirmed
//! comes back after a restart and after `kill -9`; what was acknowledged does not; the
//! directory is one broker's at a time.

mod common;

use std::io::BufReader;
use std::process::{Command, Stdio};

use agora_protocol::{ErrorCode, ServerFrame};
use agora_server::{Config, QueueSettings, Server};
use common::*;

/// A broker configuration keeping durable queues in `dir`.
fn durable(dir: &std::path::Path) -> Config {
    Config {
        data_dir: Some(dir.to_owned()),
        ..Config::ephemeral()
    }
}

/// Publishes `bodies` to `dest` with confirms on, and waits for every `PUBACK`.
fn publish_confirmed(c: &mut Raw, dest: &str, bodies: &[String]) {
    c.send(b"SETACK #1 on\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    let mut batch = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let rid = 100 + i;
        batch.extend_from_slice(format!("PUB #{rid} {dest} {}\r\n{b}\r\n", b.len()).as_bytes());
    }
    c.send(&batch);
    for i in 0..bodies.len() {
        let rid = (100 + i) as u64;
        match c.next() {
            ServerFrame::PubAck { rid: r, filtered } => {
                assert_eq!((r, filtered), (Some(rid), false), "PUBACKs in order");
            }
            f => panic!("expected PUBACK #{rid}, got {f:?}"),
        }
    }
}

/// Subscribes with manual acks and reads `n` deliveries: (body, delivery).
fn take(c: &mut Raw, dest: &str, n: usize) -> Vec<(String, agora_protocol::Delivery)> {
    c.send(format!("SUB #2 {dest} 1 prefetch=1000\r\n").as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) });
    (0..n)
        .map(|_| match c.next() {
            ServerFrame::Msg(m) => (String::from_utf8_lossy(&m.payload).into_owned(), m),
            f => panic!("expected MSG, got {f:?}"),
        })
        .collect()
}

fn bodies(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

/// The core promise: confirmed messages come back after a restart, in order; acked ones
/// do not; one that was out at a consumer comes back counted as delivered once.
#[test]
fn confirmed_messages_come_back_after_a_restart_and_acked_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let all = bodies(50);
    {
        let s = start_with(durable(dir.path()));
        let mut p = s.connect();
        publish_confirmed(&mut p, "queue:jobs", &all);
        let mut c = s.connect();
        let got = take(&mut c, "queue:jobs", 50);
        // The first ten are acknowledged; the eleventh is out, unacknowledged, when
        // the broker stops; the rest are held by the consumer too (prefetch).
        for (i, (_, m)) in got[..10].iter().enumerate() {
            c.send(format!("ACK #{} {}\r\n", 100 + i, m.did).as_bytes());
        }
        for i in 0..10 {
            assert_eq!(c.next(), ServerFrame::Ok { rid: Some(100 + i) });
        }
        // Each OK came once its queue had taken the ACK.
        let st = p.stats();
        assert_eq!(dest_stats(&st, "queue", "jobs").unwrap()["unacked"], 40);
    } // graceful stop
    let s = start_with(durable(dir.path()));
    let mut p = s.connect();
    let st = p.stats();
    assert_eq!(
        dest_stats(&st, "queue", "jobs").expect("made at start")["depth"],
        40,
        "{st}"
    );
    // STATS shows the log: what the start read back, and the segment on disk.
    let storage = &st["storage"];
    assert_eq!(storage["recovery"]["messages"], 40, "{st}");
    assert_eq!(storage["fsync"], "always");
    assert_eq!(storage["segments"], 1);
    assert!(storage["disk_bytes"].as_u64().unwrap() > 50 * 2, "{st}");
    assert!(storage["failed"].is_null());
    let mut c = s.connect();
    let got = take(&mut c, "queue:jobs", 40);
    let names: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    let want: Vec<&str> = all[10..].iter().map(String::as_str).collect();
    assert_eq!(names, want, "the unacknowledged ones, in publish order");
    assert!(
        got.iter().all(|(_, m)| m.count == 2),
        "each was out once before the restart"
    );
    assert!(c.sync(4).is_empty(), "nothing more");
}

/// `kill -9` of the real binary: every message confirmed before the kill is there
/// after a restart on the same directory (the lock the dead process held does not
/// stop it).
#[test]
fn confirmed_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .env_remove("AGORA_MEMORY_ONLY")
            .args(["--port", "0", "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start agora");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let tcp = agora_protocol::startup::read_listener(&mut out, "tcp").expect("start-up line");
        (Agora::from(child), tcp)
    };
    let all = bodies(200);
    let (mut agora, addr) = run();
    let mut p = Raw::connect(addr);
    publish_confirmed(&mut p, "queue:orders", &all[..100]);
    publish_confirmed(&mut p, "queue:orders", &all[100..]);
    let killed = Command::new("kill")
        .args(["-KILL", &agora.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_exit(&mut agora);
    let (_agora, addr) = run();
    let mut c = Raw::connect(addr);
    let got = take(&mut c, "queue:orders", 200);
    let names: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    let want: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(names, want);
}

/// A second broker on a directory in use is refused, saying so; the first keeps it.
#[test]
fn a_second_broker_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = start_with(durable(dir.path()));
    let second = smol::block_on(Server::bind(durable(dir.path())));
    let e = second.err().expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    assert!(
        e.to_string().contains(&dir.path().display().to_string()),
        "names the directory: {e}"
    );
    // The binary exits non-zero with the reason on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env_remove("AGORA_MEMORY_ONLY")
        .args(["--port", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
}

/// A directory that cannot be made is refused at start.
#[test]
fn an_unusable_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let e = smol::block_on(Server::bind(durable(&file.join("data"))))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("not-a-dir"), "{e}");
}

/// Deleted queues stay deleted; dead letters stay in the dead-letter queue; a queue
/// configured `durable = false` keeps nothing.
#[test]
fn deletes_dead_letters_and_memory_only_queues_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = durable(dir.path());
        c.queues.insert(
            "scratch".to_owned(),
            QueueSettings {
                durable: false,
                ..c.queue_settings("scratch")
            },
        );
        c.queues.insert(
            "poison".to_owned(),
            QueueSettings {
                max_deliveries: 1,
                ..c.queue_settings("poison")
            },
        );
        c
    };
    {
        let s = start_with(config());
        let mut p = s.connect();
        publish_confirmed(&mut p, "queue:gone", &bodies(3));
        publish_confirmed(&mut p, "queue:scratch", &bodies(3));
        publish_confirmed(&mut p, "queue:poison", &bodies(1));
        p.send(b"DELETE #5 queue:gone\r\n");
        assert_eq!(p.next(), ServerFrame::Ok { rid: Some(5) });
        // The poison message is delivered once, given back, and dead-lettered.
        let mut c = s.connect();
        let got = take(&mut c, "queue:poison", 1);
        c.send(format!("NACK #6 {}\r\n", got[0].1.did).as_bytes());
        assert_eq!(c.next(), ServerFrame::Ok { rid: Some(6) });
        wait_until("the message is dead-lettered", || {
            let st = p.stats();
            dest_stats(&st, "queue", "poison.dlq").is_some_and(|d| d["depth"] == 1)
        });
    }
    let s = start_with(config());
    let mut p = s.connect();
    let st = p.stats();
    assert!(dest_stats(&st, "queue", "gone").is_none(), "{st}");
    assert!(dest_stats(&st, "queue", "scratch").is_none(), "{st}");
    assert!(dest_stats(&st, "queue", "poison").is_none(), "{st}");
    assert_eq!(dest_stats(&st, "queue", "poison.dlq").unwrap()["depth"], 1);
    let mut c = s.connect();
    let got = take(&mut c, "queue:poison.dlq", 1);
    assert_eq!(got[0].0, "m0");
    assert_eq!(
        got[0].1.headers.get("agora-dead-letter-from"),
        Some("queue:poison")
    );
    // A queue made again after its deletion starts empty, and is durable.
    publish_confirmed(&mut p, "queue:gone", &bodies(1));
    drop(s);
    let s = start_with(config());
    let st = s.connect().stats();
    assert_eq!(dest_stats(&st, "queue", "gone").unwrap()["depth"], 1);
}

/// Without confirms, publishes to a durable queue are stored too (with the next
/// batch), and a graceful stop stores everything.
#[test]
fn unconfirmed_publishes_are_stored_by_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = start_with(durable(dir.path()));
        let mut p = s.connect();
        for b in bodies(500) {
            publish(&mut p, "queue:fire", b.as_bytes());
        }
        assert!(p.sync(9).is_empty());
    }
    let s = start_with(durable(dir.path()));
    let st = s.connect().stats();
    assert_eq!(dest_stats(&st, "queue", "fire").unwrap()["depth"], 500);
}

/// Memory-only (no data directory): a restart keeps nothing.
#[test]
fn without_a_data_directory_nothing_is_kept() {
    let s = start();
    let mut p = s.connect();
    publish_confirmed(&mut p, "queue:mem", &bodies(5));
    drop(s);
    let s = start();
    let st = s.connect().stats();
    assert!(dest_stats(&st, "queue", "mem").is_none());
    assert!(st["storage"].is_null(), "memory-only: {st}");
}

/// A small tmpfs mounted for one test, unmounted (lazily) when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a {bytes}-byte tmpfs to fill it (it needs root, as CI has): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Publishes 4 KiB confirmed messages to `dest` until one is refused; returns how many
/// were confirmed and the refusal.
fn fill(p: &mut Raw, dest: &str, most: u64) -> (u64, agora_protocol::ErrorReply) {
    let body = "x".repeat(4096);
    for rid in 10..10 + most {
        p.send(format!("PUB #{rid} {dest} {}\r\n{body}\r\n", body.len()).as_bytes());
        match p.next() {
            ServerFrame::PubAck { rid: Some(r), .. } if r == rid => {}
            ServerFrame::Err(e) => {
                assert_eq!(e.rid, Some(rid));
                return (rid - 10, e);
            }
            f => panic!("unexpected {f:?}"),
        }
    }
    panic!("{most} publishes and no refusal");
}

/// A broker on a data directory inside a small tmpfs, with a memory-only queue `mem`,
/// and `--max-disk` 8 MiB (so segments of 1 MiB, and 2 MiB kept free).
fn on_small_disk(data: &std::path::Path) -> Config {
    let mut c = durable(data);
    c.max_disk = Some(8 << 20);
    c.queues.insert(
        "mem".to_owned(),
        QueueSettings {
            durable: false,
            ..c.queue_settings("mem")
        },
    );
    c
}

/// A disk nearly full: publishes to durable queues are refused with `storage_full`
/// while the file system has less free than the log keeps (two segments), before any
/// write can fail; nothing confirmed is lost.
#[test]
fn a_nearly_full_disk_refuses_durable_publishes_with_storage_full() {
    let disk = SmallDisk::mount(3 << 20);
    let data = disk.dir.path().join("data");
    let s = start_with(on_small_disk(&data));
    let mut p = s.connect();
    p.send(b"SETACK #1 on\r\n");
    assert_eq!(p.next(), ServerFrame::Ok { rid: Some(1) });
    let (confirmed, e) = fill(&mut p, "queue:jobs", 1000);
    assert_eq!(e.code, ErrorCode::StorageFull, "{e:?}");
    assert!(e.message.contains("bytes free"), "{}", e.message);
    assert!(confirmed > 10, "{confirmed}");
    let st = p.stats();
    assert!(st["storage"]["full"].is_string(), "{st}");
    assert!(st["storage"]["failed"].is_null(), "not a failure: {st}");
    // A memory-only queue is not refused.
    p.send(b"PUB #2 queue:mem 2\r\nhi\r\n");
    assert!(matches!(p.next(), ServerFrame::PubAck { rid: Some(2), .. }));
    drop(p);
    drop(s);
    let s = start_with(on_small_disk(&data));
    let st = s.connect().stats();
    assert_eq!(
        dest_stats(&st, "queue", "jobs").unwrap()["depth"],
        confirmed
    );
}

/// `--max-disk`: past it publishes to durable queues are refused with `storage_full`;
/// consumers go on, their acknowledgements give the space back, and publishes are
/// accepted again. Every confirmed message is delivered once.
#[test]
fn max_disk_refuses_until_acknowledgements_give_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = durable(dir.path());
    config.max_disk = Some(512 * 1024);
    let s = start_with(config);
    let mut p = s.connect();
    p.send(b"SETACK #1 on\r\n");
    assert_eq!(p.next(), ServerFrame::Ok { rid: Some(1) });
    let (confirmed, e) = fill(&mut p, "queue:jobs", 1000);
    assert_eq!(e.code, ErrorCode::StorageFull, "{e:?}");
    assert!(e.message.contains("--max-disk"), "{}", e.message);
    let mut c = s.connect();
    let got = take(&mut c, "queue:jobs", confirmed as usize);
    let mut acks = Vec::new();
    for (_, m) in &got {
        acks.extend_from_slice(format!("ACK {}\r\n", m.did).as_bytes());
    }
    c.send(&acks);
    assert!(c.sync(3).is_empty());
    // Space comes back as the acknowledged segments go; publishes are accepted again.
    wait_until("publishes to jobs are accepted again", || {
        p.send(b"PUB #5 queue:jobs 2\r\nok\r\n");
        match p.next() {
            ServerFrame::PubAck { rid: Some(5), .. } => true,
            ServerFrame::Err(e) if e.code == ErrorCode::StorageFull => false,
            f => panic!("unexpected {f:?}"),
        }
    });
    let st = p.stats();
    assert!(st["storage"]["full"].is_null(), "{st}");
    assert!(
        st["storage"]["disk_bytes"].as_u64().unwrap() < 512 * 1024,
        "{st}"
    );
}

/// A disk filled behind the broker's back: the write that meets `ENOSPC` is cut back
/// and kept, its confirm waits, publishes to durable queues are refused with
/// `storage_full`, consumers are still served; once there is room, what waited is
/// stored and confirmed, publishes are taken again, and a restart finds it all.
#[test]
fn a_disk_filled_behind_its_back_refuses_publishes_until_there_is_room_and_loses_nothing() {
    let disk = SmallDisk::mount(4 << 20);
    let data = disk.dir.path().join("data");
    let mut s = start_with(on_small_disk(&data));
    let mut p = s.connect();
    publish_confirmed(&mut p, "queue:jobs", &bodies(10));
    // Another program takes every byte left.
    let filler = disk.dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&chunk[..1]);
    }
    // This one was taken (the log was not full when it came): its write fails, and
    // its confirm waits for room.
    let body = "x".repeat(4096);
    p.send(format!("PUB #20 queue:jobs {}\r\n{body}\r\n", body.len()).as_bytes());
    let mut q = s.connect();
    wait_until("the log is full", || {
        !q.stats()["storage"]["full"].is_null()
    });
    let st = q.stats();
    let full = st["storage"]["full"].as_str().unwrap();
    assert!(full.contains("No space left"), "{full}");
    assert!(st["storage"]["failed"].is_null(), "not a failure: {st}");
    // Later publishes to durable queues are refused at once, saying why; a memory-only
    // queue takes them.
    q.send(b"SETACK #5 on\r\n");
    assert_eq!(q.next(), ServerFrame::Ok { rid: Some(5) });
    q.send(b"PUB #21 queue:other 2\r\nhi\r\n");
    let e = q.expect_err(ErrorCode::StorageFull);
    assert!(e.contains("No space left"), "{e}");
    q.send(b"PUB #22 queue:mem 2\r\nhi\r\n");
    assert!(matches!(
        q.next(),
        ServerFrame::PubAck { rid: Some(22), .. }
    ));
    // Consumers are still served, and their acknowledgements taken.
    let mut c = s.connect();
    let got = take(&mut c, "queue:jobs", 11);
    for (i, (_, m)) in got[..10].iter().enumerate() {
        c.send(format!("ACK #{} {}\r\n", 100 + i, m.did).as_bytes());
    }
    for i in 0..10 {
        assert_eq!(c.next(), ServerFrame::Ok { rid: Some(100 + i) });
    }
    // Room again: the waiting confirm comes, publishes are taken.
    std::fs::remove_file(&filler).unwrap();
    assert!(matches!(
        p.next(),
        ServerFrame::PubAck { rid: Some(20), .. }
    ));
    wait_until("the log takes publishes", || {
        q.stats()["storage"]["full"].is_null()
    });
    q.send(b"PUB #23 queue:other 2\r\nhi\r\n");
    assert!(matches!(
        q.next(),
        ServerFrame::PubAck { rid: Some(23), .. }
    ));
    drop((p, q, c));
    s.shutdown().expect("a clean stop");
    // Everything confirmed is there; what was acknowledged is not.
    let s = start_with(on_small_disk(&data));
    let st = s.connect().stats();
    assert_eq!(
        dest_stats(&st, "queue", "jobs").unwrap()["depth"],
        1,
        "{st}"
    );
    assert_eq!(
        dest_stats(&st, "queue", "other").unwrap()["depth"],
        1,
        "{st}"
    );
}

/// Chains set or cleared at run time are kept: after a restart a chain `CHAIN SET` gave
/// is there, and one the config file gives but `CHAIN CLEAR` removed stays removed.
#[test]
fn chains_set_at_run_time_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = durable(dir.path());
        c.chains.insert(
            agora_protocol::Destination::topic("configured").unwrap(),
            "sample 5".to_owned(),
        );
        c
    };
    let get = |c: &mut Raw, dest: &str| -> String {
        c.send(format!("CHAIN #7 GET {dest}\r\n").as_bytes());
        match c.next() {
            ServerFrame::ChainResp { rid, chain, .. } => {
                assert_eq!(rid, Some(7));
                String::from_utf8_lossy(&chain).into_owned()
            }
            f => panic!("expected CHAINRESP, got {f:?}"),
        }
    };
    {
        let s = start_with(config());
        let mut c = s.connect();
        assert_eq!(get(&mut c, "topic:configured"), "sample 5");
        c.send(b"CHAIN #1 SET queue:jobs 8\r\nsample 3\r\n");
        assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
        c.send(b"CHAIN #2 CLEAR topic:configured\r\n");
        assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) });
    }
    let s = start_with(config());
    let mut c = s.connect();
    assert_eq!(get(&mut c, "queue:jobs"), "sample 3");
    assert_eq!(get(&mut c, "topic:configured"), "", "cleared stays cleared");
}

/// A damaged log stops the start, naming `--repair`; with it, the damage and what
/// follows are set aside in `damaged/` (nothing deleted) and the broker starts with
/// what comes before.
#[test]
fn a_damaged_log_stops_the_start_and_repair_sets_the_damage_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = start_with(durable(dir.path()));
        publish_confirmed(&mut s.connect(), "queue:jobs", &bodies(50));
    }
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let e = smol::block_on(Server::bind(durable(dir.path())))
        .err()
        .expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("--repair"), "{e}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing changed");
    let repaired = || Config {
        repair: true,
        ..durable(dir.path())
    };
    let depth = {
        let s = start_with(repaired());
        let st = s.connect().stats();
        dest_stats(&st, "queue", "jobs").unwrap()["depth"]
            .as_u64()
            .unwrap()
    };
    assert!(depth > 0 && depth < 50, "{depth}");
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("damaged"))
        .expect("a damaged/ folder")
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    // Repaired: a plain start works, with the same messages.
    let s = start_with(durable(dir.path()));
    let st = s.connect().stats();
    assert_eq!(dest_stats(&st, "queue", "jobs").unwrap()["depth"], depth);
}
