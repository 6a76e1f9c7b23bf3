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
import dataclasses
import logging
import time
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from core.clock import utc
from core.errors import InvalidTransition, NotFound
from core.escalation_schedule import EscalationSchedule
from core.events import IncidentEvent
from core.models import Incident, IncidentMessage
from core.rbac import Actor
from core.routing import escalation_plan, incident_event, rules_may_match
from core.schedules.service import overrides_in_force
from core.subscriptions import followers_of
from core.timers import TimerScheduler

if TYPE_CHECKING:
    from core.config import Config, Targets
    from core.incidents import IncidentService, Outcome
    from core.routing import Overrides, Plan

log = logging.getLogger("tocsin.escalation")

ESCALATOR = Actor("system:escalation", source="timer")
"""Who the timer acts as: thread entries and audit rows name it."""
RETRY_SECONDS = 5.0
"""After an unexpected failure (database down), try the same escalation again this much later."""
GROUP_MAX = 200
"""At most this many due escalations share one transaction when the timer is behind (group commit), written
set-based (EscalationBatch). Bounds how long one group holds the write lock (0.1-0.2 s at this size)."""
YIELD_EVERY = 25
"""A group hands the event loop back after this many escalations, so a burst never stalls an ack."""
_INCIDENTS = cast(Table, Incident.__table__)
_MESSAGES = cast(Table, IncidentMessage.__table__)
_CAS = (update(_INCIDENTS)
        .where(_INCIDENTS.c.id == bindparam("cas_id"), _INCIDENTS.c.version == bindparam("cas_version")))
"""Compare-and-set on `version`, one row per parameter set (the SET columns are the parameters' own)."""
_NEW_MESSAGES = insert(_MESSAGES).returning(_MESSAGES.c.id, sort_by_parameter_order=True)


@dataclasses.dataclass
class _Pending:
    inc: Incident
    msg: IncidentMessage
    plan: Plan
    body: str
    queued: int
    event: IncidentEvent | None = None


