//! The scenarios, written once for every system against the `drivers` traits: who
//! publishes, who receives, how fast, and what the run must prove (nothing lost, nothing
//! duplicated) before its numbers count.
//!
//! Flow control: a throughput run floods, but never gets more than a *window* of
//! messages ahead of its slowest receiver (4 MiB of payload, 64 to 4096 messages). That
//! keeps every system inside its own buffers, so a topic run can promise delivery of
//! every message, and what is measured is the rate a system sustains, not how much it
//! can drop.

use std::cell::{Cell as StdCell, RefCell};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};
use hdrhistogram::Histogram;

use crate::drivers::{Dest, Driver, Mode, Publisher, Subscriber};
use crate::wire::{self, Seen};
use crate::System;

type Result<T, E = String> = std::result::Result<T, E>;

/// Scenario ids, as on the command line and in results.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// 1 publisher, no subscriber (variant `queue`: into a queue nobody consumes).
    Publish,
    /// 1 publisher, 1 topic subscriber.
    #[value(name = "topic-1-1")]
    Topic1x1,
    /// 1 publisher, 4 topic subscribers (total delivered per second).
    #[value(name = "topic-1-4")]
    Topic1x4,
    /// 1 publisher, 16 topic subscribers.
    #[value(name = "topic-1-16")]
    Topic1x16,
    /// 4 publishers, 1 topic subscriber.
    #[value(name = "topic-4-1")]
    Topic4x1,
    /// 1 producer, 1 consumer, no explicit acks.
    #[value(name = "queue-1")]
    Queue1,
    /// 1 producer, 4 competing consumers, no explicit acks.
    #[value(name = "queue-4")]
    Queue4,
    /// 1 producer, 1 consumer acking each message, prefetch 256.
    #[value(name = "queue-1-ack")]
    Queue1Ack,
    /// 1 producer, 4 consumers acking each message, prefetch 256.
    #[value(name = "queue-4-ack")]
    Queue4Ack,
    /// Publishes that wait for the broker's confirmation, 64 outstanding, into a queue.
    Confirm,
    /// Publish on one connection, receive on another, one message at a time.
    Rtt,
    /// A fixed publish rate; latency from each message's intended send time.
    LatencyRate,
    /// 4 topic subscribers, one of which never reads.
    SlowConsumer,
    /// UDP publish throughput and fraction lost.
    Udp,
    /// Durable publishes with confirms (variants: 1 and 16 publishers, 64 outstanding
    /// each) into a durable queue or stream nobody reads, on the durable systems.
    #[value(name = "durable-confirm")]
    DurableConfirm,
    /// Durable publishes with confirms (1 publisher, 64 outstanding) while 4 consumers
    /// acknowledge each message (prefetch 64), on the durable systems.
    #[value(name = "durable-queue-4")]
    DurableQueue4,
    /// A backlog published with confirms and no consumer (`--backlog-mib`), then
    /// drained by 1 acknowledging consumer, on the durable systems.
    #[value(name = "durable-backlog")]
    DurableBacklog,
    /// Requests answered by one responder (variants: 1 requester in a loop, for the
    /// latency; 16 requesters, for requests per second).
    #[value(name = "request-reply")]
    RequestReply,
    /// 1 publisher, 4 subscribers by wildcard patterns that match its topic, among
    /// 10,000 subscriptions (9,996 that match nothing it publishes).
    #[value(name = "wildcard-fanout")]
    WildcardFanout,
    /// 16 publishers with confirms (64 outstanding each) into a queue replicated on
    /// three nodes that nobody reads, on the cluster systems: a confirm means a majority
    /// has the message on disk.
    #[value(name = "cluster-confirm")]
    ClusterConfirm,
    /// 1 publisher with confirms (64 outstanding) while 4 consumers acknowledge each
    /// message (prefetch 64), on a queue replicated on three nodes: the cluster systems.
    #[value(name = "cluster-queue-4")]
    ClusterQueue4,
    /// 1 publisher with confirms, one at a time, on a node that does not lead the
    /// queue; the leading node's process is killed after 2 s: the longest time without
    /// a confirm (`max`) is the failover a client sees. The cluster systems.
    #[value(name = "cluster-failover")]
    ClusterFailover,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 22] = [
        Scenario::Publish,
        Scenario::Topic1x1,
        Scenario::Topic1x4,
        Scenario::Topic1x16,
        Scenario::Topic4x1,
        Scenario::Queue1,
        Scenario::Queue4,
        Scenario::Queue1Ack,
        Scenario::Queue4Ack,
        Scenario::Confirm,
        Scenario::Rtt,
        Scenario::LatencyRate,
        Scenario::SlowConsumer,
        Scenario::Udp,
        Scenario::DurableConfirm,
        Scenario::DurableQueue4,
        Scenario::DurableBacklog,
        Scenario::RequestReply,
        Scenario::WildcardFanout,
        Scenario::ClusterConfirm,
        Scenario::ClusterQueue4,
        Scenario::ClusterFailover,
    ];

    pub(crate) fn id(self) -> &'static str {
        match self {
            Scenario::Publish => "publish",
            Scenario::Topic1x1 => "topic-1-1",
            Scenario::Topic1x4 => "topic-1-4",
            Scenario::Topic1x16 => "topic-1-16",
            Scenario::Topic4x1 => "topic-4-1",
            Scenario::Queue1 => "queue-1",
            Scenario::Queue4 => "queue-4",
            Scenario::Queue1Ack => "queue-1-ack",
            Scenario::Queue4Ack => "queue-4-ack",
            Scenario::Confirm => "confirm",
            Scenario::Rtt => "rtt",
            Scenario::LatencyRate => "latency-rate",
            Scenario::SlowConsumer => "slow-consumer",
            Scenario::Udp => "udp",
            Scenario::DurableConfirm => "durable-confirm",
            Scenario::DurableQueue4 => "durable-queue-4",
            Scenario::DurableBacklog => "durable-backlog",
            Scenario::RequestReply => "request-reply",
            Scenario::WildcardFanout => "wildcard-fanout",
            Scenario::ClusterConfirm => "cluster-confirm",
            Scenario::ClusterQueue4 => "cluster-queue-4",
            Scenario::ClusterFailover => "cluster-failover",
        }
    }

    /// Whether it measures what a broker keeps on disk: the durable systems run these
    /// only, and the others none of them.
    pub(crate) fn durable(self) -> bool {
        matches!(
            self,
            Scenario::DurableConfirm | Scenario::DurableQueue4 | Scenario::DurableBacklog
        )
    }

    /// Whether it measures a queue replicated across three nodes: the cluster systems
    /// run these only, and the others none of them.
    pub(crate) fn cluster(self) -> bool {
        matches!(
            self,
            Scenario::ClusterConfirm | Scenario::ClusterQueue4 | Scenario::ClusterFailover
        )
    }
}

