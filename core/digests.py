"""Scheduled digests: a summary event (open incidents, the period's incidents with MTTA/MTTR, failed and
dead deliveries, who is on call next) fired on its cron once across every process, routed like any event.

The next fire time lives in `timer_jobs` (name `digest:<name>`). Whoever moves it forward by compare-and-set
queues the digest in the same transaction, so two processes never both send it and a crash never loses it.
A run missed while nothing was running is sent once at the next start, marked late (several missed runs
collapse into one: the next fire time is computed from now).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.appearance.digest import digest_text, digest_title
from core.audit.log import AuditLog
from core.clock import Clock, utc
from core.config import Config, ConfigHolder, Digest
from core.db import Database
from core.delivery.message import Notification
from core.delivery.queue import NewDelivery, enqueue
from core.errors import NotFound
from core.models import Delivery, Incident, IncidentMessage, TimerJob
from core.rbac import Actor, Permission, require
from core.routing import RouteEvent, plan
from core.timers import TimerScheduler

log = logging.getLogger("tocsin.digests")

LATE_AFTER = timedelta(minutes=10)
"""A digest sent this long after its fire time says it is late (the timer ticks every 30 s)."""
TICK_SECONDS = 30.0


def job_name(d: Digest) -> str:
    return f"digest:{d.name}"


def next_fire(d: Digest, after: datetime) -> datetime:
    """The first fire time strictly after `after`, in UTC."""
    trigger = CronTrigger.from_crontab(d.cron, timezone=ZoneInfo(d.timezone))
    nxt = trigger.get_next_fire_time(None, utc(after) + timedelta(microseconds=1))  # type: ignore[operator]
    assert nxt is not None  # a five-field crontab always fires again
    return nxt.astimezone(timezone.utc)


def _fmt(dt: datetime | None, tz: ZoneInfo) -> str:
    return utc(dt).astimezone(tz).strftime("%Y-%m-%d %H:%M") if dt else "-"  # type: ignore[union-attr]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


async def collect(s: AsyncSession, cfg: Config, d: Digest, *, since: datetime, now: datetime,
                  due: datetime, late: bool) -> dict[str, Any]:
    """The digest's figures as plain JSON (rendered per channel by core/appearance/digest.py)."""
    tz = ZoneInfo(d.timezone)

    def inc(i: Incident) -> dict[str, Any]:
        tta, ttr = i.time_to_ack, i.time_to_resolve
        return {"ref": i.ref, "severity": i.severity, "title": i.title, "state": i.state,
                "opened": _fmt(i.created_at, tz), "tta": tta.total_seconds() if tta else None,
                "ttr": ttr.total_seconds() if ttr else None}

    open_rows = (await s.execute(select(Incident).where(Incident.state != "resolved")
                                 .order_by(Incident.id))).scalars().all()
    period_rows = (await s.execute(select(Incident).where(or_(
        Incident.created_at >= since, Incident.resolved_at >= since)).where(Incident.created_at < now)
        .order_by(Incident.id))).scalars().all()
    period = [inc(i) for i in period_rows]
    failed_rows = (await s.execute(select(Delivery).where(Delivery.status.in_(("failed", "dead")),
                                                          Delivery.updated_at >= since, Delivery.updated_at < now)
                                   .order_by(Delivery.id))).scalars().all()
    items = [{"status": r.status, "channel": r.channel, "recipient": r.recipient,
              "incident": f"INC-{r.incident_id}" if r.incident_id else None, "error": r.last_error or ""}
             for r in failed_rows]
    return {
        "name": d.name, "timezone": d.timezone, "since": _fmt(since, tz), "until": _fmt(now, tz),
        "due": _fmt(due, tz), "late": late,
        "open": [inc(i) for i in open_rows],
        "period": period,
        "mtta": _mean([p["tta"] for p in period if p["tta"] is not None]),
        "mttr": _mean([p["ttr"] for p in period if p["ttr"] is not None]),
        "deliveries": {"failed": sum(1 for r in items if r["status"] == "failed"),
                       "dead": sum(1 for r in items if r["status"] == "dead"), "items": items},
        "on_call": on_call_next(cfg, now, tz),
    }


def on_call_next(cfg: Config, now: datetime, tz: ZoneInfo) -> list[dict[str, Any]]:
    """Per schedule: who is on call now and the next handoff within a week (none without schedules)."""
    schedules = getattr(cfg, "schedules", None) or []
    if not schedules:
        return []
    from core.schedules.rotation import handoffs, who_at

    out = []
    for sched in schedules:
        now_who = who_at(sched, now).contact
        nxt = next(iter(handoffs(sched, now, now + timedelta(days=7))), None)
        out.append({"schedule": sched.name, "now": now_who, "next": nxt[2] if nxt else None,
                    "next_at": _fmt(nxt[0], tz) if nxt else None})
    return out


@dataclass(frozen=True)
class DigestSent:
    name: str
    queued: int
    late: bool
    message_id: int


