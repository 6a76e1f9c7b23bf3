"""Timeline notes: `/incident note INC-n <text>` and Slack's pushpin reaction on a thread message.

A note is a NOTE thread entry and an audit entry; it pages nobody (not even as news: notes are for the
timeline and the postmortem, never for phones), it only follows the incident's card on each chat surface.
"""
from __future__ import annotations

import logging
from typing import Any

from core.errors import Forbidden
from core.events import IncidentEvent
from core.incident_roles import holder_contacts
from core.models import Incident
from core.outcome import Outcome
from core.rbac import Actor, Permission, acting_contacts, allows, require, role_for
from core.validation import check_text, parse_ref

log = logging.getLogger("tocsin.incidents")


def holds_a_role(cfg: Any, actor: Actor, inc: Incident) -> bool:
    """Whether the actor is the incident's commander, comms or scribe (by identity or by contact)."""
    mine = acting_contacts(cfg, actor.identity)
    for role in ("commander", "comms", "scribe"):
        who = getattr(inc, role)
        if who and (who == actor.identity or mine & holder_contacts(cfg, who)):
            return True
    return False


class Notes:
    """Adds notes to an incident's timeline, for every entry point."""

    def __init__(self, service: Any) -> None:
        # an IncidentService (typed Any like core.maintenance.Maintenance)
        self.service = service

    async def add(self, ref: str | int, *, actor: Actor, text: str,
                  extra: dict[str, Any] | None = None) -> Outcome:
        """OPERATOR and above, or whoever holds a role on this incident, may add a note; `extra` records
        where it came from (a pinned Slack message: its author and timestamp)."""
        svc = self.service
        cfg = svc.cfg
        require(cfg, actor, Permission.VIEW)
        text = check_text(text, what="a note")
        iid = parse_ref(ref)
        now = svc.clock.now()
        async with svc._tx(None) as s:
            inc = await svc._load(s, iid, ref)
            if not allows(role_for(cfg, actor), Permission.ADD_NOTES) and not holds_a_role(cfg, actor, inc):
                try:
                    require(cfg, actor, Permission.ADD_NOTES)
                except Forbidden as exc:
                    raise Forbidden(f"{exc}, nor hold a role on {inc.ref}") from None
            await svc._cas(s, inc)
            msg = await svc._message(s, inc, "NOTE", text, actor, now, extra=extra)
            await svc.fanout.thread_entry(s, inc, msg, now)
            await svc.audit.append(s, actor=actor.identity, source=actor.source, action="incident.note",
                                   resource=inc.ref, now=now, details={"message": msg.id, **(extra or {})})
        log.info("incident.note.added", extra={"incident": inc.ref, "actor": actor.identity, "message_id": msg.id})
        await svc.events.emit(None, IncidentEvent("note", inc.id, msg.id, actor.identity, 0, inc.state, inc.state))
        return Outcome(inc, msg, 0)
