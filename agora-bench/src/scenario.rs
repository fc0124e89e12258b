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
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 14] = [
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
        }
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
        }
    }
}

/// Why `system` has no run of `cell`, if it has none.
pub(crate) fn unsupported(system: System, cell: &Cell) -> Option<&'static str> {
    use Scenario::*;
    match (system, cell.scenario) {
        (System::Nats | System::NatsLean, Udp) => Some("nats-server has no UDP transport"),
        (System::Redis | System::RedisLean, Udp) => Some("redis-server has no UDP transport"),
        (System::Raw, Udp) => Some("the null relay is TCP only"),
        (System::AgoraLean, Udp) => {
            Some("UDP is measured on the agora row (no client library in it)")
        }
        (System::RedisLean, Confirm) => {
            Some("the lean client has no concurrent confirmed publishes; the redis row has them")
        }
        (System::AgoraLean, Confirm) => {
            Some("the lean client publishes without confirms; the agora row measures them")
        }
        (System::Nats | System::NatsLean, Publish) if cell.variant == "queue" => {
            Some("core NATS keeps nothing for a queue group with no members")
        }
        (System::Nats | System::NatsLean, Queue1Ack | Queue4Ack) => {
            Some("core NATS has no consumer acknowledgements")
        }
        (System::Nats | System::NatsLean, Confirm) => Some("core NATS has no publisher confirms"),
        (System::Redis | System::RedisLean, Queue1Ack | Queue4Ack) => {
            Some("Redis lists have no consumer acknowledgements (BRPOP removes the element)")
        }
        (System::Raw, Publish) if cell.variant == "queue" => Some("the null relay keeps no queue"),
        (System::Raw, Queue1 | Queue4 | Queue1Ack | Queue4Ack) => {
            Some("a relay that does not parse cannot share a byte stream among competing consumers")
        }
        (System::Raw, Topic4x1) => {
            Some("a relay that does not parse cannot interleave four publishers' byte streams")
        }
        (System::Raw, Confirm) => Some("the null relay confirms nothing"),
        (System::Raw, SlowConsumer) => {
            Some("the null relay has no per-subscriber buffer: one stalled reader stalls it all")
        }
        _ => None,
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
}

/// What the run needs of the server process.
pub(crate) struct ServerView {
    pub(crate) system: System,
    pub(crate) addr: String,
    pub(crate) pid: u32,
}

impl ServerView {
    fn cpu(&self) -> f64 {
        crate::server::cpu_seconds(self.pid).unwrap_or(f64::NAN)
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
        Udp => udp(server, payload, settings.duration, name)?,
    };
    measured.server_peak_rss_mib = crate::server::peak_rss_of(server.pid).unwrap_or(f64::NAN);
    Ok(measured)
}

/// How the publishers publish.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// As fast as the window allows.
    Flood,
    /// `rate` messages a second in all, stamped with their intended send time.
    Paced { rate: u64 },
    /// Confirmed publishes, this many outstanding.
    Confirmed { outstanding: usize },
}

struct Flow {
    pubs: usize,
    subs: usize,
    dest: Dest,
    mode: Mode,
    payload: usize,
    duration: Duration,
    kind: Kind,
    window: u64,
    max_per_pub: u64,
    /// Add a subscriber that never reads (a plain socket, not a client library).
    slow: bool,
    format: wire::Format,
    /// Only every N-th message is meant to arrive (see [`Settings::keep_every`]).
    keep_every: u64,
}

/// Counters the roles share.
struct Shared {
    /// When publishing starts.
    t0: OnceLock<Instant>,
    /// Messages published so far, all publishers together.
    sent: AtomicU64,
    /// Messages each receiver has taken.
    received: Vec<AtomicU64>,
    queue: bool,
    /// Each message received stands for this many published (see `Flow::keep_every`).
    keep_every: u64,
    /// Receivers notify it as they make progress; a publisher at its window waits on it.
    progress: Event,
    /// Total published, once the publishers are done; `u64::MAX` until then.
    final_sent: AtomicU64,
    /// Something failed: every role winds down.
    abort: AtomicBool,
}

