//! The Agora broker.
//!
//! Module map (the blocks of the book's Architecture chapter):
//!
//! - [`config`]: every limit and policy, with defaults.
//! - [`config_file`]: the `--config` TOML file: destinations, chains, databases.
//! - `conn`: the connection manager: the accept loop, and one task per client that
//!   reads and decodes its frames and acts on them.
//! - `manager`: the queue manager: registry and lifecycle of queues and topics;
//!   owns control, never data.
//! - `queue`: a queue task: pending messages, consumers' unacked sets, acks,
//!   redelivery.
//! - `topic`: fan-out to subscribers' bounded buffers, done by the publisher's task.
//! - [`mutators`]: per-destination chains that keep, change or drop each message,
//!   run once per publish by the publishing connection; their one-line syntax.
//! - `shipper`: one task per connection that drains replies and subscription channels
//!   in batches and writes them with one call.
//!
//! The broker's tasks run on an [`agora_rt::Runtime`] whose [`agora_rt::Handle`] the
//! caller passes to [`Server::serve`] (re-exported here as [`agora_rt`]).
//!
//! The binary `agora` parses the command line, builds the runtime and calls [`run`].
//! Tests call [`Server::bind`] and [`Server::serve`] in-process (nothing here installs
//! global state such as a logger or an executor, so many servers can share a process).
#![warn(missing_docs, rust_2018_idioms)]

mod budget;
pub mod config;
pub mod config_file;
mod conn;
#[doc(hidden)]
pub mod deliveries;
pub mod logging;
mod manager;
mod metrics;
pub mod mutators;
mod queue;
mod shipper;
mod stats;
mod topic;
mod udp;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
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
    pub started: Instant,
    /// Payload bytes held across queues and subscriber buffers.
    pub budget: Arc<budget::Budget>,
    /// Broker-wide counters (bytes, errors, rejected connections).
    pub metrics: Arc<metrics::BrokerMetrics>,
    /// What mutator chains may refer to (the declared enrichment databases).
    pub mutators: Arc<mutators::Env>,
    /// Spawns the broker's tasks (connections, shippers, queues) on its runtime.
    pub rt: agora_rt::Handle,
}

impl Broker {
    pub fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }
}

/// A broker bound to its socket, not yet serving.
pub struct Server {
    config: Config,
    listener: TcpListener,
    /// Bound to the same address and port as the listener.
    udp: UdpSocket,
}

impl Server {
    /// Binds the listening socket(s) described by `config`.
    /// A configured chain that does not parse, or names an undeclared database, is
    /// refused with [`io::ErrorKind::InvalidInput`].
    pub async fn bind(config: Config) -> io::Result<Server> {
        let env = mutators::Env::new(&config.databases);
        for (dest, text) in &config.chains {
            mutators::Chain::parse(text, &env).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("chain of {dest}: {e}"))
            })?;
        }
        let listener = TcpListener::bind((config.bind, config.port)).await?;
        // UDP on the same port (the one TCP got, when asked for port 0).
        let port = listener.local_addr()?.port();
        let udp = UdpSocket::bind((config.bind, port)).await?;
        Ok(Server {
            config,
            listener,
            udp,
        })
    }

    /// The TCP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves clients until `shutdown` completes, then shuts down gracefully: stops
    /// accepting, sends every client `SHUTDOWN`, lets shippers flush, and returns when
    /// all connections are closed or [`Config::shutdown_timeout`] has passed.
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
        let broker = Arc::new(Broker {
            manager: manager::spawn(&self.config, budget.clone(), env.clone(), &rt),
            rt,
            mutators: env,
            budget,
            config: self.config,
            next_id: AtomicU64::new(1),
            clients_tcp: AtomicUsize::new(0),
            clients_udp: AtomicUsize::new(0),
            started: Instant::now(),
            metrics: Arc::new(metrics::BrokerMetrics::default()),
        });
        // Closing `stop` tells every connection to wrap up; each connection holds a
        // clone of `alive`, so `done` closes when the last one has finished.
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let (alive, done) = async_channel::bounded::<()>(1);
        let accept = conn::accept_loop(
            broker.clone(),
            self.listener,
            stop_rx.clone(),
            alive.clone(),
        );
        let udp = udp::udp_loop(broker.clone(), self.udp, stop_rx, alive);
        let no_metrics = broker.config.ablation.no_metrics;
        let metrics = async {
            if no_metrics {
                futures_lite::future::pending::<()>().await;
            }
            metrics::run_manager(broker.clone()).await;
        };
        futures_lite::future::or(
            futures_lite::future::or(accept, metrics),
            futures_lite::future::or(udp, async {
                shutdown.await;
            }),
        )
        .await;
        log::info!("shutting down");
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
        Ok(())
    }
}

/// Binds as `config` says, prints the documented start-up line
/// `agora listening on tcp://<addr>` on stdout (UDP listens on the same address and
/// port), and serves with tasks on `rt` until `shutdown` completes.
pub async fn run(
    config: Config,
    rt: agora_rt::Handle,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    println!("agora listening on tcp://{addr}");
    log::info!("listening on {addr}");
    server.serve(rt, shutdown).await
}

/// How long the accept loop waits after an accept error, doubling to a maximum.
pub(crate) const ACCEPT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(5), Duration::from_secs(1));
