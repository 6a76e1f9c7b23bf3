"""The neutral Notification every sender renders, and the DeliveryResult every sender returns."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

Kind = Literal["INITIAL", "UPDATE", "BRIDGE", "RESOLVED", "ONE_TIME", "ACK", "MONITORING", "ESCALATION", "ALERT"]


CHANNEL_POST = "channel"
"""The address of a `chat:<platform>` delivery that is a plain post in that platform's incident channel
(an on-call handoff), not an incident card sync (whose address is the incident id)."""


@dataclass
class Notification:
    """Channel-agnostic content of one message: stored as JSON in deliveries.payload."""

    kind: str
    title: str
    body: str = ""
    severity: str | None = None
    state: str | None = None
    incident: str | None = None
    """Human id, e.g. INC-12 (None for ONE_TIME)."""
    fields: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    ack_url: str | None = None
    event: dict[str, Any] = field(default_factory=dict)
    """The event as routed (for the generic webhook body)."""

    def to_json(self) -> dict[str, Any]:
        # Same result as dataclasses.asdict() (independent copies of the containers) at a sixteenth of the
        # cost: webhook and outbox renders call this once per page of a fan-out.
        return {name: _copy_json(getattr(self, name)) for name in _NOTIFICATION_FIELDS}

    def to_stored(self) -> dict[str, Any]:
        """The fields as they are stored, sharing the containers (no copy): for a caller that serializes the
        result at once and changes only its top level. A near-limit event's payload (a million bytes of
        JSON) took 50-100 ms of the event loop to copy, on top of serializing it."""
        return {name: getattr(self, name) for name in _NOTIFICATION_FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notification:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


_NOTIFICATION_FIELDS = tuple(f.name for f in fields(Notification))


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


@dataclass(frozen=True)
class DeliveryResult:
    """A sender's verdict. The worker, not the sender, decides what happens next."""

    outcome: Literal["delivered", "retry", "permanent"]
    summary: str = ""
    status_code: int | None = None
    retry_after: float | None = None
    """Seconds the provider asked us to wait (Retry-After / retry_after); honoured exactly."""

    @classmethod
    def ok(cls, summary: str = "ok", status_code: int | None = None) -> DeliveryResult:
        return cls("delivered", summary, status_code)

    @classmethod
    def retry(cls, summary: str, status_code: int | None = None, after: float | None = None) -> DeliveryResult:
        return cls("retry", summary, status_code, after)

    @classmethod
    def permanent(cls, summary: str, status_code: int | None = None) -> DeliveryResult:
        return cls("permanent", summary, status_code)


@dataclass(frozen=True)
class Envelope:
    """What a sender gets for one attempt: the stored delivery's addressing plus its notification."""

    delivery_id: int
    channel: str
    recipient: str
    address: str
    idempotency_key: str
    attempt: int
    notification: Notification
