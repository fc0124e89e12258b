//! The Agora broker.
//!
//! Module map (the blocks of the book's Architecture chapter). Leaves first: a module
//! imports only modules above it in this list (`cargo xtask cycles` fails otherwise).
//!
//! - [`config`], [`settings`], [`config_file`]: every limit and policy with its
//!   default; the table of settings the command line, `[broker]` in the config file and
//!   the book's flags table are made from; the `--config` file.
//! - `rng`: the one seeded generator (the simulation, the simulated disk, the crash
//!   test).
//! - `tls`: the TCP port's TLS (`--tls-cert`): the rustls configuration made from the
//!   PEM files, and the bounded handshake a TLS client's task runs first.
//! - `message`: a message as held, and a delivery on its way to one
//!   subscription. Plain data.
//! - [`store`]: durable queues' storage: a segmented, checksummed, append-only log
//!   written through a `Storage` trait (real files, or a simulated disk that crashes).
//! - `budget`, `metrics`: the memory budget and the counters the hot path bumps.
//! - [`deliveries`]: a subscription's delivery queue, and the credit handle an
//!   auto-ack consumer's shipper reports through.
//! - `shipper`: one task per connection that drains replies and subscription queues in
//!   batches and writes them with one call; the connection's outbox.
//! - [`mutators`]: per-destination chains that keep, change or drop each message,
//!   run once per publish by the publishing connection; their one-line syntax.
//! - `queue`: a queue's rules as a plain value (`queue::state`), and the task that
//!   moves commands and time into it.
//! - `topic`: fan-out to subscribers' bounded buffers, done by the publisher's task.
//! - `manager`: the registry and lifecycle of queues and topics; owns control, never
//!   data; makes each queue's dead-letter resolver.
//! - `stats`, `reporter`: the `STATS` document; the metric task (StatsD,
//!   `$sys.metrics`).
//! - `session`: a connection's state and rules as a plain value (subscriptions,
//!   delivery-id slots, confirms, the checks before the broker acts, liveness).
//! - `conn`, `udp`: the front doors: the accept loop and one task per client that reads,
//!   decodes and acts on its frames; the UDP socket's demultiplexer.
//! - [`sim`]: the deterministic simulation of queues and topics (for tests and
//!   `cargo xtask sim`).
//!
//! The broker's tasks run on an [`agora_rt::Runtime`] whose [`agora_rt::Handle`] the
//! caller passes to [`Server::serve`] (re-exported here as [`agora_rt`]).
//!
//! The binary `agora` parses the command line, builds the runtime and calls [`run`].
//! Tests call [`Server::bind`] and [`Server::serve`] in-process (nothing here installs
//! global state such as a logger or an executor, so many servers can share a process).
#![warn(missing_docs, rust_2018_idioms)]

mod ask;
pub mod auth;
mod budget;
mod chan;
mod cluster;
pub mod config;
pub mod config_file;
mod conn;
mod conns;
#[doc(hidden)]
pub mod deliveries;
mod http;
mod idhash;
mod interest;
pub mod logging;
mod manager;
mod message;
mod metrics;
mod mqtt;
pub mod mutators;
mod queue;
mod replicated;
mod reporter;
#[doc(hidden)]
pub mod rng;
mod session;
pub mod settings;
mod shipper;
#[doc(hidden)]
pub mod sim;
mod stats;
#[doc(hidden)]
pub mod store;
#[doc(hidden)]
pub mod subindex;
mod tls;
mod topic;
mod udp;
mod ws;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::Sender;
use async_net::{TcpListener, UdpSocket};

pub use agora_rt;
pub use config::{Ablation, Config, QueueSettings, SlowConsumerPolicy};

