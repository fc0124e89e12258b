//! `cargo xtask cluster-test [--faults N] [--seed S]`: three release `agora` processes
//! as one cluster on loopback, with the replicated queue `orders`; a publisher with
//! confirms and an acknowledging consumer on each node (all three consume: a node
//! that does not lead takes the queue's messages from the leader); and N faults, one
//! at a time:
//! the node that leads `orders` (two faults in three) or another node killed with
//! SIGKILL, then started again on its data directory a moment later.
//!
//! After the faults the publishers stop and the consumers read on until every
//! confirmed message was delivered. It reports what was published, confirmed,
//! delivered (and delivered more than once: a leader killed with deliveries out
//! makes its successor deliver them again), the time from killing a leader to another
//! node serving the queue (its failover), and the longest time no publish was
//! confirmed; it fails (exit 1) if a confirmed message was never delivered.
//!
//! Every third fault is a partition instead: the links between nodes go through a
//! proxy per pair (`common/proxy.rs`), and the node (the leader two times in three) is
//! cut off from both others, silently, for 1 to 4 s, while its clients stay connected
//! to it; then the links heal. A leader cut off must stop serving (its lease) while the
//! other two elect another; what it handed out is delivered again by the new leader.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_protocol::ServerFrame;

#[path = "common/conn.rs"]
mod conn;
#[path = "common/process.rs"]
mod process;
#[path = "common/proxy.rs"]
mod proxy;
use conn::Conn;
use process::kill;
use proxy::Proxy;

/// Payload bytes of each message: its id in 20 digits, then padding.
const PAYLOAD: usize = 128;
/// Confirmed publishes a publisher has outstanding at once.
const WINDOW: usize = 16;
/// How long a connection's read waits before its thread looks at the clock.
const READ: Duration = Duration::from_millis(300);
/// How long the end may take to deliver everything confirmed.
const DRAIN: Duration = Duration::from_secs(60);
const SECRET: &str = "the cluster test's secret, not a real one";

/// Lines of the brokers' logs that say a member compacted its log, and that one
/// restored a leader's snapshot (counted, for the report).
static COMPACTIONS: AtomicU64 = AtomicU64::new(0);
static RESTORES: AtomicU64 = AtomicU64::new(0);
/// The longest a queue's task took to make a compaction's snapshot, and the longest a
/// log took to be written anew beside it (ms, from the compaction lines).
static MADE_MS: AtomicU64 = AtomicU64::new(0);
static REWRITTEN_MS: AtomicU64 = AtomicU64::new(0);

/// The number of milliseconds after `before` in `line` ("… made in 3 ms …").
fn ms_after(line: &str, before: &str) -> Option<u64> {
    line.split(before)
        .nth(1)?
        .split(" ms")
        .next()?
        .trim()
        .parse()
        .ok()
}

#[derive(Default)]
struct Model {
    published: u64,
    confirmed: BTreeSet<u64>,
    /// Refused or timed out: not confirmed (it may be stored all the same).
    refused: u64,
    delivered: HashMap<u64, u32>,
    last_confirm: Option<Instant>,
    longest_pause: Duration,
}

/// The faults made, and the failover each leader's loss took (until another node
/// served the queue).
#[derive(Default)]
struct Faults {
    kills: u32,
    partitions: u32,
    failovers: Vec<Duration>,
    cut_failovers: Vec<Duration>,
}

struct Node {
    id: u64,
    client: SocketAddr,
    cluster: SocketAddr,
    dir: PathBuf,
    /// Its `--peers`: the other nodes at the proxies it dials them through.
    peers: String,
    child: Option<Child>,
}

/// A free port on 127.0.0.1, and the listener that keeps it so until it is dropped
/// (held until the proxies have their ports and just before the nodes start, so that
/// neither a proxy nor another pick can be given it meanwhile).
fn free_addr() -> (SocketAddr, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1");
    (l.local_addr().expect("a bound listener's address"), l)
}

fn id_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(..20)?).ok()?.parse().ok()
}

fn payload(id: u64) -> Vec<u8> {
    let mut p = format!("{id:020}").into_bytes();
    p.resize(PAYLOAD, b'.');
    p
}

