//! The runs that are not flows: `udp` (datagrams in, loss counted) and `rtt` (one
//! message at a time).

use super::*;

/// `udp`: one UDP publisher floods a topic (frames packed into 1,400-byte datagrams,
/// no flow control: UDP has none) for `duration`; one TCP subscriber counts what
/// arrives. Reports the delivered rate and, as `lost`, what UDP dropped on the way
/// (socket buffers, the broker's per-source queue). Loss is expected here, so it breaks
/// no promise; duplicates would.
pub(super) fn udp(
    server: &ServerView,
    payload: usize,
    duration: Duration,
    topic: &str,
) -> Result<Measured> {
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

/// Sequential round trips: publish one message, wait until the other connection has it.
pub(super) fn rtt<D: Driver>(
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
