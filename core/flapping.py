"""Flapping: an incident whose correlation key resolved and reopened more than K times within T is held
open and marked flapping. It pages once (when it opens); while marked, inbound resolves and re-fires only
add thread entries (card syncs, no pages); once no state change came for T the flapping timer clears the
mark (exactly once across processes) and resolves the incident if the last event was a resolve.

Pure policy (which setting applies, is this open a flap) sits beside the held/settle writes, which run
through IncidentService's row primitives (typed Any here: core.incidents imports this module)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from core.appearance.vocabulary import flapping_text
from core.clock import Clock, utc
from core.config import Config, Flapping
from core.db import Database
from core.events import IncidentEvent
from core.incident_store import RESOLVED
from core.maintenance import inbound
from core.metrics import FLAPPING_HELD
from core.models import Incident
from core.outcome import Outcome
from core.rbac import Actor
from core.routing import Plan, RouteEvent, plan
from core.timers import PeriodicJob
from core.validation import parse_ref

log = logging.getLogger("tocsin.flapping")

SETTLER = Actor("system:flapping", source="timer")
"""Who clears a flapping mark (and resolves, when the last event was a resolve) in the audit log."""
NOBODY = Plan(deliveries=[], rules=[], matched_rules=[], skipped=[])
"""A held event's plan: the chat cards follow the thread, nobody is paged."""


def configured(cfg: Config) -> bool:
    """Flapping detection is on globally or on some routing rule (otherwise no extra reads at all)."""
    return cfg.flapping is not None or any(r.flapping for r in cfg.routing.rules)


def setting(cfg: Config, event: RouteEvent, *, now: datetime) -> Flapping | None:
    """The first matched rule's `flapping`, else the global one."""
    if not configured(cfg):
        return None
    own = next((r.flapping for r in plan(cfg, event, now=now).matched_rules if r.flapping), None)
    return own or cfg.flapping


async def at_open(s: Any, cfg: Config, event: RouteEvent, *, key: str | None,
                  now: datetime) -> dict[str, Any] | None:
    """The flapping mark for an incident opening now under correlation `key`, when more than K incidents
    with that key resolved within T (each was followed by a reopen; this open is the last of them)."""
    fl = setting(cfg, event, now=now) if key else None
    if fl is None:
        return None
    reopens = int((await s.execute(select(func.count()).select_from(Incident).where(
        Incident.correlation_key == key, Incident.state == RESOLVED,
        Incident.resolved_at > now - fl.within))).scalar_one())
    if reopens <= fl.reopens:
        return None
    return {"reopens": reopens, "limit": fl.reopens, "within": int(fl.within.total_seconds()),
            "since": now.isoformat(), "last": "fire", "held": 0}


def opened_note(mark: dict[str, Any]) -> str:
    """The line that opens a flapping incident's description."""
    return flapping_text("opened", reopens=int(mark["reopens"]), limit=int(mark["limit"]), stable_for=within(mark))


def stable_at(mark: dict[str, Any] | None, now: datetime) -> datetime | None:
    """When a mark set now clears if nothing changes (None without a mark)."""
    return now + within(mark) if mark else None


def within(mark: dict[str, Any]) -> timedelta:
    return timedelta(seconds=int(mark["within"]))