fn start(bin: &Path, n: &Node) -> Result<Child, String> {
    let mut child = Command::new(bin)
        .args(["--port", &n.client.port().to_string()])
        .args(["--data-dir", &n.dir.display().to_string()])
        .args(["--node-id", &n.id.to_string()])
        .args(["--cluster-listen", &n.cluster.to_string()])
        .args(["--peers", &n.peers, "--cluster-name", "test"])
        .args(["--replicated-queues", "orders", "--max-deliveries", "0"])
        .env("AGORA_CLUSTER_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", bin.display()))?;
    // Its log (standard error): read it all, so it never blocks, counting what the
    // report says of compactions.
    let mut log = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    // Its last lines, for the report when it does not start.
    let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    let kept = tail.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut line = Vec::new();
        while matches!(log.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let l = String::from_utf8_lossy(&line);
            {
                let mut t = kept.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == 5 {
                    t.pop_front();
                }
                t.push_back(l.trim_end().to_owned());
            }
            if l.contains("its log compacted") {
                COMPACTIONS.fetch_add(1, Relaxed);
                if let Some(ms) = ms_after(&l, "made in ") {
                    MADE_MS.fetch_max(ms, Relaxed);
                }
                if let Some(ms) = ms_after(&l, "beside it in ") {
                    REWRITTEN_MS.fetch_max(ms, Relaxed);
                }
            } else if l.contains("restored the leader's snapshot") {
                RESTORES.fetch_add(1, Relaxed);
            }
            line.clear();
        }
    });
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    match agora_protocol::startup::read_listener(&mut out, "tcp") {
        Ok(_) => {
            // Read the rest of its standard output, so it never blocks.
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            Ok(child)
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            // Dead, so its standard error ends: what it said last.
            let _ = reader.join();
            let said: Vec<String> = tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect();
            Err(format!(
                "node {} did not start: {e}; its last words: {}",
                n.id,
                said.join(" | ")
            ))
        }
    }
}

