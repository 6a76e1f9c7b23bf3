"""Figures for the console's metrics page: last N days of incidents, time to ack/resolve, delivery success."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select

from core.clock import utc
from core.config import SEVERITIES
from core.config import ConfigHolder
from core.db import Database
from core.models import Delivery, Incident
from core.rbac import Actor, Permission, require


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(pct / 100 * len(s) + 0.5)) - 1))
    return s[k]


@dataclass
class Stats:
    days: list[date]
    per_day: dict[date, dict[str, int]]
    """day -> severity -> incidents opened"""
    tta: dict[str, float | None]
    """median / p90 seconds to acknowledge"""
    ttr: dict[str, float | None]
    success: dict[str, tuple[int, int]]
    """channel -> (delivered, finished) for deliveries that reached an end state"""


async def collect(db: Database, *, now: datetime, days: int = 30) -> Stats:
    since = now - timedelta(days=days)
    day_list = [(now - timedelta(days=i)).date() for i in range(days - 1, -1, -1)]
    per_day = {d: {s: 0 for s in SEVERITIES} for d in day_list}
    tta: list[float] = []
    ttr: list[float] = []
    async with db.sessions() as s:
        rows = (await s.execute(select(Incident.created_at, Incident.severity, Incident.acknowledged_at,
                                       Incident.resolved_at).where(Incident.created_at >= since))).all()
        dl = (await s.execute(select(Delivery.channel, Delivery.status, func.count())
                              .where(Delivery.created_at >= since, Delivery.purpose != "surface",
                                     Delivery.status.in_(("delivered", "failed", "dead")))
                              .group_by(Delivery.channel, Delivery.status))).all()
    for created, sev, acked, resolved in rows:
        c = utc(created)
        if c is None:
            continue
        day = c.date()
        if day in per_day and sev in per_day[day]:
            per_day[day][sev] += 1
        if acked is not None:
            tta.append((utc(acked) - c).total_seconds())  # type: ignore[operator]
        if resolved is not None:
            ttr.append((utc(resolved) - c).total_seconds())  # type: ignore[operator]
    success: dict[str, tuple[int, int]] = {}
    for channel, status, n in dl:
        ok, total = success.get(channel, (0, 0))
        success[channel] = (ok + (n if status == "delivered" else 0), total + n)
    return Stats(day_list, per_day,
                 {"median": percentile(tta, 50), "p90": percentile(tta, 90), "count": float(len(tta))},
                 {"median": percentile(ttr, 50), "p90": percentile(ttr, 90), "count": float(len(ttr))},
                 dict(sorted(success.items())))


class StatsReads:
    """The statistics as `actor` (console stats page, anything else that shows them): the VIEW check is here."""

    def __init__(self, db: Database, config: ConfigHolder) -> None:
        self.db = db
        self.config = config

    async def collect(self, *, actor: Actor, now: datetime, days: int = 30) -> Stats:
        require(self.config.cfg, actor, Permission.VIEW)
        return await collect(self.db, now=now, days=days)
