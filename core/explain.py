"""Route explanations for admins: `/incident route INC-n <type>`, `tocsin route explain --incident` and
`--event FILE.json`. They print the same Plan the service would queue; they live beside routing (not in it)
because they need the permission table, the escalation policy and an incident reader."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from core.config import Config, Targets
from core.escalation_policy import next_step
from core.rbac import Actor, Permission, acting_contacts, require
from core.routing import RouteEvent, canonical_event_type, escalation_plan, incident_plan, plan
from core.schedules.service import overrides_in_force
from core.subscriptions import follower_news

if TYPE_CHECKING:
    from core.schedules.rotation import Override
    from core.clock import Clock
    from core.db import Database
    from core.models import Incident


class _ServiceLike(Protocol):
    """What explain_incident needs of IncidentService (so this module does not import it)."""

    @property
    def cfg(self) -> Config: ...

    clock: Clock
    surfaces: list[str]
    db: Database

    async def get(self, ref: str | int, *, actor: Actor | None = None) -> Incident: ...


async def explain_incident(service: _ServiceLike, ref: str | int, event_type: str = "update", *,
                           actor: Actor) -> str:
    """`/incident route INC-n <type>` and `tocsin route explain --incident`: which rule would route this
    incident's `event_type`, why the others would not, and the exact recipient x channel list.
    `escalate` shows the next escalation level from the incident's policy snapshot. Admins only."""
    cfg = service.cfg
    require(cfg, actor, Permission.MANAGE_SETTINGS)
    inc = await service.get(ref)
    now = service.clock.now()
    etype = canonical_event_type(event_type)
    head = f"{inc.ref} [{inc.severity}] {inc.state}: {inc.title}"
    if inc.state == "resolved":
        return (f"{head}\n{inc.ref} is resolved: /incident {etype} would be refused and nothing would be "
                "queued (declare a new incident instead).")
    notes: list[str] = []
    async with service.db.sessions() as s:  # schedules resolve with the overrides in force now
        ov = await overrides_in_force(s, cfg, now)
    if etype == "escalate":
        step = next_step(inc.escalation_snapshot, level=inc.escalation_level, round=inc.escalation_round,
                         manual=True)
        if step is None:
            return (f"{head}\nNo escalation policy was picked when this incident opened: "
                    "/incident escalate would be refused.")
        notes.append(f"Escalation policy {inc.escalation_policy} (snapshot taken at open): next is level "
                     f"{step.level} of {step.levels}, round {step.round + 1} of {step.rounds}")
        p = escalation_plan(cfg, inc, level=step.level, targets=Targets.model_validate(step.targets), now=now,
                            overrides=ov)
    else:
        acked = acting_contacts(cfg, inc.acknowledged_by) if inc.acknowledged_by else set()
        p = incident_plan(cfg, inc, etype, now=now, overrides=ov, acked_by=acked)
        if acked and p.event is not None and p.event.news:
            notes.append(f"Acknowledged by {inc.acknowledged_by} ({', '.join(sorted(acked))}): news goes to "
                         "the acknowledger's team only.")
        # The policy is the one picked at open (its snapshot), not what today's rules would pick.
        notes.append(f"Escalation policy: {inc.escalation_policy}, level {inc.escalation_level} (picked when it "
                     "opened)" if inc.escalation_policy else
                     "Escalation: none (no policy was picked when this incident opened)")
    if inc.contact_list and etype != "escalate":
        notes.append(f"Contact list {inc.contact_list} was named at declare: it is paged on every event.")
    if service.surfaces:
        where = ", ".join(service.surfaces)
        notes.append(f"Incident card kept in sync on: {where} (card updates, not pages)")
    notes.append("Whoever sends it is left out: nobody is told about their own action.")
    async with service.db.sessions() as s:
        told = await follower_news(s, cfg, inc, routed={d.recipient for d in p.deliveries}, actors=(), now=now)
    follow = ["Followers (/incident subscribe) not routed for it get it as news:"] + [
        f"  {d.recipient:<20} {d.channel:<14} {d.address:<30} ({d.reason}; via {d.chosen_by})" for d in told]
    return "\n".join([head, *notes, p.explain(policy=False), *(follow if told else [])])


def explain_event(cfg: Config, ev: RouteEvent, *, now: datetime, actor: Actor,
                  overrides: dict[str, list[Override]] | None = None, database: str = "") -> str:
    """`tocsin route explain --event FILE.json`: the same explanation for an event that has no incident.
    `overrides`: the on-call overrides in force now, read from the database (None: it could not be read,
    and `database` says why); the output says which, since an override changes who a schedule pages."""
    require(cfg, actor, Permission.MANAGE_SETTINGS)
    text = plan(cfg, ev, now=now, overrides=overrides or {}).explain()
    if not cfg.schedules:
        return text
    if overrides is None:
        note = (f"On-call overrides: NOT applied ({database}); schedules are resolved from their layers only, "
                "and a page may reach someone else")
    else:
        count = sum(len(v) for v in overrides.values())
        note = f"On-call overrides: applied, {count} in force now (read from {database}, read-only)"
    return f"{note}\n{text}"
