//! What a run leaves behind: one JSON record per (system, scenario, variant, payload,
//! rate, run), a table per cell on stdout, and for the full suite the book's results
//! page with its SVG charts.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use crate::scenario::{Cell, Measured, Scenario, Settings};
use crate::System;

/// Percentiles kept for the latency curves.
const CURVE: [f64; 10] = [
    50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
];

/// One run of one cell on one system, as results.json holds it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    pub(crate) system: &'static str,
    pub(crate) scenario: &'static str,
    pub(crate) variant: &'static str,
    pub(crate) payload_bytes: usize,
    pub(crate) rate: Option<u64>,
    pub(crate) run: u32,
    /// `ok`, `failed` (a promise broken or the run could not finish) or `skipped`.
    pub(crate) status: &'static str,
    pub(crate) reason: Option<String>,
    pub(crate) messages: u64,
    pub(crate) published: u64,
    pub(crate) duration_s: f64,
    pub(crate) msgs_per_sec: f64,
    pub(crate) mb_per_sec: f64,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p90_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) p999_us: Option<f64>,
    pub(crate) max_us: Option<f64>,
    /// `[percentile, µs]` pairs for the latency curves.
    pub(crate) latency_curve_us: Vec<[f64; 2]>,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) client_dropped: u64,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) server_cpu_s_per_million: Option<f64>,
    /// The clients' CPU (the bench process) per million messages.
    #[serde(default)]
    pub(crate) client_cpu_s_per_million: Option<f64>,
    pub(crate) server_peak_rss_mib: Option<f64>,
    /// `durable-backlog`'s phases (its msgs/s, MB/s and duration are the drain's, its
    /// latencies the publish phase's confirms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backlog: Option<BacklogRecord>,
    /// What the run's connections negotiated: TLS version, cipher suite, key exchange
    /// (the TLS rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<String>,
}

/// Both phases of one `durable-backlog` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BacklogRecord {
    pub(crate) published: u64,
    pub(crate) publish_s: f64,
    pub(crate) publish_msgs_per_sec: f64,
    pub(crate) publish_mb_per_sec: f64,
    pub(crate) drained: u64,
    /// `None` when there was no drain (the publish phase broke the run).
    pub(crate) drain_s: Option<f64>,
    pub(crate) drain_msgs_per_sec: Option<f64>,
    pub(crate) drain_mb_per_sec: Option<f64>,
}

