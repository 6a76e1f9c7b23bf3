"""The escalation timer's schedule: which incidents are due when, kept equal to the database.

The database is the truth (`incidents.next_escalation_at`); this is a fast in-memory index of it: one
APScheduler date job per due incident, rebuilt on start (`rescan`), updated after every committed incident
change (service listeners, re-read in batches by the sync task) and re-synced periodically for changes made
by other processes. Firing what comes due is the Escalator's part (core/escalation.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import select

from core.clock import utc
from core.models import Incident
from core.rbac import Actor
from core.timers import TimerScheduler

if TYPE_CHECKING:
    from core.events import IncidentEvent
    from core.incidents import IncidentService

log = logging.getLogger("tocsin.escalation")

_SCAN_CHUNK = 500


def _job_id(incident_id: int) -> str:
    return f"escalate:{incident_id}"


class EscalationSchedule(ABC):
    """Schedule sync: jobs in, stale jobs out, changes followed. `_on_due` (the Escalator) fires a job."""

    def __init__(self, service: IncidentService, *, rescan_seconds: float, actor: Actor) -> None:
        self.service = service
        self.rescan_seconds = rescan_seconds
        self.actor = actor
        self.scheduler: TimerScheduler | None = None
        self._scheduled: dict[int, datetime] = {}
        self._inflight: set[int] = set()
        """Incidents queued or being fired: the schedule leaves them to the firing side until it is done."""
        self._dirty: set[int] = set()
        self._dirty_event = asyncio.Event()
        self._last_scan: float | None = None
        self._last_error: str | None = None

    @abstractmethod
    async def _on_due(self, iid: int, due: datetime) -> None:
        """An incident's job ran: fire its escalation."""

    # --- what is scheduled ----------------------------------------------------------------------

    def scheduled(self) -> dict[int, datetime]:
        """incident id -> the time its next escalation is scheduled for (a copy)."""
        return dict(self._scheduled)

    async def rescan(self) -> int:
        """Make the schedule equal to the database: every open, unacknowledged incident with a next
        escalation time gets a job at that time (overdue ones fire at once); stale jobs go."""
        want: dict[int, datetime] = {}
        async with self.service.db.sessions() as s:
            rows = (await s.execute(
                select(Incident.id, Incident.next_escalation_at)
                .where(Incident.next_escalation_at.is_not(None), Incident.state == "open",
                       Incident.acknowledged_at.is_(None)))).all()
        for iid, nxt in rows:
            want[int(iid)] = utc(nxt)  # type: ignore[assignment]
        for iid in list(self._scheduled):
            if iid not in want and iid not in self._inflight:
                self._unschedule(iid)
        for iid, due in want.items():
            if iid not in self._inflight:
                self._schedule(iid, due)
        self._last_scan = time.monotonic()
        self._last_error = None
        return len(want)


    def _schedule(self, iid: int, due: datetime) -> None:
        if self._scheduled.get(iid) == due:
            return
        self._scheduled[iid] = due
        if self.scheduler is not None:
            # The timer runs on the wall clock, the service on its own (frozen in tests): schedule by the
            # delay the service clock sees. With the system clock this is `due` itself.
            run_at = datetime.now(timezone.utc) + (due - self.service.clock.now())
            self._add_date_job(iid, due, run_at)

    def _unschedule(self, iid: int) -> None:
        if self._scheduled.pop(iid, None) is None or self.scheduler is None:
            return
        try:
            self.scheduler.remove_job(_job_id(iid))
        except JobLookupError:
            pass  # a date job removes itself once it has run; nothing left to remove

    def _apply(self, iid: int, inc: Incident | None) -> None:
        """Schedule from a row we just read or wrote."""
        nxt = utc(inc.next_escalation_at) if inc is not None else None
        if inc is not None and nxt is not None and inc.state == "open" and inc.acknowledged_at is None:
            self._schedule(iid, nxt)
        else:
            self._unschedule(iid)


    def _add_date_job(self, iid: int, due: datetime, run_at: datetime) -> None:
        """One job per incident (replacing any older one); never dropped as 'misfired' when late."""
        assert self.scheduler is not None
        trigger = DateTrigger(run_date=run_at, timezone=timezone.utc)
        self.scheduler.add_job(self._on_due, trigger, args=(iid, due), id=_job_id(iid), replace_existing=True,
                               misfire_grace_time=None)


    # --- following changes ----------------------------------------------------------------------

    def _on_event(self, event: IncidentEvent) -> None:
        """Service listener (after commit): note the incident; the sync task re-reads it in a batch.
        Our own timer escalations are skipped: _fire schedules from the row it just wrote."""
        if event.incident_id is None:
            return
        own = event.kind == "escalate" and event.actor == self.actor.identity
        if own and event.incident_id in self._inflight:
            return
        iid = event.incident_id
        if event.fresh and iid not in self._dirty and iid not in self._inflight:
            # A declare carries its committed row: no re-read (an event storm is thousands of them).
            due = utc(event.next_escalation_at)
            if due is not None and event.state == "open":
                self._schedule(iid, due)
            else:
                self._unschedule(iid)
            return
        self._mark_dirty([iid])

    def _mark_dirty(self, ids: Iterable[int]) -> None:
        self._dirty.update(ids)
        self._dirty_event.set()

    async def _sync_loop(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            ids = sorted(self._dirty - self._inflight)  # in-flight ones wait: the worker wakes us after
            self._dirty.difference_update(ids)
            if not ids:
                continue
            try:
                await self._refresh(ids)
            except Exception:
                log.exception("escalation.sync.failed", extra={"incidents": len(ids), "retry_in_s": 1.0})
                self._dirty.update(ids)
                await asyncio.sleep(1.0)
                self._dirty_event.set()

    async def _refresh(self, ids: list[int]) -> None:
        for i in range(0, len(ids), _SCAN_CHUNK):
            chunk = ids[i:i + _SCAN_CHUNK]
            async with self.service.db.sessions() as s:
                rows = (await s.execute(
                    select(Incident.id, Incident.state, Incident.acknowledged_at, Incident.next_escalation_at)
                    .where(Incident.id.in_(chunk)))).all()
            found = {int(r.id): r for r in rows}
            for iid in chunk:
                if iid in self._inflight:
                    self._dirty.add(iid)  # fired meanwhile: the worker wakes us once it is done
                    continue
                r = found.get(iid)
                nxt = utc(r.next_escalation_at) if r is not None else None
                if r is not None and nxt is not None and r.state == "open" and r.acknowledged_at is None:
                    self._schedule(iid, nxt)
                else:
                    self._unschedule(iid)

    async def _rescan_job(self) -> None:
        try:
            await self.rescan()
        except Exception as exc:
            # Reported by health(); the next interval tries again. Jobs already scheduled keep firing.
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.exception("escalation.rescan.failed")