/// State every connection shares: settings, the queue manager's channel, counters.
pub(crate) struct Broker {
    pub config: Config,
    pub manager: Sender<manager::ManagerCmd>,
    /// Source of connection and consumer ids.
    pub next_id: AtomicU64,
    /// Connected TCP clients.
    pub clients_tcp: AtomicUsize,
    /// Known UDP clients (source addresses).
    pub clients_udp: AtomicUsize,
    /// Of `clients_tcp`, the MQTT connections.
    pub clients_mqtt: AtomicUsize,
    /// Of `clients_tcp`, the WebSocket connections.
    pub clients_ws: AtomicUsize,
    /// Which MQTT connection holds each client id.
    pub mqtt_sessions: mqtt::sessions::Sessions,
    /// Every connection, for the HTTP API.
    pub conns: conns::Registry,
    /// The HTTP port's connections and event streams.
    pub http: http::Counts,
    /// Serving: recovery is done and the listeners are up; false again once shutdown
    /// begins (`/readyz`).
    pub ready: AtomicBool,
    pub started: Instant,
    /// Payload bytes held across queues and subscriber buffers.
    pub budget: Arc<budget::Budget>,
    /// Broker-wide counters (bytes, errors, rejected connections).
    pub metrics: Arc<metrics::BrokerMetrics>,
    /// What mutator chains may refer to (the declared enrichment databases).
    pub mutators: Arc<mutators::Env>,
    /// Spawns the broker's tasks (connections, shippers, queues) on its runtime.
    pub rt: agora_rt::Handle,
    /// Bytes of partly received frames the connections hold.
    pub read_budget: budget::ReadBudget,
    /// Keys the UDP sources' tokens (SipHash with keys random per broker process).
    pub udp_secret: std::collections::hash_map::RandomState,
    /// The log's writer and what the start read back, with a data directory.
    pub store: Option<(store::WriterHandle, stats::Recovery)>,
    /// Checks passwords on threads of its own (with users configured).
    pub verifier: auth::Verifier,
    /// Wildcard topic subscriptions.
    pub wild: Arc<topic::wild::Wild>,
    /// Topics published to that are not destinations, and what they counted.
    pub unlisted: Arc<topic::Unlisted>,
    /// The cluster this node is one of, if any.
    pub cluster: Option<Arc<cluster::Cluster>>,
    /// Its replicated queues (`--replicated-queues`).
    pub replicated: Option<Arc<replicated::Groups>>,
}

impl Broker {
    pub fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// The token a UDP source must echo (`CONNECT token=…`) to prove it receives what
    /// is sent to its address. Derived from the address with this process's secret
    /// keys, so the broker keeps nothing for a source until it sends, and a forger
    /// who does not receive at the address cannot know it.
    pub fn udp_token(&self, peer: std::net::SocketAddr) -> String {
        use std::hash::BuildHasher;
        format!("{:016x}", self.udp_secret.hash_one(peer))
    }
}

/// The most bytes one frame can take: a control line, its CRLF, the largest payload and
/// its CRLF.
fn largest_frame(c: &Config) -> usize {
    c.max_line + 2 + c.max_payload + 2
}

/// A broker bound to its socket, not yet serving.
pub struct Server {
    config: Config,
    listener: TcpListener,
    /// Bound to the same address and port as the listener.
    udp: UdpSocket,
    /// The data directory, locked, and its log read back (with a data directory).
    store: Option<Opened>,
    /// With `--tls-cert`: the TCP port speaks TLS only.
    tls: Option<futures_rustls::TlsAcceptor>,
    /// With `--mqtt-port`: the MQTT listener.
    mqtt: Option<TcpListener>,
    /// With `--ws-port`: the WebSocket listener.
    ws: Option<TcpListener>,
    /// With `--http-port`: the HTTP listener, bound before the log was read back, and
    /// the thread that answered it meanwhile (plain HTTP only: with TLS, connections
    /// wait in the listener's backlog until the broker serves).
    http: Option<(TcpListener, Option<http::Early>)>,
    /// With `--cluster-listen`: where the other nodes' links come in.
    cluster: Option<TcpListener>,
    /// With `--cluster-ca`: TLS on the links.
    cluster_tls: Option<cluster::tls::LinkTls>,
}

/// The data directory as [`Server::bind`] found it.
struct Opened {
    /// Held while the broker runs: the lock is let go when it is dropped.
    _dir: store::DataDir,
    log: store::Log<store::Disk>,
    recovered: store::Recovered,
    /// How long reading it back took.
    took: Duration,
}

