"""The incident card the Slack card and form tests draw (one factory, defaults overridable)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from core.appearance.card import IncidentCard

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def card(**over: Any) -> IncidentCard:
    base: dict[str, Any] = dict(id=7, ref="INC-7", title="DB down", severity="sev1", state="open",
                                commander="slack:UOP", description="", created_at=T0, acknowledged_by=None,
                                acknowledged_at=None, resolved_at=None, link="http://tocsin/incidents/7")
    base.update(over)
    return IncidentCard(**base)