/// One cell of the results: a scenario with its variant, payload size and rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) scenario: Scenario,
    /// `""`, or `queue` for `publish` into a queue.
    pub(crate) variant: &'static str,
    pub(crate) payload: usize,
    /// Messages per second, for `latency-rate`.
    pub(crate) rate: Option<u64>,
}

/// How long runs last and what they must stay under.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) duration: Duration,
    pub(crate) rate_duration: Duration,
    pub(crate) slow_duration: Duration,
    pub(crate) rtt_rounds: u64,
    pub(crate) rss_bound_mib: f64,
    /// What the payloads look like (binary unless `--json`).
    pub(crate) format: wire::Format,
    /// Only every N-th message is meant to arrive (a `sample N` chain, one publisher);
    /// 1 for all of them.
    pub(crate) keep_every: u64,
    /// Overrides the flow-control window (messages a publisher may be ahead).
    pub(crate) window: Option<u64>,
    /// Payload bytes `durable-backlog` publishes before it drains them.
    pub(crate) backlog_bytes: u64,
}

impl Settings {
    /// The suite's settings with these durations.
    pub(crate) fn new(
        duration: Duration,
        rate_duration: Duration,
        slow_duration: Duration,
    ) -> Self {
        Settings {
            duration,
            rate_duration,
            slow_duration,
            rtt_rounds: 10_000,
            rss_bound_mib: 256.0,
            format: wire::Format::Binary,
            keep_every: 1,
            window: None,
            backlog_bytes: 1 << 30,
        }
    }
}

/// What one run of one cell measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measured {
    /// Messages delivered (summed over receivers), or published when nobody receives.
    pub(crate) messages: u64,
    pub(crate) published: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Option<Histogram<u64>>,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    /// Dropped by a client library's own buffer (Agora's SDK counts them).
    pub(crate) client_dropped: u64,
    pub(crate) server_cpu_s: f64,
    /// The bench process's CPU over the same part: every client role of the run.
    pub(crate) client_cpu_s: f64,
    pub(crate) server_peak_rss_mib: f64,
    /// The promise this run broke, if it broke one: the run then counts as failed.
    pub(crate) broken: Option<String>,
    /// `durable-backlog`'s two phases (the rest of its figures are the drain's).
    pub(crate) backlog: Option<Phases>,
    /// What the connections negotiated below the protocol (TLS version, cipher suite,
    /// key exchange), on the TLS rows.
    pub(crate) tls: Option<String>,
}

