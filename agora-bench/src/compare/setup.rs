//! Around each run: the StatsD sink, the machine's load and commit, the brokers' config
//! and destination, and one run on a fresh broker.

use super::*;

/// A UDP socket that takes whatever is sent to it, counting datagrams.
pub(super) struct Sink {
    pub(super) addr: String,
    pub(super) count: Arc<AtomicU64>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    pub(super) fn start() -> Result<Sink, String> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("statsd sink: {e}"))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let addr = socket.local_addr().map_err(|e| e.to_string())?.to_string();
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (count, stop) = (count.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Relaxed) {
                    if socket.recv(&mut buf).is_ok() {
                        count.fetch_add(1, Relaxed);
                    }
                }
            })
        };
        Ok(Sink {
            addr,
            count,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The commit of the working tree this bench sits in, `-dirty` if it has changes.
pub(super) fn commit() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

/// Creates `dir/sites.db` and `dir/sites.toml` declaring it; returns the config file.
pub(super) fn sites_db(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let db = dir.join("sites.db");
    let _ = std::fs::remove_file(&db);
    let conn = rusqlite::Connection::open(&db).map_err(|e| format!("{}: {e}", db.display()))?;
    conn.execute_batch(
        "CREATE TABLE sites(site TEXT PRIMARY KEY, region TEXT);
         INSERT INTO sites VALUES ('s1', 'eu-west'), ('s2', 'us-east');",
    )
    .map_err(|e| format!("{}: {e}", db.display()))?;
    drop(conn);
    let toml = dir.join("sites.toml");
    std::fs::write(&toml, "[databases]\nsites = \"sites.db\"\n")
        .map_err(|e| format!("{}: {e}", toml.display()))?;
    Ok(toml)
}

pub(super) fn destination(scenario: Scenario) -> Result<Destination, String> {
    let queue = matches!(
        scenario,
        Scenario::Queue1
            | Scenario::Queue4
            | Scenario::Queue1Ack
            | Scenario::Queue4Ack
            | Scenario::Confirm
            | Scenario::ClusterConfirm
            | Scenario::ClusterQueue4
            | Scenario::ClusterFailover
    );
    if queue {
        Destination::queue(DEST)
    } else {
        Destination::topic(DEST)
    }
    .map_err(|e| format!("{e}"))
}

/// Sets the chain and publishes the warm-up on a fresh broker.
pub(super) fn prepare(
    addr: &str,
    dest: &Destination,
    chain: Option<&str>,
    warmup: u64,
    format: Format,
    payload: usize,
) -> Result<(), String> {
    let e = |e: agora_client::Error| format!("agora: {e}");
    futures_lite::future::block_on(async {
        let client = Client::builder()
            .name("bench-compare")
            .connect(addr)
            .await
            .map_err(e)?;
        if let Some(chain) = chain {
            client
                .chain_set(dest.clone(), chain)
                .await
                .map_err(|x| format!("CHAIN SET {chain:?}: {x}"))?;
        }
        if warmup > 0 {
            // Publisher index 1000: never counted by a measured run's receivers, which
            // are not subscribed yet anyway.
            let topic = client.topic(DEST).map_err(e)?;
            for n in 0..warmup {
                topic
                    .publish(format.encode(payload, 1000, n, wire::now_ns()))
                    .await
                    .map_err(e)?;
            }
            client.flush().await.map_err(e)?;
        }
        client.close().await.map_err(e)
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn one_run(
    bins: &Bins,
    log_dir: &Path,
    log_name: &str,
    argv: &[String],
    dest: &Destination,
    chain: Option<&str>,
    warmup: u64,
    cell: &Cell,
    settings: &Settings,
    lean: bool,
) -> Result<scenario::Measured, String> {
    let server = Server::start_with(System::Agora, bins, log_dir, log_name, argv)?;
    let view = ServerView {
        // Scenarios that speak the protocol themselves (`request-reply`) pick the lean
        // client by it.
        system: if lean {
            System::AgoraLean
        } else {
            System::Agora
        },
        addr: server.addr.clone(),
        nodes: server.addrs(),
        leader: None,
        pids: server.pids(),
    };
    let result = prepare(
        &view.addr,
        dest,
        chain,
        warmup,
        settings.format,
        cell.payload,
    )
    .and_then(|()| {
        let addr = view.addr.clone();
        if lean {
            let driver = drivers::agora_lean::AgoraLean {
                addr,
                dial: drivers::lean::Plain,
            };
            scenario::run(&driver, &view, cell, settings, DEST.to_owned())
        } else {
            let driver = drivers::agora::Agora {
                addr,
                threads: agora_client::Threads::Shared,
            };
            scenario::run(&driver, &view, cell, settings, DEST.to_owned())
        }
    });
    server.stop();
    result
}
