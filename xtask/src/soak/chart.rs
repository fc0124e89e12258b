//! The soak's chart: resident memory and memory used over time, against the budget and
//! the bound, as an SVG.

use super::*;

/// RSS and memory used over time against the budget and the bound, as an SVG.
pub(super) fn chart(samples: &[Sample]) -> String {
    let (w, h, pad) = (800.0, 360.0, 50.0);
    let t_max = samples.last().map_or(1.0, |s| s.t.max(1.0));
    let y_max = (bound() as f64 * 1.1).max(samples.iter().map(|s| s.rss).max().unwrap_or(0) as f64);
    let x = |t: f64| pad + t / t_max * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / y_max * (h - 2.0 * pad);
    let line = |f: &dyn Fn(&Sample) -> u64| {
        samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(f(s) as f64)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let hline = |v: u64, label: &str, color: &str| {
        format!(
            "<line x1=\"{pad}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{color}\" text-anchor=\"end\">{label}</text>",
            w - pad,
            y(v as f64),
            y(v as f64),
            w - pad,
            y(v as f64) - 4.0
        )
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    svg.push_str(&format!(
        "<line x1=\"{pad}\" x2=\"{pad}\" y1=\"{pad}\" y2=\"{:.1}\" stroke=\"black\"/><line x1=\"{pad}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
        h - pad,
        w - pad,
        h - pad,
        h - pad
    ));
    svg.push_str(&hline(
        bound(),
        &format!("bound {} MiB", bound() >> 20),
        "#c00",
    ));
    svg.push_str(&hline(
        BUDGET,
        &format!("memory budget {} MiB", BUDGET >> 20),
        "#666",
    ));
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>\n",
        line(&|s| s.rss)
    ));
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"2\" points=\"{}\"/>\n",
        line(&|s| s.used + s.read_used)
    ));
    svg.push_str(&format!(
        "<text x=\"{pad}\" y=\"20\" font-size=\"13\"><tspan fill=\"#1f77b4\">resident memory</tspan>, <tspan fill=\"#2ca02c\">memory.used + memory.read_used</tspan>, over {:.0} s (y: 0–{} MiB)</text>\n",
        t_max,
        (y_max as u64) >> 20
    ));
    svg.push_str("</svg>\n");
    svg
}