impl BacklogRecord {
    fn of(p: &crate::scenario::Phases, payload: usize) -> BacklogRecord {
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let mb = |r: f64| r * payload as f64 / 1e6;
        let publish_s = p.publish.as_secs_f64();
        let drain_s = p.drain.map(|d| d.as_secs_f64());
        BacklogRecord {
            published: p.published,
            publish_s,
            publish_msgs_per_sec: rate(p.published, publish_s),
            publish_mb_per_sec: mb(rate(p.published, publish_s)),
            drained: p.drained,
            drain_s,
            drain_msgs_per_sec: drain_s.map(|s| rate(p.drained, s)),
            drain_mb_per_sec: drain_s.map(|s| mb(rate(p.drained, s))),
        }
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Record {
    fn empty(system: System, cell: &Cell, run: u32, status: &'static str) -> Record {
        Record {
            system: system.name(),
            scenario: cell.scenario.id(),
            variant: cell.variant,
            payload_bytes: cell.payload,
            rate: cell.rate,
            run,
            status,
            reason: None,
            messages: 0,
            published: 0,
            duration_s: 0.0,
            msgs_per_sec: 0.0,
            mb_per_sec: 0.0,
            p50_us: None,
            p90_us: None,
            p99_us: None,
            p999_us: None,
            max_us: None,
            latency_curve_us: Vec::new(),
            lost: 0,
            duplicated: 0,
            client_dropped: 0,
            server_cpu_s: None,
            server_cpu_s_per_million: None,
            client_cpu_s_per_million: None,
            server_peak_rss_mib: None,
            backlog: None,
            tls: None,
        }
    }

    pub(crate) fn skipped(system: System, cell: &Cell, run: u32, reason: &str) -> Record {
        let mut r = Record::empty(system, cell, run, "skipped");
        r.reason = Some(reason.to_owned());
        r
    }

    pub(crate) fn failed(system: System, cell: &Cell, run: u32, reason: &str) -> Record {
        let mut r = Record::empty(system, cell, run, "failed");
        r.reason = Some(reason.to_owned());
        r
    }

    pub(crate) fn measured(system: System, cell: &Cell, run: u32, m: &Measured) -> Record {
        let mut r = Record::empty(system, cell, run, "ok");
        if let Some(why) = &m.broken {
            r.status = "failed";
            r.reason = Some(why.clone());
        }
        let secs = m.elapsed.as_secs_f64();
        r.messages = m.messages;
        r.published = m.published;
        r.duration_s = secs;
        r.msgs_per_sec = if secs > 0.0 {
            m.messages as f64 / secs
        } else {
            0.0
        };
        r.mb_per_sec = r.msgs_per_sec * cell.payload as f64 / 1e6;
        if let Some(h) = m.latency.as_ref().filter(|h| !h.is_empty()) {
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            r.p50_us = Some(us(0.50));
            r.p90_us = Some(us(0.90));
            r.p99_us = Some(us(0.99));
            r.p999_us = Some(us(0.999));
            r.max_us = Some(h.max() as f64 / 1000.0);
            r.latency_curve_us = CURVE.iter().map(|&p| [p, us(p / 100.0)]).collect();
        }
        r.lost = m.lost;
        r.duplicated = m.duplicated;
        r.client_dropped = m.client_dropped;
        r.server_cpu_s = finite(m.server_cpu_s);
        r.server_cpu_s_per_million = finite(m.server_cpu_s)
            .filter(|_| m.messages > 0)
            .map(|c| c / m.messages as f64 * 1e6);
        r.client_cpu_s_per_million = finite(m.client_cpu_s)
            .filter(|_| m.messages > 0)
            .map(|c| c / m.messages as f64 * 1e6);
        r.server_peak_rss_mib = finite(m.server_peak_rss_mib);
        r.backlog = m
            .backlog
            .as_ref()
            .map(|p| BacklogRecord::of(p, cell.payload));
        r.tls = m.tls.clone();
        r
    }

    pub(crate) fn is_cell(&self, c: &Cell) -> bool {
        self.scenario == c.scenario.id()
            && self.variant == c.variant
            && self.payload_bytes == c.payload
            && self.rate == c.rate
    }
}

/// results.json: the servers' versions, then one record per run.
pub(crate) fn write_json(
    path: &Path,
    versions: &[Version],
    records: &[Record],
) -> Result<(), String> {
    #[derive(Serialize)]
    struct Results<'a> {
        versions: &'a [Version],
        records: &'a [Record],
    }
    let json =
        serde_json::to_string_pretty(&Results { versions, records }).map_err(|e| e.to_string())?;
    std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// Median, min and max of a value over runs (also the ratios of `compare`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// Of the finite values in `v`; `None` if there are none.
    pub(crate) fn of(mut v: Vec<f64>) -> Option<Spread> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One system's runs of one cell, summarized.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub(crate) cell: Cell,
    pub(crate) system: System,
    /// `ok` if every run was, else `failed` or `skipped`.
    pub(crate) status: &'static str,
    pub(crate) reason: Option<String>,
    pub(crate) runs: usize,
    pub(crate) msgs: Option<Spread>,
    pub(crate) mb: Option<Spread>,
    pub(crate) p50: Option<Spread>,
    pub(crate) p90: Option<Spread>,
    pub(crate) p99: Option<Spread>,
    pub(crate) p999: Option<Spread>,
    pub(crate) max: Option<Spread>,
    pub(crate) curve: Vec<[f64; 2]>,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) cpu_per_m: Option<Spread>,
    pub(crate) client_cpu_per_m: Option<Spread>,
    pub(crate) rss: Option<Spread>,
    /// `durable-backlog`'s publish phase (msgs/s, MB/s, seconds) and drain time.
    pub(crate) publish_msgs: Option<Spread>,
    pub(crate) publish_mb: Option<Spread>,
    pub(crate) publish_s: Option<Spread>,
    pub(crate) drain_s: Option<Spread>,
    /// What the runs' connections negotiated (TLS rows), each distinct value once.
    pub(crate) tls: Option<String>,
}

