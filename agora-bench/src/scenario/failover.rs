//! `cluster-failover`: one publisher with confirms, one message at a time, connected to
//! a node that does not lead the queue. After `STEADY` of confirms the process of the
//! node that leads it is killed (SIGKILL), and the publisher carries on: an attempt
//! that fails or takes longer than `ATTEMPT` (1 s) is given up, its connection made
//! again, and the message published anew, until confirms have flowed again for
//! `STEADY`.
//!
//! Each confirm's sample is the time since the one before, so `max` is the longest time
//! the publisher went without a confirm: the failover as a client sees it (from the
//! last confirm before the kill to the first after). The server's CPU is not measured
//! (one of its processes is gone).

use std::time::{Duration, Instant};

use super::*;

/// Confirms before the kill, and after the first confirm that follows it.
const STEADY: Duration = Duration::from_secs(2);
/// How long one publish may wait for its confirm before it is given up: far above a
/// confirm's time while a leader serves (milliseconds), and short enough that a
/// client library's own timeout (5 s for async-nats's JetStream acks) does not stand
/// in for the failover; it is the resolution of the figure.
const ATTEMPT: Duration = Duration::from_secs(1);
/// The longest the run waits for the queue to confirm again after the kill.
const LIMIT: Duration = Duration::from_secs(60);

pub(super) fn failover<D: Driver>(
    driver: &D,
    server: &ServerView,
    dest: Dest,
    payload: usize,
    format: wire::Format,
) -> Result<Measured> {
    let victim = server
        .leader
        .and_then(|i| server.pids.get(i).copied())
        .ok_or("cluster-failover: which node leads the queue is not known")?;
    driver.block_on(async {
        let ccpu0 = client_cpu();
        let start = Instant::now();
        let mut publisher: Option<D::Pub> = None;
        let mut hist = wire::histogram();
        let (mut confirmed, mut n) = (0u64, 0u64);
        let mut last = start;
        let mut killed: Option<Instant> = None;
        let mut back: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if killed.is_none() && now - start >= STEADY {
                kill(victim);
                killed = Some(Instant::now());
            }
            if back.is_some_and(|b| now - b >= STEADY) {
                break;
            }
            if killed.is_some_and(|k| back.is_none() && now - k > LIMIT) {
                return Err(format!(
                    "cluster-failover: no confirm within {LIMIT:?} of the leader's kill"
                ));
            }
            let p = match publisher.take() {
                Some(p) => p,
                None => match bounded(driver.publisher(&dest)).await {
                    Ok(p) => p,
                    Err(_) if killed.is_some() => {
                        async_io::Timer::after(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            n += 1;
            let body = format.encode(payload, 0, n, wire::now_ns());
            match bounded(p.publish_confirmed(body)).await {
                Ok(()) => {
                    let at = Instant::now();
                    let _ = hist.record((at - last).as_nanos() as u64);
                    last = at;
                    confirmed += 1;
                    if killed.is_some() && back.is_none() {
                        back = Some(at);
                    }
                    publisher = Some(p);
                }
                // A refusal (no leader yet), a timeout, a connection lost with its
                // node: a new connection, and the message again.
                Err(_) if killed.is_some() => {
                    drop(p);
                    async_io::Timer::after(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(p) = publisher {
            let _ = bounded(async { p.close().await }).await;
        }
        Ok(Measured {
            messages: confirmed,
            published: confirmed,
            elapsed: start.elapsed(),
            latency: Some(hist),
            server_cpu_s: f64::NAN,
            client_cpu_s: client_cpu() - ccpu0,
            ..Measured::default()
        })
    })
}

/// `f`, or an error once it has taken `ATTEMPT`.
async fn bounded<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    futures_lite::future::or(f, async {
        async_io::Timer::after(ATTEMPT).await;
        Err(format!("no answer within {ATTEMPT:?}"))
    })
    .await
}

/// SIGKILL to `pid`.
fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}
