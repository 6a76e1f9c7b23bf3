"""Inline SVG charts drawn on the server (no JavaScript library, nothing fetched from the internet)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from html import escape
from typing import Any

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


PALETTE = ("#2e86de", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#c0392b", "#2c3e50", "#b7950b")


def oncall_timeline(segments: list[Any], start: datetime, end: datetime, tz: str, *, width: int = 960,
                    height: int = 96) -> str:
    """Who is on call over [start, end): one bar per stretch, a colour per person, overrides outlined and
    marked, nobody on call in grey, a tick per day (local midnight in the schedule's zone)."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    total = (end - start).total_seconds() or 1.0
    pad, bar_y, bar_h = 4, 22, 44

    def x(t: datetime) -> float:
        return pad + (width - 2 * pad) * max(0.0, min(1.0, (t - start).total_seconds() / total))

    people = sorted({s.contact for s in segments if s.contact})
    color = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(people)}
    parts = [f'<svg class="chart timeline" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="Who is on call, {escape(tz)}">']
    day = start.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    while day.astimezone(timezone.utc) < end:
        if day.astimezone(timezone.utc) >= start:
            xd = x(day.astimezone(timezone.utc))
            parts.append(f'<line x1="{xd:.1f}" x2="{xd:.1f}" y1="14" y2="{bar_y + bar_h + 4}" class="grid"/>'
                         f'<text x="{xd + 2:.1f}" y="12">{day.strftime("%a %d")}</text>')
        day = (day + timedelta(days=1, hours=2)).replace(hour=0)  # next local midnight, DST-safe
    for s in segments:
        x0, x1 = x(s.start), x(s.end)
        who = s.contact or "nobody"
        fill = color.get(s.contact or "", "#bdc3c7")
        cls = "override" if s.override_id is not None else "shift"
        title = (f"{who}: {s.start.astimezone(zone):%a %d %b %H:%M} - {s.end.astimezone(zone):%a %d %b %H:%M} "
                 f"{tz} ({s.source})")
        parts.append(f'<rect class="{cls}" x="{x0:.1f}" y="{bar_y}" width="{max(1.0, x1 - x0):.1f}" '
                     f'height="{bar_h}" fill="{fill}"'
                     + (' stroke="#000" stroke-width="2" stroke-dasharray="4 2"' if cls == "override" else "")
                     + f'><title>{escape(title)}</title></rect>')
        if x1 - x0 > 30:
            label = escape(who + (" (override)" if cls == "override" else ""))
            parts.append(f'<text x="{x0 + 4:.1f}" y="{bar_y + bar_h / 2 + 4:.1f}" class="on-bar">{label}</text>')
    ly = bar_y + bar_h + 20
    for i, p in enumerate(people):
        lx = pad + i * 120
        parts.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{color[p]}"/>'
                     f'<text x="{lx + 16}" y="{ly}">{escape(p)}</text>')
    parts.append("</svg>")
    return "".join(parts)
