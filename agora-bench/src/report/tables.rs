//! The text and markdown tables: every cell, and Agora against nats-server.

use super::*;

pub(super) fn cell_title(c: &Cell) -> String {
    let mut t = c.scenario.id().to_owned();
    if !c.variant.is_empty() {
        t += &format!(" ({})", c.variant);
    }
    t += &format!(", {} B", c.payload);
    if let Some(r) = c.rate {
        t += &format!(", {} msg/s", group_digits(r as f64));
    }
    t
}

pub(super) fn group_digits(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn rate_with_spread(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!(
            "{} [{}–{}]",
            group_digits(s.median),
            group_digits(s.min),
            group_digits(s.max)
        ),
        None => "–".into(),
    }
}

fn us(s: Option<Spread>) -> String {
    match s {
        Some(s) if s.median >= 1000.0 => format!("{:.0}", s.median),
        Some(s) => format!("{:.1}", s.median),
        None => "–".into(),
    }
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}", a.median / b.median),
        _ => "–".into(),
    }
}

/// The rows of one cell's table: header, then one row per system. A release out of
/// upstream support says so beside its name.
pub(super) fn rows(cell_summaries: &[&Summary], versions: &[Version]) -> Vec<Vec<String>> {
    // The durable scenarios set every system beside Agora with its data directory.
    let durable = cell_summaries
        .first()
        .is_some_and(|s| s.cell.scenario.durable());
    let cluster = cell_summaries
        .first()
        .is_some_and(|s| s.cell.scenario.cluster());
    let reference = if cluster {
        System::AgoraCluster
    } else if durable {
        System::AgoraDurable
    } else {
        System::Agora
    };
    let agora = cell_summaries
        .iter()
        .find(|s| s.system == reference && s.status == "ok");
    let backlog = cell_summaries
        .first()
        .is_some_and(|s| s.cell.scenario == Scenario::DurableBacklog);
    let vs = format!("÷ {}", reference.name());
    let header: Vec<String> = if backlog {
        vec![
            "system".into(),
            "publish msgs/s [min–max]".into(),
            "publish MB/s".into(),
            "publish s".into(),
            "confirm p50 µs".into(),
            "confirm p99 µs".into(),
            "drain msgs/s [min–max]".into(),
            "drain MB/s".into(),
            "drain s".into(),
            "lost".into(),
            "dup".into(),
            "CPU s/M".into(),
            "client CPU s/M".into(),
            "peak RSS MiB".into(),
            format!("publish {vs}"),
            format!("drain {vs}"),
        ]
    } else {
        let mut h: Vec<String> = [
            "system",
            "msgs/s [min–max]",
            "MB/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "lost",
            "dup",
            "CPU s/M",
            "client CPU s/M",
            "peak RSS MiB",
        ]
        .map(str::to_owned)
        .to_vec();
        h.push(format!("msgs/s {vs}"));
        h.push(format!("p99 {vs}"));
        h
    };
    let mut rows = vec![header];
    for s in cell_summaries {
        let mut name = s.system.name().to_owned();
        if let Some(note) = note_for(versions, s.system) {
            name += &format!(" ({note})");
        }
        if s.status == "skipped" {
            rows.push(vec![
                name,
                format!("skipped: {}", s.reason.as_deref().unwrap_or("")),
            ]);
            continue;
        }
        if s.runs == 0 {
            rows.push(vec![
                name,
                format!("FAILED: {}", s.reason.as_deref().unwrap_or("")),
            ]);
            continue;
        }
        if s.status == "failed" {
            name += " (FAILED)";
        }
        let cpu = |c: Option<Spread>| c.map_or("–".into(), |c| format!("{:.2}", c.median));
        let secs = |c: Option<Spread>| match c {
            Some(c) if c.median < 10.0 => format!("{:.2}", c.median),
            Some(c) => format!("{:.1}", c.median),
            None => "–".into(),
        };
        let mb = |m: Option<Spread>| m.map_or("–".into(), |m| format!("{:.1}", m.median));
        let rss = s.rss.map_or("–".into(), |c| format!("{:.0}", c.median));
        rows.push(if backlog {
            vec![
                name,
                rate_with_spread(s.publish_msgs),
                mb(s.publish_mb),
                secs(s.publish_s),
                us(s.p50),
                us(s.p99),
                rate_with_spread(s.msgs),
                mb(s.mb),
                secs(s.drain_s),
                s.lost.to_string(),
                s.duplicated.to_string(),
                cpu(s.cpu_per_m),
                cpu(s.client_cpu_per_m),
                rss,
                ratio(s.publish_msgs, agora.and_then(|a| a.publish_msgs)),
                ratio(s.msgs, agora.and_then(|a| a.msgs)),
            ]
        } else {
            vec![
                name,
                rate_with_spread(s.msgs),
                mb(s.mb),
                us(s.p50),
                us(s.p90),
                us(s.p99),
                us(s.p999),
                us(s.max),
                s.lost.to_string(),
                s.duplicated.to_string(),
                cpu(s.cpu_per_m),
                cpu(s.client_cpu_per_m),
                rss,
                ratio(s.msgs, agora.and_then(|a| a.msgs)),
                ratio(s.p99, agora.and_then(|a| a.p99)),
            ]
        });
    }
    rows
}