pub(crate) fn summarize(order: &[Cell], records: &[Record]) -> Vec<Summary> {
    let mut out = Vec::new();
    for cell in order {
        for system in System::ALL {
            let runs: Vec<&Record> = records
                .iter()
                .filter(|r| r.system == system.name() && r.is_cell(cell))
                .collect();
            if runs.is_empty() {
                continue;
            }
            let status = if runs.iter().any(|r| r.status == "failed") {
                "failed"
            } else if runs.iter().all(|r| r.status == "skipped") {
                "skipped"
            } else {
                "ok"
            };
            let reason = runs.iter().find_map(|r| r.reason.clone());
            let ok: Vec<&Record> = runs.iter().copied().filter(|r| r.status == "ok").collect();
            let spread = |f: &dyn Fn(&Record) -> Option<f64>| {
                Spread::of(ok.iter().filter_map(|r| f(r)).collect())
            };
            let curve = CURVE
                .iter()
                .enumerate()
                .filter_map(|(i, &p)| {
                    Spread::of(
                        ok.iter()
                            .filter_map(|r| r.latency_curve_us.get(i).map(|x| x[1]))
                            .collect(),
                    )
                    .map(|s| [p, s.median])
                })
                .collect();
            out.push(Summary {
                cell: cell.clone(),
                system,
                status,
                reason,
                runs: ok.len(),
                msgs: spread(&|r| Some(r.msgs_per_sec)),
                mb: spread(&|r| Some(r.mb_per_sec)),
                p50: spread(&|r| r.p50_us),
                p90: spread(&|r| r.p90_us),
                p99: spread(&|r| r.p99_us),
                p999: spread(&|r| r.p999_us),
                max: spread(&|r| r.max_us),
                curve,
                lost: runs.iter().map(|r| r.lost).sum(),
                duplicated: runs.iter().map(|r| r.duplicated).sum(),
                cpu_per_m: spread(&|r| r.server_cpu_s_per_million),
                client_cpu_per_m: spread(&|r| r.client_cpu_s_per_million),
                rss: spread(&|r| r.server_peak_rss_mib),
                publish_msgs: spread(&|r| r.backlog.as_ref().map(|b| b.publish_msgs_per_sec)),
                publish_mb: spread(&|r| r.backlog.as_ref().map(|b| b.publish_mb_per_sec)),
                publish_s: spread(&|r| r.backlog.as_ref().map(|b| b.publish_s)),
                drain_s: spread(&|r| r.backlog.as_ref().and_then(|b| b.drain_s)),
                tls: {
                    let mut seen: Vec<&str> = ok.iter().filter_map(|r| r.tls.as_deref()).collect();
                    seen.sort_unstable();
                    seen.dedup();
                    (!seen.is_empty()).then(|| seen.join(", "))
                },
            });
        }
    }
    out
}

mod book;
mod charts;
mod tables;
mod versions;

pub(crate) use book::{write_book, Context};
use tables::{cell_title, cells, group_digits, markdown_table, rows};
pub(crate) use tables::{tables, tls_table, versus_nats, Style};
use versions::{first_line, note_for};
pub(crate) use versions::{versions, Version};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::scenario::Phases;

    #[test]
    fn backlog_phases_as_rates() {
        let phases = Phases {
            published: 1000,
            publish: Duration::from_secs(2),
            drained: 1000,
            drain: Some(Duration::from_millis(500)),
        };
        let r = super::BacklogRecord::of(&phases, 4096);
        assert_eq!(r.publish_msgs_per_sec, 500.0);
        assert_eq!(r.publish_mb_per_sec, 500.0 * 4096.0 / 1e6);
        assert_eq!(r.drain_msgs_per_sec, Some(2000.0));
        let refused = Phases {
            drain: None,
            ..phases
        };
        assert_eq!(super::BacklogRecord::of(&refused, 4096).drain_s, None);
    }
}