class Flaps:
    """The writes of a flapping incident: hold an inbound event, settle a stable one."""

    def __init__(self, service: Any) -> None:
        self.service = service

    async def hold(self, ref: str | int, *, actor: Actor, text: str, last: str,
                   session: Any = None) -> Outcome | None:
        """If the incident is marked flapping: record the inbound event (`last`: "resolve" or "fire") as a
        thread entry that pages nobody, restart the stability clock when the state flipped, and answer
        held. None when it is not flapping (the caller goes on as usual)."""
        svc = self.service
        if not inbound(actor) or not configured(svc.cfg):
            return None  # people resolve for real; without the setting there is nothing to read
        iid = parse_ref(ref)
        now = svc.clock.now()
        async with svc._tx(session) as s:
            inc = await svc._load(s, iid, ref)
            mark = inc.flapping
            if not mark or inc.state == RESOLVED:
                return None
            flipped = mark.get("last") != last
            new = {**mark, "last": last, "held": int(mark.get("held", 0)) + 1}
            until = now + within(mark) if flipped else utc(inc.flapping_until)
            await svc._cas(s, inc, flapping=new, flapping_until=until)
            body = flapping_text("held", event=last, text=text, until=until, flipped=flipped)
            msg = await svc._message(s, inc, "FLAPPING", body, actor, now, extra={"event": last})
            await svc.fanout.incident(s, inc, msg, NOBODY, now, kind="FLAPPING", body=body,
                                      event_type="flapping", held=True)
            await svc.audit.append(s, actor=actor.identity, source=actor.source, action="incident.flapping.held",
                                   resource=inc.ref, now=now, details={
                                       "event": last, "flipped": flipped, "held": new["held"],
                                       "stable_at": until.isoformat() if until else None})
        FLAPPING_HELD.labels(kind=last).inc()
        log.info("incident.flapping.held", extra={"incident": inc.ref, "event": last, "flipped": flipped})
        await svc.events.emit(session, IncidentEvent("flapping", inc.id, msg.id, actor.identity, 0,
                                                    inc.state, inc.state))
        return Outcome(inc, msg, 0, changed=False, held=True, note=body)

    async def due(self) -> list[int]:
        """Flapping incidents with no state change for their T."""
        svc = self.service
        async with svc.db.sessions() as s:
            return list((await s.execute(select(Incident.id).where(
                Incident.flapping_until <= svc.clock.now(), Incident.state != RESOLVED)
                .order_by(Incident.id))).scalars())

    async def settle(self, iid: int) -> str | None:
        """Clear a due mark under the row lock (compare-and-set: of two processes one acts), then resolve
        when the last held event was a resolve. Returns what happened, None when nothing was due."""
        svc = self.service
        now = svc.clock.now()
        async with svc.db.transaction() as s:
            inc = await svc._load(s, iid, iid)
            until = utc(inc.flapping_until)
            if not inc.flapping or until is None or until > now or inc.state == RESOLVED:
                return None  # another process settled it, or an event came in between
            mark = dict(inc.flapping)
            last = mark.get("last")
            await svc._cas(s, inc, flapping=None, flapping_until=None)
            body = flapping_text("stable", event=last, stable_for=within(mark))
            msg = await svc._message(s, inc, "FLAPPING", body, SETTLER, now, extra={"event": "stable"})
            await svc.fanout.incident(s, inc, msg, NOBODY, now, kind="FLAPPING", body=body,
                                      event_type="flapping", held=True)
            await svc.audit.append(s, actor=SETTLER.identity, source=SETTLER.source,
                                   action="incident.flapping.cleared", resource=inc.ref, now=now,
                                   details={"last": last})
            await svc.events.emit(s, IncidentEvent("flapping", inc.id, msg.id, SETTLER.identity, 0,
                                                  inc.state, inc.state))
            if last == "resolve":
                await svc.resolve(inc.id, actor=SETTLER, session=s, text=flapping_text("resolved", event=last))
        await svc.events.publish_pending(s)
        what = "resolved" if last == "resolve" else "cleared"
        log.info("incident.flapping.settled", extra={"incident": inc.ref, "outcome": what})
        return what

    async def settle_due(self) -> list[str]:
        """One pass of the timer: every due incident, each in its own transaction."""
        out = []
        for iid in await self.due():
            what = await self.settle(iid)
            if what is not None:
                out.append(f"INC-{iid} {what}")
        return out


class FlappingTimer(PeriodicJob):
    """Component: settles stable flapping incidents on APScheduler; `claim_run` gives each period to one
    process, and the row lock + compare-and-set in Flaps.settle keeps a late second one from acting."""

    def __init__(self, flaps: Flaps, *, db: Database, clock: Clock, every_seconds: float = 15.0,
                 tick_seconds: float = 5.0) -> None:
        self.flaps = flaps
        self.settled: list[str] = []
        super().__init__("flapping", self._run, db=db, clock=clock,
                         every=lambda: timedelta(seconds=every_seconds), tick_seconds=tick_seconds)

    async def _run(self) -> None:
        self.settled += await self.flaps.settle_due()