/// What `durable-backlog` measured of each phase.
#[derive(Debug, Clone, Default)]
pub(crate) struct Phases {
    /// Messages confirmed while nobody consumed.
    pub(crate) published: u64,
    /// From the first publish to the last confirm.
    pub(crate) publish: Duration,
    /// Messages the consumer took and acknowledged.
    pub(crate) drained: u64,
    /// From the consumer's start to its last message; `None` if there was no drain.
    pub(crate) drain: Option<Duration>,
}

/// What the run needs of the server process.
pub(crate) struct ServerView {
    pub(crate) system: System,
    pub(crate) addr: String,
    /// Each node's client address, in node order (`addr` alone for one broker).
    pub(crate) nodes: Vec<String>,
    /// Which of `nodes` leads the run's queue (a cluster's, once the run made it).
    pub(crate) leader: Option<usize>,
    /// The broker's processes (three for a cluster): their CPU and peak RSS are summed.
    pub(crate) pids: Vec<u32>,
}

impl ServerView {
    fn cpu(&self) -> f64 {
        self.pids
            .iter()
            .map(|&p| crate::server::cpu_seconds(p).unwrap_or(f64::NAN))
            .sum()
    }
}

/// CPU seconds of this process so far: the clients of a run are all its threads.
fn client_cpu() -> f64 {
    crate::server::cpu_seconds(std::process::id()).unwrap_or(f64::NAN)
}

/// Runs `cell` once against `server` with `driver`.
pub(crate) fn run<D: Driver>(
    driver: &D,
    server: &ServerView,
    cell: &Cell,
    settings: &Settings,
    dest_name: String,
) -> Result<Measured> {
    let topic = |name: &str| Dest {
        queue: false,
        name: name.to_owned(),
    };
    let queue = |name: &str| Dest {
        queue: true,
        name: name.to_owned(),
    };
    let payload = cell.payload;
    let window = settings
        .window
        .unwrap_or((4 * 1024 * 1024 / payload.max(1)).clamp(64, 4096) as u64);
    let flow = |pubs, subs, dest: Dest, mode, kind| Flow {
        pubs,
        subs,
        dest,
        mode,
        payload,
        duration: settings.duration,
        kind,
        window,
        max_per_pub: 50_000_000,
        slow: false,
        format: settings.format,
        keep_every: settings.keep_every.max(1),
        delivered: false,
        sub_names: Vec::new(),
    };
    use Scenario::*;
    let name = dest_name.as_str();
    let auto = Mode::AutoAck { prefetch: 1024 };
    let ack = Mode::Ack { prefetch: 256 };
    let mut measured = match cell.scenario {
        Publish => {
            let dest = if cell.variant == "queue" {
                queue(name)
            } else {
                topic(name)
            };
            let mut f = flow(1, 0, dest, Mode::Topic, Kind::Flood);
            if cell.variant == "queue" {
                // Nobody drains it: stop before the broker's limits (2 M messages, 512 MiB).
                f.max_per_pub = (256 * 1024 * 1024 / payload.max(1) as u64).min(1_000_000);
            }
            run_flow(driver, server, &f)?
        }
        Topic1x1 => run_flow(
            driver,
            server,
            &flow(1, 1, topic(name), Mode::Topic, Kind::Flood),
        )?,
        Topic1x4 => run_flow(
            driver,
            server,
            &flow(1, 4, topic(name), Mode::Topic, Kind::Flood),
        )?,
        Topic1x16 => run_flow(
            driver,
            server,
            &flow(1, 16, topic(name), Mode::Topic, Kind::Flood),
        )?,
        Topic4x1 => run_flow(
            driver,
            server,
            &flow(4, 1, topic(name), Mode::Topic, Kind::Flood),
        )?,
        Queue1 => run_flow(driver, server, &flow(1, 1, queue(name), auto, Kind::Flood))?,
        Queue4 => run_flow(driver, server, &flow(1, 4, queue(name), auto, Kind::Flood))?,
        Queue1Ack => run_flow(driver, server, &flow(1, 1, queue(name), ack, Kind::Flood))?,
        Queue4Ack => run_flow(driver, server, &flow(1, 4, queue(name), ack, Kind::Flood))?,
        Confirm => run_flow(
            driver,
            server,
            &flow(1, 1, queue(name), auto, Kind::Confirmed { outstanding: 64 }),
        )?,
        DurableConfirm => {
            let pubs: usize = cell.variant.parse().map_err(|_| "a publisher count")?;
            let confirmed = Kind::Confirmed { outstanding: 64 };
            let mut f = flow(pubs, 0, queue(name), Mode::Topic, confirmed);
            // Nobody drains it: at most 256 MiB per run, within the broker's limits.
            f.max_per_pub = (256 * 1024 * 1024 / payload.max(1) as u64 / pubs as u64).max(1);
            run_flow(driver, server, &f)?
        }
        DurableQueue4 => {
            let confirmed = Kind::Confirmed { outstanding: 64 };
            let mut f = flow(1, 4, queue(name), Mode::Ack { prefetch: 64 }, confirmed);
            f.delivered = true;
            run_flow(driver, server, &f)?
        }
        DurableBacklog => backlog::backlog(driver, server, queue(name), payload, settings)?,
        ClusterConfirm => {
            let pubs = 16;
            let confirmed = Kind::Confirmed { outstanding: 64 };
            let mut f = flow(pubs, 0, queue(name), Mode::Topic, confirmed);
            // Nobody drains it: at most 256 MiB per run, within the broker's limits.
            f.max_per_pub = (256 * 1024 * 1024 / payload.max(1) as u64 / pubs as u64).max(1);
            run_flow(driver, server, &f)?
        }
        ClusterFailover => {
            failover::failover(driver, server, queue(name), payload, settings.format)?
        }
        ClusterQueue4 => {
            let confirmed = Kind::Confirmed { outstanding: 64 };
            let mut f = flow(1, 4, queue(name), Mode::Ack { prefetch: 64 }, confirmed);
            f.delivered = true;
            run_flow(driver, server, &f)?
        }
        LatencyRate => {
            let rate = cell.rate.ok_or("latency-rate needs a rate")?;
            let mut f = flow(1, 1, topic(name), Mode::Topic, Kind::Paced { rate });
            f.duration = settings.rate_duration;
            run_flow(driver, server, &f)?
        }
        SlowConsumer => {
            let mut f = flow(1, 3, topic(name), Mode::Topic, Kind::Flood);
            f.duration = settings.slow_duration;
            f.slow = true;
            let mut m = run_flow(driver, server, &f)?;
            if m.broken.is_none() && m.server_peak_rss_mib > settings.rss_bound_mib {
                m.broken = Some(format!(
                    "server peak RSS {:.0} MiB is over the bound of {:.0} MiB",
                    m.server_peak_rss_mib, settings.rss_bound_mib
                ));
            }
            m
        }
        Rtt => rtt(driver, server, payload, settings.rtt_rounds, topic(name))?,
        WildcardFanout => {
            // Four patterns match `<name>.pub.temp`; 9,996 share its first token and
            // match nothing (half under a `*` beside a matching one).
            let mut f = flow(
                1,
                4,
                topic(&format!("{name}.pub.temp")),
                Mode::Topic,
                Kind::Flood,
            );
            f.sub_names = ["*.temp", ">", "pub.*", "pub.>"]
                .iter()
                .map(|p| format!("{name}.{p}"))
                .collect();
            let others: Vec<String> = (0..4998)
                .flat_map(|i| [format!("{name}.dev{i}.*"), format!("{name}.*.temp{i}")])
                .collect();
            let _held = crowd(server, &others)?;
            run_flow(driver, server, &f)?
        }
        RequestReply => {
            let requesters: usize = cell.variant.parse().map_err(|_| "a requester count")?;
            reqrep::run(server, payload, settings.duration, requesters, name)?
        }
        Udp => udp(server, payload, settings.duration, name)?,
    };
    measured.server_peak_rss_mib = server
        .pids
        .iter()
        .map(|&p| crate::server::peak_rss_of(p).unwrap_or(f64::NAN))
        .sum();
    measured.tls = driver.negotiated();
    Ok(measured)
}

