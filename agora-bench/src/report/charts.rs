//! SVG only, and no font files: plotters lays text out with its built-in metrics and
//! the SVG names a generic `sans-serif` family, which whatever shows the page draws.

use std::path::Path;

use plotters::prelude::*;

use super::Summary;
use crate::scenario::Scenario;
use crate::System;

fn color(system: System) -> RGBColor {
    match system {
        System::Agora => RGBColor(0xd9, 0x48, 0x1c),
        System::AgoraDedicated => RGBColor(0xf1, 0x69, 0x13),
        System::AgoraLean => RGBColor(0xe6, 0xab, 0x02),
        System::AgoraLeanHttp => RGBColor(0x99, 0x73, 0x00),
        System::Nats => RGBColor(0x27, 0x6f, 0xbf),
        System::NatsLean => RGBColor(0x1b, 0x9e, 0x77),
        System::AgoraLeanTls => RGBColor(0xa6, 0x76, 0x1d),
        System::NatsLeanTls => RGBColor(0x0f, 0x5e, 0x47),
        System::Redis => RGBColor(0x8a, 0x3f, 0xb0),
        System::RedisLean => RGBColor(0xe7, 0x29, 0x8a),
        System::Raw => RGBColor(0x55, 0x55, 0x55),
        System::AgoraMqtt => RGBColor(0xb3, 0x00, 0x00),
        System::Mosquitto => RGBColor(0x3c, 0x5a, 0x14),
        System::AgoraDurable => RGBColor(0xa6, 0x36, 0x03),
        System::AgoraDurableEvery => RGBColor(0xfd, 0x8d, 0x3c),
        System::Jetstream => RGBColor(0x08, 0x45, 0x94),
        System::JetstreamDefault => RGBColor(0x6b, 0xae, 0xd6),
        System::RabbitmqQuorum => RGBColor(0xff, 0x66, 0x00),
        System::RabbitmqClassic => RGBColor(0xfd, 0xae, 0x6b),
        System::AgoraCluster => RGBColor(0x7f, 0x27, 0x04),
        System::JetstreamCluster => RGBColor(0x2c, 0x7f, 0xb8),
        System::RabbitmqCluster => RGBColor(0xcc, 0x4c, 0x02),
    }
}

fn e(err: impl std::fmt::Display) -> String {
    format!("chart: {err}")
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Messages and megabytes a second by payload size: topic-1-1 and publish.
pub(super) fn throughput(path: &Path, summaries: &[Summary]) -> Result<(), String> {
    let root = SVGBackend::new(path, (1100, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let panels = root.split_evenly((2, 2));
    let plots: [(Scenario, &str, bool); 4] = [
        (Scenario::Topic1x1, "topic-1-1: messages/s", false),
        (Scenario::Topic1x1, "topic-1-1: MB/s", true),
        (Scenario::Publish, "publish (topic): messages/s", false),
        (Scenario::Publish, "publish (topic): MB/s", true),
    ];
    for (area, (scenario, title, mb)) in panels.iter().zip(plots) {
        let mut sizes: Vec<usize> = summaries
            .iter()
            .filter(|s| s.cell.scenario == scenario && s.cell.variant.is_empty())
            .map(|s| s.cell.payload)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        let series: Vec<(System, Vec<(f64, f64)>)> = System::ALL
            .iter()
            .map(|&sys| {
                let pts = sizes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &size)| {
                        let s = summaries.iter().find(|s| {
                            s.system == sys
                                && s.cell.scenario == scenario
                                && s.cell.variant.is_empty()
                                && s.cell.payload == size
                                && s.runs > 0
                        })?;
                        let v = if mb { s.mb? } else { s.msgs? };
                        (v.median > 0.0).then_some((i as f64, v.median))
                    })
                    .collect();
                (sys, pts)
            })
            .filter(|(_, p): &(System, Vec<(f64, f64)>)| !p.is_empty())
            .collect();
        let all: Vec<f64> = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.1))
            .collect();
        if all.is_empty() {
            continue;
        }
        let lo = all.iter().copied().fold(f64::MAX, f64::min) / 2.0;
        let hi = all.iter().copied().fold(0.0, f64::max) * 2.0;
        let n = sizes.len().max(1) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.3f64..(n - 0.7), (lo..hi).log_scale())
            .map_err(e)?;
        let labels = sizes.clone();
        chart
            .configure_mesh()
            .x_labels(sizes.len().max(2))
            .x_label_formatter(&move |x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 {
                    labels
                        .get(i as usize)
                        .map(|&b| size_label(b))
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| super::group_digits(*y))
            .x_desc("payload")
            .draw()
            .map_err(e)?;
        for (sys, pts) in series {
            let c = color(sys);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(e)?
                .label(sys.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)
}

/// Latency percentile curves: rtt, and latency-rate at each rate.
pub(super) fn latency(path: &Path, summaries: &[Summary]) -> Result<(), String> {
    let mut panels: Vec<(String, Vec<&Summary>)> = Vec::new();
    let rtt: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.cell.scenario == Scenario::Rtt && !s.curve.is_empty())
        .collect();
    if !rtt.is_empty() {
        panels.push(("rtt (one message at a time)".into(), rtt));
    }
    let mut rates: Vec<u64> = summaries
        .iter()
        .filter(|s| s.cell.scenario == Scenario::LatencyRate)
        .filter_map(|s| s.cell.rate)
        .collect();
    rates.sort_unstable();
    rates.dedup();
    for r in rates {
        let group: Vec<&Summary> = summaries
            .iter()
            .filter(|s| {
                s.cell.scenario == Scenario::LatencyRate
                    && s.cell.rate == Some(r)
                    && !s.curve.is_empty()
            })
            .collect();
        if !group.is_empty() {
            panels.push((
                format!("latency-rate at {} msg/s", super::group_digits(r as f64)),
                group,
            ));
        }
    }
    let rows = panels.len().div_ceil(2).max(1);
    let root = SVGBackend::new(path, (1100, 400 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let areas = root.split_evenly((rows, 2));
    // x: "nines" of the percentile: 50 -> 0.3, 90 -> 1, 99 -> 2, 99.9 -> 3 ...
    let nines = |p: f64| -(1.0 - (p / 100.0).min(0.99999)).log10();
    for (area, (title, group)) in areas.iter().zip(panels) {
        let all: Vec<f64> = group
            .iter()
            .flat_map(|s| s.curve.iter().map(|c| c[1]))
            .filter(|v| *v > 0.0)
            .collect();
        if all.is_empty() {
            continue;
        }
        let lo = all.iter().copied().fold(f64::MAX, f64::min) / 2.0;
        let hi = all.iter().copied().fold(0.0, f64::max) * 2.0;
        let mut chart = ChartBuilder::on(area)
            .caption(&title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.2f64..5.1, (lo..hi).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_labels(6)
            .x_label_formatter(&|x| {
                let p = 100.0 * (1.0 - 10f64.powf(-x));
                if *x > 4.9 {
                    "max".into()
                } else {
                    format!("p{}", (p * 100.0).round() / 100.0)
                }
            })
            .y_desc("µs")
            .draw()
            .map_err(e)?;
        for s in group {
            let c = color(s.system);
            let pts: Vec<(f64, f64)> = s
                .curve
                .iter()
                .filter(|p| p[1] > 0.0)
                .map(|p| (if p[0] >= 100.0 { 5.0 } else { nines(p[0]) }, p[1]))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(e)?
                .label(s.system.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)
}