impl Shared {
    /// How far the receivers have got, in published messages: the slowest topic
    /// subscriber, or all queue consumers together.
    fn progress(&self) -> u64 {
        if self.received.is_empty() {
            return u64::MAX;
        }
        let received: u64 = if self.queue {
            self.received.iter().map(|r| r.load(Acquire)).sum()
        } else {
            self.received
                .iter()
                .map(|r| r.load(Acquire))
                .min()
                .unwrap_or(0)
        };
        received.saturating_mul(self.keep_every)
    }
}

/// How long receivers wait for more after the publishers finished.
const DRAIN_IDLE: Duration = Duration::from_secs(3);
/// How long a publisher waits at its window for any progress before giving up.
const STALL: Duration = Duration::from_secs(10);

struct SubOut {
    seen: Seen,
    hist: Histogram<u64>,
    received: u64,
    last: Option<Instant>,
    dropped: u64,
}

struct PubOut {
    sent: u64,
    end: Instant,
    hist: Option<Histogram<u64>>,
}

fn run_flow<D: Driver>(driver: &D, server: &ServerView, flow: &Flow) -> Result<Measured> {
    let shared = Arc::new(Shared {
        t0: OnceLock::new(),
        sent: AtomicU64::new(0),
        received: (0..flow.subs).map(|_| AtomicU64::new(0)).collect(),
        queue: flow.dest.queue,
        keep_every: flow.keep_every,
        progress: Event::new(),
        final_sent: AtomicU64::new(u64::MAX),
        abort: AtomicBool::new(false),
    });
    let hard_limit = flow.duration * 4 + Duration::from_secs(30);
    std::thread::scope(|scope| -> Result<Measured> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let subs: Vec<_> = (0..flow.subs)
            .map(|i| {
                let ready = ready_tx.clone();
                let shared = shared.clone();
                scope.spawn(move || subscriber(driver, i, flow, &shared, ready, hard_limit))
            })
            .collect();
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..flow.subs {
            match ready_rx.recv_timeout(Duration::from_secs(20)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => {
                    failure = failure.or(Some("a subscriber did not get ready in 20 s".into()))
                }
            }
        }
        let slow = if flow.slow && failure.is_none() {
            match stalled_subscriber(server, &flow.dest.name) {
                Ok(s) => Some(s),
                Err(e) => {
                    failure = Some(e);
                    None
                }
            }
        } else {
            None
        };
        if let Some(e) = failure {
            shared.abort.store(true, SeqCst);
            shared.final_sent.store(0, SeqCst);
            for s in subs {
                let _ = s.join();
            }
            return Err(e);
        }
        let barrier = Arc::new(Barrier::new(flow.pubs + 1));
        let pubs: Vec<_> = (0..flow.pubs)
            .map(|i| {
                let shared = shared.clone();
                let barrier = barrier.clone();
                scope.spawn(move || publisher(driver, i, flow, &shared, &barrier))
            })
            .collect();
        let cpu0 = server.cpu();
        let ccpu0 = client_cpu();
        let t0 = Instant::now();
        let _ = shared.t0.set(t0);
        barrier.wait();
        let mut sent = Vec::new();
        let mut end = t0;
        let mut confirm_hist: Option<Histogram<u64>> = None;
        let mut errors = Vec::new();
        for p in pubs {
            match p.join().map_err(|_| "a publisher panicked".to_owned()) {
                Ok(Ok(out)) => {
                    sent.push(out.sent);
                    end = end.max(out.end);
                    if let Some(h) = out.hist {
                        match &mut confirm_hist {
                            Some(all) => all.add(&h).map_err(|e| e.to_string())?,
                            None => confirm_hist = Some(h),
                        }
                    }
                }
                Ok(Err(e)) | Err(e) => {
                    errors.push(e);
                    sent.push(0);
                }
            }
        }
        let published: u64 = shared.sent.load(SeqCst);
        shared.final_sent.store(published, SeqCst);
        shared.progress.notify(usize::MAX);
        let mut outs = Vec::new();
        for s in subs {
            match s.join().map_err(|_| "a subscriber panicked".to_owned()) {
                Ok(Ok(out)) => outs.push(out),
                Ok(Err(e)) | Err(e) => errors.push(e),
            }
        }
        let cpu1 = server.cpu();
        let ccpu1 = client_cpu();
        drop(slow);
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let mut m = Measured {
            published,
            server_cpu_s: cpu1 - cpu0,
            client_cpu_s: ccpu1 - ccpu0,
            ..Measured::default()
        };
        if outs.is_empty() {
            m.messages = published;
            m.elapsed = end - t0;
        } else {
            m.messages = outs.iter().map(|o| o.received).sum();
            let last = outs.iter().filter_map(|o| o.last).max().unwrap_or(end);
            m.elapsed = last.max(end) - t0;
            let mut hist = wire::histogram();
            let mut garbled = 0;
            for o in &outs {
                hist.add(&o.hist).map_err(|e| e.to_string())?;
                garbled += o.seen.garbled;
                m.client_dropped += o.dropped;
            }
            m.latency = Some(hist);
            if flow.dest.queue {
                let mut all = Seen::new(flow.format);
                for o in &outs {
                    all.merge(&o.seen);
                }
                (m.lost, m.duplicated) = all.tally_kept(&sent, flow.keep_every);
            } else {
                for o in &outs {
                    let (l, d) = o.seen.tally_kept(&sent, flow.keep_every);
                    m.lost += l;
                    m.duplicated += d;
                }
            }
            if m.lost > 0 || m.duplicated > 0 || garbled > 0 {
                m.broken = Some(format!(
                    "{} lost, {} duplicated, {} garbled: every {} must arrive exactly once",
                    m.lost,
                    m.duplicated,
                    garbled,
                    if flow.dest.queue {
                        "queued message"
                    } else {
                        "subscriber's message (the window keeps the publisher within every buffer)"
                    }
                ));
            }
        }
        if let Some(h) = confirm_hist {
            // For confirms, the latency is publish -> confirmation.
            m.latency = Some(h);
            m.messages = published;
            m.elapsed = end - t0;
        }
        Ok(m)
    })
}

