"""Escalation policy: which level comes next and when, as pure functions of a policy snapshot (no scheduler,
no database), so they are tested with tables. The timer (core/escalation.py) only decides when to call
IncidentService.escalate, which applies them."""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from core.config import Config, Targets
    from core.events import IncidentEvent
    from core.models import Incident, IncidentMessage
    from core.rbac import Actor
    from core.routing import Overrides, Plan


@dataclass(frozen=True)
class Step:
    """The escalation the next fire performs."""

    index: int
    """0-based index of the level paged now."""
    level: int
    """1-based level number recorded on the incident (and shown as 'escalated to level N')."""
    round: int
    """0-based pass through the policy (a policy with repeat=1 runs rounds 0 and 1)."""
    levels: int
    rounds: int
    targets: Mapping[str, Any]
    next_wait_minutes: float | None
    """Wait before the step after this one; None when the policy ends here."""


def next_step(snapshot: Mapping[str, Any] | None, *, level: int, round: int, manual: bool) -> Step | None:
    """The step after (level, round) in a policy snapshot; None when there is nothing (left) to fire.

    `level` counts levels already paged in this round (0 = none yet). The wait of level i is the time
    between the previous page and paging level i. After the last level the policy starts over while
    `repeat` allows; a manual escalation past the very end re-pages the last level."""
    levels = list((snapshot or {}).get("levels") or [])
    if not levels:
        return None
    repeat = int((snapshot or {}).get("repeat", 0))
    idx, rnd = level, round
    if idx >= len(levels):
        if rnd < repeat:
            idx, rnd = 0, rnd + 1
        elif manual:
            idx = len(levels) - 1
        else:
            return None
    new_level = idx + 1
    wait: float | None
    if new_level < len(levels):
        wait = float(levels[new_level]["wait_minutes"])
    elif rnd < repeat:
        wait = float(levels[0]["wait_minutes"])
    else:
        wait = None
    return Step(index=idx, level=new_level, round=rnd, levels=len(levels), rounds=repeat + 1,
                targets=levels[idx].get("targets") or {}, next_wait_minutes=wait)


def first_due(snapshot: Mapping[str, Any], opened_at: datetime) -> datetime:
    """When level 1 is due for an incident opened at `opened_at`."""
    return opened_at + timedelta(minutes=float(snapshot["levels"][0]["wait_minutes"]))


class GroupWrites(Protocol):
    """What IncidentService.escalate(batch=) reads and writes through when it runs in a timer group
    (core.escalation.EscalationBatch implements it): the row from the group's one locked read, the plan
    shared where routing cannot tell incidents apart, and the writes deferred to the group's bulk statements.
    A protocol here, not the class, so the service does not import the timer."""

    overrides: Overrides

    def incident(self, iid: int, ref: str | int) -> Incident: ...

    async def cas(self, inc: Incident, **values: Any) -> None: ...

    def plan(self, cfg: Config, inc: Incident, *, level: int, targets: Targets, now: datetime,
             overrides: Overrides | None, actor_contacts: Collection[str]) -> Plan: ...

    def add(self, inc: Incident, *, body: str, actor: Actor, now: datetime, extra: dict[str, Any],
            plan: Plan) -> tuple[IncidentMessage, int]: ...

    def emit(self, msg: IncidentMessage, event: IncidentEvent) -> None: ...
