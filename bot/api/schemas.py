"""Request and response models of the HTTP API: validation at the boundary and the OpenAPI schemas both
come from these classes, so the document cannot drift from the code."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time the API shows is UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
Action = Literal["opened", "updated", "resolved", "notified", "ignored", "unchanged", "heartbeat", "suppressed",
                 "held"]


# --- inbound events ----------------------------------------------------------------------------------


class EventMetadata(BaseModel):
    """Where an event comes from; extra keys are kept and visible to routing rules as metadata.*."""

    model_config = ConfigDict(extra="allow")

    source_service: str = Field(min_length=1, max_length=32, description="Routing source of the event.")
    correlation_id: str | None = Field(None, min_length=1, max_length=400,
                                       description="Ties later events to the incident this one opened.")


class InboundEvent(BaseModel):
    """POST /api/v1/events body. Unknown top-level keys are refused so a typo never drops data silently."""

    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    event_id: str = Field(min_length=1, max_length=200, description="Idempotency key within the tenant.")
    timestamp: AwareDatetime
    tenant_id: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any]
    metadata: EventMetadata | None = None
    urgent: bool = Field(False, description="When a rule's action is notify: send the one-time message as a "
                                            "page (people's severity lists) instead of news.")


class EventResult(BaseModel):
    """What an event did; a replayed event_id answers with the result of its first delivery."""

    action: Action
    incident: str | None = None
    incident_id: int | None = None
    severity: str | None = None
    queued: int = 0
    rules: list[str] = Field(default_factory=list)
    note: str = ""


class EventResponse(BaseModel):
    status: Literal["accepted", "duplicate"]
    event_id: str
    result: EventResult


# --- Alertmanager webhook (payload version 4) ----------------------------------------------------------


class AmAlert(BaseModel):
    """One alert of an Alertmanager notification; unknown keys are ignored (newer Alertmanagers add some)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=64)


class AlertmanagerWebhook(BaseModel):
    """POST /api/v1/alertmanager body: Alertmanager's webhook_configs payload, version "4"."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AmAlert]


class AlertmanagerResult(BaseModel):
    action: Action
    incident: str | None = None
    incident_id: int | None = None
    severity: str | None = None
    firing: int = 0
    queued: int = 0
    rules: list[str] = Field(default_factory=list)
    note: str = ""


class AlertmanagerResponse(BaseModel):
    status: Literal["accepted"]
    group_key: str
    result: AlertmanagerResult


class HeartbeatQuery(BaseModel):
    """GET /api/v1/heartbeats/{name} query: the heartbeat's own secret (config heartbeats[].token)."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, description="The heartbeat's `token` from config.yaml")


class HeartbeatPing(BaseModel):
    """A ping was recorded."""

    status: Literal["ok"]
    heartbeat: str
    deadline_at: UtcDatetime = Field(description="A miss is declared if no ping comes by then")
    recovered: str | None = Field(None, description="The incident this ping resolved (the heartbeat was missed)")


# --- incident read API -----------------------------------------------------------------------------------


class IncidentQuery(BaseModel):
    """Query string of GET /api/v1/incidents."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["open", "all", "monitoring", "resolved"] = Field(
        "open", description="open = open and monitoring; all; or one state.")
    limit: int = Field(100, ge=1, le=500, description="Incidents per page, newest first.")
    cursor: int | None = Field(None, ge=1, description=(
        "Continue after this incident id: pass the previous page's next_cursor to reach older incidents."))


class IncidentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ref: str
    title: str
    description: str
    severity: str
    state: str
    source: str
    commander: str
    comms: str | None = Field(None, description="Who runs communications (an identity), if anyone.")
    scribe: str | None = Field(None, description="Who keeps the timeline (an identity), if anyone.")
    contact_list: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    state_since: UtcDatetime
    acknowledged_by: str | None
    acknowledged_at: UtcDatetime | None
    resolved_at: UtcDatetime | None
    correlation_key: str | None
    labels: dict[str, Any]
    payload: dict[str, Any]
    escalation_policy: str | None
    escalation_level: int


class IncidentList(BaseModel):
    count: int = Field(description="Incidents in this page.")
    incidents: list[IncidentOut]
    more: int = Field(0, description="How many more match beyond this page.")
    next_cursor: int | None = Field(None, description="The `cursor` of the next page; null on the last one.")


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    body: str
    author: str
    created_at: UtcDatetime
    extra: dict[str, Any]


class StateChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_state: str | None
    to_state: str
    actor: str
    at: UtcDatetime
    seconds_in_previous: float | None


class DeliveryOut(BaseModel):
    """A page's delivery status; the address is left out on purpose (phone numbers, emails)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: int | None
    recipient: str
    channel: str
    purpose: str
    status: str
    attempts: int
    max_attempts: int
    next_attempt_at: UtcDatetime
    delivered_at: UtcDatetime | None
    last_error: str | None


class IncidentDetailOut(IncidentOut):
    thread: list[MessageOut]
    state_changes: list[StateChangeOut]
    deliveries: list[DeliveryOut]
    delivery_summary: dict[str, int] = Field(description="Deliveries by status.")


# --- errors -------------------------------------------------------------------------------------------------


class FieldProblem(BaseModel):
    field: str
    message: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx answer: a stable code, a message for people and, for validation, the field at fault."""

    error: str
    message: str
    field: str | None = None
    details: list[FieldProblem] = Field(default_factory=list)


class ScheduleFeedQuery(BaseModel):
    """GET /api/v1/schedules/{name}.ics query: the feed's secret, and what to include."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, description="The schedule's `feed_token` from config.yaml")
    weeks: int = Field(4, ge=1, le=52, description="How many weeks ahead")
    contact: str | None = Field(None, description="Only this contact's shifts (a personal feed)")
