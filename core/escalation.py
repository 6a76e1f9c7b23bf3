"""Escalation timer: fires due escalations (which level comes next is core/escalation_policy.py, pure).

The database is the source of truth: every incident row carries `next_escalation_at`. The Escalator keeps
one APScheduler date job per due incident as a fast in-memory index of those rows, rebuilt from the
database on start, updated after every committed incident change (service listeners), and re-synced
periodically for changes made by other processes. A job only *asks* `IncidentService.escalate(due_at=)`
to fire; that call locks the row (SELECT ... FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite),
checks the incident is still due and compare-and-sets its version, so a restart, a stale job or a second
process can never page a level twice, and a crash before commit leaves the escalation due for the next
process to fire.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from core.clock import utc
from core.errors import InvalidTransition, NotFound
from core.escalation_schedule import EscalationSchedule
from core.models import Incident
from core.rbac import Actor
from core.timers import TimerScheduler

if TYPE_CHECKING:
    from core.incidents import IncidentService, Outcome

log = logging.getLogger("tocsin.escalation")

ESCALATOR = Actor("system:escalation", source="timer")
"""Who the timer acts as: thread entries and audit rows name it."""
RETRY_SECONDS = 5.0
"""After an unexpected failure (database down), try the same escalation again this much later."""
GROUP_MAX = 8
"""At most this many due escalations share one transaction when the timer is behind (group commit)."""


class Escalator(EscalationSchedule):
    """Component (start/close) that fires due escalations within a second of their time.

    `workers` bounds concurrent escalations: 1 on SQLite (one writer at a time anyway; more would only
    queue on the busy timeout), a few on PostgreSQL."""

    name = "escalator"

    def __init__(self, service: IncidentService, *, rescan_seconds: float = 10.0, workers: int | None = None,
                 group_max: int = GROUP_MAX, actor: Actor = ESCALATOR) -> None:
        super().__init__(service, rescan_seconds=rescan_seconds, actor=actor)
        self.workers = workers or (1 if service.db.sqlite else 4)
        self.group_max = max(1, group_max)
        self.fired = 0
        """Escalations this instance fired (the ones that paged)."""
        self.grouped = 0
        """How many of those were committed in a group of several."""
        self._queue: asyncio.Queue[tuple[int, datetime]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe first (so no change slips between scan and subscription), rebuild from the database,
        then start the timer: the initial jobs are added while it is stopped, without 10,000 wake-ups."""
        self.scheduler = TimerScheduler()
        self.service.events.subscribe(self._on_event)
        scheduled = await self.rescan()
        every = IntervalTrigger(seconds=self.rescan_seconds, timezone=timezone.utc)
        self.scheduler.add_job(self._rescan_job, every, id="escalation:rescan", replace_existing=True)
        self.scheduler.start()
        self._tasks = [asyncio.create_task(self._sync_loop(), name="escalation-sync")]
        self._tasks += [asyncio.create_task(self._worker(), name=f"escalation-worker-{i}")
                        for i in range(self.workers)]
        log.info("escalation.started", extra={"scheduled": scheduled, "workers": self.workers,
                                              "rescan_seconds": self.rescan_seconds})

    async def close(self, *, grace_seconds: float = 5.0) -> None:
        """Stop the timer; let an escalation in progress commit (up to `grace_seconds`), then cancel.
        Anything not fired stays due in the database for the next start or another process."""
        self.service.events.unsubscribe(self._on_event)
        if self.scheduler is not None:
            await self.scheduler.stop(grace_seconds)  # a rescan in progress finishes first
        deadline = time.monotonic() + grace_seconds
        while self._inflight and time.monotonic() < deadline and any(not t.done() for t in self._tasks):
            await asyncio.sleep(0.02)
        for t in self._tasks:
            t.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for t, res in zip(self._tasks, results, strict=True):
            if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
                log.error("escalation.task.failed", extra={"task": t.get_name()}, exc_info=res)
        self._tasks = []
        self._scheduled.clear()
        log.info("escalation.stopped", extra={"fired": self.fired})

    async def health(self) -> str | None:
        """Readiness: the timer runs, its tasks are alive, and the database was scanned recently."""
        if self.scheduler is None or not self.scheduler.running:
            return "escalation timer is not running"
        dead = [t.get_name() for t in self._tasks if t.done()]
        if dead:
            return f"escalation tasks stopped: {', '.join(dead)}"
        limit = max(3 * self.rescan_seconds, 30.0)
        if self._last_scan is None or time.monotonic() - self._last_scan > limit:
            return (f"no successful escalation scan of the database for {limit:.0f}s: "
                    f"{self._last_error or 'none yet'}")
        return None

    async def run_due(self) -> list[Outcome]:
        """Fire, one by one, every escalation due by the service clock now, and return what happened.
        For frozen-clock tests and one-shot tooling: it needs no running timer."""
        now = self.service.clock.now()
        async with self.service.db.sessions() as s:
            rows = (await s.execute(
                select(Incident.id, Incident.next_escalation_at)
                .where(Incident.next_escalation_at <= now, Incident.state == "open",
                       Incident.acknowledged_at.is_(None))
                .order_by(Incident.next_escalation_at, Incident.id))).all()
        outs = []
        for iid, due in rows:
            out = await self._fire(int(iid), utc(due))  # type: ignore[arg-type]
            if out is not None:
                outs.append(out)
        return outs

    # --- firing -----------------------------------------------------------------------------------

    async def _on_due(self, iid: int, due: datetime) -> None:
        """APScheduler job: hand over to the workers and return at once (a long-running job would make
        APScheduler skip the next run of the same id as 'max instances reached')."""
        if self._scheduled.get(iid) == due:
            del self._scheduled[iid]
        if iid in self._inflight:
            return  # already waiting or running; it reads the row when it runs
        self._inflight.add(iid)
        self._queue.put_nowait((iid, due))

    async def _worker(self) -> None:
        """Fire what is due; when more is waiting than one fire at a time can keep up with, take up to
        `group_max` into one transaction (group commit): the per-transaction cost is paid once. Idle, a
        group is one escalation, so nothing waits for company."""
        while True:
            group = [await self._queue.get()]
            while len(group) < self.group_max and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                if len(group) == 1:
                    await self._fire(*group[0])
                else:
                    await self._fire_group(group)
            finally:
                for iid, _ in group:
                    self._inflight.discard(iid)
                    if iid in self._dirty:  # changed by someone else while we fired: re-read it now
                        self._dirty_event.set()
                    self._queue.task_done()

    async def _fire_group(self, group: list[tuple[int, datetime]]) -> None:
        """Several escalations in one transaction. Rows are locked in id order, so two processes grouping
        overlapping incidents cannot deadlock. If the transaction fails, each is retried on its own."""
        group = sorted(group)
        done: list[tuple[int, Outcome]] = []
        refused: list[tuple[int, Exception]] = []
        audit: list[dict[str, Any]] = []
        try:
            async with self.service.db.grouped() as s:
                for iid, due in group:
                    try:
                        out = await self.service.escalate(iid, actor=self.actor, due_at=due, session=s,
                                                          audit_batch=audit)
                    except (NotFound, InvalidTransition) as exc:
                        refused.append((iid, exc))  # raised before this incident wrote anything
                        continue
                    done.append((iid, out))
                # one chain-head read and one INSERT for the group's audit entries, in its transaction
                await self.service.audit.append_many(s, audit, now=self.service.clock.now())
        except Exception:
            log.exception("escalation.group.failed", extra={"incidents": [f"INC-{i}" for i, _ in group],
                                                            "fallback": "one transaction each"})
            for iid, due in group:
                await self._fire(iid, due)
            return
        await self.service.events.publish_pending(s)
        for iid, err in refused:
            self._refused(iid, err)
        due_of = dict(group)
        for iid, out in done:
            self._fired(iid, out, due_of[iid])
            self.grouped += int(out.changed)

    async def _fire(self, iid: int, due: datetime) -> Outcome | None:
        try:
            out = await self.service.escalate(iid, actor=self.actor, due_at=due)
        except (NotFound, InvalidTransition) as exc:
            self._refused(iid, exc)
            return None
        except Exception:
            # Fail open: a late page is better than a lost one. The row is unchanged (rolled back).
            log.exception("escalation.failed", extra={"incident": f"INC-{iid}", "due_at": due.isoformat(),
                                                      "retry_in_s": RETRY_SECONDS})
            self._retry(iid, due)
            return None
        self._fired(iid, out, due)
        return out

    def _fired(self, iid: int, out: Outcome, due: datetime) -> None:
        if out.changed:
            self.fired += 1
            late = (self.service.clock.now() - due).total_seconds()
            log.debug("escalation.timer", extra={"incident": f"INC-{iid}", "late_s": round(late, 3)})
        self._apply(iid, out.incident)

    def _refused(self, iid: int, exc: Exception) -> None:
        if isinstance(exc, NotFound):
            log.warning("escalation.skipped", extra={"incident": f"INC-{iid}",
                                                     "why": "incident no longer exists"})
            self._unschedule(iid)
        else:
            # Someone changed the incident in between (a CAS loss) or it has no policy: re-read the row.
            log.warning("escalation.conflict", extra={"incident": f"INC-{iid}", "why": str(exc)})
            self._mark_dirty([iid])

    def _retry(self, iid: int, due: datetime) -> None:
        self._scheduled.pop(iid, None)
        if self.scheduler is not None and self.scheduler.running:
            self._add_date_job(iid, due, datetime.now(timezone.utc) + timedelta(seconds=RETRY_SECONDS))
