"""Heartbeats (dead man's switches): a job that must ping every `interval` pages when it stops.

The deadline of each configured heartbeat lives in the `heartbeats` table, so a restart or another process
carries on where the last left off. A miss (no ping by last ping + interval + grace) opens one incident
through routing (event type `heartbeat.missed`, source `heartbeat`): the check locks the row (FOR UPDATE on
PostgreSQL, BEGIN IMMEDIATE on SQLite) and sets `incident_id` in the same transaction as the declare, so any
number of processes checking at once open it exactly once. The next ping resolves it with a RECOVERED
message (`heartbeat.recovered`). The APScheduler timer only decides when to check.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from apscheduler.triggers.date import DateTrigger
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import utc
from core.config import Heartbeat, format_duration
from core.errors import NotFound
from core.incident_store import RESOLVED
from core.incidents import IncidentService
from core.models import HeartbeatState, Incident
from core.timers import Ticker, TimerScheduler
from core.rbac import Actor

log = logging.getLogger("tocsin.heartbeats")

WATCHMAN = Actor("system:heartbeat", source="timer")
"""Who opens and resolves heartbeat incidents: thread entries and audit rows name it."""
MISSED = "heartbeat.missed"
RECOVERED = "heartbeat.recovered"
SOURCE = "heartbeat"


@dataclass(frozen=True)
class HeartbeatView:
    """One heartbeat for `tocsin heartbeat list`, the console and /metrics."""

    name: str
    interval: timedelta
    grace: timedelta
    last_ping_at: datetime | None
    deadline_at: datetime | None
    incident_id: int | None
    pings: int

    @property
    def missed(self) -> bool:
        return self.incident_id is not None


@dataclass(frozen=True)
class PingResult:
    name: str
    deadline_at: datetime
    recovered: str | None = None
    """The ref of the incident this ping resolved, if the heartbeat was missed."""


class Heartbeats:
    """Pings, checks and lists the configured heartbeats (config `heartbeats`)."""

    def __init__(self, service: IncidentService) -> None:
        self.service = service

    @property
    def db(self):  # type: ignore[no-untyped-def]
        return self.service.db

    def _config(self, name: str) -> Heartbeat:
        hb = self.service.cfg.heartbeat(name)
        if hb is None:
            raise NotFound(f"no heartbeat named {name!r} (config `heartbeats`)")
        return hb

    async def sync(self) -> int:
        """Give every configured heartbeat a row: a new one is due one interval + grace from now (a start is
        not a miss). Returns how many rows were added."""
        now = self.service.clock.now()
        async with self.db.sessions() as s:
            have = set((await s.execute(select(HeartbeatState.name))).scalars())
        added = 0
        for hb in self.service.cfg.heartbeats:
            if hb.name in have:
                continue
            try:
                async with self.db.transaction() as s:
                    s.add(HeartbeatState(name=hb.name, deadline_at=now + hb.allowed, pings=0))
                added += 1
            except IntegrityError:  # another process added it first
                pass
        return added

    async def _locked(self, s: AsyncSession, name: str) -> HeartbeatState | None:
        return (await s.execute(select(HeartbeatState).where(HeartbeatState.name == name)
                                .with_for_update())).scalars().first()

    async def ping(self, name: str, *, via: str) -> PingResult:
        """Record a ping: the deadline moves to now + interval + grace; a missed heartbeat recovers (its
        incident resolves with a RECOVERED message, in the same transaction)."""
        hb = self._config(name)
        svc = self.service
        now = svc.clock.now()
        recovered: str | None = None
        async with self.db.transaction() as s:
            row = await self._locked(s, name)
            if row is None:
                row = HeartbeatState(name=name, deadline_at=now + hb.allowed, pings=0)
                s.add(row)
            last = utc(row.last_ping_at)
            row.last_ping_at = now
            row.deadline_at = now + hb.allowed
            row.pings = (row.pings or 0) + 1
            if row.incident_id is not None:
                inc = await s.get(Incident, row.incident_id)
                if inc is not None and inc.state != RESOLVED:
                    since = f" (silent since {last:%Y-%m-%d %H:%M:%S} UTC)" if last else ""
                    out = await svc.resolve(inc.id, actor=WATCHMAN, session=s, event_type=RECOVERED,
                                            text=f"RECOVERED: heartbeat {name} pinged again via {via}{since}.")
                    # held open as flapping (core/flapping.py): healthy again, but not resolved yet
                    recovered = None if out.held else inc.ref
                row.incident_id = None
                row.missed_at = None
            await s.flush()
        await svc.events.publish_pending(s)
        if recovered:
            log.info("heartbeat.recovered", extra={"heartbeat": name, "incident": recovered, "via": via})
        return PingResult(name=name, deadline_at=now + hb.allowed, recovered=recovered)

    async def check(self) -> list[str]:
        """Open one incident for each heartbeat past its deadline that has none yet; returns their refs."""
        now = self.service.clock.now()
        configured = {hb.name for hb in self.service.cfg.heartbeats}
        async with self.db.sessions() as s:
            due = (await s.execute(select(HeartbeatState.name).where(
                HeartbeatState.deadline_at <= now, HeartbeatState.incident_id.is_(None)))).scalars().all()
        opened = []
        for name in due:
            if name in configured:  # a heartbeat removed from config keeps its row but never pages
                ref = await self._miss(name, now)
                if ref:
                    opened.append(ref)
        return opened

    async def _miss(self, name: str, now: datetime) -> str | None:
        hb = self._config(name)
        svc = self.service
        async with self.db.transaction() as s:
            row = await self._locked(s, name)
            if row is None or row.incident_id is not None or utc(row.deadline_at) > now:  # type: ignore[operator]
                return None  # another process opened it, or a ping came in between
            last = utc(row.last_ping_at)
            told = (f"last ping {last:%Y-%m-%d %H:%M:%S} UTC" if last else "no ping since the heartbeat was added")
            description = (f"Heartbeat {name} expected a ping every {format_duration(hb.interval)} "
                           f"(grace {format_duration(hb.grace)}); {told}."
                           + (f"\n{hb.description}" if hb.description else ""))
            held = await svc.find_by_correlation(f"heartbeat:{name}", session=s)
            if held is not None and held.flapping:  # missed again while held open as flapping: no new incident
                out = await svc.update(held.id, actor=WATCHMAN, text=f"MISSED again: {description}", session=s)
            else:
                out = await svc.declare(actor=WATCHMAN, title=f"Heartbeat missed: {name}", severity=hb.severity,
                                        description=description, source=SOURCE, event_type=MISSED,
                                        labels={"heartbeat": name}, payload={"heartbeat": name},
                                        correlation_key=f"heartbeat:{name}", session=s)
            if out.suppressed_by is not None or out.incident is None:
                # planned work: check again when the window ends (recorded once per window, not per tick)
                row.deadline_at = utc(out.suppressed_by.ends_at) if out.suppressed_by else now + hb.allowed
                return None
            row.incident_id = out.incident.id
            row.missed_at = now
            ref = out.incident.ref
        await svc.events.publish_pending(s)
        log.warning("heartbeat.missed", extra={"heartbeat": name, "incident": ref})
        return ref

    async def next_deadline(self) -> datetime | None:
        """The earliest deadline still able to fire (the timer's next wake-up)."""
        async with self.db.sessions() as s:
            when = (await s.execute(select(func.min(HeartbeatState.deadline_at))
                                    .where(HeartbeatState.incident_id.is_(None)))).scalar()
        return utc(when)

    async def list(self) -> list[HeartbeatView]:
        """Every configured heartbeat with its last ping, deadline and open miss."""
        async with self.db.sessions() as s:
            rows = {r.name: r for r in (await s.execute(select(HeartbeatState))).scalars()}
        out = []
        for hb in self.service.cfg.heartbeats:
            r = rows.get(hb.name)
            out.append(HeartbeatView(
                name=hb.name, interval=hb.interval, grace=hb.grace,
                last_ping_at=utc(r.last_ping_at) if r else None, deadline_at=utc(r.deadline_at) if r else None,
                incident_id=r.incident_id if r else None, pings=int(r.pings or 0) if r else 0))
        return out


class HeartbeatTimer:
    """Component: checks for missed heartbeats on APScheduler, at the next deadline and every
    `check_seconds` (for pings and deadlines written by other processes). Every process runs one; the row
    lock in Heartbeats.check makes each miss page once."""

    name = "heartbeat-timer"

    def __init__(self, heartbeats: Heartbeats, *, check_seconds: float = 5.0) -> None:
        self.heartbeats = heartbeats
        self.check_seconds = check_seconds
        self.scheduler: TimerScheduler | None = None
        self.ticker: Ticker | None = None
        self.opened: list[str] = []

    async def start(self) -> None:
        await self.heartbeats.sync()
        self.ticker = Ticker(self.run, seconds=self.check_seconds, job_id="heartbeat:check")
        self.scheduler = self.ticker.start()

    async def run(self) -> None:
        """One check, then arm a one-off job at the next deadline (so a miss pages on time, not on the tick)."""
        try:
            await self.heartbeats.sync()
            self.opened += await self.heartbeats.check()
            nxt = await self.heartbeats.next_deadline()
        except Exception:  # database down: the next tick tries again; deadlines are safe in the database
            log.warning("heartbeat.check.failed", exc_info=True)
            return
        if nxt is not None and self.ticker is not None and self.scheduler is not None and self.scheduler.running:
            delay = nxt - self.heartbeats.service.clock.now()
            if timedelta(0) < delay < timedelta(seconds=self.check_seconds):
                self.scheduler.add_job(self.ticker.tick, DateTrigger(datetime.now(timezone.utc) + delay),
                                       id="heartbeat:next", replace_existing=True)

    async def close(self) -> None:
        if self.ticker is not None:
            await self.ticker.close()
        self.ticker = None
        self.scheduler = None
