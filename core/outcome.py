"""Outcome: what a service call answers (the incident, the message, what was queued, why nothing was)."""
from __future__ import annotations

from dataclasses import dataclass

from core.models import Incident, IncidentMessage, MaintenanceWindow
from core.routing import Plan


@dataclass
class Outcome:
    """Result of a service call: the incident (None for one-time), the message and what was queued."""

    incident: Incident | None
    message: IncidentMessage | None
    queued: int = 0
    plan: Plan | None = None
    changed: bool = True
    note: str = ""
    cancelled_pages: int = 0
    suppressed_by: MaintenanceWindow | None = None
    held: bool = False
    """A rule's min_occurrences is not reached yet: the event was counted, nothing opened or paged."""
    """The maintenance window that kept this inbound event from opening or paging (recorded there)."""