class Digests:
    """Builds, routes and queues digests: from the timer (`tick`) or on demand (`send_now`)."""

    def __init__(self, db: Database, config: ConfigHolder, *, audit: AuditLog, clock: Clock) -> None:
        self.db = db
        self.config = config
        self.audit = audit
        self.clock = clock

    async def _queue(self, s: AsyncSession, d: Digest, *, since: datetime, now: datetime, due: datetime,
                     late: bool, actor: str) -> DigestSent:
        cfg = self.config.cfg
        data = await collect(s, cfg, d, since=since, now=now, due=due, late=late)
        ev = RouteEvent(event_type=d.event_type, source="tocsin", payload={"digest": data},
                        metadata={"digest": d.name, "late": late}, urgent=False)  # a digest is news
        p = plan(cfg, ev, now=now)
        text = digest_text(data)
        msg = IncidentMessage(incident_id=None, kind="DIGEST", body=text, author=actor, created_at=now,
                              extra={"digest": d.name, "late": late})
        s.add(msg)
        await s.flush()
        note = Notification(kind="DIGEST", title=digest_title(data), body=text, event=ev.as_dict())
        rows = await enqueue(s, cfg, incident_id=None, message_id=msg.id, now=now, items=[
            NewDelivery(x.recipient, x.channel, x.address, note) for x in p.deliveries])
        await self.audit.append(s, actor=actor, source="internal" if actor.startswith("system:") else "cli",
                                action="digest.sent", resource=f"digest:{d.name}", now=now,
                                details={"queued": len(rows), "late": late, "event_type": d.event_type})
        log.info("digest.sent", extra={"event": "digest.sent", "digest": d.name, "queued": len(rows),
                                       "late": late})
        return DigestSent(d.name, len(rows), late, msg.id)

    async def tick(self) -> list[DigestSent]:
        """Fire every digest whose time has come, each once across processes."""
        sent = []
        for d in list(self.config.cfg.digests):
            out = await self.fire_if_due(d)
            if out is not None:
                sent.append(out)
        return sent

    async def fire_if_due(self, d: Digest) -> DigestSent | None:
        now = self.clock.now()
        name = job_name(d)
        async with self.db.transaction() as s:
            row = await s.get(TimerJob, name)
            if row is not None:
                due = utc(row.next_run_at)
                if due > now:  # type: ignore[operator]
                    return None
                stored, last = row.next_run_at, utc(row.last_run_at)  # read before the UPDATE syncs `row`
                res = await s.execute(update(TimerJob).where(TimerJob.name == name, TimerJob.next_run_at == stored)
                                      .values(next_run_at=next_fire(d, now), last_run_at=now)
                                      .execution_options(synchronize_session=False))
                if int(getattr(res, "rowcount", 0) or 0) != 1:
                    return None  # another process took this run
                since = last or due - timedelta(days=1)  # type: ignore[operator]
                late = now - due > LATE_AFTER  # type: ignore[operator]
                return await self._queue(s, d, since=since, now=now, due=due, late=late,  # type: ignore[arg-type]
                                         actor="system:digest")
        try:  # first sight of this digest: schedule its first run, send nothing yet
            async with self.db.transaction() as s:
                s.add(TimerJob(name=name, next_run_at=next_fire(d, now), last_run_at=now))
        except IntegrityError:
            pass  # another process scheduled it first
        return None

    async def send_now(self, name: str, *, actor: Actor) -> DigestSent:
        """`tocsin digest send NAME`: the period since the last run (or a day), the timer left as it is."""
        cfg = self.config.cfg
        require(cfg, actor, Permission.SEND_INCIDENTS)
        d = cfg.digest(name)
        if d is None:
            known = ", ".join(x.name for x in cfg.digests) or "none configured"
            raise NotFound(f"no digest named {name!r} (digests: {known})")
        now = self.clock.now()
        async with self.db.transaction() as s:
            row = await s.get(TimerJob, job_name(d))
            since = (utc(row.last_run_at) if row and row.last_run_at else None) or now - timedelta(days=1)
            return await self._queue(s, d, since=since, now=now, due=now, late=False, actor=actor.identity)


class DigestTimer:
    """Component: every process ticks; the compare-and-set in `fire_if_due` makes one of them send. The
    first tick runs at start, so a run missed during downtime goes out then (marked late)."""

    name = "digests"

    def __init__(self, digests: Digests, *, tick_seconds: float = TICK_SECONDS) -> None:
        self.digests = digests
        self.tick_seconds = tick_seconds
        self.scheduler: TimerScheduler | None = None

    async def _safe_tick(self) -> None:
        try:
            await self.digests.tick()
        except Exception:  # database down: the next tick tries again; the run is still due then
            log.warning("digest.tick.failed", exc_info=True)

    async def start(self) -> None:
        self.scheduler = TimerScheduler()
        self.scheduler.add_job(self._safe_tick, IntervalTrigger(seconds=self.tick_seconds, timezone=timezone.utc),
                               id="digests", next_run_time=datetime.now(timezone.utc))
        self.scheduler.start()

    async def close(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await scheduler.stop()  # a tick in progress commits first
