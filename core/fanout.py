"""Fan-out: turns one incident change into queued deliveries, in the caller's transaction: the pages the
routing plan names, news to the incident's followers (core/subscriptions.py) whom the plan does not already
reach, plus one card sync per chat surface. IncidentService decides what happened; this module
decides how it is addressed (the neutral Notification) and puts it on the durable queue."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from core.acklinks import ack_link
from core.delivery.message import Notification
from core.delivery.queue import ENQUEUE_CHUNK, NewDelivery, enqueue
from core.metrics import ALERTS
from core.models import Incident, IncidentMessage
from core.rbac import acting_contacts
from core.routing import Plan, PlannedDelivery, RouteEvent, incident_event
from core.subscriptions import follower_news

if TYPE_CHECKING:
    from core.config import Config, ConfigHolder

log = logging.getLogger("tocsin.incidents")


class FanOut:
    """Notification building and enqueueing for incident changes and one-time notifications."""

    def __init__(self, config: ConfigHolder, *, surfaces: Sequence[str] = ()) -> None:
        self.config = config
        self.surfaces = list(surfaces)
        """Chat platforms whose incident card follows every incident (e.g. ['slack', 'telegram'])."""

    @property
    def cfg(self) -> Config:
        return self.config.cfg

    def notification(self, inc: Incident, *, kind: str, body: str, event_type: str) -> Notification:
        base = self.cfg.server.public_url.rstrip("/")
        # Severity, state, id and title have their own places on every page: fields hold only the rest.
        fields = {"Commander": inc.commander}
        for role in ("comms", "scribe"):
            if getattr(inc, role, None):
                fields[role.capitalize()] = getattr(inc, role)
        if inc.acknowledged_by:
            fields["Acknowledged by"] = inc.acknowledged_by
        # No Acknowledge on anything sent once someone acknowledged (or the incident left `open`).
        ackable = inc.state == "open" and inc.acknowledged_at is None
        return Notification(kind=kind, title=inc.title, body=body, severity=inc.severity,
                            state=inc.state, incident=inc.ref, fields=fields,
                            links={"Incident": f"{base}/incidents/{inc.id}"},
                            ack_url=f"{base}/incidents/{inc.id}" if ackable else None,
                            event=incident_event(inc, event_type).as_dict())

    def surface_items(self, inc: Incident, note: Notification) -> list[NewDelivery]:
        """One card sync (edit the card, answer in its thread) per chat platform that follows incidents."""
        return [NewDelivery(f"surface:{p}", f"chat:{p}", str(inc.id), note, "surface") for p in self.surfaces]

    @staticmethod
    def nobody_on_call(p: Plan, *, incident: str | None) -> None:
        """A schedule with nobody on call paged its fallback: that is an internal alert (ERROR + metric),
        never a silent drop."""
        for note in p.nobody_on_call:
            ALERTS.labels(channel="schedule", status="nobody_on_call").inc()
            log.error("schedule.nobody_on_call", extra={"incident": incident, "why": note, "alert": True})

    async def incident(self, s: AsyncSession, inc: Incident, msg: IncidentMessage, p: Plan, now: datetime, *,
                       kind: str, body: str, event_type: str, purpose: str = "page", held: bool = False,
                       followers: Mapping[str, str] | None = None, fresh: bool = False) -> int:
        """Queue the plan's pages, followers' news, and one card sync per chat surface; returns the pages
        queued (followers' news not counted).
        The notification carries the event type routing matched (declare, monitor, resolve, escalate...),
        as webhooks document it. `held`: an entry that pages nobody on purpose (a flapping incident's),
        so an empty plan is not logged as unrouted. `followers`: the incident's followers when the caller
        read them already (core.subscriptions.followers_of, for a group of incidents). `fresh`: the incident
        was declared in this transaction (core.subscriptions.followers)."""
        note = self.notification(inc, kind=kind, body=body, event_type=event_type)
        # Each person's page gets its own signed, single-use ack link (core.acklinks), made here with the page.
        cfg, ackable = self.cfg, note.ack_url is not None
        items: list[NewDelivery] = []
        for i, d in enumerate(p.deliveries):
            if i and i % ENQUEUE_CHUNK == 0:
                await asyncio.sleep(0)  # a fan-out of thousands lets acks in between (signing links costs)
            items.append(NewDelivery(d.recipient, d.channel, d.address, note, purpose, d.reason,
                                     ack_url=ack_link(cfg, message_id=msg.id, channel=d.channel,
                                                      recipient=d.recipient, now=now) if ackable else None))
        # Followers hear it as news (no ack link, their news channels), once: not when routed for it anyway;
        # nor what pages nobody on purpose (`held`).
        news = dataclasses.replace(note, ack_url=None)
        for d in [] if held else await follower_news(s, cfg, inc, routed={d.recipient for d in p.deliveries},
                                                     actors=acting_contacts(cfg, msg.author), now=now,
                                                     people=followers, fresh=fresh):
            items.append(NewDelivery(d.recipient, d.channel, d.address, news, "subscription", d.reason))
        items += self.surface_items(inc, note)
        log.info("notify.event.received", extra={"incident": inc.ref, "message_id": msg.id, "kind": kind,
                                                 "actor": msg.author})
        self.nobody_on_call(p, incident=inc.ref)
        if held:
            log.info("notify.held", extra={"incident": inc.ref, "message_id": msg.id, "kind": kind})
        elif not p.deliveries:
            log.warning("notify.unrouted", extra={"incident": inc.ref, "kind": kind,
                                                 "why": "no rule, contact list or default target reaches anyone"})
        else:
            log.info("notify.rule.matched", extra={
                "incident": inc.ref, "message_id": msg.id, "kind": kind,
                "rules": [r.name for r in p.matched_rules] + (["default_targets"] if p.used_default else []),
                "deliveries": len(p.deliveries), "channels": sorted({d.channel for d in p.deliveries})})
        rows = await enqueue(s, self.cfg, incident_id=inc.id, message_id=msg.id, items=items, now=now)
        return sum(1 for r in rows if r.purpose not in ("surface", "subscription"))

    async def role_change(self, s: AsyncSession, inc: Incident, msg: IncidentMessage,
                          told: Sequence[PlannedDelivery], now: datetime, *, private: str) -> int:
        """A role change: the card sync (the thread shows who holds what now) plus one private `notice` to
        the new holder saying what the role does; nobody else is paged. Returns the notices queued."""
        note = self.notification(inc, kind="ROLE", body=private, event_type="role")
        return await self.thread_entry(s, inc, msg, now, extra=[
            NewDelivery(d.recipient, d.channel, d.address, note, "notice", d.reason) for d in told])

    async def thread_entry(self, s: AsyncSession, inc: Incident, msg: IncidentMessage, now: datetime, *,
                           extra: Sequence[NewDelivery] = ()) -> int:
        """A thread entry that pages nobody (a note, a role change): one card sync per chat surface, plus
        `extra` (already addressed); returns how many of `extra` were queued."""
        note = self.notification(inc, kind=msg.kind, body=msg.body, event_type=msg.kind.lower())
        items = [*extra, *(NewDelivery(f"surface:{p}", f"chat:{p}", str(inc.id), note, "surface")
                           for p in self.surfaces)]
        if not items:
            return 0
        rows = await enqueue(s, self.cfg, incident_id=inc.id, message_id=msg.id, items=items, now=now)
        return sum(1 for r in rows if r.purpose != "surface")

    async def one_time(self, s: AsyncSession, msg: IncidentMessage, p: Plan, ev: RouteEvent, *, severity: str,
                       now: datetime) -> int:
        """A ONE-TIME message's pages (no incident, so no chat card); returns how many were queued."""
        self.nobody_on_call(p, incident=None)
        note = Notification(kind="ONE_TIME", title=msg.body.splitlines()[0][:200], body=msg.body,
                            severity=severity, event=ev.as_dict())
        rows = await enqueue(s, self.cfg, incident_id=None, message_id=msg.id, now=now, items=[
            NewDelivery(d.recipient, d.channel, d.address, note, reason=d.reason) for d in p.deliveries])
        return len(rows)
