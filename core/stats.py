"""The console metrics page's chart: incidents opened per day by severity. Every other figure on that page
(time to acknowledge/resolve, escalations, pages per person, delivery success) is core/reports.py's, the
same numbers `tocsin report` prints."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select

from core.clock import utc
from core.config import SEVERITIES, ConfigHolder
from core.db import Database
from core.models import Incident
from core.rbac import Actor, Permission, require
from core.reports import Report, build


@dataclass
class Stats:
    days: list[date]
    per_day: dict[date, dict[str, int]]
    """day -> severity -> incidents opened"""


async def collect(db: Database, *, now: datetime, days: int = 30) -> Stats:
    since = now - timedelta(days=days)
    day_list = [(now - timedelta(days=i)).date() for i in range(days - 1, -1, -1)]
    per_day = {d: {s: 0 for s in SEVERITIES} for d in day_list}
    async with db.sessions() as s:
        rows = (await s.execute(select(Incident.created_at, Incident.severity)
                                .where(Incident.created_at >= since, Incident.created_at <= now))).all()
    for created, sev in rows:
        c = utc(created)
        if c is not None and c.date() in per_day and sev in per_day[c.date()]:
            per_day[c.date()][sev] += 1
    return Stats(day_list, per_day)


class StatsReads:
    """The statistics as `actor` (console metrics page, `tocsin report`): the VIEW check is here."""

    def __init__(self, db: Database, config: ConfigHolder) -> None:
        self.db = db
        self.config = config

    async def collect(self, *, actor: Actor, now: datetime, days: int = 30) -> Stats:
        require(self.config.cfg, actor, Permission.VIEW)
        return await collect(self.db, now=now, days=days)

    async def report(self, *, actor: Actor, now: datetime, since: timedelta, by: str = "severity") -> Report:
        """Incidents, MTTA/MTTR, escalations, pages per person, delivery success (core/reports.py)."""
        require(self.config.cfg, actor, Permission.VIEW)
        return await build(self.db, self.config.cfg, now=now, since=since, by=by)