pub(super) fn cells(summaries: &[Summary]) -> Vec<(Cell, Vec<&Summary>)> {
    let mut out: Vec<(Cell, Vec<&Summary>)> = Vec::new();
    for s in summaries {
        match out.iter_mut().find(|(c, _)| *c == s.cell) {
            Some((_, v)) => v.push(s),
            None => out.push((s.cell.clone(), vec![s])),
        }
    }
    out
}

/// Plain-text tables, one per cell.
pub(crate) fn tables(summaries: &[Summary], versions: &[Version]) -> String {
    let mut out = String::new();
    for (cell, group) in cells(summaries) {
        let rows = rows(&group, versions);
        let _ = writeln!(out, "\n== {}", cell_title(&cell));
        let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|i| {
                rows.iter()
                    .filter(|r| r.len() > 2)
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if row.len() == 2 && i == 1 {
                        c.clone()
                    } else {
                        format!("{:>w$}", c, w = widths[i])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
    }
    out
}

pub(super) fn markdown_table(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let cols = rows.first().map_or(0, Vec::len);
    for (i, row) in rows.iter().enumerate() {
        let mut cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        cells.resize(cols, String::new());
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let _ = writeln!(out, "|{}", "---|".repeat(cols));
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Text,
    Markdown,
}

/// Agora against nats-server at 128 B: the numbers later issues set their bars in.
pub(crate) fn versus_nats(summaries: &[Summary], style: Style) -> String {
    let find = |scenario: Scenario, system: System| measured_128(summaries, scenario, system);
    type Pick = fn(&Summary) -> Option<Spread>;
    let metrics: [(&str, Scenario, Pick, bool); 6] = [
        ("topic-1-1 msgs/s", Scenario::Topic1x1, |s| s.msgs, true),
        ("topic-1-4 msgs/s", Scenario::Topic1x4, |s| s.msgs, true),
        ("queue-4 msgs/s", Scenario::Queue4, |s| s.msgs, true),
        ("rtt p99 µs", Scenario::Rtt, |s| s.p99, false),
        (
            "topic-1-1 server CPU s/M msgs",
            Scenario::Topic1x1,
            |s| s.cpu_per_m,
            false,
        ),
        (
            "queue-4 server CPU s/M msgs",
            Scenario::Queue4,
            |s| s.cpu_per_m,
            false,
        ),
    ];
    let fmt = spread_text;
    let mut rows = vec![vec![
        "metric (128 B)".to_owned(),
        "agora (lean client) median [min–max]".to_owned(),
        "nats (lean client) median [min–max]".to_owned(),
        "agora ÷ nats (median)".to_owned(),
        "range of the ratio".to_owned(),
        "better".to_owned(),
    ]];
    for (label, scenario, pick, higher_better) in metrics {
        // The lean clients' rows: the brokers, not client libraries, bound them.
        let a = find(scenario, System::AgoraLean).and_then(pick);
        let n = find(scenario, System::NatsLean).and_then(pick);
        let (ratio, range) = match (a, n) {
            (Some(a), Some(n)) if n.median > 0.0 && n.min > 0.0 => (
                format!("{:.2}", a.median / n.median),
                format!("{:.2}–{:.2}", a.min / n.max, a.max / n.min),
            ),
            _ => ("–".into(), "–".into()),
        };
        rows.push(vec![
            label.to_owned(),
            a.map_or("–".into(), fmt),
            n.map_or("–".into(), fmt),
            ratio,
            range,
            if higher_better { "higher" } else { "lower" }.to_owned(),
        ]);
    }
    match style {
        Style::Markdown => markdown_table(&rows),
        Style::Text => text_table("agora vs nats-server at 128 B", &rows),
    }
}

/// Left-aligned columns under a `== title` line.
fn text_table(title: &str, rows: &[Vec<String>]) -> String {
    let mut out = format!("\n== {title}\n");
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// `a ÷ b` of the medians, with the lowest and highest run-to-run ratio in brackets.
fn ratio_with_range(a: Option<Spread>, b: Option<Spread>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 && b.min > 0.0 && b.max > 0.0 => format!(
            "{:.2} [{:.2}–{:.2}]",
            a.median / b.median,
            a.min / b.max,
            a.max / b.min
        ),
        _ => "–".into(),
    }
}

/// The TLS rows at 128 B: Agora against nats-server, both over TLS on one certificate
/// and driven by the same lean client, and what TLS costs each against its clear row.
/// Empty when the run has no TLS row.
pub(crate) fn tls_table(summaries: &[Summary], style: Style) -> String {
    let find = |scenario: Scenario, system: System| measured_128(summaries, scenario, system);
    if find(Scenario::Topic1x1, System::AgoraLeanTls).is_none()
        && find(Scenario::Rtt, System::AgoraLeanTls).is_none()
        && find(Scenario::Topic1x1, System::NatsLeanTls).is_none()
        && find(Scenario::Rtt, System::NatsLeanTls).is_none()
    {
        return String::new();
    }
    type Pick = fn(&Summary) -> Option<Spread>;
    let metrics: [(&str, Scenario, Pick, bool); 6] = [
        ("topic-1-1 msgs/s", Scenario::Topic1x1, |s| s.msgs, true),
        (
            "topic-1-1 server CPU s/M msgs",
            Scenario::Topic1x1,
            |s| s.cpu_per_m,
            false,
        ),
        (
            "topic-1-1 client CPU s/M msgs",
            Scenario::Topic1x1,
            |s| s.client_cpu_per_m,
            false,
        ),
        ("rtt p50 µs", Scenario::Rtt, |s| s.p50, false),
        ("rtt p99 µs", Scenario::Rtt, |s| s.p99, false),
        (
            "rtt server CPU s/M msgs",
            Scenario::Rtt,
            |s| s.cpu_per_m,
            false,
        ),
    ];
    let fmt = spread_text;
    let mut rows = vec![[
        "metric (128 B)",
        "agora-lean-tls median [min–max]",
        "nats-lean-tls median [min–max]",
        "agora ÷ nats, TLS [range]",
        "agora TLS ÷ clear [range]",
        "nats TLS ÷ clear [range]",
        "better",
    ]
    .map(str::to_owned)
    .to_vec()];
    for (label, scenario, pick, higher_better) in metrics {
        let get = |system| find(scenario, system).and_then(pick);
        let (at, nt) = (get(System::AgoraLeanTls), get(System::NatsLeanTls));
        let (ac, nc) = (get(System::AgoraLean), get(System::NatsLean));
        rows.push(vec![
            label.to_owned(),
            at.map_or("–".into(), fmt),
            nt.map_or("–".into(), fmt),
            ratio_with_range(at, nt),
            ratio_with_range(at, ac),
            ratio_with_range(nt, nc),
            if higher_better { "higher" } else { "lower" }.to_owned(),
        ]);
    }
    // What was negotiated, as each TLS row's runs recorded it.
    let mut notes = String::new();
    for system in [System::AgoraLeanTls, System::NatsLeanTls] {
        let mut seen: Vec<&str> = summaries
            .iter()
            .filter(|s| s.system == system)
            .filter_map(|s| s.tls.as_deref())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        if !seen.is_empty() {
            let _ = writeln!(notes, "{}: {}", system.name(), seen.join("; "));
        }
    }
    match style {
        Style::Markdown => {
            let mut out = markdown_table(&rows);
            if !notes.is_empty() {
                out += "\nNegotiated:\n\n";
                for line in notes.lines() {
                    let _ = writeln!(out, "- {line}");
                }
            }
            out
        }
        Style::Text => {
            let mut out = text_table(
                "TLS at 128 B: agora vs nats-server, and against clear text",
                &rows,
            );
            out += &notes;
            out
        }
    }
}

/// A spread as the comparison tables write it: the median and [min–max], with digits
/// grouped from 100 up, two decimals below.
fn spread_text(s: Spread) -> String {
    if s.median >= 100.0 {
        format!(
            "{} [{}–{}]",
            group_digits(s.median),
            group_digits(s.min),
            group_digits(s.max)
        )
    } else {
        format!("{:.2} [{:.2}–{:.2}]", s.median, s.min, s.max)
    }
}

/// The 128 B, no-variant cell of `scenario` on `system`, if it ran.
fn measured_128(summaries: &[Summary], scenario: Scenario, system: System) -> Option<&Summary> {
    summaries.iter().find(|s| {
        s.cell.scenario == scenario
            && s.cell.payload == 128
            && s.cell.variant.is_empty()
            && s.system == system
            && s.status != "skipped"
            && s.runs > 0
    })
}