/// Whether the node at `addr` serves `orders` now (false when it does not answer).
fn serves(addr: SocketAddr) -> bool {
    let Ok(mut c) = Conn::connect(addr, READ) else {
        return false;
    };
    if c.send(b"STATS #9 prefix=orders\r\n").is_err() {
        return false;
    }
    for _ in 0..100 {
        match c.next() {
            Ok(ServerFrame::StatsResp { json, .. }) => {
                let v: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
                return v["cluster"]["replicated"]["orders"]["serving"] == true;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Publishes with confirms, `WINDOW` at a time, to its node, connecting again
/// whenever the node goes, until `stop`.
fn publisher(
    addr: SocketAddr,
    ids: Arc<AtomicU64>,
    model: Arc<Mutex<Model>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr, READ * 20) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if c.send(b"SETACK #1 on\r\n").is_err() || c.ok(1).is_err() {
            continue;
        }
        'conn: while !stop.load(SeqCst) {
            let mut batch = Vec::new();
            let mut sent = HashMap::new();
            for _ in 0..WINDOW {
                let id = ids.fetch_add(1, SeqCst);
                let rid = id + 10;
                sent.insert(rid, id);
                batch
                    .extend_from_slice(format!("PUB #{rid} queue:orders {PAYLOAD}\r\n").as_bytes());
                batch.extend_from_slice(&payload(id));
                batch.extend_from_slice(b"\r\n");
            }
            model.lock().unwrap().published += WINDOW as u64;
            if c.send(&batch).is_err() {
                break;
            }
            let mut refused = false;
            for _ in 0..WINDOW {
                match c.next() {
                    Ok(ServerFrame::PubAck { rid: Some(rid), .. }) => {
                        let mut m = model.lock().unwrap();
                        m.confirmed.insert(sent[&rid]);
                        let now = Instant::now();
                        if let Some(last) = m.last_confirm {
                            m.longest_pause = m.longest_pause.max(now - last);
                        }
                        m.last_confirm = Some(now);
                    }
                    Ok(ServerFrame::Err(_)) => {
                        model.lock().unwrap().refused += 1;
                        refused = true;
                    }
                    // Its node was killed (or a confirm took longer than the reads'
                    // limit): what was not confirmed is not owed.
                    _ => break 'conn,
                }
            }
            // No leader (an election is under way): a moment before trying again.
            if refused {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Consumes `orders` on its node with manual acks, connecting again whenever the node
/// goes, until `stop`.
fn consumer(addr: SocketAddr, model: Arc<Mutex<Model>>, stop: Arc<AtomicBool>) {
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr, READ) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if c.send(b"SUB #1 queue:orders 1 prefetch=64\r\n").is_err() || c.ok(1).is_err() {
            continue;
        }
        while !stop.load(SeqCst) {
            match c.next() {
                Ok(ServerFrame::Msg(m)) => {
                    if let Some(id) = id_of(&m.payload) {
                        *model.lock().unwrap().delivered.entry(id).or_insert(0) += 1;
                    }
                    if c.send(format!("ACK {}\r\n", m.did).as_bytes()).is_err() {
                        break;
                    }
                }
                // An acknowledgement of a delivery made void (its node stopped
                // leading): the message is delivered again.
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
}

fn main() -> ExitCode {
    let usage = "cluster_test [--faults N] [--seed S] [--bin AGORA] [--dir DIR]";
    let Some(process::Args {
        count: faults,
        seed,
        bin,
        dir,
    }) = process::args("--faults", 100, "cluster-test", usage)
    else {
        return ExitCode::from(2);
    };
    let _ = std::fs::remove_dir_all(&dir);
    match run(faults, seed, &bin, &dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "cluster-test: {e} (data directories kept: {})",
                dir.display()
            );
            ExitCode::from(1)
        }
    }
}

fn run(faults: u32, seed: u64, bin: &Path, dir: &Path) -> Result<(), String> {
    let mut rng = agora_server::rng::Rng::new(seed);
    let mut held = Vec::new();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| {
            let (client, a) = free_addr();
            let (cluster, b) = free_addr();
            held.extend([a, b]);
            Node {
                id,
                client,
                cluster,
                dir: dir.join(format!("node{id}")),
                peers: String::new(),
                child: None,
            }
        })
        .collect();
    let mut proxies = Vec::new();
    for from in 0..nodes.len() {
        let mut peers = Vec::new();
        for to in 0..nodes.len() {
            let addr = match from == to {
                true => nodes[to].cluster,
                false => {
                    let p = Proxy::start(nodes[from].id, nodes[to].id, nodes[to].cluster)
                        .map_err(|e| format!("a link proxy: {e}"))?;
                    let addr = p.addr;
                    proxies.push(p);
                    addr
                }
            };
            peers.push(format!("{}={addr}", nodes[to].id));
        }
        nodes[from].peers = peers.join(",");
    }
    drop(held);
    for i in 0..nodes.len() {
        let child = start(bin, &nodes[i]);
        match child {
            Ok(c) => nodes[i].child = Some(c),
            Err(e) => {
                stop_all(&mut nodes);
                return Err(e);
            }
        }
    }
    let t0 = Instant::now();
    let result = faults_under_load(faults, &mut rng, bin, &proxies, &mut nodes);
    stop_all(&mut nodes);
    let (model, made) = result?;
    let lost: Vec<u64> = model
        .confirmed
        .iter()
        .filter(|id| !model.delivered.contains_key(id))
        .copied()
        .collect();
    let twice: u64 = model.delivered.values().map(|&n| n as u64 - 1).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let spread = |what: &str, f: &[Duration]| {
        let mut f = f.to_vec();
        f.sort();
        match f.len() {
            0 => format!("no leader {what}"),
            n => format!(
                "{n} leaders {what}: failover median {:.0} ms, min {:.0} ms, max {:.0} ms",
                ms(f[n / 2]),
                ms(f[0]),
                ms(f[n - 1])
            ),
        }
    };
    let failover = format!(
        "{} kills, {} partitions; {}; {}",
        made.kills,
        made.partitions,
        spread("killed", &made.failovers),
        spread("cut off", &made.cut_failovers)
    );
    println!(
        "{faults} faults in {:.1} s: {} published, {} confirmed, {} refused or timed out; {} delivered ({} of them again); {} confirmed messages lost; {failover}; longest time with no confirm: {:.0} ms; {} log compactions (a snapshot made in the queue's task in at most {} ms, the log written anew beside it in at most {} ms), {} snapshots restored",
        t0.elapsed().as_secs_f64(),
        model.published,
        model.confirmed.len(),
        model.refused,
        model.delivered.len(),
        twice,
        lost.len(),
        ms(model.longest_pause),
        COMPACTIONS.load(Relaxed),
        MADE_MS.load(Relaxed),
        REWRITTEN_MS.load(Relaxed),
        RESTORES.load(Relaxed),
    );
    if !lost.is_empty() {
        return Err(format!(
            "{} confirmed messages were never delivered, first {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    Ok(())
}

fn stop_all(nodes: &mut [Node]) {
    for n in nodes {
        if let Some(mut c) = n.child.take() {
            kill(&mut c);
        }
    }
}

/// The load, the faults, and the drain at the end: the model, and the faults made.
fn faults_under_load(
    faults: u32,
    rng: &mut agora_server::rng::Rng,
    bin: &Path,
    proxies: &[Proxy],
    nodes: &mut [Node],
) -> Result<(Model, Faults), String> {
    let model = Arc::new(Mutex::new(Model::default()));
    let ids = Arc::new(AtomicU64::new(0));
    let stop_pub = Arc::new(AtomicBool::new(false));
    let stop_sub = Arc::new(AtomicBool::new(false));
    let (mut publishers, mut consumers) = (Vec::new(), Vec::new());
    for n in nodes.iter() {
        let addr = n.client;
        let (ids, m, stop) = (ids.clone(), model.clone(), stop_pub.clone());
        publishers.push(std::thread::spawn(move || publisher(addr, ids, m, stop)));
        let (m, stop) = (model.clone(), stop_sub.clone());
        consumers.push(std::thread::spawn(move || consumer(addr, m, stop)));
    }
    let leader_of = |nodes: &[Node]| nodes.iter().position(|n| serves(n.client));
    let mut faults_made = Faults::default();
    let until = |what: &str, limit: Duration, mut cond: Box<dyn FnMut() -> bool + '_>| {
        let end = Instant::now() + limit;
        while !cond() {
            if Instant::now() > end {
                return Err(format!("timed out waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    until(
        "a leader",
        Duration::from_secs(30),
        Box::new(|| leader_of(nodes).is_some()),
    )?;
    for fault in 0..faults {
        std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
        let leader = leader_of(nodes);
        let victim = match leader {
            Some(l) if rng.below(3) < 2 => l,
            _ => rng.below(3) as usize,
        };
        let others: Vec<SocketAddr> = (0..3)
            .filter(|&i| i != victim)
            .map(|i| nodes[i].client)
            .collect();
        let another_leader = |what: &str| {
            until(
                &format!("another leader after fault {fault} ({what})"),
                Duration::from_secs(30),
                Box::new(|| others.iter().any(|&a| serves(a))),
            )
        };
        if fault % 3 == 1 {
            // A partition: the victim's links cut both ways, its clients still on it.
            let id = nodes[victim].id;
            let links: Vec<&Proxy> = proxies
                .iter()
                .filter(|p| p.from == id || p.to == id)
                .collect();
            links.iter().for_each(|p| p.cut());
            let cut = Instant::now();
            faults_made.partitions += 1;
            if Some(victim) == leader {
                another_leader("its leader cut off")?;
                faults_made.cut_failovers.push(cut.elapsed());
            }
            let lasts = Duration::from_millis(1000 + rng.below(3000));
            std::thread::sleep(lasts.saturating_sub(cut.elapsed()));
            links.iter().for_each(|p| p.heal());
            continue;
        }
        let mut child = nodes[victim].child.take().ok_or("a node is down")?;
        kill(&mut child);
        let killed = Instant::now();
        faults_made.kills += 1;
        if Some(victim) == leader {
            another_leader("its leader killed")?;
            faults_made.failovers.push(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100 + rng.below(1400)));
        nodes[victim].child = Some(start(bin, &nodes[victim])?);
    }
    // The publishers finish their windows (confirms may still come) before the drain
    // compares what was confirmed with what was delivered.
    stop_pub.store(true, SeqCst);
    for t in publishers {
        let _ = t.join();
    }
    let drained = until(
        "every confirmed message delivered",
        DRAIN,
        Box::new(|| {
            let m = model.lock().unwrap();
            m.confirmed.iter().all(|id| m.delivered.contains_key(id))
        }),
    );
    stop_sub.store(true, SeqCst);
    for t in consumers {
        let _ = t.join();
    }
    if let Err(e) = drained {
        eprintln!("cluster-test: {e}");
    }
    let model = std::mem::take(&mut *model.lock().unwrap());
    Ok((model, faults_made))
}