fn subscriber<D: Driver>(
    driver: &D,
    index: usize,
    flow: &Flow,
    shared: &Shared,
    ready: mpsc::Sender<Result<()>>,
    hard_limit: Duration,
) -> Result<SubOut> {
    driver.block_on(async {
        let mut sub = match driver.subscriber(&flow.dest, flow.mode).await {
            Ok(s) => {
                let _ = ready.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = ready.send(Err(e.clone()));
                return Err(e);
            }
        };
        let started = Instant::now();
        let mut out = SubOut {
            seen: Seen::new(flow.format),
            hist: wire::histogram(),
            received: 0,
            last: None,
            dropped: 0,
        };
        let mut idle_since = Instant::now();
        let mut loops = 0u64;
        let mut idle = false;
        let result = loop {
            if shared.abort.load(Relaxed) {
                break Ok(());
            }
            let target = shared.final_sent.load(Acquire);
            if target != u64::MAX {
                let have = if shared.queue {
                    shared.progress()
                } else {
                    out.received.saturating_mul(flow.keep_every)
                };
                if have >= target || idle_since.elapsed() > DRAIN_IDLE {
                    break Ok(());
                }
            }
            // The clock is read on every idle wait, and every 256 messages.
            loops += 1;
            if (idle || loops % 256 == 0) && started.elapsed() > hard_limit {
                break Err(format!(
                    "subscriber {index} still running after {hard_limit:?}"
                ));
            }
            // A client library that never returns from a receive must not hang the
            // suite: past the run's hard limit the receive is abandoned, and the run
            // fails with that reason.
            let next = futures_lite::future::or(sub.next(Duration::from_millis(100)), async {
                async_io::Timer::at(started + hard_limit).await;
                Err(format!(
                    "subscriber {index}: the client's receive did not return within {hard_limit:?}"
                ))
            })
            .await;
            idle = matches!(next, Ok(None));
            match next {
                Ok(Some(payload)) => {
                    // One clock read per message: the latency, the last arrival and
                    // the idle mark all use it.
                    let t = Instant::now();
                    if let Some(sent) = out.seen.note(&payload) {
                        let _ = out.hist.record(wire::ns_of(t).saturating_sub(sent).max(1));
                    }
                    out.received += 1;
                    shared.received[index].store(out.received, Release);
                    if out.received % 32 == 0 {
                        shared.progress.notify(usize::MAX);
                    }
                    out.last = Some(t);
                    idle_since = t;
                }
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        };
        shared.progress.notify(usize::MAX);
        out.dropped = sub.dropped();
        let _ = sub.close().await;
        if result.is_err() {
            shared.abort.store(true, SeqCst);
        }
        result.map(|()| out)
    })
}

fn publisher<D: Driver>(
    driver: &D,
    index: usize,
    flow: &Flow,
    shared: &Shared,
    barrier: &Barrier,
) -> Result<PubOut> {
    driver.block_on(async {
        let p = driver.publisher(&flow.dest).await;
        barrier.wait();
        let mut p = p?;
        let t0 = *shared.t0.get().expect("t0 is set before the barrier");
        let deadline = t0 + flow.duration;
        let result = match flow.kind {
            Kind::Confirmed { outstanding } => confirmed(&p, flow, shared, deadline, outstanding)
                .await
                .map(|(n, h)| (n, Some(h))),
            Kind::Flood | Kind::Paced { .. } => flood(&mut p, index, flow, shared, t0, deadline)
                .await
                .map(|n| (n, None)),
        };
        if result.is_err() {
            shared.abort.store(true, SeqCst);
        }
        let (sent, hist) = result?;
        p.push().await?;
        p.sync().await?;
        let end = Instant::now();
        p.close().await?;
        Ok(PubOut { sent, end, hist })
    })
}

async fn flood<P: Publisher>(
    p: &mut P,
    index: usize,
    flow: &Flow,
    shared: &Shared,
    t0: Instant,
    deadline: Instant,
) -> Result<u64> {
    let per_pub_rate = match flow.kind {
        Kind::Paced { rate } => Some(rate as f64 / flow.pubs as f64),
        _ => None,
    };
    // A paced run that falls behind still sends every message it intended (so none
    // escapes the latency count), but not forever.
    let hard_stop = deadline + flow.duration * 3 + Duration::from_secs(5);
    let mut n = 0u64;
    let result = loop {
        if n >= flow.max_per_pub || shared.abort.load(Relaxed) {
            break Ok(());
        }
        let stamp = if let Some(rate) = per_pub_rate {
            let intended = t0 + Duration::from_secs_f64(n as f64 / rate);
            if intended >= deadline {
                break Ok(());
            }
            let now = Instant::now();
            if now > hard_stop {
                break Ok(());
            }
            if intended > now {
                let gap = intended - now;
                if gap > Duration::from_micros(50) {
                    if let Err(e) = p.push().await {
                        break Err(e);
                    }
                    std::thread::sleep(intended.saturating_duration_since(Instant::now()));
                } else {
                    while Instant::now() < intended {
                        std::hint::spin_loop();
                    }
                }
            }
            Some(wire::ns_of(intended))
        } else {
            if n % 16 == 0 && Instant::now() >= deadline {
                break Ok(());
            }
            None
        };
        if let Err(e) = wait_window(p, shared, flow.window).await {
            break Err(e);
        }
        let stamp = stamp.unwrap_or_else(wire::now_ns);
        if let Err(e) = p
            .publish(flow.format.encode(flow.payload, index, n, stamp))
            .await
        {
            break Err(e);
        }
        shared.sent.fetch_add(1, Release);
        n += 1;
    };
    result.map(|()| n)
}

/// Waits while this run is a full window ahead of its receivers.
async fn wait_window<P: Publisher>(p: &mut P, shared: &Shared, window: u64) -> Result<()> {
    let ahead = |s: &Shared| s.sent.load(Acquire).saturating_sub(s.progress());
    if ahead(shared) < window {
        return Ok(());
    }
    p.push().await?;
    let mut last_progress = shared.progress();
    let mut since = Instant::now();
    loop {
        let listener = shared.progress.listen();
        if ahead(shared) < window {
            return Ok(());
        }
        if shared.abort.load(Relaxed) {
            return Err("aborted".into());
        }
        listener.wait_timeout(Duration::from_millis(50));
        let now_progress = shared.progress();
        if now_progress != last_progress {
            last_progress = now_progress;
            since = Instant::now();
        } else if since.elapsed() > STALL {
            return Err(format!(
                "stalled: receivers made no progress for {STALL:?} with {} messages outstanding",
                ahead(shared)
            ));
        }
    }
}

async fn confirmed<P: Publisher>(
    p: &P,
    flow: &Flow,
    shared: &Shared,
    deadline: Instant,
    outstanding: usize,
) -> Result<(u64, Histogram<u64>)> {
    let next = StdCell::new(0u64);
    let hist = RefCell::new(wire::histogram());
    let workers = (0..outstanding).map(|_| async {
        loop {
            let n = next.get();
            if n >= flow.max_per_pub || Instant::now() >= deadline || shared.abort.load(Relaxed) {
                return Ok::<(), String>(());
            }
            next.set(n + 1);
            let t = Instant::now();
            p.publish_confirmed(flow.format.encode(flow.payload, 0, n, wire::ns_of(t)))
                .await?;
            let _ = hist
                .borrow_mut()
                .record((t.elapsed().as_nanos() as u64).max(1));
            shared.sent.fetch_add(1, Release);
        }
    });
    let results = futures_util::future::join_all(workers).await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok((next.get(), hist.into_inner()))
}

/// Sequential round trips: publish one message, wait until the other connection has it.
/// `udp`: one UDP publisher floods a topic (frames packed into 1,400-byte datagrams,
/// no flow control: UDP has none) for `duration`; one TCP subscriber counts what
/// arrives. Reports the delivered rate and, as `lost`, what UDP dropped on the way
/// (socket buffers, the broker's per-source queue). Loss is expected here, so it breaks
/// no promise; duplicates would.
fn udp(server: &ServerView, payload: usize, duration: Duration, topic: &str) -> Result<Measured> {
    use futures_lite::StreamExt;
    let addr = server.addr.clone();
    let e = |e: agora_client::Error| format!("agora: {e}");
    let client = futures_lite::future::block_on(
        agora_client::Client::builder()
            .name("bench-udp-sub")
            .subscription_buffer(1 << 20)
            .connect(&addr),
    )
    .map_err(e)?;
    let mut sub = futures_lite::future::block_on(client.subscribe(topic)).map_err(e)?;
    let cpu0 = server.cpu();
    let ccpu0 = client_cpu();
    let t0 = Instant::now();
    let done = AtomicBool::new(false);
    let (sent, seen, last, hist) = std::thread::scope(|scope| -> Result<_> {
        let publisher = scope.spawn(|| -> Result<u64> {
            futures_lite::future::block_on(async {
                let mut udp = agora_client::UdpPublisher::connect(&addr)
                    .await
                    .map_err(e)?;
                let mut n = 0u64;
                while t0.elapsed() < duration {
                    let p = wire::encode(payload, 0, n, wire::now_ns());
                    udp.publish_topic(topic, p).await.map_err(e)?;
                    n += 1;
                }
                udp.flush().await.map_err(e)?;
                done.store(true, SeqCst);
                Ok(n)
            })
        });
        let mut seen = Seen::default();
        let mut hist = wire::histogram();
        let mut last = t0;
        futures_lite::future::block_on(async {
            loop {
                let next = futures_lite::future::or(async { sub.next().await }, async {
                    async_io::Timer::after(Duration::from_millis(500)).await;
                    None
                });
                match next.await {
                    Some(m) => {
                        last = Instant::now();
                        if let Some((_, _, sent_ns)) = wire::decode(m.payload()) {
                            let _ = hist.record(wire::now_ns().saturating_sub(sent_ns).max(1));
                        }
                        seen.note(m.payload());
                    }
                    // Nothing for half a second after the publisher finished: done.
                    None if done.load(SeqCst) => break,
                    None if t0.elapsed() > duration * 4 + Duration::from_secs(10) => break,
                    None => {}
                }
            }
        });
        let sent = publisher
            .join()
            .map_err(|_| "the UDP publisher panicked".to_owned())??;
        Ok((sent, seen, last, hist))
    })?;
    let (lost, duplicated) = seen.tally(&[sent]);
    let _ = futures_lite::future::block_on(client.close());
    let received = sent.saturating_sub(lost) + duplicated;
    Ok(Measured {
        messages: received,
        published: sent,
        elapsed: last
            .saturating_duration_since(t0)
            .max(Duration::from_millis(1)),
        latency: Some(hist),
        lost,
        duplicated,
        broken: (duplicated > 0).then(|| format!("{duplicated} messages arrived twice")),
        server_cpu_s: server.cpu() - cpu0,
        client_cpu_s: client_cpu() - ccpu0,
        ..Measured::default()
    })
}

fn rtt<D: Driver>(
    driver: &D,
    server: &ServerView,
    payload: usize,
    rounds: u64,
    dest: Dest,
) -> Result<Measured> {
    driver.block_on(async {
        let mut sub = driver.subscriber(&dest, Mode::Topic).await?;
        let mut p = driver.publisher(&dest).await?;
        let mut seen = Seen::default();
        let mut hist = wire::histogram();
        let (mut cpu0, mut ccpu0) = (0.0, 0.0);
        let mut t0 = Instant::now();
        // Publisher 1 warms up (connections, caches), publisher 0 is measured.
        let warm_up = 200.min(rounds);
        for (publisher, count) in [(1usize, warm_up), (0, rounds)] {
            if publisher == 0 {
                cpu0 = server.cpu();
                ccpu0 = client_cpu();
                t0 = Instant::now();
            }
            for n in 0..count {
                let t = Instant::now();
                p.publish(wire::encode(payload, publisher, n, wire::ns_of(t)))
                    .await?;
                p.push().await?;
                loop {
                    let Some(got) = sub.next(Duration::from_secs(2)).await? else {
                        return Err(format!("round {n}: nothing arrived within 2 s"));
                    };
                    if publisher == 0 {
                        seen.note(&got);
                    }
                    if wire::decode(&got).map(|(p, k, _)| (p, k)) == Some((publisher, n)) {
                        break;
                    }
                }
                if publisher == 0 {
                    let _ = hist.record((t.elapsed().as_nanos() as u64).max(1));
                }
            }
        }
        let elapsed = t0.elapsed();
        let cpu1 = server.cpu();
        let ccpu1 = client_cpu();
        p.close().await?;
        let _ = sub.close().await;
        let (lost, duplicated) = seen.tally(&[rounds]);
        Ok(Measured {
            messages: rounds,
            published: rounds,
            elapsed,
            latency: Some(hist),
            lost,
            duplicated,
            server_cpu_s: cpu1 - cpu0,
            client_cpu_s: ccpu1 - ccpu0,
            broken: (lost + duplicated > 0)
                .then(|| format!("{lost} lost, {duplicated} duplicated in round trips")),
            ..Measured::default()
        })
    })
}

/// A subscriber that subscribes over a plain socket and then never reads again, so the
/// broker itself (not a client library's buffer) meets a consumer that stopped.
fn stalled_subscriber(server: &ServerView, name: &str) -> Result<TcpStream> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(&server.addr).map_err(|e| format!("slow subscriber: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let (hello, until): (Vec<u8>, &str) = match server.system {
        System::Agora | System::AgoraLean => {
            (format!("SUB #1 topic:{name} 1\r\n").into_bytes(), "OK #1")
        }
        System::Nats | System::NatsLean => (
            format!("CONNECT {{\"verbose\":false}}\r\nSUB {name} 1\r\nPING\r\n").into_bytes(),
            "PONG",
        ),
        System::Redis | System::RedisLean => (
            format!("*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{name}\r\n", name.len()).into_bytes(),
            "subscribe",
        ),
        System::Raw => return Err("the relay has no slow-consumer run".into()),
    };
    s.write_all(&hello)
        .map_err(|e| format!("slow subscriber: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains(until) {
        if Instant::now() > deadline {
            return Err(format!("slow subscriber: no {until:?} from the server"));
        }
        match s.read(&mut buf) {
            Ok(0) => return Err("slow subscriber: connection closed".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("slow subscriber: {e}")),
        }
    }
    Ok(s)
}
