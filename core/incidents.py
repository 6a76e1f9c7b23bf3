"""IncidentService: the one place incident rules live. Every adapter, the API and the CLI call it.

Each operation checks the actor's role, applies the state change compare-and-set, asks routing who
gets what, and writes incident + thread message + state change + queued deliveries + audit entry in
ONE transaction. Listeners hear about it only after the commit.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import MutableSequence, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.log import AuditLog
from core.clock import Clock, utc
from core.config import Config, ConfigHolder, Targets
from core.db import Database, connection
from core.delivery.queue import cancel_escalation_pages, cancel_reminders
from core.errors import InvalidInput, InvalidTransition, NotFound
from core.escalation_policy import GroupWrites, first_due, next_step
from core.events import EventBus, IncidentEvent
from core.fanout import FanOut
from core.flapping import Flaps, at_open, opened_note, stable_at
from core.incident_store import IncidentDetail  # noqa: F401 (re-exported)
from core.incident_store import INSERT_INCIDENT, MONITORING, OPEN, RESOLVED, attach, row_object
from core.notices import Notices
from core.outcome import Outcome
from core.metrics import ESCALATIONS
from core.maintenance import inbound, suppressing
from core.models import Delivery, Incident
from core.schedules.service import ScheduleService, overrides_in_force
from core.rbac import Actor, Permission, acting_contacts, allows, contact_identities, require, role_for
from core.storms import occurrence
from core.routing import (
    Plan,
    RouteEvent,
    escalation_plan,
    incident_event,
    incident_plan,
    plan,
)
from core.validation import check_contact_list, check_severity, check_text, check_title, clean_text, parse_ref

log = logging.getLogger("tocsin.incidents")



class IncidentService(Notices):
    """See module docstring. Reads and row primitives: IncidentStore. Committed changes: `events`."""

    def __init__(self, db: Database, config: ConfigHolder, *, audit: AuditLog, clock: Clock | None = None,
                 surfaces: Sequence[str] = (), events: EventBus | None = None) -> None:
        super().__init__(db, config, clock=clock)
        self.audit = audit
        self.fanout = FanOut(config, surfaces=surfaces)
        self.events = events or EventBus()
        self.channel_tests: Any = None
        """core.channel_test.ChannelTests, set by the process that can send; `/incident test` uses it (typed
        Any: channel_test reads appearance, which reads incidents)."""
        self.schedules = ScheduleService(db, config, audit=audit, clock=self.clock)
        self.flaps = Flaps(self)
        """On-call schedules and overrides (every entry point reaches them through the service it has)."""

    @property
    def surfaces(self) -> list[str]:
        """Chat platforms whose incident card follows every incident (e.g. ['slack', 'telegram'])."""
        return self.fanout.surfaces

    # --- writes -------------------------------------------------------------------------------

    async def declare(self, *, actor: Actor, title: str, severity: str, description: str = "",
                      contact_list: str | None = None, source: str | None = None,
                      labels: dict[str, Any] | None = None, payload: dict[str, Any] | None = None,
                      correlation_key: str | None = None, event_type: str = "declare",
                      session: AsyncSession | None = None) -> Outcome:
        """Open an incident (INITIAL message) and page whoever routing names."""
        cfg = self.cfg
        require(cfg, actor, Permission.SEND_INCIDENTS)
        sev = check_severity(severity)
        title = check_title(title)
        description = clean_text(description)
        check_contact_list(cfg, contact_list)
        now = self.clock.now()
        async with self._tx(session) as s:
            ev = RouteEvent(event_type=event_type, severity=sev, source=source or actor.platform,
                            payload=payload or {}, labels=labels or {}, metadata={"title": title})
            win = await suppressing(s, actor=actor, now=now, title=title, event=ev)
            if win is not None:
                return await self._suppressed(s, win, actor, now, what=title)
            storm = await occurrence(s, cfg, ev, key=correlation_key or title, now=now) if inbound(actor) else None
            if storm is not None and storm.held:
                return Outcome(None, None, 0, changed=False, note=storm.text(), held=True)
            if storm is not None:
                description = f"{storm.text()}\n{description}".strip()
                labels = {**(labels or {}), "occurrences": str(storm.seen)}
            flap = await at_open(s, cfg, ev, key=correlation_key, now=now) if inbound(actor) else None
            if flap is not None:
                description = f"{opened_note(flap)}\n{description}".strip()
            row: dict[str, Any] = {
                "title": title, "description": description, "severity": sev, "state": OPEN,
                "source": source or actor.platform, "commander": actor.identity, "comms": None, "scribe": None,
                "role_names": {}, "contact_list": contact_list, "created_at": now, "updated_at": now,
                "state_since": now, "acknowledged_by": None, "acknowledged_at": None, "resolved_at": None,
                "version": 1, "escalation_policy": None, "escalation_snapshot": None, "escalation_level": 0,
                "escalation_round": 0, "next_escalation_at": None, "correlation_key": correlation_key,
                "labels": labels or {}, "payload": payload or {}, "flapping": flap,
                "flapping_until": stable_at(flap, now)}
            row["id"] = (await INSERT_INCIDENT.run(s, row))[0][0]  # no unit-of-work flush on the hot path
            inc = row_object(Incident, row)
            ev = incident_event(inc, event_type)
            extra = Targets(lists=[contact_list]) if contact_list else None
            p = plan(cfg, ev, now=now, extra=extra, overrides=await overrides_in_force(s, cfg, now),
                     actor_contacts=acting_contacts(cfg, actor.identity))
            pol = cfg.policy(p.escalation_policy) if p.escalation_policy else None
            if pol:  # routing needed the incident's ref; part of opening it (still version 1)
                snap = pol.model_dump(mode="json")
                esc = {"escalation_policy": pol.name, "escalation_snapshot": snap,
                       "next_escalation_at": first_due(snap, now)}
                conn = await connection(s)
                await conn.execute(update(Incident.__table__).where(Incident.__table__.c.id == inc.id).values(**esc))
                for k, v in esc.items():
                    setattr(inc, k, v)
            attach(s, inc)  # the session's object for this row, as if flushed (later loads in this transaction)
            await self._state_change(s, inc, from_state=None, to_state=OPEN, actor=actor, now=now,
                                     seconds_in_previous=None)
            msg = await self._message(s, inc, "INITIAL", description or title, actor, now)
            queued = await self.fanout.incident(s, inc, msg, p, now, kind="INITIAL", body=description or title,
                                                event_type=event_type, fresh=True)
            await self.audit.append(s, actor=actor.identity, source=actor.source, action="incident.declare",
                                    resource=inc.ref, now=now, details={
                                        "title": title, "severity": sev, "contact_list": contact_list,
                                        "queued": queued, "rules": [r.name for r in p.matched_rules],
                                        "escalation_policy": inc.escalation_policy})
        log.info("incident.state.changed", extra={"incident": inc.ref, "to_state": OPEN, "actor": actor.identity,
                                                  "queued": queued})
        await self.events.emit(session, IncidentEvent("declare", inc.id, msg.id, actor.identity, queued, OPEN,
                                                     None, fresh=True,
                                                     next_escalation_at=inc.next_escalation_at))
        return Outcome(inc, msg, queued, p)

    async def update(self, ref: str | int, *, actor: Actor, text: str,
                     session: AsyncSession | None = None) -> Outcome:
        """Add an UPDATE to the thread and notify."""
        if held := await self.flaps.hold(ref, actor=actor, text=text, last="fire", session=session):
            return held
        return await self._post(ref, actor=actor, kind="UPDATE", event_type="update", text=text, session=session)

    async def bridge(self, ref: str | int, *, actor: Actor, details: str, text: str = "") -> Outcome:
        """Post conference bridge details (BRIDGE can come at any position, not after resolve)."""
        details = clean_text(details)
        if not details:
            raise InvalidInput("a bridge needs a URL or dial-in")
        text = clean_text(text)
        body = details + (f"\n{text}" if text else "")
        return await self._post(ref, actor=actor, kind="BRIDGE", event_type="bridge", text=body,
                                extra={"bridge": details})

    async def monitor(self, ref: str | int, *, actor: Actor, text: str = "") -> Outcome:
        """Open -> Monitoring: the fix is in, we are watching. Stops escalation."""
        return await self._transition(ref, actor=actor, to=MONITORING, kind="MONITORING", event_type="monitor",
                                      text=text or "Fix applied; monitoring.", allowed_from=(OPEN,))

    async def resolve(self, ref: str | int, *, actor: Actor, text: str = "", event_type: str = "resolve",
                      session: AsyncSession | None = None) -> Outcome:
        """Close the thread with RESOLVED (`event_type` is what routing sees, e.g. heartbeat.recovered)."""
        if held := await self.flaps.hold(ref, actor=actor, text=text, last="resolve", session=session):
            return held
        return await self._transition(ref, actor=actor, to=RESOLVED, kind="RESOLVED", event_type=event_type,
                                      text=text or "Resolved.", allowed_from=(OPEN, MONITORING), session=session)

    async def acknowledge(self, ref: str | int, *, actor: Actor, session: AsyncSession | None = None) -> Outcome:
        """Record who acknowledged and when (idempotent); stop escalation and cancel queued escalation pages."""
        cfg = self.cfg
        iid = parse_ref(ref)
        now = self.clock.now()
        async with self._tx(session) as s:
            inc = await self._load(s, iid, ref)
            await require_ack(s, cfg, actor, inc)
            if inc.state == RESOLVED:
                raise InvalidTransition(f"{inc.ref} is already resolved; nothing to acknowledge")
            if inc.acknowledged_at is not None:
                return Outcome(inc, None, 0, changed=False,
                               note=f"{inc.ref} was already acknowledged by {inc.acknowledged_by} "
                                    f"at {utc(inc.acknowledged_at):%Y-%m-%d %H:%M:%S} UTC")
            await self._cas(s, inc, acknowledged_by=actor.identity, acknowledged_at=now, next_escalation_at=None)
            cancelled = await cancel_escalation_pages(s, incident_id=inc.id, now=now)
            msg = await self._message(s, inc, "ACK", f"Acknowledged by {actor.display or actor.identity}", actor, now)
            p = await self._plan(s, cfg, inc, "ack", actor, now)
            queued = await self.fanout.incident(s, inc, msg, p, now, kind="ACK", body=msg.body, event_type="ack")
            await self.audit.append(s, actor=actor.identity, source=actor.source, action="incident.ack",
                                    resource=inc.ref, now=now,
                                    details={"cancelled_escalation_pages": cancelled, "queued": queued})
        await self.events.emit(session, IncidentEvent("ack", inc.id, msg.id, actor.identity, queued,
                                                     inc.state, inc.state, stop_paging=True))
        return Outcome(inc, msg, queued, p, cancelled_pages=cancelled)

    async def acknowledge_by_delivery(self, delivery_id: int, *, source: str) -> str:
        """A paged person acknowledged from the page itself (e.g. pressed 1 on the voice call): act as that
        contact (`contact:<name>`), which the paged-contact rule allows. Returns a sentence to tell them."""
        async with self.db.sessions() as s:
            d = await s.get(Delivery, int(delivery_id))
        if d is None or d.incident_id is None:
            raise NotFound(f"no incident page {delivery_id}")
        out = await self.acknowledge(d.incident_id, actor=Actor(f"contact:{d.recipient}", source, d.recipient))
        assert out.incident is not None
        if not out.changed:
            return f"Incident {out.incident.id} was already acknowledged. Thank you."
        return f"Incident {out.incident.id} is acknowledged. Thank you."

    async def escalate(self, ref: str | int, *, actor: Actor, due_at: datetime | None = None,
                       session: AsyncSession | None = None,
                       audit_batch: MutableSequence[dict[str, Any]] | None = None,
                       batch: GroupWrites | None = None) -> Outcome:
        """Page the next escalation level now (`/incident escalate`), or, with `due_at` (the timer), only
        if the incident is still due: open, unacknowledged and past `next_escalation_at`. The row is read
        under lock (FOR UPDATE on PostgreSQL; SQLite transactions begin IMMEDIATE) and written
        compare-and-set, so of two processes firing the same escalation exactly one pages; the other,
        a stale timer, or an ack in between gets a no-op `not due` Outcome. The levels come from the
        policy snapshot taken at open, so a config reload mid-incident neither skips nor repeats one.
        With `session` (the timer's group commit) it writes in the caller's transaction and tells
        listeners, metrics and the log only once that commits (events.publish_pending); with `audit_batch` too,
        its audit entry is added to that list and the caller must `audit.append_many` it before committing
        (one chain-head read for the whole group). With `batch` too (core/escalation.py EscalationBatch),
        the rules are the same, but the row comes from the group's one locked read and this incident's
        writes (its compare-and-set UPDATE, message, queued deliveries, event) go out with the group's in
        bulk when the caller flushes the batch, before it commits."""
        if audit_batch is not None and session is None:
            raise ValueError("audit_batch needs the caller's session: its entries must commit with it")
        if batch is not None and audit_batch is None:
            raise ValueError("batch needs audit_batch: the group's audit entries are appended together")
        cfg = self.cfg
        iid = parse_ref(ref)
        now = self.clock.now()
        async with self._tx(session) as s:
            inc = batch.incident(iid, ref) if batch is not None else await self._load(s, iid, ref)
            cas = batch.cas if batch is not None else functools.partial(self._cas, s)
            if due_at is None:
                require(cfg, actor, Permission.SEND_INCIDENTS)
            else:
                nxt = utc(inc.next_escalation_at)
                if nxt is None or nxt > now or inc.state != OPEN or inc.acknowledged_at is not None:
                    return Outcome(inc, None, 0, changed=False, note="not due")
            if inc.state == RESOLVED:
                raise InvalidTransition(f"{inc.ref} is resolved; there is nobody left to escalate to")
            snap = inc.escalation_snapshot
            if not snap or not snap.get("levels"):
                raise InvalidTransition(f"{inc.ref} has no escalation policy (no routing rule picked one)")
            step = next_step(snap, level=inc.escalation_level, round=inc.escalation_round,
                             manual=due_at is None)
            if step is None:
                await cas(inc, next_escalation_at=None)
                return Outcome(inc, None, 0, changed=False, note="policy exhausted")
            nxt_at: datetime | None = None
            if step.next_wait_minutes is not None and inc.state == OPEN and inc.acknowledged_at is None:
                nxt_at = now + timedelta(minutes=step.next_wait_minutes)
            await cas(inc, escalation_level=step.level, escalation_round=step.round, next_escalation_at=nxt_at)
            body = f"Escalated to level {step.level}" + (f" (round {step.round + 1})" if step.round else "")
            extra = {"level": step.level, "round": step.round, "policy": inc.escalation_policy}
            targets = Targets.model_validate(dict(step.targets))
            overrides = batch.overrides if batch is not None else await overrides_in_force(s, cfg, now)
            p = (batch.plan if batch is not None else escalation_plan)(
                cfg, inc, level=step.level, targets=targets, now=now, overrides=overrides,
                actor_contacts=acting_contacts(cfg, actor.identity))
            if batch is None:
                msg = await self._message(s, inc, "ESCALATION", body, actor, now, extra=extra)
                queued = await self.fanout.incident(s, inc, msg, p, now, kind="ESCALATION", body=body,
                                                    event_type="escalate", purpose="escalation")
            else:  # written with the rest of the group when the batch is flushed
                msg, queued = batch.add(inc, body=body, actor=actor, now=now, extra=extra, plan=p)
            entry: dict[str, Any] = {
                "actor": actor.identity, "source": actor.source, "action": "incident.escalate",
                "resource": inc.ref, "details": {
                    "level": step.level, "round": step.round, "queued": queued,
                    "policy": inc.escalation_policy, "manual": due_at is None,
                    "next_escalation_at": nxt_at.isoformat() if nxt_at else None}}
            if audit_batch is not None:
                audit_batch.append(entry)
            else:
                await self.audit.append(s, now=now, **entry)
        fired = {"incident": inc.ref, "level": step.level, "round": step.round, "queued": queued,
                 "manual": due_at is None}

        def record(*_: Any) -> None:
            ESCALATIONS.labels(level=str(step.level)).inc()
            log.info("escalation.fired", extra=fired)

        if session is None:
            record()
        else:  # only once the caller's transaction really commits
            _after_commit(session, record)
        ev = IncidentEvent("escalate", inc.id, msg.id, actor.identity, queued, inc.state, inc.state)
        if batch is not None:
            batch.emit(msg, ev)  # its message id is known once the batch is written
        else:
            await self.events.emit(session, ev)
        return Outcome(inc, msg, queued, p)

    # --- internals ----------------------------------------------------------------------------

    @staticmethod
    async def _plan(s: AsyncSession, cfg: Config, inc: Incident, event_type: str, actor: Actor,
                    now: datetime) -> Plan:
        """Who hears of this incident message: never the actor; once acknowledged, news only reaches the
        acknowledger's team."""
        acked = acting_contacts(cfg, inc.acknowledged_by) if inc.acknowledged_by else set()
        return incident_plan(cfg, inc, event_type, now=now, overrides=await overrides_in_force(s, cfg, now),
                             actor_contacts=acting_contacts(cfg, actor.identity), acked_by=acked)

    async def _post(self, ref: str | int, *, actor: Actor, kind: str, event_type: str, text: str,
                    extra: dict[str, Any] | None = None, session: AsyncSession | None = None) -> Outcome:
        cfg = self.cfg
        require(cfg, actor, Permission.SEND_INCIDENTS)
        text = check_text(text, what=f"an {event_type}")
        iid = parse_ref(ref)
        now = self.clock.now()
        async with self._tx(session) as s:
            inc = await self._load(s, iid, ref)
            if inc.state == RESOLVED:
                raise InvalidTransition(f"{inc.ref} is resolved; it takes no more {kind} messages "
                                        "(declare a new incident instead)")
            await self._cas(s, inc)
            msg = await self._message(s, inc, kind, text, actor, now, extra=extra)
            p = await self._plan(s, cfg, inc, event_type, actor, now)
            queued = await self.fanout.incident(s, inc, msg, p, now, kind=kind, body=text, event_type=event_type)
            await self.audit.append(s, actor=actor.identity, source=actor.source, action=f"incident.{event_type}",
                                    resource=inc.ref, now=now, details={"message": msg.id, "queued": queued})
        await self.events.emit(session, IncidentEvent(event_type, inc.id, msg.id, actor.identity, queued,
                                                     inc.state, inc.state))
        return Outcome(inc, msg, queued, p)

    async def _transition(self, ref: str | int, *, actor: Actor, to: str, kind: str, event_type: str, text: str,
                          allowed_from: tuple[str, ...], session: AsyncSession | None = None) -> Outcome:
        cfg = self.cfg
        require(cfg, actor, Permission.SEND_INCIDENTS)
        iid = parse_ref(ref)
        text = clean_text(text) or ("Resolved." if to == RESOLVED else "Fix applied; monitoring.")
        now = self.clock.now()
        async with self._tx(session) as s:
            inc = await self._load(s, iid, ref)
            if inc.state not in allowed_from:
                raise InvalidTransition(f"{inc.ref} is already {inc.state}; cannot {event_type} it")
            prev = inc.state
            spent = (now - utc(inc.state_since)).total_seconds() if inc.state_since else None
            values: dict[str, Any] = {"state": to, "state_since": now, "next_escalation_at": None}
            if to == RESOLVED:
                values["resolved_at"] = now
            await self._cas(s, inc, **values)
            cancelled = await cancel_escalation_pages(s, incident_id=inc.id, now=now)
            if to == RESOLVED:
                await cancel_reminders(s, incident_id=inc.id, now=now)
            await self._state_change(s, inc, from_state=prev, to_state=to, actor=actor, now=now,
                                     seconds_in_previous=spent)
            msg = await self._message(s, inc, kind, text, actor, now)
            p = await self._plan(s, cfg, inc, event_type, actor, now)
            queued = await self.fanout.incident(s, inc, msg, p, now, kind=kind, body=msg.body,
                                                event_type=event_type)
            await self.audit.append(s, actor=actor.identity, source=actor.source, action=f"incident.{event_type}",
                                    resource=inc.ref, now=now, details={
                                        "from": prev, "to": to, "seconds_in_previous": spent, "queued": queued,
                                        "cancelled_escalation_pages": cancelled})
        log.info("incident.state.changed", extra={"incident": inc.ref, "from_state": prev, "to_state": to,
                                                  "actor": actor.identity})
        await self.events.emit(session, IncidentEvent(event_type, inc.id, msg.id, actor.identity, queued,
                                                     to, prev, stop_paging=True))
        return Outcome(inc, msg, queued, p, cancelled_pages=cancelled)


async def require_ack(s: AsyncSession, cfg: Config, actor: Actor, inc: Incident) -> None:
    """OPERATOR and above may ack; so may any contact who was paged for this incident."""
    if allows(role_for(cfg, actor), Permission.ACKNOWLEDGE):  # the permission table, no role list
        return
    paged = (await s.execute(select(Delivery.recipient).where(  # followers' news grants no ack right
        Delivery.incident_id == inc.id, Delivery.purpose != "subscription").distinct())).scalars().all()
    for name in paged:
        if actor.identity in contact_identities(cfg, name):
            return
    require(cfg, actor, Permission.ACKNOWLEDGE)


_AFTER_COMMIT = "tocsin_after_commit"


def _after_commit(session: AsyncSession, hook: Any) -> None:
    """Run `hook` once `session`'s transaction commits. Kept in session.info, so an operation that rolls
    back to its savepoint (group commit, core/db.py) takes its hooks with it."""
    hooks = session.info.get(_AFTER_COMMIT)
    if not hooks:
        hooks = session.info[_AFTER_COMMIT] = []

        def run(sync_session: Any) -> None:
            for h in sync_session.info.pop(_AFTER_COMMIT, []):
                h()

        sa_event.listen(session.sync_session, "after_commit", run, once=True)
    hooks.append(hook)
