"""Reminders that nobody forgets (issue 20): unacknowledged, time for an update, resolve or reopen.

The database is the truth. Which reminder is due when is a pure function (core/reminder_policy.py) of the
incident row, its last UPDATE, the reminders already sent and the last snooze, all in the database; so a
restarted process, or a second one, computes the same due times. Sending one inserts its
(incident, kind, due_at) row into `incident_reminders` in the same transaction as the thread entry, the
queued deliveries (each chat card's thread, and the commander's news channels) and the audit entry, with
the incident row locked and the policy re-checked under the lock: of two processes firing the same
reminder exactly one sends it, the other finds it no longer due (or loses on the unique key).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from apscheduler.triggers.date import DateTrigger
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.acklinks import ack_link
from core.appearance import reminders as words
from core.clock import utc
from core.config import Config, format_duration
from core.delivery.queue import NewDelivery, enqueue
from core.errors import InvalidInput, InvalidTransition
from core.events import IncidentEvent
from core.incident_roles import holder_targets
from core.models import Incident, IncidentMessage, IncidentReminder
from core.rbac import Actor, Permission, require
from core.reminder_policy import SNOOZE, Due, Facts, due
from core.routing import PlannedDelivery
from core.timers import Ticker
from core.validation import parse_ref

if TYPE_CHECKING:
    from core.incidents import IncidentService

log = logging.getLogger("tocsin.reminders")

AUTHOR = Actor("system:reminders", source="timer")
"""Who writes reminder thread entries and their audit entries."""
SCAN_LIMIT = 5000
"""Unresolved incidents looked at per run (oldest first); more than this open at once is a storm, and the
storm's own incidents are the ones to look at."""


REMINDED_ROLES: dict[str, tuple[str, ...]] = {
    "unacknowledged": ("commander",), "update": ("commander", "comms"), "monitoring": ("commander",)}
"""Which incident roles each reminder goes to (the holders' identities are columns of the incident)."""


def reminded(cfg: Config, inc: Incident, kind: str, *, now: datetime) -> list[PlannedDelivery]:
    """Where one reminder goes besides the chat threads: each role holder privately (holder_targets: their
    news channels, or a DM on the platform they act from), once per recipient and channel."""
    out: list[PlannedDelivery] = []
    seen: set[tuple[str, str]] = set()
    for role in REMINDED_ROLES[kind]:
        identity: str | None = getattr(inc, role)
        if not identity:
            continue
        why = f"reminder to the {role}"
        for d in holder_targets(cfg, identity, severity=inc.severity, now=now, reason=why):
            if (d.recipient, d.channel) not in seen:
                seen.add((d.recipient, d.channel))
                out.append(d)
    return out


def _aware(dt: datetime) -> datetime:
    """A non-null column as an aware UTC datetime (SQLite hands back naive ones)."""
    out = utc(dt)
    assert out is not None
    return out


@dataclass(frozen=True)
class Snoozed:
    incident: Incident
    until: datetime
    length: timedelta


