//! `cargo xtask crash [--iterations N] [--seed S]`: the release `agora` binary on a data
//! directory, killed with SIGKILL at random moments while two publishers with confirms
//! and an acknowledging consumer run; after each restart, every message the broker
//! confirmed, and whose acknowledgement it had not answered, must come back, once.
//!
//! Each round: start the broker on the same directory (timing how long it takes to read
//! the log back and listen); read both queues whole (depths from `STATS`, then that
//! many deliveries) and check them against the model: no message confirmed and never
//! acknowledged missing, none twice, none never published; run the load for a random
//! 20–400 ms; kill the broker by its PID. One publisher's queue (`crash`) is consumed
//! and acknowledged as it runs; the other's (`crash.keep`) is only read by the checks
//! and given back, so it carries thousands of owed messages across restarts, until it
//! holds more than `KEEP` (then a check acknowledges them). A message whose `ACK` was
//! sent is no longer owed (the broker may have stored the acknowledgement, whether or
//! not its `OK` arrived); one whose `OK` came back may come back all the same (an
//! acknowledgement is stored with the next group but not waited for: at-least-once),
//! and is counted, as are unconfirmed publishes that were stored anyway. Exits 1 on the
//! first violation, with the round and the ids.

use std::collections::{BTreeSet, HashMap};
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_protocol::ServerFrame;

#[path = "common/conn.rs"]
mod conn;
#[path = "common/process.rs"]
mod process;
use conn::Conn;
use process::kill;

/// Payload bytes of each message: its id in 20 digits, then padding.
const PAYLOAD: usize = 128;
/// Confirmed publishes a publisher has outstanding at once.
const WINDOW: usize = 32;
/// How long any one wait may take before the round fails.
const DEADLINE: Duration = Duration::from_secs(20);
/// Messages `crash.keep` may hold before a restart's check acknowledges them.
const KEEP: u64 = 50_000;

/// What the broker has promised: confirmed and not known to be acknowledged.
#[derive(Default)]
struct Model {
    /// Confirmed (PUBACK seen), and no acknowledgement sent for it.
    owed: BTreeSet<u64>,
    /// Acknowledged (its `ACK` sent) before its publisher read its `PUBACK`: the
    /// consumer can be faster than the confirm's way back.
    acked_first: BTreeSet<u64>,
    /// Every id handed to a publisher so far.
    published: u64,
    /// Confirmed in all.
    confirmed: u64,
    /// Acknowledged (OK seen) in all.
    acked: u64,
}

fn id_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(..20)?).ok()?.parse().ok()
}

fn payload(id: u64) -> Vec<u8> {
    let mut p = format!("{id:020}").into_bytes();
    p.resize(PAYLOAD, b'.');
    p
}

/// Publishes with confirms, `WINDOW` at a time, until the connection dies.
fn publisher(addr: SocketAddr, queue: &str, ids: Arc<AtomicU64>, model: Arc<Mutex<Model>>) {
    let Ok(mut c) = Conn::connect(addr, DEADLINE) else {
        return;
    };
    if c.send(b"SETACK #1 on\r\n").is_err() || c.ok(1).is_err() {
        return;
    }
    loop {
        let mut batch = Vec::new();
        let mut sent = HashMap::new();
        for _ in 0..WINDOW {
            let id = ids.fetch_add(1, SeqCst);
            let rid = id + 10;
            sent.insert(rid, id);
            batch.extend_from_slice(format!("PUB #{rid} {queue} {PAYLOAD}\r\n").as_bytes());
            batch.extend_from_slice(&payload(id));
            batch.extend_from_slice(b"\r\n");
        }
        if c.send(&batch).is_err() {
            return;
        }
        for _ in 0..WINDOW {
            match c.next() {
                Ok(ServerFrame::PubAck { rid: Some(rid), .. }) => {
                    let id = sent[&rid];
                    let mut m = model.lock().unwrap();
                    if !m.acked_first.remove(&id) {
                        m.owed.insert(id);
                    }
                    m.confirmed += 1;
                }
                // The broker was killed: what was not confirmed is not owed.
                _ => return,
            }
        }
    }
}

