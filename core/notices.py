"""One-time notices (no incident, no thread) and maintenance suppression answers: the part of the incident
service that is not about an incident's state. IncidentService builds on it."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.log import AuditLog
from core.clock import utc
from core.config import Targets
from core.events import EventBus, IncidentEvent
from core.fanout import FanOut
from core.incident_store import IncidentStore
from core.maintenance import suppressing
from core.models import IncidentMessage, MaintenanceWindow
from core.outcome import Outcome
from core.rbac import Actor, Permission, acting_contacts, require
from core.routing import RouteEvent, plan
from core.schedules.service import overrides_in_force
from core.validation import check_contact_list, check_severity, check_text


class Notices(IncidentStore):
    """`notify` (a ONE-TIME message) and the answer for an event a maintenance window suppressed."""

    audit: AuditLog
    fanout: FanOut
    events: EventBus

    async def notify(self, *, actor: Actor, text: str, contact_list: str | None = None,
                     targets: Targets | None = None, severity: str = "sev4", event_type: str = "notify",
                     source: str | None = None, payload: dict[str, Any] | None = None,
                     labels: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
                     urgent: bool = False, session: AsyncSession | None = None) -> Outcome:
        """A ONE-TIME message: no incident, no thread. It is news (people's news channels) unless `urgent`,
        which makes it a page. An inbound event passes its labels and metadata so the rules that chose
        `notify` also match when the deliveries are planned."""
        cfg = self.cfg
        require(cfg, actor, Permission.SEND_INCIDENTS)
        text = check_text(text, what="a notification")
        check_contact_list(cfg, contact_list)
        sev = check_severity(severity)
        now = self.clock.now()
        t = targets or Targets()
        if contact_list:
            t = Targets(lists=t.lists + [contact_list], contacts=t.contacts, destinations=t.destinations)
        async with self._tx(session) as s:
            win = await suppressing(s, actor=actor, now=now, title=text, event=RouteEvent(
                event_type=event_type, severity=sev, source=source or actor.platform, payload=payload or {},
                labels=labels or {}, metadata=metadata or {}))
            if win is not None:
                return await self._suppressed(s, win, actor, now, what=text)
            msg = IncidentMessage(incident_id=None, kind="ONE_TIME", body=text, author=actor.identity,
                                  created_at=now, extra={"contact_list": contact_list, "urgent": urgent})
            s.add(msg)
            await s.flush()
            ev = RouteEvent(event_type=event_type, severity=sev, source=source or actor.platform,
                            payload=payload or {}, labels=labels or {}, metadata=metadata or {}, urgent=urgent)
            p = plan(cfg, ev, now=now, extra=t, overrides=await overrides_in_force(s, cfg, now),
                     actor_contacts=acting_contacts(cfg, actor.identity))
            queued = await self.fanout.one_time(s, msg, p, ev, severity=sev, now=now)
            await self.audit.append(s, actor=actor.identity, source=actor.source, action="notify.one_time",
                                    resource=f"message:{msg.id}", now=now,
                                    details={"contact_list": contact_list, "queued": queued, "urgent": urgent})
        await self.events.emit(session, IncidentEvent("notify", None, msg.id, actor.identity, queued))
        return Outcome(None, msg, queued, p)

    async def _suppressed(self, s: AsyncSession, win: MaintenanceWindow, actor: Actor, now: datetime, *,
                          what: str) -> Outcome:
        await self.audit.append(s, actor=actor.identity, source=actor.source, action="maintenance.suppressed",
                                resource=win.ref, now=now, details={"what": what[:200]})
        return Outcome(None, None, 0, changed=False, suppressed_by=win,
                       note=f"suppressed by maintenance window {win.ref} (until {utc(win.ends_at):%H:%M} UTC)")

