//! How a publisher publishes in a throughput run: flooding within its window, or with
//! confirms outstanding.

use super::*;

pub(super) async fn flood<P: Publisher>(
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
            if n.is_multiple_of(16) && Instant::now() >= deadline {
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
pub(super) async fn wait_window<P: Publisher>(
    p: &mut P,
    shared: &Shared,
    window: u64,
) -> Result<()> {
    if ahead(shared) < window {
        return Ok(());
    }
    p.push().await?;
    let mut watch = Watch::new(shared);
    loop {
        let listener = shared.progress.listen();
        if ahead(shared) < window {
            return Ok(());
        }
        watch.aborted(shared)?;
        listener.wait_timeout(Duration::from_millis(50));
        watch.stalled(shared)?;
    }
}

/// [`wait_window`] for confirmed publishes: it waits without blocking the thread, on
/// which the role's other publishes are waiting for their confirms (blocking it would
/// add the wait to their confirm latency).
async fn wait_window_async(shared: &Shared, window: u64) -> Result<()> {
    let mut watch = Watch::new(shared);
    loop {
        let listener = shared.progress.listen();
        if ahead(shared) < window {
            return Ok(());
        }
        watch.aborted(shared)?;
        futures_lite::future::or(listener, async {
            async_io::Timer::after(Duration::from_millis(50)).await;
        })
        .await;
        watch.stalled(shared)?;
    }
}

/// Messages sent and not yet received.
fn ahead(s: &Shared) -> u64 {
    s.sent.load(Acquire).saturating_sub(s.progress())
}

/// The receivers' progress while a publisher waits for its window.
struct Watch {
    last: u64,
    since: Instant,
}

impl Watch {
    fn new(shared: &Shared) -> Watch {
        Watch {
            last: shared.progress(),
            since: Instant::now(),
        }
    }

    fn aborted(&self, shared: &Shared) -> Result<()> {
        match shared.abort.load(Relaxed) {
            true => Err("aborted".into()),
            false => Ok(()),
        }
    }

    /// An error once the receivers have made no progress for [`STALL`].
    fn stalled(&mut self, shared: &Shared) -> Result<()> {
        let now = shared.progress();
        if now != self.last {
            self.last = now;
            self.since = Instant::now();
        } else if self.since.elapsed() > STALL {
            return Err(format!(
                "stalled: receivers made no progress for {STALL:?} with {} messages outstanding",
                ahead(shared)
            ));
        }
        Ok(())
    }
}

pub(super) async fn confirmed<P: Publisher>(
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
            if flow.delivered
                && shared.sent.load(Acquire).saturating_sub(shared.progress()) >= flow.window
            {
                wait_window_async(shared, flow.window).await?;
                continue;
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