class EscalationBatch:
    """The writes of a group of timer escalations sharing one transaction, made set-based.

    IncidentService.escalate(batch=) still decides each incident on its own (due? which level? whom?), but
    its row comes from one locked read of the whole group (`load`), and its writes are collected here and go
    out together in `flush`: the compare-and-set UPDATEs as one executemany (each row still conditional on
    its own version: the rows are locked since `load`, so a mismatch means a bug, and the group fails and is
    retried in halves), the thread messages as one multi-row INSERT, then the queued
    deliveries; the caller appends the audit entries with one `append_many` and commits. Events are held
    on the session and published after the commit, as for any grouped operation."""

    def __init__(self, service: IncidentService, session: AsyncSession) -> None:
        self.service = service
        self.session = session
        self.incidents: dict[int, Incident] = {}
        self.overrides: Overrides = {}
        """Schedule overrides in force (routing input), read once for the group."""
        self._cas: list[dict[str, Any]] = []
        self._pending: list[_Pending] = []
        self._plans: dict[tuple[Any, ...], Plan] = {}

    async def load(self, ids: Sequence[int]) -> None:
        """Read and lock the group's rows in one query, in id order (two processes grouping overlapping
        incidents lock them in the same order: no deadlock). populate_existing: what the lock returns wins
        over anything this session held before."""
        s = self.session
        rows = (await s.execute(
            select(Incident).where(Incident.id.in_(sorted(ids))).order_by(Incident.id).with_for_update()
            .execution_options(populate_existing=True))).scalars().all()
        self.incidents = {int(r.id): r for r in rows}
        self.overrides = await overrides_in_force(s, self.service.cfg, self.service.clock.now())

    def incident(self, iid: int, ref: str | int) -> Incident:
        inc = self.incidents.get(iid)
        if inc is None:
            raise NotFound(f"no incident INC-{iid}")
        return inc

    async def cas(self, inc: Incident, **values: Any) -> None:
        """IncidentStore._cas, deferred to `flush`: the new values are set on the object at once (the
        schedule and the fan-out read them), and written conditionally on the version read by `load`."""
        values = {"updated_at": self.service.clock.now(), **values, "version": inc.version + 1}
        self._cas.append({"cas_id": inc.id, "cas_version": inc.version, **values})
        for k, v in values.items():
            set_committed_value(inc, k, v)

    def add(self, inc: Incident, *, body: str, actor: Actor, now: datetime, extra: dict[str, Any],
            plan: Plan) -> tuple[IncidentMessage, int]:
        """An escalation's thread message and pages, written by `flush`. Returns the message (its id set by
        `flush`) and the pages it queues: one per planned delivery."""
        msg = IncidentMessage(incident_id=inc.id, kind="ESCALATION", body=body, author=actor.identity,
                              created_at=now, extra=extra)
        queued = len(plan.deliveries)
        self._pending.append(_Pending(inc, msg, plan, body, queued))
        return msg, queued

    def plan(self, cfg: Config, inc: Incident, *, level: int, targets: Targets, now: datetime,
             overrides: Overrides | None, actor_contacts: Collection[str]) -> Plan:
        """core.routing.escalation_plan, computed once per group for the incidents routing cannot tell
        apart: when no rule routes `escalate` events at all (their event_types leave it out), an escalation
        pages the level's targets (default_targets if nobody), which depend on the level, the targets and
        the incident's severity only, not on its labels, payload or title. Otherwise one plan each."""
        if rules_may_match(cfg, "escalate"):
            return escalation_plan(cfg, inc, level=level, targets=targets, now=now, overrides=overrides,
                                   actor_contacts=actor_contacts)
        key = (id(cfg), inc.severity, level, targets.model_dump_json(), frozenset(actor_contacts))
        p = self._plans.get(key)
        if p is None:
            p = self._plans[key] = escalation_plan(cfg, inc, level=level, targets=targets, now=now,
                                                   overrides=overrides, actor_contacts=actor_contacts)
            return p
        return dataclasses.replace(p, deliveries=list(p.deliveries), event=incident_event(inc, "escalate"))

    def emit(self, msg: IncidentMessage, event: IncidentEvent) -> None:
        """Hold an escalation's event until `flush` knows its message id."""
        for p in reversed(self._pending):
            if p.msg is msg:
                p.event = event
                return
        raise ValueError("emit for a message this batch does not hold")

    async def flush(self) -> None:
        """Write what the group's escalations decided, in the caller's transaction."""
        s = self.session
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in self._cas:
            by_columns.setdefault(tuple(sorted(row)), []).append(row)
        for rows in by_columns.values():
            res = await s.execute(_CAS, rows)
            if s.bind.dialect.supports_sane_multi_rowcount and res.rowcount != len(rows):
                raise InvalidTransition(f"{len(rows) - res.rowcount} of {len(rows)} locked incidents changed "
                                        "under the escalation group's lock")
        if not s.bind.dialect.supports_sane_multi_rowcount and self._cas:
            await self._check_versions()
        self._cas = []
        pending, self._pending = self._pending, []
        if not pending:
            return
        ids = (await s.execute(_NEW_MESSAGES, [
            {"incident_id": p.msg.incident_id, "kind": p.msg.kind, "body": p.msg.body, "author": p.msg.author,
             "created_at": p.msg.created_at, "extra": p.msg.extra} for p in pending])).scalars().all()
        fanout, events = self.service.fanout, self.service.events
        following = await followers_of(s, self.service.cfg, [p.inc for p in pending])
        for i, (p, mid) in enumerate(zip(pending, ids, strict=True)):
            if i and i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            p.msg.id = int(mid)
            queued = await fanout.incident(s, p.inc, p.msg, p.plan, p.msg.created_at, kind="ESCALATION",
                                           body=p.body, event_type="escalate", purpose="escalation",
                                           followers=following[p.inc.id])
            if queued != p.queued:
                raise RuntimeError(f"{p.inc.ref}: queued {queued} pages, planned {p.queued}")
            if p.event is not None:
                await events.emit(s, dataclasses.replace(p.event, message_id=p.msg.id))

    async def _check_versions(self) -> None:
        """Where the driver does not count the rows an executemany changed (asyncpg): read the versions
        back. The rows are locked by `load`, so this only guards against a bug."""
        want = {int(r["cas_id"]): (int(r["version"]), r["updated_at"]) for r in self._cas}
        got = {int(i): (int(v), utc(u)) for i, v, u in (await self.session.execute(
            select(Incident.id, Incident.version, Incident.updated_at).where(Incident.id.in_(list(want))))).all()}
        bad = sorted(i for i, (v, u) in want.items() if got.get(i) != (v, utc(u)))
        if bad:
            raise InvalidTransition(f"incidents {bad} changed under the escalation group's lock")


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
        """Several escalations in one transaction, set-based (EscalationBatch): one locked read of their
        rows (in id order, so two processes grouping overlapping incidents cannot deadlock), then bulk
        writes. If the transaction fails, its halves are retried, down to one transaction each."""
        group = sorted(group)
        done: list[tuple[int, Outcome]] = []
        refused: list[tuple[int, Exception]] = []
        audit: list[dict[str, Any]] = []
        try:
            async with self.service.db.grouped() as s:
                batch = EscalationBatch(self.service, s)
                await batch.load([iid for iid, _ in group])
                for i, (iid, due) in enumerate(group):
                    if i and i % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # a big group lets acks and requests in between
                    try:
                        out = await self.service.escalate(iid, actor=self.actor, due_at=due, session=s,
                                                          audit_batch=audit, batch=batch)
                    except (NotFound, InvalidTransition) as exc:
                        refused.append((iid, exc))  # raised before this incident wrote anything
                        continue
                    done.append((iid, out))
                await batch.flush()
                # one chain-head read and one INSERT for the group's audit entries, in its transaction
                await self.service.audit.append_many(s, audit, now=self.service.clock.now())
        except Exception:
            # Nothing of it was stored. Retry in halves, down to one transaction each: an escalation that
            # fails on its own is isolated, and the rest still share transactions.
            log.exception("escalation.group.failed", extra={"incidents": len(group), "first": f"INC-{group[0][0]}",
                                                            "last": f"INC-{group[-1][0]}",
                                                            "fallback": "two halves"})
            half = len(group) // 2
            for part in (group[:half], group[half:]):
                await (self._fire(*part[0]) if len(part) == 1 else self._fire_group(part))
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