class Reminders:
    """Fire what is due and snooze on request; holds nothing in memory that matters."""

    def __init__(self, service: IncidentService) -> None:
        self.service = service

    @property
    def cfg(self) -> Config:
        return self.service.cfg

    def enabled(self) -> bool:
        r = self.cfg.reminders
        return bool(r.unacknowledged or r.update_every or r.monitoring)

    # --- what the database says --------------------------------------------------------------------

    async def facts(self, s: AsyncSession, incs: Sequence[Incident]) -> dict[int, Facts]:
        """The policy's view of each incident, read in three grouped queries."""
        ids = [i.id for i in incs]
        if not ids:
            return {}
        updates = dict((await s.execute(
            select(IncidentMessage.incident_id, func.max(IncidentMessage.created_at))
            .where(IncidentMessage.incident_id.in_(ids), IncidentMessage.kind == "UPDATE")
            .group_by(IncidentMessage.incident_id))).all())
        sent: dict[int, dict[str, datetime]] = {}
        for iid, kind, at in (await s.execute(
                select(IncidentReminder.incident_id, IncidentReminder.kind, func.max(IncidentReminder.created_at))
                .where(IncidentReminder.incident_id.in_(ids), IncidentReminder.kind != SNOOZE)
                .group_by(IncidentReminder.incident_id, IncidentReminder.kind))).all():
            sent.setdefault(int(iid), {})[kind] = utc(at)  # type: ignore[assignment]
        snoozes: dict[int, datetime] = {}
        for iid, until in (await s.execute(
                select(IncidentReminder.incident_id, IncidentReminder.due_at)
                .where(IncidentReminder.incident_id.in_(ids), IncidentReminder.kind == SNOOZE)
                .order_by(IncidentReminder.id))).all():
            snoozes[int(iid)] = utc(until)  # type: ignore[assignment]  # the latest snooze wins
        return {i.id: Facts(state=i.state, severity=i.severity, created_at=_aware(i.created_at),
                            state_since=_aware(i.state_since), acknowledged=i.acknowledged_at is not None,
                            last_update_at=utc(updates.get(i.id)), last_sent=sent.get(i.id, {}),
                            snoozed_until=snoozes.get(i.id))
                for i in incs}

    async def pending(self) -> list[tuple[int, Due]]:
        """Every unresolved incident's coming reminders (incident id, what, when)."""
        if not self.enabled():
            return []
        async with self.service.db.sessions() as s:
            incs = (await s.execute(select(Incident).where(Incident.state != "resolved")
                                    .order_by(Incident.id).limit(SCAN_LIMIT))).scalars().all()
            facts = await self.facts(s, incs)
        return [(iid, d) for iid, f in facts.items() for d in due(self.cfg.reminders, f)]

    async def next_due(self) -> datetime | None:
        times = [d.at for _, d in await self.pending()]
        return min(times) if times else None

    # --- firing ------------------------------------------------------------------------------------

    async def run_due(self) -> int:
        """Send every reminder that is due now; returns how many this process sent."""
        now = self.service.clock.now()
        sent = 0
        for iid, d in await self.pending():
            if d.at <= now and await self.fire(iid, d.kind):
                sent += 1
        return sent

    async def fire(self, iid: int, kind: str) -> bool:
        """Send one reminder if it is (still) due, under the incident's row lock; False if another process
        sent it, or the incident moved on (acknowledged, updated, resolved, snoozed) meanwhile."""
        svc, cfg = self.service, self.cfg
        now = svc.clock.now()
        try:
            async with svc.db.transaction() as s:
                inc = await svc._load(s, iid, iid)
                d = next((x for x in due(cfg.reminders, (await self.facts(s, [inc]))[inc.id])
                          if x.kind == kind and x.at <= now), None)
                if d is None:
                    return False
                row = IncidentReminder(incident_id=inc.id, kind=kind, due_at=d.at, created_at=now,
                                       actor=AUTHOR.identity)
                s.add(row)
                await s.flush()  # the unique (incident, kind, due_at): a second process stops here
                text = words.reminder_text(kind, ref=inc.ref, since=d.since, declared=_aware(inc.created_at),
                                           now=now, snooze=cfg.reminders.snooze)
                msg = await svc._message(s, inc, "REMINDER", text, AUTHOR, now, extra={
                    "reminder": kind, "due_at": d.at.isoformat()})
                row.message_id = msg.id
                people = reminded(cfg, inc, kind, now=now)
                queued = await self._enqueue(s, inc, msg, kind, people, now)
                await svc.audit.append(s, actor=AUTHOR.identity, source=AUTHOR.source, action="incident.reminder",
                                       resource=inc.ref, now=now, details={
                                           "kind": kind, "due_at": d.at.isoformat(), "message": msg.id,
                                           "to": sorted({p.recipient for p in people}), "queued": queued})
        except IntegrityError:
            log.info("reminder.taken", extra={"incident": iid, "kind": kind, "why": "another process sent it"})
            return False
        log.info("reminder.sent", extra={"incident": inc.ref, "kind": kind, "due_at": d.at.isoformat(),
                                         "queued": queued})
        await svc.events.emit(None, IncidentEvent("reminder", inc.id, msg.id, AUTHOR.identity, queued,
                                                  inc.state, inc.state))
        return True

    async def _enqueue(self, s: AsyncSession, inc: Incident, msg: IncidentMessage, kind: str,
                       people: list[PlannedDelivery], now: datetime) -> int:
        """The thread entry on every chat card (with its Snooze button) plus the role holders' messages."""
        cfg, fanout = self.cfg, self.service.fanout
        note = fanout.notification(inc, kind="REMINDER", body=msg.body, event_type="reminder")
        event = dict(note.event)
        event["metadata"] = {**event.get("metadata", {}), "reminder": kind}  # for webhooks
        note = dataclasses.replace(note, event=event)
        items = fanout.surface_items(inc, note)
        items += [NewDelivery(p.recipient, p.channel, p.address, note, "reminder", p.reason,
                              ack_url=ack_link(cfg, message_id=msg.id, channel=p.channel, recipient=p.recipient,
                                               now=now) if note.ack_url else None)
                  for p in people]
        rows = await enqueue(s, cfg, incident_id=inc.id, message_id=msg.id, items=items, now=now)
        return sum(1 for r in rows if r.purpose != "surface")

    # --- snoozing ----------------------------------------------------------------------------------

    async def snooze(self, ref: str | int, *, actor: Actor, length: timedelta | None = None) -> Snoozed:
        """Postpone every reminder of an incident by `length` (default reminders.snooze). A resolved
        incident, a length of nothing or one beyond reminders.max_snooze: a clear error, nothing stored."""
        svc, cfg = self.service, self.cfg
        require(cfg, actor, Permission.SEND_INCIDENTS)
        length = cfg.reminders.snooze if length is None else length
        if length < timedelta(minutes=1):
            raise InvalidInput("a snooze must last at least 1m")
        if length > cfg.reminders.max_snooze:
            raise InvalidInput(words.snooze_too_long(length, cfg.reminders.max_snooze))
        iid = parse_ref(ref)
        now = svc.clock.now()
        until = now + length
        async with svc.db.transaction() as s:
            inc = await svc._load(s, iid, ref)
            if inc.state == "resolved":
                raise InvalidTransition(words.snooze_resolved(inc.ref))
            same = (await s.execute(select(IncidentReminder.id).where(
                IncidentReminder.incident_id == inc.id, IncidentReminder.kind == SNOOZE,
                IncidentReminder.due_at == until))).first()
            if same is None:  # the same snooze twice in one instant (a double click) is stored once
                s.add(IncidentReminder(incident_id=inc.id, kind=SNOOZE, due_at=until, created_at=now,
                                       actor=actor.identity))
            await svc.audit.append(s, actor=actor.identity, source=actor.source, action="incident.snooze",
                                   resource=inc.ref, now=now, details={
                                       "until": until.isoformat(), "length": format_duration(length)})
        log.info("reminder.snoozed", extra={"incident": inc.ref, "until": until.isoformat(),
                                            "actor": actor.identity})
        return Snoozed(inc, until, length)


