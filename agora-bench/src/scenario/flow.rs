//! Throughput runs: publishers and receivers on threads of their own, held within a
//! window of the slowest receiver, and what they prove.

use super::publishing::{confirmed, flood};
use super::*;

/// How the publishers publish.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// As fast as the window allows.
    Flood,
    /// `rate` messages a second in all, stamped with their intended send time.
    Paced { rate: u64 },
    /// Confirmed publishes, this many outstanding.
    Confirmed { outstanding: usize },
}

pub(super) struct Flow {
    pub(super) pubs: usize,
    pub(super) subs: usize,
    pub(super) dest: Dest,
    pub(super) mode: Mode,
    pub(super) payload: usize,
    pub(super) duration: Duration,
    pub(super) kind: Kind,
    pub(super) window: u64,
    pub(super) max_per_pub: u64,
    /// Add a subscriber that never reads (a plain socket, not a client library).
    pub(super) slow: bool,
    pub(super) format: wire::Format,
    /// Only every N-th message is meant to arrive (see [`Settings::keep_every`]).
    pub(super) keep_every: u64,
    /// With confirmed publishes and receivers: the run counts what the receivers got
    /// (its latency stays publish to confirm), and holds the publishers within the
    /// window, as a flood is.
    pub(super) delivered: bool,
    /// What each receiver subscribes to, when not `dest` (topic patterns that match
    /// the publishers' topic).
    pub(super) sub_names: Vec<String>,
}

impl Flow {
    /// What receiver `index` subscribes to.
    fn sub_dest(&self, index: usize) -> Dest {
        match self.sub_names.get(index) {
            Some(name) => Dest {
                queue: self.dest.queue,
                name: name.clone(),
            },
            None => self.dest.clone(),
        }
    }
}

/// Counters the roles share.
pub(super) struct Shared {
    /// When publishing starts.
    t0: OnceLock<Instant>,
    /// Messages published so far, all publishers together.
    pub(super) sent: AtomicU64,
    /// Messages each receiver has taken.
    pub(super) received: Vec<AtomicU64>,
    pub(super) queue: bool,
    /// Each message received stands for this many published (see `Flow::keep_every`).
    pub(super) keep_every: u64,
    /// Receivers notify it as they make progress; a publisher at its window waits on it.
    pub(super) progress: Event,
    /// Total published, once the publishers are done; `u64::MAX` until then.
    pub(super) final_sent: AtomicU64,
    /// Something failed: every role winds down.
    pub(super) abort: AtomicBool,
}

impl Shared {
    pub(super) fn new(subs: usize, queue: bool, keep_every: u64) -> Shared {
        Shared {
            t0: OnceLock::new(),
            sent: AtomicU64::new(0),
            received: (0..subs).map(|_| AtomicU64::new(0)).collect(),
            queue,
            keep_every,
            progress: Event::new(),
            final_sent: AtomicU64::new(u64::MAX),
            abort: AtomicBool::new(false),
        }
    }

    /// How far the receivers have got, in published messages: the slowest topic
    /// subscriber, or all queue consumers together.
    pub(super) fn progress(&self) -> u64 {
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
pub(super) const DRAIN_IDLE: Duration = Duration::from_secs(3);
/// How long a publisher waits at its window for any progress before giving up.
pub(super) const STALL: Duration = Duration::from_secs(10);

pub(super) struct SubOut {
    pub(super) seen: Seen,
    pub(super) hist: Histogram<u64>,
    pub(super) received: u64,
    pub(super) last: Option<Instant>,
    pub(super) dropped: u64,
}

pub(super) struct PubOut {
    pub(super) sent: u64,
    pub(super) end: Instant,
    pub(super) hist: Option<Histogram<u64>>,
}

pub(super) fn run_flow<D: Driver>(
    driver: &D,
    server: &ServerView,
    flow: &Flow,
) -> Result<Measured> {
    let shared = Arc::new(Shared::new(flow.subs, flow.dest.queue, flow.keep_every));
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
            if !(flow.delivered && flow.subs > 0) {
                m.messages = published;
                m.elapsed = end - t0;
            }
        }
        Ok(m)
    })
}

pub(super) fn subscriber<D: Driver>(
    driver: &D,
    index: usize,
    flow: &Flow,
    shared: &Shared,
    ready: mpsc::Sender<Result<()>>,
    hard_limit: Duration,
) -> Result<SubOut> {
    driver.block_on(async {
        let mut sub = match driver.subscriber(&flow.sub_dest(index), flow.mode).await {
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
            if (idle || loops.is_multiple_of(256)) && started.elapsed() > hard_limit {
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
                    if out.received.is_multiple_of(32) {
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

pub(super) fn publisher<D: Driver>(
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

/// A subscriber that subscribes over a plain socket and then never reads again, so the
/// broker itself (not a client library's buffer) meets a consumer that stopped.
pub(super) fn stalled_subscriber(server: &ServerView, name: &str) -> Result<TcpStream> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(&server.addr).map_err(|e| format!("slow subscriber: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let (hello, until): (Vec<u8>, &str) = match server.system {
        System::Agora
        | System::AgoraDedicated
        | System::AgoraLean
        | System::AgoraLeanHttp
        | System::AgoraDurable
        | System::AgoraDurableEvery => (format!("SUB #1 topic:{name} 1\r\n").into_bytes(), "OK #1"),
        System::Nats | System::NatsLean | System::Jetstream | System::JetstreamDefault => (
            format!("CONNECT {{\"verbose\":false}}\r\nSUB {name} 1\r\nPING\r\n").into_bytes(),
            "PONG",
        ),
        System::Redis | System::RedisLean => (
            format!("*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{name}\r\n", name.len()).into_bytes(),
            "subscribe",
        ),
        System::Raw => return Err("the relay has no slow-consumer run".into()),
        System::AgoraMqtt | System::Mosquitto => {
            return Err("the MQTT rows have no slow-consumer run".into())
        }
        System::AgoraLeanTls | System::NatsLeanTls => {
            return Err("the TLS rows have no slow-consumer run".into())
        }
        System::RabbitmqQuorum | System::RabbitmqClassic => {
            return Err("RabbitMQ runs the durable scenarios only".into())
        }
        System::AgoraCluster | System::JetstreamCluster | System::RabbitmqCluster => {
            return Err("the cluster rows run the cluster scenarios only".into())
        }
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