mod backlog;
mod crowd;
mod unsupported;
pub(crate) use unsupported::unsupported;
mod failover;
mod flow;
mod probes;
mod publishing;
mod reqrep;
use crowd::crowd;
use flow::*;
use probes::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenario's 128 B cell with no variant and no rate.
    fn cell_of(scenario: Scenario) -> Cell {
        Cell {
            scenario,
            variant: "",
            payload: 128,
            rate: None,
        }
    }

    #[test]
    fn durable_and_cluster_scenarios_run_on_their_systems_only() {
        for scenario in Scenario::ALL {
            let cell = cell_of(scenario);
            for system in System::ALL {
                let why = unsupported(system, &cell);
                if system.durable() != scenario.durable() || system.cluster() != scenario.cluster()
                {
                    assert!(why.is_some(), "{} {}", system.name(), scenario.id());
                } else if system.durable() || system.cluster() {
                    assert!(why.is_none(), "{} {}", system.name(), scenario.id());
                }
            }
        }
    }

    #[test]
    fn tls_rows_run_topic_1_1_and_rtt_only() {
        for scenario in Scenario::ALL {
            let cell = cell_of(scenario);
            let runs = matches!(scenario, Scenario::Topic1x1 | Scenario::Rtt);
            for system in [System::AgoraLeanTls, System::NatsLeanTls] {
                let why = unsupported(system, &cell);
                assert_eq!(why.is_none(), runs, "{} {}", system.name(), scenario.id());
            }
        }
    }
}