class ReminderTimer:
    """Component (start/close) on APScheduler: ticks every `tick_seconds`, plus a date job at the next due
    reminder so it goes out on time. Every tick re-reads the database (Reminders keeps no state), so a
    restart rebuilds the schedule from it and a config reload applies at the next tick."""

    name = "reminders"

    def __init__(self, service: IncidentService, *, tick_seconds: float = 30.0) -> None:
        self.reminders = Reminders(service)
        self.service = service
        self.tick_seconds = tick_seconds
        self.ticker: Ticker | None = None
        self.sent = 0

    async def tick(self) -> int:
        """Send what is due, then plan the next punctual run; returns how many this tick sent."""
        try:
            sent = await self.reminders.run_due()
            self.sent += sent
            await self._plan_next()
            return sent
        except Exception:  # database down: the next tick tries again; nothing was half-written
            log.exception("reminder.tick.failed", extra={"retry_in_s": self.tick_seconds})
            return 0

    async def _plan_next(self) -> None:
        nxt = await self.reminders.next_due()
        scheduler = self.ticker.scheduler if self.ticker is not None else None
        if nxt is None or scheduler is None:
            return
        # the timer runs on the wall clock, the service on its own (frozen in tests): schedule by the delay
        run_at = datetime.now(timezone.utc) + max(timedelta(0), nxt - self.service.clock.now())
        assert self.ticker is not None
        scheduler.add_job(self.ticker.tick, DateTrigger(run_date=run_at, timezone=timezone.utc),
                          id="reminders:next", replace_existing=True, misfire_grace_time=None)

    async def start(self) -> None:
        self.ticker = Ticker(self.tick, seconds=self.tick_seconds, job_id="reminders:tick")
        self.ticker.start()

    async def close(self) -> None:
        if self.ticker is not None:
            await self.ticker.close()
        self.ticker = None
