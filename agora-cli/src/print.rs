//! What agora-cli prints: the broker's destinations (`list`), its `STATS` document
//! (`stats`), and payloads one per line.

use super::*;

/// Every destination, a page (1,000) at a time, each page printed as it comes.
pub(crate) async fn print_list(client: &Client) -> Result<(), CliError> {
    let mut page = agora_client::StatsPage::default();
    let mut stdout = std::io::stdout().lock();
    // Bounded: each page moves `after` forward, and the broker has at most
    // --max-destinations of them; the count only guards against a broker that loops.
    for _ in 0..100_000 {
        let s = client.stats_page(page.clone()).await?;
        let mut out = String::new();
        for d in &s.destinations {
            out.push_str(&format!(
                "{}:{} depth={} unacked={} consumers={}\n",
                d.kind, d.name, d.depth, d.unacked, d.consumers
            ));
        }
        stdout.write_all(out.as_bytes())?;
        match s.page.next.as_deref().map(str::parse) {
            Some(Ok(next)) => page.after = Some(next),
            Some(Err(_)) | None => break,
        }
    }
    Ok(())
}

/// Every connection, a page (1,000) at a time: `STATS connections=1000` with one
/// destination per page, each page printed as it comes.
pub(crate) async fn print_connections(client: &Client) -> Result<(), CliError> {
    let mut page = agora_client::StatsPage {
        limit: Some(1),
        connections: Some(1000),
        ..agora_client::StatsPage::default()
    };
    let mut stdout = std::io::stdout().lock();
    // Bounded: each page moves `connections_after` forward, and the broker has at most
    // --max-connections of them; the count only guards against a broker that loops.
    for _ in 0..100_000 {
        let s = client.stats_page(page.clone()).await?;
        let Some(conns) = s.connections else {
            return Err(CliError::Other(
                "the broker listed no connections in STATS: it is older than this agora-cli".into(),
            ));
        };
        let mut out = String::new();
        for c in &conns.connections {
            out.push_str(&format!(
                "{} {} {} name={} user={} subs={} in={} out={}\n",
                c.id,
                c.address,
                c.protocol,
                c.name.as_deref().unwrap_or("-"),
                c.user.as_deref().unwrap_or("-"),
                c.subscriptions,
                c.bytes_in,
                c.bytes_out
            ));
        }
        stdout.write_all(out.as_bytes())?;
        match conns.page.next {
            Some(next) => page.connections_after = Some(next),
            None => break,
        }
    }
    Ok(())
}

/// Writes one payload and a newline to stdout, flushed so pipes see it at once.
pub(crate) fn print_line(payload: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(payload)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

pub(crate) async fn print_stats(client: &Client) -> Result<(), CliError> {
    let s = client.stats().await?;
    let mut out = String::new();
    out.push_str(&format!(
        "{} {}, up {:.1} s, clients: {} tcp, {} udp\n",
        s.server, s.version, s.uptime_s, s.clients.tcp, s.clients.udp
    ));
    let b = &s.broker;
    out.push_str(&format!(
        "memory: {} of {} budget bytes held, RSS {:.1} MiB, CPU {:.2} s; bytes in {} tcp / {} udp, out {}; rejected connections {}\n",
        s.memory.used,
        s.memory.limit,
        b.rss_bytes as f64 / (1024.0 * 1024.0),
        b.cpu_seconds,
        b.bytes_in_tcp,
        b.bytes_in_udp,
        b.bytes_out,
        b.connections_rejected
    ));
    if !b.errors.is_empty() {
        let list: Vec<String> = b.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        out.push_str(&format!("errors sent: {}\n", list.join(", ")));
    }
    if s.destinations.is_empty() {
        out.push_str("no destinations\n");
    } else {
        let w = s
            .destinations
            .iter()
            .map(|d| d.kind.len() + 1 + d.name.len())
            .max()
            .unwrap_or(0)
            .max(11);
        out.push_str(&format!(
            "{:<w$} {:>9} {:>9} {:>9} {:>12} {:>12} {:>9} {:>11} {:>9} {:>9}\n",
            "destination",
            "depth",
            "unacked",
            "consumers",
            "in",
            "out",
            "dropped",
            "redelivered",
            "p50 µs",
            "p99 µs"
        ));
        for d in &s.destinations {
            out.push_str(&format!(
                "{:<w$} {:>9} {:>9} {:>9} {:>12} {:>12} {:>9} {:>11} {:>9} {:>9}\n",
                format!("{}:{}", d.kind, d.name),
                d.depth,
                d.unacked,
                d.consumers,
                d.messages_in,
                d.messages_out,
                d.dropped,
                d.redelivered,
                d.latency.p50_us,
                d.latency.p99_us
            ));
        }
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}