/// Consumes with manual acks, each with a request id; an acknowledged message is
/// no longer owed once its `OK` is read.
fn consumer(addr: SocketAddr, model: Arc<Mutex<Model>>, stop: Arc<AtomicBool>) {
    let Ok(mut c) = Conn::connect(addr, DEADLINE) else {
        return;
    };
    if c.send(b"SUB #1 queue:crash 1 prefetch=64\r\n").is_err() || c.ok(1).is_err() {
        return;
    }
    let mut acking = HashMap::new();
    let mut rid = 100u64;
    while !stop.load(SeqCst) {
        match c.next() {
            Ok(ServerFrame::Msg(m)) => {
                let Some(id) = id_of(&m.payload) else { return };
                rid += 1;
                acking.insert(rid, id);
                // No longer owed once the ACK is sent: the broker may act on it (and
                // store it) even if this client never reads the OK.
                {
                    let mut m = model.lock().unwrap();
                    if !m.owed.remove(&id) {
                        m.acked_first.insert(id);
                    }
                }
                if c.send(format!("ACK #{rid} {}\r\n", m.did).as_bytes())
                    .is_err()
                {
                    return;
                }
            }
            Ok(ServerFrame::Ok { rid: Some(r) }) => {
                if acking.remove(&r).is_some() {
                    model.lock().unwrap().acked += 1;
                }
            }
            other => {
                if std::env::var_os("CRASH_DEBUG").is_some() {
                    eprintln!("consumer stops on {other:?}");
                }
                return;
            }
        }
    }
}

