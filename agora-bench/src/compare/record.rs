//! What a comparison records: each run, each scenario's summary, the JSON written.

use super::*;

/// One run of one side.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Run {
    pub(super) scenario: &'static str,
    pub(super) pair: u32,
    pub(super) side: &'static str,
    /// Position in the schedule of its scenario (0-based).
    pub(super) slot: u32,
    pub(super) status: &'static str,
    pub(super) reason: Option<String>,
    pub(super) published: u64,
    pub(super) delivered: u64,
    pub(super) elapsed_s: f64,
    /// Delivered messages per second (summed over receivers, as in the suite).
    pub(super) msgs_per_s: f64,
    /// Published messages per second of the same run: what the ratios compare, so a
    /// chain that drops messages (`sample`) is not charged for what it dropped.
    pub(super) published_per_s: f64,
    pub(super) server_cpu_s: f64,
    pub(super) server_cpu_s_per_million: f64,
    pub(super) lost: u64,
    pub(super) duplicated: u64,
    pub(super) statsd_datagrams: u64,
    /// Latency percentiles, where the scenario measures them (`request-reply`: a
    /// request's round trip).
    pub(super) p50_us: Option<f64>,
    pub(super) p99_us: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(super) struct ScenarioSummary {
    pub(super) scenario: &'static str,
    /// B ÷ A of published messages per second, for each pair whose runs both kept
    /// their promise.
    pub(super) throughput_ratios: Vec<f64>,
    pub(super) throughput_ratio: Option<Spread>,
    /// B ÷ A of the broker's CPU seconds per million messages published.
    pub(super) cpu_ratios: Vec<f64>,
    pub(super) cpu_ratio: Option<Spread>,
    /// Published messages per second of each side.
    pub(super) a_published_per_s: Option<Spread>,
    pub(super) b_published_per_s: Option<Spread>,
    pub(super) failed_runs: usize,
}

#[derive(Debug, Serialize)]
pub(super) struct Side<'a> {
    pub(super) bin: String,
    pub(super) args: &'a str,
    pub(super) chain: Option<&'a str>,
    pub(super) config: Option<String>,
    pub(super) keep_every: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct Output<'a> {
    pub(super) label: &'a str,
    pub(super) commit: String,
    pub(super) agora_bin: String,
    pub(super) payload_bytes: u64,
    pub(super) format: Format,
    pub(super) pairs: u32,
    pub(super) duration_s: f64,
    pub(super) warmup: u64,
    pub(super) window: Option<u64>,
    pub(super) lean: bool,
    pub(super) schedule: &'static str,
    pub(super) a: Side<'a>,
    pub(super) b: Side<'a>,
    pub(super) loadavg_before: String,
    pub(super) loadavg_after: String,
    pub(super) started_unix_s: u64,
    pub(super) summaries: Vec<ScenarioSummary>,
    pub(super) runs: Vec<Run>,
}

pub(super) fn to_run(
    scenario: Scenario,
    pair: u32,
    side: &'static str,
    slot: u32,
    result: Result<scenario::Measured, String>,
    statsd_datagrams: u64,
) -> Run {
    let mut run = Run {
        scenario: scenario.id(),
        pair: pair + 1,
        side,
        slot,
        status: "ok",
        reason: None,
        published: 0,
        delivered: 0,
        elapsed_s: 0.0,
        msgs_per_s: f64::NAN,
        published_per_s: f64::NAN,
        server_cpu_s: f64::NAN,
        server_cpu_s_per_million: f64::NAN,
        lost: 0,
        duplicated: 0,
        statsd_datagrams,
        p50_us: None,
        p99_us: None,
    };
    match result {
        Err(e) => {
            run.status = "failed";
            run.reason = Some(e);
        }
        Ok(m) => {
            let secs = m.elapsed.as_secs_f64().max(1e-9);
            run.published = m.published;
            run.delivered = m.messages;
            run.elapsed_s = secs;
            run.msgs_per_s = m.messages as f64 / secs;
            run.published_per_s = m.published as f64 / secs;
            run.server_cpu_s = m.server_cpu_s;
            // Per million published: the work a chain that drops messages still does.
            run.server_cpu_s_per_million = m.server_cpu_s / (m.published.max(1) as f64 / 1e6);
            run.lost = m.lost;
            run.duplicated = m.duplicated;
            if let Some(h) = m.latency.as_ref().filter(|h| !h.is_empty()) {
                run.p50_us = Some(h.value_at_quantile(0.5) as f64 / 1e3);
                run.p99_us = Some(h.value_at_quantile(0.99) as f64 / 1e3);
            }
            if let Some(why) = m.broken {
                run.status = "failed";
                run.reason = Some(why);
            }
        }
    }
    run
}
