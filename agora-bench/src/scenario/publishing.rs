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

/// [`wait_window`] for confirmed publishes: it waits without blocking the thread, on
/// which the role's other publishes are waiting for their confirms (blocking it would
/// add the wait to their confirm latency).
async fn wait_window_async(shared: &Shared, window: u64) -> Result<()> {
    let ahead = |s: &Shared| s.sent.load(Acquire).saturating_sub(s.progress());
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
        futures_lite::future::or(listener, async {
            async_io::Timer::after(Duration::from_millis(50)).await;
        })
        .await;
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
