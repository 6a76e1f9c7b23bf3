"""Inline SVG charts drawn on the server (no JavaScript library, nothing fetched from the internet)."""
from __future__ import annotations

from datetime import date
from html import escape

SEV_COLORS = {"sev1": "#c0392b", "sev2": "#e67e22", "sev3": "#f1c40f", "sev4": "#7f8c8d"}


def stacked_bars(days: list[date], per_day: dict[date, dict[str, int]], *, width: int = 720,
                 height: int = 200) -> str:
    """Incidents opened per day, stacked by severity."""
    pad_l, pad_b, pad_t = 30, 24, 10
    top = max([sum(v.values()) for v in per_day.values()] + [1])
    bw = (width - pad_l) / max(1, len(days))
    scale = (height - pad_b - pad_t) / top
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="Incidents per day by severity">']
    for i in range(0, top + 1, max(1, top // 4)):
        y = height - pad_b - i * scale
        parts.append(f'<line x1="{pad_l}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end">{i}</text>')
    for idx, day in enumerate(days):
        x = pad_l + idx * bw
        y = height - pad_b
        for sev, n in per_day[day].items():
            if not n:
                continue
            h = n * scale
            y -= h
            parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(1.0, bw - 2):.1f}" height="{h:.1f}" '
                         f'fill="{SEV_COLORS[sev]}"><title>{day.isoformat()} {sev}: {n}</title></rect>')
        if idx % 5 == 0 or idx == len(days) - 1:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                         f'{day.strftime("%m-%d")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def hbars(items: list[tuple[str, float | None, str]], *, maximum: float | None = None, width: int = 480) -> str:
    """Horizontal bars: (label, value, value text). Missing values are drawn as 'no data'."""
    row = 26
    height = row * max(1, len(items)) + 6
    top = maximum or max([v for _, v, _ in items if v is not None] + [1.0])
    label_w, bar_w = 150, width - 150 - 90
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img">']
    for i, (label, value, text) in enumerate(items):
        y = 4 + i * row
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{escape(label)}</text>')
        if value is None:
            parts.append(f'<text x="{label_w}" y="{y + 16}" class="muted">no data</text>')
            continue
        w = bar_w * (value / top if top else 0)
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(1.0, w):.1f}" height="{row - 8}" class="bar"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)