/// Locks the data directory and reads its log back; an error says which directory and
/// what is wrong, for the operator.
fn open_store(path: &std::path::Path, config: &Config) -> io::Result<Opened> {
    let (max_disk, repair) = (config.max_disk, config.repair);
    let dir = store::DataDir::lock(path).map_err(|e| {
        let kind = match &e {
            store::DirError::InUse { .. } => io::ErrorKind::AddrInUse,
            store::DirError::Unusable { .. } => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e.to_string())
    })?;
    let started = Instant::now();
    let disk = Arc::new(store::Disk::new(dir.path()));
    // Under a --max-disk, segments are an eighth of it (at most the default 64 MiB), so
    // that space comes back in steps of that size.
    let mut opts = store::LogOptions {
        keep_ids: config.dedup_window,
        ..store::LogOptions::default()
    };
    if let Some(max) = max_disk {
        opts.segment_bytes = (max / 8).clamp(4096, opts.segment_bytes);
    }
    let opened = match repair {
        false => store::Log::open(disk, opts).map(|(log, rec)| (log, rec, Vec::new())),
        true => store::Log::open_repairing(disk, opts),
    };
    let (log, recovered, set_aside) = opened.map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the log in {} cannot be read back: {e}; nothing was changed (--repair sets the damaged part aside; see the book's Durability chapter)",
                path.display()
            ),
        )
    })?;
    for s in &set_aside {
        log::warn!(
            "{}: repair: {} from byte {} set aside as {} ({})",
            path.display(),
            s.file,
            s.from,
            s.to,
            s.why
        );
    }
    if let Some(cut) = &recovered.cut {
        log::warn!(
            "{}: the log's torn end was cut off: {} bytes of {} from byte {} ({}); they were never confirmed",
            path.display(),
            cut.bytes,
            cut.file,
            cut.at,
            cut.why
        );
    }
    let messages: usize = recovered.queues.values().map(Vec::len).sum();
    log::info!(
        "{}: read back {messages} messages in {} queues ({} records, {} bytes, {} segments) in {:?}",
        path.display(),
        recovered.queues.values().filter(|m| !m.is_empty()).count(),
        recovered.records,
        recovered.bytes,
        recovered.segments,
        started.elapsed()
    );
    Ok(Opened {
        _dir: dir,
        log,
        recovered,
        took: started.elapsed(),
    })
}

