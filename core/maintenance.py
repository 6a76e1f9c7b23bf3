"""Maintenance windows: planned work that must not page, and must end.

While a window is active, an inbound event it matches (events API, Alertmanager, a missed heartbeat) is
recorded in `maintenance_suppressed`, counted and audited, but opens no incident and pages nobody. When a
window starts, the open, unacknowledged incidents it matches have their escalation paused (what was left
of the wait is kept on the window) and their queued escalation pages cancelled; when it ends (early, or at
`ends_at`, which never lies more than maintenance.max_duration ahead), those still open and unacknowledged
resume with the wait they had left. Starting and ending are compare-and-set on the window row, so the timer
of every process may try and exactly one does it. Matching is a pure function of (match, event).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.clock import utc
from core.config import Config, ScheduledMaintenance, format_duration, parse_match
from core.db import per_transaction
from core.delivery.queue import cancel_escalation_pages
from core.errors import InvalidInput, InvalidTransition, NotFound
from core.events import IncidentEvent
from core.metrics import MAINTENANCE_SUPPRESSED
from core.models import Incident, MaintenanceWindow, SuppressedEvent
from core.rbac import Actor, Permission, require
from core.timers import Ticker, TimerScheduler
from core.routing import RouteEvent, incident_event, lookup

log = logging.getLogger("tocsin.maintenance")

SCHEDULER = Actor("system:maintenance", source="timer")
"""Who starts scheduled windows and ends expired ones."""


# --- pure matching -----------------------------------------------------------------------------------


def matches(match: dict[str, str], event: RouteEvent) -> bool:
    """Every `key=value` of the window equals the event's value at that dotted path (any case); an empty
    match takes everything."""
    view = event.as_dict()
    for path, want in match.items():
        got = lookup(view, path)
        if not isinstance(got, (str, int, float, bool)) or str(got).lower() != want.lower():
            return False
    return True


def describe_match(match: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in match.items()) or "everything"


def inbound(actor: Actor) -> bool:
    """Events from systems (API keys, Alertmanager, heartbeats) are suppressible; a person who declares an
    incident during maintenance means it."""
    return actor.platform in ("api", "system")


def occurrence(win: ScheduledMaintenance, now: datetime) -> datetime | None:
    """The start of the occurrence of a scheduled window that covers `now`, if any."""
    if win.start is not None:
        start = utc(win.start)
        return start if start is not None and start <= now < start + win.duration else None
    trigger = CronTrigger.from_crontab(win.cron or "", timezone=ZoneInfo(win.timezone))
    start = trigger.get_next_fire_time(None, now - win.duration)
    if start is None:
        return None
    start = start.astimezone(timezone.utc)
    return start if start <= now < start + win.duration else None


# --- the service -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowView:
    """A window with what it suppressed, for chat, CLI and console."""

    window: MaintenanceWindow
    recent: list[SuppressedEvent]

    def line(self, now: datetime) -> str:
        w = self.window
        left = utc(w.ends_at) - now  # type: ignore[operator]
        state = (f"ended {utc(w.ended_at):%Y-%m-%d %H:%M} UTC" if w.ended_at else
                 f"active, ends {utc(w.ends_at):%Y-%m-%d %H:%M} UTC (in {format_duration(max(left, timedelta(0)))})")
        text = (f"{w.ref} [{describe_match(w.match)}] {state}; suppressed {w.suppressed} event(s), "
                f"paused {len(w.paused or {})} escalation(s); by {w.created_by}"
                + (f": {w.reason}" if w.reason else ""))
        for ev in self.recent:
            text += f"\n    {utc(ev.at):%H:%M:%S} {ev.event_type} from {ev.source}: {ev.title[:120]}"
        return text


class Maintenance:
    """Start, end, list windows; ask whether an event is suppressed (inside the caller's transaction)."""

    def __init__(self, service: Any) -> None:
        # an IncidentService (not imported: core.incidents imports this module for `suppressing`)
        self.service = service

    @property
    def cfg(self) -> Config:
        return self.service.cfg

    async def start(self, *, actor: Actor, duration: timedelta, match: str | dict[str, str] = "",
                    reason: str = "", schedule_key: str | None = None,
                    starts_at: datetime | None = None) -> MaintenanceWindow:
        """Open a window now (or at `starts_at`, a scheduled occurrence) for `duration`, at most
        maintenance.max_duration; pause matching escalations."""
        require(self.cfg, actor, Permission.MANAGE_MAINTENANCE)
        try:
            wanted = parse_match(match) if isinstance(match, str) else dict(match)
        except ValueError as exc:
            raise InvalidInput(f"match: {exc}") from None
        limit = self.cfg.maintenance.max_duration
        if duration <= timedelta(0):
            raise InvalidInput("a maintenance window needs a duration, like 2h")
        if duration > limit:
            raise InvalidInput(f"a maintenance window lasts at most {format_duration(limit)} "
                               "(maintenance.max_duration); end it and start another if the work runs long")
        svc = self.service
        now = svc.clock.now()
        begin = starts_at or now
        events: list[IncidentEvent] = []
        async with svc.db.transaction() as s:
            win = MaintenanceWindow(starts_at=begin, ends_at=begin + duration, match=wanted,
                                    reason=reason.strip()[:500], created_by=actor.identity, created_at=now,
                                    schedule_key=schedule_key, suppressed=0, paused={})
            s.add(win)
            await s.flush()
            paused = await self._pause(s, win, now, events, actor)
            await svc.audit.append(s, actor=actor.identity, source=actor.source, action="maintenance.start",
                                   resource=win.ref, now=now, details={
                                       "match": wanted, "reason": win.reason, "ends_at": win.ends_at.isoformat(),
                                       "paused": sorted(int(i) for i in paused), "schedule_key": schedule_key})
        for ev in events:
            await svc.events.publish(ev)
        log.info("maintenance.started", extra={"window": win.ref, "match": describe_match(wanted),
                                               "paused": len(paused), "actor": actor.identity})
        return win

    async def _pause(self, s: AsyncSession, win: MaintenanceWindow, now: datetime,
                     events: list[IncidentEvent], actor: Actor) -> dict[str, float]:
        rows = (await s.execute(select(Incident).where(
            Incident.state == "open", Incident.acknowledged_at.is_(None),
            Incident.next_escalation_at.is_not(None)).with_for_update())).scalars().all()
        paused: dict[str, float] = {}
        for inc in rows:
            if not matches(win.match, incident_event(inc, "escalate")):
                continue
            left = max(0.0, (utc(inc.next_escalation_at) - now).total_seconds())  # type: ignore[operator]
            await self.service._cas(s, inc, next_escalation_at=None)
            cancelled = await cancel_escalation_pages(s, incident_id=inc.id, now=now)
            paused[str(inc.id)] = left
            MAINTENANCE_SUPPRESSED.labels(kind="escalation").inc()
            events.append(IncidentEvent("maintenance", inc.id, None, actor.identity, 0, inc.state, inc.state,
                                        stop_paging=True))
            log.info("maintenance.escalation.paused", extra={"window": win.ref, "incident": inc.ref,
                                                             "cancelled_pages": cancelled})
        win.paused = {**(win.paused or {}), **paused}
        return paused

    async def end(self, ref: str | int, *, actor: Actor) -> MaintenanceWindow:
        """End a window early (MANAGER+), or at its end (the timer): paused escalations resume."""
        wid = parse_window(ref)
        if actor != SCHEDULER:
            require(self.cfg, actor, Permission.MANAGE_MAINTENANCE)
        svc = self.service
        now = svc.clock.now()
        events: list[IncidentEvent] = []
        async with svc.db.transaction() as s:
            win = (await s.execute(select(MaintenanceWindow).where(MaintenanceWindow.id == wid)
                                   .with_for_update())).scalars().first()
            if win is None:
                raise NotFound(f"no maintenance window M-{wid}")
            if win.ended_at is not None:
                raise InvalidTransition(f"{win.ref} already ended at {utc(win.ended_at):%Y-%m-%d %H:%M:%S} UTC")
            res = await s.execute(update(MaintenanceWindow).where(
                MaintenanceWindow.id == wid, MaintenanceWindow.ended_at.is_(None))
                .values(ended_at=min(now, utc(win.ends_at)), ended_by=actor.identity))  # type: ignore[type-var]
            if int(getattr(res, "rowcount", 0) or 0) != 1:
                raise InvalidTransition(f"{win.ref} already ended")
            resumed = []
            for iid, left in (win.paused or {}).items():
                inc = (await s.execute(select(Incident).where(Incident.id == int(iid)).with_for_update())
                       ).scalars().first()
                if (inc is None or inc.state != "open" or inc.acknowledged_at is not None
                        or inc.next_escalation_at is not None or not inc.escalation_snapshot):
                    continue
                await svc._cas(s, inc, next_escalation_at=now + timedelta(seconds=float(left)))
                resumed.append(inc.id)
                events.append(IncidentEvent("maintenance", inc.id, None, actor.identity, 0, inc.state, inc.state))
            await svc.audit.append(s, actor=actor.identity, source=actor.source, action="maintenance.end",
                                   resource=win.ref, now=now, details={
                                       "expired": actor == SCHEDULER, "resumed": resumed,
                                       "suppressed": win.suppressed})
        for ev in events:
            await svc.events.publish(ev)
        log.info("maintenance.ended", extra={"window": win.ref, "resumed": len(resumed), "actor": actor.identity})
        async with svc.db.sessions() as s:
            got = await s.get(MaintenanceWindow, wid)
        assert got is not None
        return got

    async def list(self, *, actor: Actor, include_ended: bool = False, recent: int = 5) -> list[WindowView]:
        require(self.cfg, actor, Permission.VIEW)
        now = self.service.clock.now()
        async with self.service.db.sessions() as s:
            q = select(MaintenanceWindow).order_by(MaintenanceWindow.id.desc()).limit(50)
            if not include_ended:
                q = q.where(MaintenanceWindow.ended_at.is_(None), MaintenanceWindow.starts_at <= now)
            wins = list((await s.execute(q)).scalars())
            out = []
            for w in wins:
                evs = list((await s.execute(select(SuppressedEvent).where(SuppressedEvent.window_id == w.id)
                                            .order_by(SuppressedEvent.id.desc()).limit(recent))).scalars())
                out.append(WindowView(w, evs))
        return out

    async def active_count(self) -> int:
        now = self.service.clock.now()
        async with self.service.db.sessions() as s:
            return int((await s.execute(select(func.count()).select_from(MaintenanceWindow).where(
                MaintenanceWindow.ended_at.is_(None), MaintenanceWindow.starts_at <= now))).scalar_one())

    # --- the timer's work ------------------------------------------------------------------------

    async def expire(self) -> list[str]:
        """End every window past its end (each by exactly one process)."""
        now = self.service.clock.now()
        async with self.service.db.sessions() as s:
            due = (await s.execute(select(MaintenanceWindow.id).where(
                MaintenanceWindow.ended_at.is_(None), MaintenanceWindow.ends_at <= now))).scalars().all()
        ended = []
        for wid in due:
            try:
                ended.append((await self.end(wid, actor=SCHEDULER)).ref)
            except InvalidTransition:  # another process ended it first
                continue
        return ended

    async def start_scheduled(self) -> list[str]:
        """Start the config windows whose occurrence covers now (each occurrence once: unique schedule_key)."""
        now = self.service.clock.now()
        started = []
        for win in self.cfg.maintenance.windows:
            begin = occurrence(win, now)
            if begin is None:
                continue
            key = f"{win.name}@{begin.isoformat()}"
            async with self.service.db.sessions() as s:
                if (await s.execute(select(MaintenanceWindow.id).where(
                        MaintenanceWindow.schedule_key == key))).first() is not None:
                    continue
            try:
                made = await self.start(actor=SCHEDULER, duration=begin + win.duration - now, match=win.match,
                                        reason=win.reason or f"scheduled window {win.name}", schedule_key=key,
                                        starts_at=now)
                started.append(made.ref)
            except IntegrityError:
                continue
        return started


_W = MaintenanceWindow.__table__
_NOT_ENDED = (select(_W.c.id, _W.c.match, _W.c.starts_at, _W.c.ends_at).where(_W.c.ended_at.is_(None))
              .order_by(_W.c.id))


async def _open_windows(conn: AsyncConnection) -> list[Any]:
    """Windows not ended (the expiry timer ends them at their end): which cover a moment is the caller's."""
    return list((await conn.execute(_NOT_ENDED)).all())


async def suppressing(session: AsyncSession, *, actor: Actor, event: RouteEvent, title: str,
                      now: datetime) -> MaintenanceWindow | None:
    """If an active window matches this inbound event: record it (row, counter, count on the window) in the
    caller's transaction and return the window; the caller then opens and pages nothing."""
    if not inbound(actor):
        return None
    # Every inbound event asks: the windows not ended are read once per transaction (a group commit of a
    # storm's events shares one read), and which of them cover `now` is decided here.
    wins = await per_transaction(session, "maintenance.windows", _open_windows)
    at = utc(now)
    wid = next((w.id for w in wins if utc(w.starts_at) <= at < utc(w.ends_at)  # type: ignore[operator]
                and matches(w.match or {}, event)), None)
    if wid is None:
        return None
    win = await session.get(MaintenanceWindow, wid)
    assert win is not None
    session.add(SuppressedEvent(window_id=win.id, at=now, event_type=event.event_type[:200],
                                source=(event.source or "")[:200], title=title, severity=event.severity,
                                labels=dict(event.labels)))
    await session.execute(update(MaintenanceWindow).where(MaintenanceWindow.id == win.id)
                          .values(suppressed=MaintenanceWindow.suppressed + 1))
    MAINTENANCE_SUPPRESSED.labels(kind="event").inc()
    log.info("maintenance.event.suppressed", extra={"window": win.ref, "event_type": event.event_type,
                                                    "source": event.source, "actor": actor.identity})
    return win


def parse_window(ref: str | int) -> int:
    text = str(ref).strip().upper().removeprefix("M-")
    if not text.isdigit():
        raise InvalidInput(f"{ref!r} is not a maintenance window id (expected M-<number>)")
    return int(text)


class MaintenanceTimer:
    """Component: every `check_seconds` on APScheduler, start scheduled windows and end expired ones."""

    name = "maintenance-timer"

    def __init__(self, maintenance: Maintenance, *, check_seconds: float = 5.0) -> None:
        self.maintenance = maintenance
        self.check_seconds = check_seconds
        self.scheduler: TimerScheduler | None = None
        self.ticker: Ticker | None = None

    async def run(self) -> None:
        try:
            await self.maintenance.start_scheduled()
            await self.maintenance.expire()
        except Exception:  # database down: the next tick tries again (the windows are in the database)
            log.warning("maintenance.check.failed", exc_info=True)

    async def start(self) -> None:
        self.ticker = Ticker(self.run, seconds=self.check_seconds, job_id="maintenance:check")
        self.scheduler = self.ticker.start()

    async def close(self) -> None:
        if self.ticker is not None:
            await self.ticker.close()
        self.ticker = None
        self.scheduler = None


def summary(views: list[WindowView], now: datetime) -> str:
    if not views:
        return "No active maintenance windows."
    return "\n".join(v.line(now) for v in views)

