"""When an incident's reminders are due: a pure function of (config, what the database says, now).

The reminder timer (core/reminders.py) only decides when to call this; tests read it as a table. A
reminder repeats at its interval, counted from the later of what started it (declared, the last UPDATE,
entering Monitoring) and the last time it was sent, so a timer that was down does not catch up with a
burst. A snooze moves every due time to its end; a resolved incident has no reminders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.config import RemindersConfig

KINDS = ("unacknowledged", "update", "monitoring")
"""The reminder kinds, as `incident_reminders.kind` stores them."""
SNOOZE = "snooze"
"""`incident_reminders.kind` of a snooze row (its `due_at`: until when)."""


@dataclass(frozen=True)
class Facts:
    """What the database says about one incident, as the policy needs it."""

    state: str
    severity: str
    created_at: datetime
    state_since: datetime
    acknowledged: bool
    last_update_at: datetime | None = None
    last_sent: dict[str, datetime] = field(default_factory=dict)
    """kind -> when that reminder was last sent."""
    snoozed_until: datetime | None = None


@dataclass(frozen=True)
class Due:
    kind: str
    at: datetime
    since: datetime
    """What the reminder counts from (declared, the last update, entering Monitoring): its wording says
    how long ago that was."""


def _later(*times: datetime | None) -> datetime:
    return max(t for t in times if t is not None)


def due(cfg: RemindersConfig, f: Facts) -> list[Due]:
    """Every reminder this incident has coming, with the time each is due (maybe already past)."""
    out: list[Due] = []
    if f.state == "open" and not f.acknowledged:
        every = cfg.interval("unacknowledged", f.severity)
        if every is not None:
            out.append(Due("unacknowledged", _later(f.created_at, f.last_sent.get("unacknowledged")) + every,
                           f.created_at))
    if f.state == "open":
        every = cfg.interval("update", f.severity)
        if every is not None:
            since = _later(f.created_at, f.last_update_at)
            out.append(Due("update", _later(since, f.last_sent.get("update")) + every, since))
    if f.state == "monitoring":
        every = cfg.interval("monitoring", f.severity)
        if every is not None:
            out.append(Due("monitoring", _later(f.state_since, f.last_sent.get("monitoring")) + every,
                           f.state_since))
    if f.snoozed_until is not None:
        out = [Due(d.kind, max(d.at, f.snoozed_until), d.since) for d in out]
    return out
