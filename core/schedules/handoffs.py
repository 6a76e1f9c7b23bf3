"""Handoff messages on the APScheduler timer, exactly once across processes, rebuilt after a restart.

At each change of person in a schedule (layers and overrides alike) the incoming person gets a message
through their own preferences with the open incidents they inherit, the outgoing one a short note, and the
schedule's `announce` targets a line. What happened lives in the database: `schedule_handoffs` has one row
per (schedule, time), inserted in the same transaction as the queued messages, so a second process (or a
restarted one re-checking the last hour) loses on the unique key and sends nothing twice.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.appearance import oncall as words
from core.clock import utc
from core.config import Schedule, Targets
from core.delivery.message import CHANNEL_POST, Notification
from core.delivery.queue import NewDelivery, enqueue
from core.models import Incident, IncidentMessage, ScheduleHandoff, ScheduleOverride
from core.routing import resolve_targets
from core.schedules.rotation import Override, handoffs
from core.schedules.service import as_override
from core.timers import TimerScheduler

if TYPE_CHECKING:
    from core.incidents import IncidentService

log = logging.getLogger("tocsin.schedules")

LOOKBACK = timedelta(hours=1)
"""After a restart (or a timer that was late), a handoff up to this old is still announced; older ones
are stale news (someone else is on call by now) and are skipped."""
AUTHOR = "system:schedules"


class HandoffTimer:
    """Component (start/close): ticks every `tick_seconds`, plus a date job at the next handoff so it is
    announced on time; every tick re-reads the database, so nothing is kept in memory that matters."""

    name = "handoffs"

    def __init__(self, service: IncidentService, *, tick_seconds: float = 30.0) -> None:
        self.service = service
        self.tick_seconds = tick_seconds
        self.scheduler: TimerScheduler | None = None
        self.sent = 0

    async def run_due(self) -> int:
        """Announce every due, unannounced handoff (the latest per schedule within LOOKBACK); returns how
        many this process announced."""
        now = utc(self.service.clock.now())
        assert now is not None
        done = 0
        for sc in self.service.cfg.schedules:
            due = await self._due(sc, now)
            if due is not None and await self._announce(sc, *due, now=now):
                done += 1
        self.sent += done
        return done

    async def next_handoff(self) -> datetime | None:
        now = utc(self.service.clock.now())
        assert now is not None
        found: list[datetime] = []
        for sc in self.service.cfg.schedules:
            hs = handoffs(sc, now, now + timedelta(days=8), await self._overrides(sc, now, now + timedelta(days=8)))
            if hs:
                found.append(hs[0][0])
        return min(found) if found else None

    async def _overrides(self, sc: Schedule, start: datetime, end: datetime) -> list[Override]:
        async with self.service.db.sessions() as s:
            rows = (await s.execute(select(ScheduleOverride).where(
                ScheduleOverride.schedule == sc.name, ScheduleOverride.cancelled_at.is_(None),
                ScheduleOverride.ends_at > start - timedelta(days=1), ScheduleOverride.starts_at < end))).scalars()
            return [as_override(r) for r in rows]

    async def _due(self, sc: Schedule, now: datetime) -> tuple[datetime, str | None, str | None] | None:
        hs = handoffs(sc, now - LOOKBACK, now, await self._overrides(sc, now - LOOKBACK, now))
        if not hs:
            return None
        at, outgoing, incoming = hs[-1]
        async with self.service.db.sessions() as s:
            seen = (await s.execute(select(ScheduleHandoff.id).where(
                ScheduleHandoff.schedule == sc.name, ScheduleHandoff.at == at))).first()
        return None if seen else (at, outgoing, incoming)

    async def _announce(self, sc: Schedule, at: datetime, outgoing: str | None, incoming: str | None, *,
                        now: datetime) -> bool:
        cfg = self.service.cfg
        try:
            async with self.service.db.transaction() as s:
                s.add(ScheduleHandoff(schedule=sc.name, at=at, outgoing=outgoing, incoming=incoming,
                                      created_at=now))
                await s.flush()  # the unique (schedule, at): a second process stops here
                open_ = (await s.execute(select(Incident).where(Incident.state != "resolved")
                                         .order_by(Incident.id).limit(50))).scalars().all()
                lines = [f"{i.ref} [{i.severity}] {i.state}: {i.title}" for i in open_]
                until = next((h[0] for h in handoffs(sc, at, at + timedelta(days=60))), None)
                text = words.handoff_announce(sc.name, sc.timezone, at, outgoing, incoming)
                msg = IncidentMessage(incident_id=None, kind="HANDOFF", body=text, author=AUTHOR, created_at=now,
                                      extra={"schedule": sc.name, "at": at.isoformat(), "outgoing": outgoing,
                                             "incoming": incoming})
                s.add(msg)
                await s.flush()
                items: list[NewDelivery] = []
                parts = []
                if incoming:
                    parts.append((Targets(contacts=[incoming]), words.handoff_incoming(sc.name, sc.timezone, at,
                                                                                       until, lines)))
                if outgoing and outgoing != incoming:
                    parts.append((Targets(contacts=[outgoing]), words.handoff_outgoing(sc.name, sc.timezone, at,
                                                                                       incoming)))
                if not sc.announce.empty():
                    parts.append((sc.announce, (text, text)))
                reason = f"schedule {sc.name}: handoff"
                for targets, (title, body) in parts:
                    note = Notification(kind="HANDOFF", title=title, body=body, severity="sev4")
                    planned, _ = resolve_targets(cfg, targets, severity=None, now=now, reason=reason)
                    items += [NewDelivery(d.recipient, d.channel, d.address, note, reason=d.reason) for d in planned]
                if sc.announce_handoffs:  # a plain post (no card) in each chat platform's incident channel
                    note = Notification(kind="HANDOFF", title=text, body=text, severity="sev4")
                    items += [NewDelivery(f"surface:{p}", f"chat:{p}", CHANNEL_POST, note, "surface", reason)
                              for p in self.service.surfaces]
                await enqueue(s, cfg, incident_id=None, message_id=msg.id, items=items, now=now)
                await self.service.audit.append(s, actor=AUTHOR, source="timer", action="schedule.handoff",
                                                resource=f"schedule:{sc.name}", now=now, details={
                                                    "at": at.isoformat(), "outgoing": outgoing,
                                                    "incoming": incoming, "messages": len(items)})
        except IntegrityError:
            log.info("schedule.handoff.taken", extra={"schedule": sc.name, "at": at.isoformat(),
                                                      "why": "another process announced it"})
            return False
        log.info("schedule.handoff", extra={"schedule": sc.name, "at": at.isoformat(), "outgoing": outgoing,
                                            "incoming": incoming, "messages": len(items)})
        return True

    # --- the timer ------------------------------------------------------------------------------------

    async def _tick(self) -> None:
        try:
            await self.run_due()
            await self._plan_next()
        except Exception:  # database down: the next tick tries again; nothing was half-written
            log.exception("schedule.handoff.tick.failed", extra={"retry_in_s": self.tick_seconds})

    async def _plan_next(self) -> None:
        nxt = await self.next_handoff()
        if nxt is None or self.scheduler is None:
            return
        # the timer runs on the wall clock, the service on its own (frozen in tests): schedule by the delay
        run_at = datetime.now(timezone.utc) + (nxt - utc(self.service.clock.now()))  # type: ignore[operator]
        self.scheduler.add_job(self._tick, DateTrigger(run_date=run_at, timezone=timezone.utc),
                               id="handoffs:next", replace_existing=True, misfire_grace_time=None)

    async def start(self) -> None:
        self.scheduler = TimerScheduler()
        self.scheduler.add_job(self._tick, IntervalTrigger(seconds=self.tick_seconds, timezone=timezone.utc),
                               id="handoffs:tick", next_run_time=datetime.now(timezone.utc))
        self.scheduler.start()

    async def close(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await scheduler.stop()  # a tick in progress commits first
