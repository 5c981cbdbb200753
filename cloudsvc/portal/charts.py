"""Charts drawn on the server as SVG (no script, no chart library): the RPO over the last
24 hours, the billing report's charge per VM, and a VM's recovery points on a timeline.
Each returns markup for a template; every label is escaped."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from markupsafe import Markup, escape

DAY_S = 24 * 3600
SAMPLES = 48   # one every 30 minutes


Sample = tuple[float, float | None, float | None]


def rpo_series(point_times: dict[str, list[float]], now: float) -> list[Sample]:
    """(time, worst RPO, median RPO) every half hour of the last 24 h over the VMs given (each
    with its recovery point times, sorted): at time t a VM's RPO is t minus its latest point
    at or before t. VMs with no point yet at t do not count at t; with none at all, the RPO
    at t is None (no data, drawn as a gap, never as zero)."""
    out = []
    for i in range(SAMPLES + 1):
        t = now - DAY_S + i * DAY_S / SAMPLES
        rpos = []
        for times in point_times.values():
            k = bisect.bisect_right(times, t)
            if k:
                rpos.append(t - times[k - 1])
        rpos.sort()
        out.append((t, rpos[-1] if rpos else None, rpos[len(rpos) // 2] if rpos else None))
    return out


def _hhmm(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M")


def _minutes(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def rpo_chart(series: Sequence[Sample], width: int = 640, height: int = 200) -> Markup:
    left, bottom, top, right = 56, 28, 12, 12
    w, h = width - left - right, height - top - bottom
    peak = max([s[1] for s in series if s[1] is not None] + [60.0])

    def lines(col: int) -> str:
        """One polyline per run of samples with data: a span without data is a gap."""
        runs: list[list[str]] = [[]]
        for i, s in enumerate(series):
            v = s[col]
            if v is None:
                runs.append([])
                continue
            runs[-1].append(f"{left + w * i / max(len(series) - 1, 1):.1f},{top + h - h * v / peak:.1f}")
        cls = "worst" if col == 1 else "median"
        return "".join(f'<polyline class="line {cls}" points="{" ".join(r)}"/>' if len(r) > 1 else
                       (f'<circle class="dot {cls}" cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="3"/>'
                        if r else "") for r in runs)

    now = series[-1][1]
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="rpo-title">',
             '<title id="rpo-title">Recovery point objective over the last 24 hours: worst and median '
             f'of the protected VMs; now worst {escape(_minutes(now) if now is not None else "unknown")}</title>']
    for frac in (0, 0.5, 1):
        y = top + h - h * frac
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}"/>'
                     f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{escape(_minutes(peak * frac))}</text>')
    for i in range(0, len(series), 12):
        x = left + w * i / max(len(series) - 1, 1)
        parts.append(f'<text class="axis" x="{x:.1f}" y="{height - 8}" text-anchor="middle">'
                     f'{escape(_hhmm(series[i][0]))}</text>')
    parts.append(lines(1) + lines(2))
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(bars: Iterable[tuple[str, Decimal]], title: str, unit: str = "") -> Markup:
    rows = list(bars)
    width, bar_h, gap, label_w = 640, 18, 6, 160
    height = max(len(rows), 1) * (bar_h + gap) + 10
    peak = max([float(v) for _, v in rows] + [1e-9])
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">']
    for i, (label, value) in enumerate(rows):
        y = 5 + i * (bar_h + gap)
        bw = (width - label_w - 90) * float(value) / peak
        parts.append(f'<text class="axis" x="{label_w - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>'
                     f'<rect class="bar" x="{label_w}" y="{y}" width="{bw:.1f}" height="{bar_h}"/>'
                     f'<text class="axis" x="{label_w + bw + 6:.1f}" y="{y + 13}">{escape(unit)}{value}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def timeline(times: Sequence[tuple[float, str]], now: float, width: int = 640) -> Markup:
    """Recovery points (time, kind) as ticks on the span from the oldest point to now."""
    height, left, right = 56, 10, 10
    if not times:
        return Markup('<p class="muted">No recovery points yet.</p>')
    start = min(t for t, _ in times)
    span = max(now - start, 1.0)
    parts = [f'<svg class="chart timeline" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{len(times)} recovery points from {escape(_hhmm(start))} to now">',
             f'<line class="grid" x1="{left}" y1="24" x2="{width - right}" y2="24"/>']
    for t, kind in times:
        x = left + (width - left - right) * (t - start) / span
        parts.append(f'<line class="tick {escape(kind)}" x1="{x:.1f}" y1="12" x2="{x:.1f}" y2="36">'
                     f'<title>{escape(datetime.fromtimestamp(t, UTC).isoformat())} ({escape(kind)})</title></line>')
    parts.append(f'<text class="axis" x="{left}" y="52">{escape(_hhmm(start))}</text>'
                 f'<text class="axis" x="{width - right}" y="52" text-anchor="end">now</text></svg>')
    return Markup("".join(parts))
