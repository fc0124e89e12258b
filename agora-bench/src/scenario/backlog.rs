//! `durable-backlog`: a backlog published with confirms while nobody consumes, then
//! drained by one acknowledging consumer; each phase timed on its own.
//!
//! A broker that refuses part of the backlog (a limit, a memory budget) breaks the run
//! with the broker's own reason and the share it took; the drain is then not measured.

use super::publishing::confirmed;
use super::*;

/// The most each phase may take: past it the run is broken, never hung.
const PHASE_LIMIT: Duration = Duration::from_secs(600);
/// Confirmed publishes outstanding, as in the other durable scenarios.
const OUTSTANDING: usize = 64;
/// The consumer's prefetch, as in `queue-1-ack`.
const PREFETCH: u32 = 256;

pub(super) fn backlog<D: Driver>(
    driver: &D,
    server: &ServerView,
    dest: Dest,
    payload: usize,
    settings: &Settings,
) -> Result<Measured> {
    let count = (settings.backlog_bytes / payload.max(1) as u64).max(1);
    let mib = |n: u64| (n * payload as u64) as f64 / (1024.0 * 1024.0);
    let mut flow = Flow {
        pubs: 1,
        subs: 0,
        dest,
        mode: Mode::Ack { prefetch: PREFETCH },
        payload,
        duration: PHASE_LIMIT,
        kind: Kind::Confirmed {
            outstanding: OUTSTANDING,
        },
        window: u64::MAX,
        max_per_pub: count,
        slow: false,
        format: settings.format,
        keep_every: 1,
        delivered: false,
        sub_names: Vec::new(),
    };
    let cpu0 = server.cpu();
    let ccpu0 = client_cpu();
    let mut m = Measured::default();

    // Publish: one publisher, nobody consuming.
    let shared = Shared::new(0, true, 1);
    let (result, publish) = driver.block_on(async {
        let p = driver.publisher(&flow.dest).await?;
        let t0 = Instant::now();
        let result = confirmed(&p, &flow, &shared, t0 + PHASE_LIMIT, OUTSTANDING).await;
        let publish = t0.elapsed();
        let _ = p.close().await;
        Ok::<_, String>((result, publish))
    })?;
    let published = shared.sent.load(SeqCst);
    let mut phases = Phases {
        published,
        publish,
        ..Phases::default()
    };
    m.published = published;
    match result {
        Ok((_, hist)) => m.latency = Some(hist),
        Err(e) => {
            m.broken = Some(format!(
                "the backlog was refused after {published} of {count} messages ({:.0} of {:.0} MiB): {e}",
                mib(published),
                mib(count)
            ));
        }
    }
    if m.broken.is_none() && published < count {
        m.broken = Some(format!(
            "only {published} of {count} messages ({:.0} of {:.0} MiB) confirmed within {PHASE_LIMIT:?}",
            mib(published),
            mib(count)
        ));
    }

    // Drain: one consumer acknowledging each message, until it has them all (or none
    // came for a while: the rest are lost).
    if m.broken.is_none() {
        flow.subs = 1;
        let shared = Shared::new(1, true, 1);
        shared.final_sent.store(published, SeqCst);
        let (ready, _) = mpsc::channel();
        let t0 = Instant::now();
        let out = subscriber(driver, 0, &flow, &shared, ready, PHASE_LIMIT)?;
        phases.drained = out.received;
        phases.drain = Some(out.last.unwrap_or(t0).saturating_duration_since(t0));
        m.messages = out.received;
        m.elapsed = phases.drain.unwrap_or_default();
        (m.lost, m.duplicated) = out.seen.tally_kept(&[published], 1);
        if m.lost > 0 || m.duplicated > 0 || out.seen.garbled > 0 {
            m.broken = Some(format!(
                "{} lost, {} duplicated, {} garbled: every confirmed message must be drained exactly once",
                m.lost, m.duplicated, out.seen.garbled
            ));
        }
    }
    m.server_cpu_s = server.cpu() - cpu0;
    m.client_cpu_s = client_cpu() - ccpu0;
    m.backlog = Some(phases);
    Ok(m)
}
