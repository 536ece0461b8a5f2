"""Stacked daily bar charts as inline SVG, drawn on the server.

No script, no network, no inline style: fills and strokes are SVG presentation
attributes, so the page works under a Content-Security-Policy without 'unsafe-inline'.
Every series has a pattern as well as a colour (readable printed in grey or by a
colour-blind reader), the legend repeats the patterns, each bar segment has a <title>
with its day, series and count, and the page puts the numbers in a table beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from monitoring.health import DailyChart

WIDTH = 600
PLOT_HEIGHT = 200
LEFT, RIGHT, TOP = 56, 12, 14
AXIS_SPACE = 28
LEGEND_ROW = 20


@dataclass(frozen=True)
class Fill:
    colour: str
    # The pattern's marks, drawn in `colour` over a pale tile; "" is a solid fill.
    marks: str


# Distinct in colour and, for readers who cannot tell colours apart, in pattern.
FILLS = (
    Fill("#1f5f8b", ""),
    Fill("#2e7d32", '<path d="M0,8 L8,0" stroke-width="2"/>'),
    Fill("#b35900", '<circle cx="4" cy="4" r="1.8"/>'),
    Fill("#8e24aa", '<path d="M0,0 L8,8 M0,8 L8,0" stroke-width="1.4"/>'),
    Fill("#c62828", '<path d="M0,4 L8,4" stroke-width="2"/>'),
    Fill("#455a64", '<path d="M4,0 L4,8" stroke-width="2"/>'),
    Fill("#00838f", '<path d="M0,0 L8,8" stroke-width="2"/>'),
    Fill("#6d4c41", '<rect x="0" y="0" width="4" height="4"/><rect x="4" y="4" width="4" height="4"/>'),
)


def nice_ceiling(value: int) -> int:
    """The smallest round number (1, 1.5, 2, 3, 4, 5, 6 or 8 times 10^k) at or above `value`."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 1.5, 2, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= value and float(step * magnitude).is_integer():
            return int(step * magnitude)
    raise AssertionError("unreachable")


def _patterns(chart_id: str, count: int) -> list[str]:
    parts = []
    for n in range(count):
        fill = FILLS[n % len(FILLS)]
        if not fill.marks:
            continue
        parts.append(
            f'<pattern id="{chart_id}-f{n}" width="8" height="8" patternUnits="userSpaceOnUse">'
            f'<rect width="8" height="8" fill="#ffffff"/>'
            f'<g fill="{fill.colour}" stroke="{fill.colour}">{fill.marks}</g></pattern>'
        )
    return parts


def _paint(chart_id: str, n: int) -> str:
    fill = FILLS[n % len(FILLS)]
    return fill.colour if not fill.marks else f"url(#{chart_id}-f{n})"


def stacked_bars(chart: DailyChart, *, chart_id: str) -> SafeString:
    """The chart as an <svg> element; `chart_id` keeps its pattern ids unique on the page."""
    days, series = chart.days, chart.series
    totals = [sum(s.values[i] for s in series) for i in range(len(days))]
    top = nice_ceiling(max(totals, default=0))
    plot_width = WIDTH - LEFT - RIGHT
    slot = plot_width / max(1, len(days))
    bar = max(1.0, slot * 0.78)
    baseline = TOP + PLOT_HEIGHT
    height = baseline + AXIS_SPACE + LEGEND_ROW * len(series) + 6
    summary = ", ".join(f"{s.label} {s.total}" for s in series)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="health-chart" role="img" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{escape(chart.title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(f"{days[0]} to {days[-1]}: {summary}.")}</desc>',
        "<defs>",
        *_patterns(chart_id, len(series)),
        "</defs>",
    ]
    for fraction in (0, 0.5, 1):
        y = baseline - PLOT_HEIGHT * fraction
        label = f"{top * fraction:g}"
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c8c8c8"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#333">{label}</text>'
        )
    every = 7 if len(days) <= 31 else 14
    for i, day in enumerate(days):
        x = LEFT + slot * i + (slot - bar) / 2
        y = float(baseline)
        for n, s in enumerate(series):
            value = s.values[i]
            if not value:
                continue
            h = PLOT_HEIGHT * value / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{_paint(chart_id, n)}" '
                f'stroke="#222" stroke-width="0.4"><title>{escape(f"{day}: {s.label} {value}")}</title></rect>'
            )
        # Every week or fortnight, and the last day unless it would overlap the one before.
        if i % every == 0 or (i == len(days) - 1 and i % every >= every // 2):
            cx = LEFT + slot * i + slot / 2
            parts.append(
                f'<text x="{cx:.1f}" y="{baseline + 16}" text-anchor="middle" font-size="11" fill="#333">'
                f"{day:%m-%d}</text>"
            )
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{baseline}" y2="{baseline}" stroke="#333"/>')
    if not any(totals):
        parts.append(
            f'<text x="{LEFT + plot_width / 2:.1f}" y="{TOP + PLOT_HEIGHT / 2:.1f}" text-anchor="middle" '
            f'font-size="14" fill="#333">None in this period</text>'
        )
    for n, s in enumerate(series):
        y = baseline + AXIS_SPACE + LEGEND_ROW * n
        parts.append(
            f'<rect x="{LEFT}" y="{y}" width="28" height="14" fill="{_paint(chart_id, n)}" stroke="#222" '
            f'stroke-width="0.6"/><text x="{LEFT + 36}" y="{y + 11}" font-size="12" fill="#222">'
            f"{escape(s.label)}: {s.total}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every piece of text above is escaped)
