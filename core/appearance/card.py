"""The platform-neutral snapshot of an incident that every chat card (Slack, Teams, Telegram) draws."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.appearance.vocabulary import holder_name
from core.clock import utc
from core.models import Incident, IncidentTimes


@dataclass(frozen=True)
class IncidentCard(IncidentTimes):
    """Everything a platform needs to draw an incident card; durations come from IncidentTimes."""

    id: int
    ref: str
    title: str
    severity: str
    state: str
    commander: str
    description: str
    created_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    link: str
    state_since: datetime | None = None
    flapping: bool = False
    """Held open as flapping (core/flapping.py): the state reads `Open (flapping)`."""
    comms: str | None = None
    scribe: str | None = None
    role_names: dict[str, Any] = field(default_factory=dict)
    """role -> the name its holder was given (identities above are the truth)."""

    def roles(self) -> list[tuple[str, str, str]]:
        """(role, holder identity, holder name) of every role held, commander first."""
        out = []
        for role in ("commander", "comms", "scribe"):
            ident = getattr(self, role)
            name = holder_name(ident, self.role_names, role)
            if ident and name:
                out.append((role, ident, name))
        return out

    @property
    def open(self) -> bool:
        return self.state != "resolved"

    @property
    def buttons(self) -> list[str]:
        """Actions still meaningful: none once resolved; no Acknowledge once acknowledged."""
        if self.state == "resolved":
            return []
        out = [] if self.acknowledged_at else ["ack"]
        out += ["update"]
        if self.state == "open":
            out.append("monitor")
        out.append("resolve")
        return out

    @classmethod
    def of(cls, inc: Incident, public_url: str) -> IncidentCard:
        return cls(id=inc.id, ref=inc.ref, title=inc.title, severity=inc.severity, state=inc.state,
                   commander=inc.commander, description=inc.description or "",
                   created_at=utc(inc.created_at), acknowledged_by=inc.acknowledged_by,  # type: ignore[arg-type]
                   acknowledged_at=utc(inc.acknowledged_at), resolved_at=utc(inc.resolved_at),
                   link=f"{public_url.rstrip('/')}/incidents/{inc.id}", state_since=utc(inc.state_since),
                   flapping=bool(inc.flapping), comms=inc.comms, scribe=inc.scribe,
                   role_names=dict(inc.role_names or {}))