/// Starts the broker; returns it, its address, and how long it took to listen.
fn start(bin: &PathBuf, dir: &PathBuf) -> Result<(Child, SocketAddr, Duration), String> {
    let t = Instant::now();
    // A 64 KiB head: a backlog past it waits in the log and is read back from it.
    let mut child = Command::new(bin)
        .args(["--port", "0", "--max-deliveries", "0"])
        .args(["--durable-queue-memory", "65536", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", bin.display()))?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    match agora_protocol::startup::read_listener(&mut out, "tcp") {
        Ok(addr) => {
            // The broker logs to its standard output: read it all, so it never blocks
            // on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            Ok((child, addr, t.elapsed()))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("the broker did not start: {e}"))
        }
    }
}

/// Reads both queues whole after a restart and checks them against the model; then
/// acknowledges everything in `crash`, and in `crash.keep` once it holds more than
/// `KEEP` or at the `last` check (else its messages go back, each delivered once more,
/// and stay owed). Returns
/// the messages read, and how many of them were not owed (acknowledged before the kill,
/// or stored without their confirm arriving).
fn verify(
    addr: SocketAddr,
    model: &mut Model,
    round: u32,
    last: bool,
) -> Result<(u64, u64), String> {
    let io = |e: std::io::Error| format!("round {round}: {e}");
    let mut admin = Conn::connect(addr, DEADLINE).map_err(io)?;
    admin.send(b"STATS #1 prefix=crash\r\n").map_err(io)?;
    let json = match admin.next().map_err(io)? {
        ServerFrame::StatsResp { json, .. } => String::from_utf8_lossy(&json).into_owned(),
        f => return Err(format!("round {round}: expected STATSRESP, got {f:?}")),
    };
    let mut seen = BTreeSet::new();
    let mut acked = BTreeSet::new();
    for (name, always) in [("crash", true), ("crash.keep", false)] {
        let depth = depth_of(&json, name);
        let ack = always || last || depth > KEEP;
        let mut c = Conn::connect(addr, DEADLINE).map_err(io)?;
        c.send(format!("SUB #2 queue:{name} 1 prefetch=65536\r\n").as_bytes())
            .map_err(io)?;
        c.ok(2).map_err(io)?;
        let mut acks = Vec::new();
        for _ in 0..depth {
            let m = match c.next().map_err(io)? {
                ServerFrame::Msg(m) => m,
                f => return Err(format!("round {round}: expected MSG, got {f:?}")),
            };
            let id = id_of(&m.payload).ok_or(format!("round {round}: a foreign payload"))?;
            if id >= model.published {
                return Err(format!("round {round}: message {id} was never published"));
            }
            if !seen.insert(id) {
                return Err(format!("round {round}: message {id} delivered twice"));
            }
            if ack {
                acked.insert(id);
                acks.extend_from_slice(format!("ACK {}\r\n", m.did).as_bytes());
                if acked.len() % 1024 == 0 {
                    // Room for more deliveries than one prefetch holds.
                    c.send(&std::mem::take(&mut acks)).map_err(io)?;
                }
            }
        }
        // Acknowledged, or (closing the connection) given back.
        acks.extend_from_slice(b"PINGREQ #3\r\n");
        c.send(&acks).map_err(io)?;
        loop {
            match c.next().map_err(io)? {
                ServerFrame::PingResp { .. } => break,
                ServerFrame::Err(e) => return Err(format!("round {round}: {e:?}")),
                _ => {}
            }
        }
    }
    let lost: Vec<u64> = model.owed.difference(&seen).copied().collect();
    if std::env::var_os("CRASH_DEBUG").is_some() {
        eprintln!(
            "round {round}: read {}, owed {}, published {}, confirmed {}, acked {}",
            seen.len(),
            model.owed.len(),
            model.published,
            model.confirmed,
            model.acked
        );
    }
    if !lost.is_empty() {
        return Err(format!(
            "round {round}: {} confirmed messages lost, first {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    let not_owed = seen.iter().filter(|id| !model.owed.contains(id)).count() as u64;
    // What was acknowledged may come back next round (allowed); what was given back is
    // owed still.
    model.acked += acked.len() as u64;
    for id in &acked {
        model.owed.remove(id);
    }
    model.acked_first.clear();
    Ok((seen.len() as u64, not_owed))
}

/// Queue `name`'s depth in a `STATS` document (0 when it is not there).
fn depth_of(json: &str, name: &str) -> u64 {
    let Some(at) = json.find(&format!("\"name\":\"{name}\"")) else {
        return 0;
    };
    let rest = &json[at..];
    let Some(d) = rest.find("\"depth\":") else {
        return 0;
    };
    rest[d + 8..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let usage = "crash [--iterations N] [--seed S] [--bin AGORA] [--dir DATA_DIR]";
    let Some(process::Args {
        count: kills,
        seed,
        bin,
        dir,
    }) = process::args("--iterations", 200, "crash/data", usage)
    else {
        return ExitCode::from(2);
    };
    let _ = std::fs::remove_dir_all(&dir);
    match run(kills, seed, &bin, &dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash: {e} (data directory kept: {})", dir.display());
            ExitCode::from(1)
        }
    }
}

fn run(kills: u32, seed: u64, bin: &PathBuf, dir: &PathBuf) -> Result<(), String> {
    let mut rng = agora_server::rng::Rng::new(seed);
    let model = Arc::new(Mutex::new(Model::default()));
    let ids = Arc::new(AtomicU64::new(0));
    let mut starts = Vec::new();
    let (mut read_back, mut back_after_ack) = (0, 0);
    let t0 = Instant::now();
    for round in 0..=kills {
        let (mut child, addr, took) = start(bin, dir)?;
        starts.push(took);
        let checked = {
            let mut m = model.lock().unwrap();
            m.published = ids.load(SeqCst);
            verify(addr, &mut m, round, round == kills)
        };
        let (n, back) = match checked {
            Ok(r) => r,
            Err(e) => {
                kill(&mut child);
                return Err(e);
            }
        };
        read_back += n;
        back_after_ack += back;
        if round == kills {
            // The last start only checks; then a graceful stop.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            break;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for queue in ["queue:crash", "queue:crash.keep"] {
            let (ids, model) = (ids.clone(), model.clone());
            threads.push(std::thread::spawn(move || {
                publisher(addr, queue, ids, model)
            }));
        }
        {
            let (model, stop) = (model.clone(), stop.clone());
            threads.push(std::thread::spawn(move || consumer(addr, model, stop)));
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(380)));
        kill(&mut child);
        stop.store(true, SeqCst);
        for t in threads {
            let _ = t.join();
        }
    }
    let m = model.lock().unwrap();
    starts.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{kills} kills in {:.1} s: {} published, {} confirmed, {} acknowledged; 0 confirmed messages lost, 0 delivered twice; {} read back after restarts ({} of them not owed: acknowledged before the kill, or stored without their confirm arriving); start to listening: median {:.1} ms, max {:.1} ms",
        t0.elapsed().as_secs_f64(),
        m.published,
        m.confirmed,
        m.acked,
        read_back,
        back_after_ack,
        ms(starts[starts.len() / 2]),
        ms(*starts.last().expect("one start at least")),
    );
    Ok(())
}
