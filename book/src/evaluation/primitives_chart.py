#!/usr/bin/env python3
"""Draws primitives.svg from criterion's printed output of the primitives bench.

    cargo bench -p agora-server --bench primitives -- --warm-up-time 1 --measurement-time 3 \
        2>&1 | tee book/src/evaluation/primitives-run1.txt
    python3 book/src/evaluation/primitives_chart.py [primitives-run1.txt]

Reads criterion's output (by default primitives-run1.txt next to this script): each
benchmark's name and its `time: [low estimate high]` line, criterion's 95 % confidence
interval. Writes
primitives.svg: one bar per benchmark on a log scale, the interval as a whisker.
Standard library only; the SVG is written by hand so the book needs no plotting tool.
"""

import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


def parse(path):
    rows, name = [], None
    time_re = re.compile(
        r"time:\s+\[([\d.]+) (\S+) ([\d.]+) (\S+) ([\d.]+) (\S+)\]"
    )
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        m = time_re.search(line)
        if m:
            head = line[: m.start()].strip()
            bench = head or name
            lo, est, hi = (float(m.group(i)) * UNIT[m.group(i + 1)] for i in (1, 3, 5))
            rows.append((bench, lo, est, hi))
            name = None
        elif line and not line.startswith((" ", "Benchmarking", "Found", "Warning")):
            if re.match(r"^[\w./-]+$", line.strip()):
                name = line.strip()
    return rows


def fmt(ns):
    if ns >= 1000:
        return f"{ns / 1000:.3g} µs"
    return f"{ns:.3g} ns"


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "primitives-run1.txt")
    rows = parse(src)
    left, right, top, bar, gap = 330, 140, 40, 16, 6
    width = 900
    plot_w = width - left - right
    height = top + len(rows) * (bar + gap) + 50
    lo_dec, hi_dec = 1, 5  # 10 ns .. 100 µs
    def x(ns):
        v = (math.log10(max(ns, 10 ** lo_dec)) - lo_dec) / (hi_dec - lo_dec)
        return left + v * plot_w
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">'
        "Cost per operation (log scale; whisker: 95 % confidence interval)</text>",
    ]
    for d in range(lo_dec, hi_dec + 1):
        for k in (1, 2, 5):
            ns = k * 10 ** d
            if ns > 10 ** hi_dec:
                continue
            gx = x(ns)
            out.append(
                f'<line x1="{gx:.1f}" y1="{top - 5}" x2="{gx:.1f}" y2="{height - 40}" '
                f'stroke="{"#bbb" if k == 1 else "#eee"}"/>'
            )
            if k == 1:
                out.append(
                    f'<text x="{gx:.1f}" y="{height - 25}" text-anchor="middle">{fmt(ns)}</text>'
                )
    for i, (name, lo, est, hi) in enumerate(rows):
        y = top + i * (bar + gap)
        group = name.split("/")[0]
        colour = {
            "send_recv": "#4e79a7",
            "drain_256": "#59a14f",
            "spawn": "#f28e2b",
            "wake_round_trip": "#e15759",
            "payload": "#76b7b2",
            "registry_lookup": "#b07aa1",
        }.get(group, "#888")
        out.append(
            f'<text x="{left - 6}" y="{y + bar - 4}" text-anchor="end">{name}</text>'
        )
        out.append(
            f'<rect x="{left}" y="{y}" width="{x(est) - left:.1f}" height="{bar}" fill="{colour}"/>'
        )
        cy = y + bar / 2
        out.append(
            f'<line x1="{x(lo):.1f}" y1="{cy}" x2="{x(hi):.1f}" y2="{cy}" stroke="black"/>'
        )
        for v in (lo, hi):
            out.append(
                f'<line x1="{x(v):.1f}" y1="{cy - 4}" x2="{x(v):.1f}" y2="{cy + 4}" stroke="black"/>'
            )
        out.append(f'<text x="{x(hi) + 6:.1f}" y="{y + bar - 4}">{fmt(est)}</text>')
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">'
        "time per operation (drain_256: per batch of 256)</text>"
    )
    out.append("</svg>")
    with open(os.path.join(HERE, "primitives.svg"), "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote primitives.svg ({len(rows)} benchmarks)")


if __name__ == "__main__":
    main()