impl Server {
    /// Locks the data directory and reads its log back (with one), then binds the
    /// listening socket(s) described by `config`.
    /// A configured chain that does not parse, or names an undeclared database, is
    /// refused with [`io::ErrorKind::InvalidInput`].
    pub async fn bind(config: Config) -> io::Result<Server> {
        let frame = largest_frame(&config);
        cluster::Cluster::from_config(&config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let cluster_tls = cluster::tls::link_tls(&config)?;
        if config.read_budget < 4 * frame {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the read budget ({} bytes) must hold at least four of the largest frames ({} bytes each: the largest payload and a control line)",
                    config.read_budget, frame
                ),
            ));
        }
        let env = mutators::Env::new(&config.databases);
        for (dest, text) in &config.chains {
            mutators::Chain::parse(text, &env).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("chain of {dest}: {e}"))
            })?;
        }
        // Redis's protected mode: no users means anyone who reaches the port may do
        // anything, which only loopback keeps to this machine.
        if !config.bind.is_loopback() && config.users.is_empty() && !config.allow_anonymous {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to serve {} with no users configured: anyone who reaches the port could publish, consume, purge and delete. Declare [users.<name>] in the config file (book: Security), bind 127.0.0.1, or pass --allow-anonymous to serve it anyway",
                    config.bind
                ),
            ));
        }
        // Certificate files are read before anything else is taken: a bad one refuses
        // the start, naming the file.
        let tls = tls::acceptor(&config)?;
        // The HTTP port opens first: while the log is read back it answers /healthz
        // (200) and /readyz (503), so an orchestrator can watch a long recovery.
        let http = match config.http_port {
            Some(port) => {
                let l = std::net::TcpListener::bind((config.bind, port))?;
                let early = match tls {
                    None => Some(http::Early::start(&l)?),
                    Some(_) => None,
                };
                Some((l, early))
            }
            None => None,
        };
        // The log is read back before the sockets are bound: no client can connect
        // (or wait in the accept queue) to a broker still recovering, and a broker
        // refused its data directory takes no port.
        let store = match &config.data_dir {
            Some(path) => Some(open_store(path, &config)?),
            None => None,
        };
        let (listener, udp) = bind_pair(config.bind, config.port, || {
            std::net::TcpListener::bind((config.bind, 0))
        })?;
        let listener = TcpListener::try_from(listener)?;
        let udp = UdpSocket::try_from(udp)?;
        let mqtt = match config.mqtt_port {
            Some(port) => Some(TcpListener::try_from(std::net::TcpListener::bind((
                config.bind,
                port,
            ))?)?),
            None => None,
        };
        let ws = match config.ws_port {
            Some(port) => Some(TcpListener::try_from(std::net::TcpListener::bind((
                config.bind,
                port,
            ))?)?),
            None => None,
        };
        let http = match http {
            Some((l, early)) => Some((TcpListener::try_from(l)?, early)),
            None => None,
        };
        let cluster = match config.cluster_listen {
            Some(addr) => Some(TcpListener::try_from(std::net::TcpListener::bind(addr)?)?),
            None => None,
        };
        Ok(Server {
            config,
            listener,
            udp,
            store,
            tls,
            mqtt,
            ws,
            http,
            cluster,
            cluster_tls,
        })
    }

    /// The cluster address actually bound (with `--cluster-listen`).
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Replaces `--peers` before serving: for nodes that bound port 0, whose addresses
    /// are known only once each is bound. Checked as at [`bind`](Server::bind).
    pub fn set_peers(&mut self, peers: Vec<(u64, String)>) -> io::Result<()> {
        let mut config = self.config.clone();
        config.peers = peers;
        cluster::Cluster::from_config(&config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.config = config;
        Ok(())
    }

    /// The TCP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the TCP port speaks TLS (`--tls-cert`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The MQTT address bound (`--mqtt-port`), if any.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The WebSocket address bound (`--ws-port`), if any.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The HTTP address bound (`--http-port`), if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The UDP address bound: the same address and port as TCP.
    pub fn udp_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Serves clients until `shutdown` completes, then shuts down gracefully: stops
    /// accepting, sends every client `SHUTDOWN`, lets shippers flush, and returns when
    /// all connections are closed or [`Config::shutdown_timeout`] has passed (and the
    /// log, with a data directory, is synced). An error when the log failed meanwhile.
    ///
    /// Every task the broker starts is spawned through `rt`. This future itself (the
    /// accept and UDP loops) runs wherever it is polled: spawn it on the same runtime
    /// (`Runtime::block_on` does) so that its socket events take the same short path.
    pub async fn serve(
        self,
        rt: agora_rt::Handle,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let budget =
            budget::Budget::new(self.config.memory_budget, !self.config.ablation.no_defences);
        let env = Arc::new(mutators::Env::new(&self.config.databases));
        let read_budget =
            budget::ReadBudget::new(self.config.read_budget, largest_frame(&self.config));
        let (store, writer) = match self.store {
            Some(Opened {
                _dir: dir,
                log,
                recovered,
                took,
            }) => {
                let recovery = stats::Recovery {
                    messages: recovered.queues.values().map(Vec::len).sum(),
                    ms: took.as_secs_f64() * 1e3,
                };
                let (numbers, next_number) = log.numbers();
                let numbers = numbers.clone();
                let (writer, thread) =
                    store::spawn_writer(log, self.config.fsync, self.config.max_disk)?;
                let store = manager::Store {
                    writer: writer.clone(),
                    numbers,
                    next_number,
                    ids: queue::MessageIds::starting_at(recovered.next_id),
                    recovered: recovered.queues,
                    chains: recovered.chains,
                    bindings: recovered.bindings,
                    seen: recovered.seen,
                };
                (Some(store), Some((writer, thread, dir, recovery)))
            }
            None => (None, None),
        };
        // The verifier's threads only when there are passwords to check.
        let verifier = auth::Verifier::start(match self.config.users.has_passwords() {
            true => auth::POOL_THREADS,
            false => 0,
        });
        let wild = Arc::new(topic::wild::Wild::default());
        let unlisted = Arc::new(topic::Unlisted::default());
        let cluster_tls = self.cluster_tls;
        let cluster = cluster::Cluster::from_config(&self.config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            .map(|c| {
                Arc::new(cluster::Cluster {
                    tls: cluster_tls,
                    ..c
                })
            });
        // The nodes this node's replicated queues were made over must be the ones it is
        // given now.
        if let (Some(c), Some(dir)) = (&cluster, &self.config.data_dir) {
            if !self.config.replicated_queues.is_empty() {
                replicated::nodes::pin(&dir.join(store::RAFT_DIR), &c.me.peers)?;
            }
        }
        // Raft frames go to another node over this node's link to it.
        let replicated = match (&cluster, &self.config.data_dir) {
            (Some(c), Some(dir)) if !self.config.replicated_queues.is_empty() => {
                let (link, link2) = (c.clone(), c.clone());
                Some(Arc::new(
                    replicated::Groups::new(
                        c.me.node,
                        c.me.peers.clone(),
                        self.config.replicated_queues.clone(),
                        dir.join(store::RAFT_DIR),
                        Box::new(move |to, bytes| link.send_raft(to, bytes)),
                        Box::new(move |to, epoch, frames| link2.send_frames(to, epoch, frames)),
                    )
                    .compacting(self.config.raft_compact_bytes)
                    .ticking(self.config.raft_tick),
                ))
            }
            _ => None,
        };
        let broker = Arc::new(Broker {
            cluster,
            replicated: replicated.clone(),
            verifier,
            manager: manager::spawn(
                &self.config,
                budget.clone(),
                env.clone(),
                &rt,
                store,
                wild.clone(),
                unlisted.clone(),
                replicated,
            ),
            wild,
            unlisted,
            rt,
            mutators: env,
            budget,
            config: self.config,
            next_id: AtomicU64::new(1),
            clients_tcp: AtomicUsize::new(0),
            clients_udp: AtomicUsize::new(0),
            clients_mqtt: AtomicUsize::new(0),
            clients_ws: AtomicUsize::new(0),
            mqtt_sessions: Default::default(),
            conns: Default::default(),
            http: Default::default(),
            ready: AtomicBool::new(false),
            started: Instant::now(),
            metrics: Arc::new(metrics::BrokerMetrics::default()),
            udp_secret: Default::default(),
            read_budget,
            store: writer.as_ref().map(|(w, _, _, r)| (w.clone(), r.clone())),
        });
        // Closing `stop` tells every connection to wrap up; each connection holds a
        // clone of `alive`, so `done` closes when the last one has finished.
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let (alive, done) = async_channel::bounded::<()>(1);
        let accept = conn::accept_loop(
            broker.clone(),
            self.listener,
            self.tls.clone(),
            stop_rx.clone(),
            alive.clone(),
        );
        // MQTT's retained messages and persistent sessions, shared by the MQTT port and
        // WebSocket's /mqtt; read back from the data directory.
        let retained = Arc::new(mqtt::state::MqttState::open(&broker.config)?);
        let keeper = retained.clone();
        type Door = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
        let mqtt: Door = match self.mqtt {
            Some(listener) => Box::pin(mqtt::accept_loop(
                broker.clone(),
                listener,
                self.tls.clone(),
                retained.clone(),
                stop_rx.clone(),
                alive.clone(),
            )),
            None => Box::pin(futures_lite::future::pending()),
        };
        let ws: Door = match self.ws {
            Some(listener) => Box::pin(ws::accept_loop(
                broker.clone(),
                listener,
                self.tls.clone(),
                retained,
                stop_rx.clone(),
                alive.clone(),
            )),
            None => Box::pin(futures_lite::future::pending()),
        };
        let web: Door = match self.http {
            Some((listener, early)) => {
                // The early answers stop before the broker's own take over.
                if let Some(e) = early {
                    e.stop();
                }
                Box::pin(http::accept_loop(
                    broker.clone(),
                    listener,
                    self.tls.clone(),
                    stop_rx.clone(),
                ))
            }
            None => Box::pin(futures_lite::future::pending()),
        };
        let links: Door = match self.cluster {
            Some(listener) => {
                cluster::dial_all(&broker, &stop_rx);
                Box::pin(cluster::accept_loop(
                    broker.clone(),
                    listener,
                    stop_rx.clone(),
                    alive.clone(),
                ))
            }
            None => Box::pin(futures_lite::future::pending()),
        };
        let udp = udp::udp_loop(broker.clone(), self.udp, stop_rx, alive);
        broker.ready.store(true, SeqCst);
        let keep = keeper.keep(&broker);
        let no_metrics = broker.config.ablation.no_metrics;
        let metrics = async {
            if no_metrics {
                futures_lite::future::pending::<()>().await;
            }
            reporter::run_manager(broker.clone()).await;
        };
        futures_lite::future::or(
            futures_lite::future::or(
                futures_lite::future::or(
                    accept,
                    futures_lite::future::or(mqtt, futures_lite::future::or(ws, web)),
                ),
                futures_lite::future::or(metrics, futures_lite::future::or(keep, links)),
            ),
            futures_lite::future::or(udp, async {
                shutdown.await;
            }),
        )
        .await;
        log::info!("shutting down");
        broker.ready.store(false, SeqCst);
        stop_tx.close();
        let timeout = broker.config.shutdown_timeout;
        let finished = futures_lite::future::or(
            async {
                let _ = done.recv().await;
                true
            },
            async {
                smol::Timer::after(timeout).await;
                false
            },
        )
        .await;
        if !finished {
            log::warn!(
                "{} connections still open after {:?}; closing anyway",
                broker.clients_tcp.load(SeqCst),
                timeout
            );
        }
        // Retained messages and session records as the connections left them.
        keeper.flush().await;
        if let Some((writer, thread, dir, _)) = writer {
            // Every queue hands what it has to the writer first (bounded: a queue that
            // does not answer within the shutdown timeout is not waited for).
            let queues = ask::ask(&broker.manager, |reply| manager::ManagerCmd::All { reply })
                .await
                .unwrap_or_default();
            let flushes = queues.into_iter().filter_map(|h| match h {
                manager::Handle::Queue(q) => Some(q),
                manager::Handle::Topic(_) => None,
            });
            let all = async {
                for q in flushes {
                    let _ = ask::ask(&q.tx, |reply| queue::QueueCmd::Flush { reply }).await;
                }
            };
            futures_lite::future::or(all, async {
                smol::Timer::after(timeout).await;
            })
            .await;
            // What the queues handed over is written and synced (whatever --fsync
            // says: a graceful stop loses nothing), then the directory is unlocked.
            writer.close();
            let _ = smol::unblock(move || thread.join()).await;
            drop(dir);
            // A broker whose log failed stops with an error (the binary exits 1): what
            // it confirmed before the failure is stored, nothing after it was confirmed.
            if let Some(why) = writer.failure() {
                return Err(io::Error::other(format!(
                    "{why}; publishes to durable queues were refused since"
                )));
            }
        }
        Ok(())
    }
}

/// Binds as `config` says, prints the documented start-up lines (one per listener, see
/// [`agora_protocol::startup`]) on stdout once all are bound, and serves with tasks on
/// `rt` until `shutdown` completes.
pub async fn run(
    config: Config,
    rt: agora_rt::Handle,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    use agora_protocol::startup::line;
    let server = Server::bind(config).await?;
    let (tcp, udp) = (server.local_addr()?, server.udp_addr()?);
    let (mqtt, ws, web) = (server.mqtt_addr(), server.ws_addr(), server.http_addr());
    // Both lines in one write, and a failed write ignored: a reader (a test, a
    // supervisor) may take the first line and close the pipe, and a broker whose stdout
    // went away keeps serving (`println!` would panic on the second line).
    {
        use std::io::Write;
        let mut lines = format!(
            "{}\n{}\n",
            line("agora", if server.is_tls() { "tls" } else { "tcp" }, tcp),
            line("agora", "udp", udp)
        );
        if let Some(mqtt) = mqtt {
            let scheme = if server.is_tls() { "mqtts" } else { "mqtt" };
            lines.push_str(&line("agora", scheme, mqtt));
            lines.push('\n');
        }
        if let Some(ws) = ws {
            let scheme = if server.is_tls() { "wss" } else { "ws" };
            lines.push_str(&line("agora", scheme, ws));
            lines.push('\n');
        }
        if let Some(web) = web {
            let scheme = if server.is_tls() { "https" } else { "http" };
            lines.push_str(&line("agora", scheme, web));
            lines.push('\n');
        }
        if let Some(c) = server.cluster_addr() {
            lines.push_str(&line("agora", "cluster", c));
            lines.push('\n');
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(lines.as_bytes()).and_then(|()| out.flush());
    }
    match server.is_tls() {
        true => log::info!("listening on {tcp} (TLS only)"),
        false => log::info!("listening on {tcp}"),
    }
    server.serve(rt, shutdown).await
}

/// Tries of [`bind_pair`] before it gives up on finding a port free for both.
const BIND_TRIES: usize = 64;

/// Binds TCP and UDP on one port. With `port` 0, `tcp` binds a TCP listener on a port
/// the system picks, and the pair is kept only if UDP can have the same port: another
/// program may hold that port's UDP twin, so a taken one is given back and another
/// tried. With a fixed port, a UDP port already in use is an error naming UDP.
fn bind_pair(
    ip: std::net::IpAddr,
    port: u16,
    mut tcp: impl FnMut() -> io::Result<std::net::TcpListener>,
) -> io::Result<(std::net::TcpListener, std::net::UdpSocket)> {
    if port != 0 {
        let listener = std::net::TcpListener::bind((ip, port))?;
        let udp = std::net::UdpSocket::bind((ip, port))
            .map_err(|e| io::Error::new(e.kind(), format!("UDP port {port} on {ip}: {e}")))?;
        return Ok((listener, udp));
    }
    for _ in 0..BIND_TRIES {
        let listener = tcp()?;
        let got = listener.local_addr()?.port();
        match std::net::UdpSocket::bind((ip, got)) {
            Ok(udp) => return Ok((listener, udp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                log::debug!("UDP port {got} is taken; trying another pair");
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no port on {ip} free for both TCP and UDP in {BIND_TRIES} tries"),
    ))
}

/// How long the accept loop waits after an accept error, doubling to a maximum.
pub(crate) const ACCEPT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(5), Duration::from_secs(1));

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Port 0 once chose a TCP port whose UDP twin another process held, and binding
    /// failed with `AddrInUse`. Here the first TCP port offered has its UDP twin taken
    /// on purpose; the pair must come from a later try.
    #[test]
    fn port_zero_skips_a_tcp_port_whose_udp_twin_is_taken() {
        // A UDP port held by "another program", and a TCP listener on the same number.
        let (taken, first) = (0..BIND_TRIES)
            .find_map(|_| {
                let udp = UdpSocket::bind((LOCAL, 0)).ok()?;
                let port = udp.local_addr().ok()?.port();
                let tcp = TcpListener::bind((LOCAL, port)).ok()?;
                Some((udp, tcp))
            })
            .expect("a UDP port whose TCP twin is free");
        let blocked = taken.local_addr().unwrap().port();
        let mut offered = vec![first];
        let mut tries = 0;
        let (tcp, udp) = bind_pair(LOCAL, 0, || {
            tries += 1;
            match offered.pop() {
                Some(l) => Ok(l),
                None => TcpListener::bind((LOCAL, 0)),
            }
        })
        .unwrap();
        assert!(
            tries >= 2,
            "the blocked pair must have been offered and refused"
        );
        let port = tcp.local_addr().unwrap().port();
        assert_ne!(port, blocked);
        assert_eq!(udp.local_addr().unwrap().port(), port);
        // A fixed port whose UDP twin is taken is an error that says so.
        let e = bind_pair(LOCAL, blocked, || unreachable!()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("UDP"), "{e}");
        drop(taken);
    }
}
