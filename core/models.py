"""ORM tables. The schema lives here and in migrations/versions (a test keeps them equal)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

from core.clock import utc

# BigInteger ids that still autoincrement on SQLite (where only INTEGER PRIMARY KEY does).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class IncidentTimes:
    """Durations of an incident, from its timestamps: the one place time to ack/resolve is computed.

    Shared by the ORM row and by the card snapshot the chat surfaces draw (core/appearance/card.py).
    SQLite hands back naive datetimes, hence `utc()`.
    """

    created_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    state_since: datetime | None

    @property
    def time_to_ack(self) -> timedelta | None:
        ack, created = utc(self.acknowledged_at), utc(self.created_at)
        return ack - created if ack and created else None

    @property
    def time_to_resolve(self) -> timedelta | None:
        end, created = utc(self.resolved_at), utc(self.created_at)
        return end - created if end and created else None

    def time_open(self, now: datetime) -> timedelta:
        """Age: from declared to resolved, or to `now` while still open."""
        return (utc(self.resolved_at) or utc(now)) - utc(self.created_at)  # type: ignore[operator]

    def time_in_state(self, now: datetime) -> timedelta:
        """How long the incident has been in its current state."""
        since = utc(self.state_since) or utc(self.created_at)
        return utc(now) - since  # type: ignore[operator]


class Incident(IncidentTimes, Base):
    """One incident; its human id is INC-<id>. `version` makes every state change compare-and-set."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    source: Mapped[str] = mapped_column(String(32), default="cli")
    commander: Mapped[str] = mapped_column(String(200))
    """Who runs the incident (an identity: `slack:U1`, `contact:alice`, ...): the declarer unless reassigned."""
    comms: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Who runs communications (identity), set by `/incident role`."""
    scribe: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Who keeps the timeline (identity), set by `/incident role`."""
    role_names: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """role -> how the holder was named when assigned (a chat display name), for cards; the identity columns
    above are the truth."""
    contact_list: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Escalation: the database is the source of truth for the timer.
    escalation_policy: Mapped[str | None] = mapped_column(String(200), nullable=True)
    escalation_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    escalation_round: Mapped[int] = mapped_column(Integer, default=0)
    next_escalation_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True,
                                                                 index=True)
    # Inbound events: correlation for updates/resolves, and the event's data for routing.
    correlation_key: Mapped[str | None] = mapped_column(String(500), nullable=True, index=True)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Flapping (core/flapping.py): while marked, inbound resolves are held and inbound events page nobody.
    flapping: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """{"reopens", "within" (seconds), "since", "last" ("resolve" | "fire"), "held"}; None when stable."""
    flapping_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    """Last state change + `within`: the flapping timer clears the mark at this time."""

    @property
    def ref(self) -> str:
        return f"INC-{self.id}"


class IncidentMessage(Base):
    """The thread: INITIAL, UPDATE, BRIDGE, RESOLVED, ONE_TIME, plus system entries (ACK, ESCALATION)."""

    __tablename__ = "incident_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IncidentStateChange(Base):
    """Every state transition, with how long the incident spent in the state it left."""

    __tablename__ = "incident_state_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seconds_in_previous: Mapped[float | None] = mapped_column(nullable=True)


class MessagePayload(Base):
    """A message's neutral Notification (core.delivery.message) as JSON, stored once and shared by every
    delivery row of that message: a fan-out to 2,000 recipients writes it once, not 2,000 times. A message
    has at most two: with the routed event (generic webhooks and digests) and without it. A notification
    sent by fewer than core.delivery.queue.SHARE_MIN_ROWS rows stays whole in each row instead."""

    __tablename__ = "message_payloads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("incident_messages.id"), nullable=True, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class Delivery(Base):
    """The durable queue and delivery log: one row per message x recipient x channel."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), nullable=True, index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("incident_messages.id"), nullable=True)
    recipient: Mapped[str] = mapped_column(String(200))
    """Contact or destination name (or `surface:<platform>` for chat cards)."""
    channel: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(Text, default="")
    """Where to send: email, E.164 phone, chat id, or destination name (secrets are resolved at send time)."""
    purpose: Mapped[str] = mapped_column(String(16), default="page")
    """page | escalation | surface | alert: escalation pages are cancelled by an ack."""
    payload_id: Mapped[int | None] = mapped_column(ForeignKey("message_payloads.id"), nullable=True)
    """The message's Notification, stored once for all its rows (MessagePayload)."""
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """With `payload_id`: only what this row adds to the shared Notification (its own `ack_url`). Without (a
    notification only a few rows send, or a row written before migration 0065): the whole Notification.
    Read `notification_json` for the whole."""
    shared_payload: Mapped[dict[str, Any] | None] = column_property(
        select(MessagePayload.payload).where(MessagePayload.id == payload_id).scalar_subquery())
    """Loaded with every ORM read of a Delivery (a correlated subquery); the worker reads with Core."""
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    """queued -> sending -> delivered | failed (permanent) | dead (retries exhausted) | cancelled."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=4)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why this recipient was paged (rule, default targets, escalation level; a schedule names its shift)."""

    @property
    def notification_json(self) -> dict[str, Any]:
        """The whole Notification this row sends: the shared payload with the row's own keys on top."""
        own = self.payload or {}
        return {**self.shared_payload, **own} if self.shared_payload is not None else dict(own)


class DeliveryAttempt(Base):
    """One try of one delivery: what happened, how long it took, what the provider said."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    latency_ms: Mapped[float] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(16))
    """delivered | retry | permanent"""
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="")


class OutboxMessage(Base):
    """What the outbox channel 'sent': the rendered message, for `tocsin outbox` and local use."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"), nullable=True, index=True)
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    """The message as a person reads it on a terminal (core.appearance.terminal.wire_text)."""
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """What the real sender would have sent (core.delivery.base.Wire.data), secrets masked."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AckLinkUse(Base):
    """The one use of a signed ack link (core/acklinks.py): a second click finds this row and is refused."""

    __tablename__ = "ack_link_uses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of the token: the link itself (a credential until it expires) is never stored."""
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    contact: Mapped[str] = mapped_column(String(200))
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    outcome: Mapped[str] = mapped_column(String(32))
    """acknowledged | already_acknowledged"""
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """One link of the SHA-256 hash chain; `seq` is dense (1, 2, 3, ...) so deletions show."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(32))
    """UTC, ISO 8601 with microseconds, stored as text so the hashed bytes never change."""
    actor: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(200), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource: Mapped[str] = mapped_column(String(200), default="", index=True)
    details: Mapped[str] = mapped_column(Text, default="{}")
    """Canonical JSON text (hashed as stored)."""
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditCheckpoint(Base):
    """HMAC-signed (length, head hash): lets verify notice a truncated tail."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(64))


class ChatCard(Base):
    """Where an incident's card lives on a chat surface, so it can be edited and replied to."""

    __tablename__ = "chat_cards"
    __table_args__ = (UniqueConstraint("incident_id", "platform", name="uq_chat_cards_incident_platform"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(200))
    message_ref: Mapped[str] = mapped_column(String(200))
    thread_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ChatConversation(Base):
    """A person's 1:1 conversation with the bot on a chat platform (Teams: the conversation reference
    its conversationUpdate or installationUpdate carried), so a DM page reaches them without opening a chat."""

    __tablename__ = "chat_conversations"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    reference: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SeenKey(Base):
    """Idempotency of inbound things: Slack retries, Telegram update_ids, event_ids, Alertmanager groups."""

    __tablename__ = "seen_keys"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class User(Base):
    """Local console users (argon2 hashes)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebPushKey(Base):
    """The VAPID key pair, generated on first start and kept here (not in config): one row, id 1."""

    __tablename__ = "webpush_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    private_key: Mapped[str] = mapped_column(Text)
    """Raw P-256 private key, base64url (what py_vapid's from_string reads)."""
    public_key: Mapped[str] = mapped_column(Text)
    """Uncompressed point, base64url: the browser's applicationServerKey."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PushSubscription(Base):
    """One browser of one console user that opted in to push; removed on unsubscribe or a 404/410."""

    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(200), index=True)
    endpoint: Mapped[str] = mapped_column(String(1000), unique=True)
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(100))
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BellRead(Base):
    """When a console user last opened the bell: pages after it count as unread."""

    __tablename__ = "bell_reads"

    user: Mapped[str] = mapped_column(String(200), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Subscription(Base):
    """A contact follows one incident (`incident_id`) or every new incident matching a filter (severity,
    tenant, source; all set ones must match). Its news goes through the contact's own news channels."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("contact", "key", name="uq_subscriptions_contact_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    contact: Mapped[str] = mapped_column(String(200), index=True)
    key: Mapped[str] = mapped_column(String(200))
    """What is followed, as typed back to people: `INC-3`, `sev1`, `tenant:acme source:alertmanager`."""
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), nullable=True, index=True)
    severity: Mapped[str | None] = mapped_column(String(8), nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TimerJob(Base):
    """A periodic job that must run once per period across every process (pruning): whoever moves
    `next_run_at` forward by compare-and-set runs it (core/timers.py)."""

    __tablename__ = "timer_jobs"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class HeartbeatState(Base):
    """One configured heartbeat's clock: its deadline lives here so a restart or another process picks it up,
    and `incident_id` (set under the row lock) makes a miss open exactly one incident."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_ping_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    incident_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    missed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    pings: Mapped[int] = mapped_column(BigInteger, default=0)


class ScheduleOverride(Base):
    """Someone covers an on-call schedule for a while, whatever its layers say. Cancelled rows stay (audit)."""

    __tablename__ = "schedule_overrides"
    __table_args__ = (Index("ix_schedule_overrides_window", "schedule", "ends_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(200))
    contact: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelled_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ScheduleHandoff(Base):
    """One handoff that was announced: the unique (schedule, at) makes it happen once across processes."""

    __tablename__ = "schedule_handoffs"
    __table_args__ = (UniqueConstraint("schedule", "at", name="uq_schedule_handoffs_schedule_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outgoing: Mapped[str | None] = mapped_column(String(200), nullable=True)
    incoming: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
class MaintenanceWindow(Base):
    """Planned work: while active, matching inbound events open nothing and page nobody, and matching open
    incidents' escalations are paused (`paused`: incident id -> seconds that were left, resumed at the end)."""

    __tablename__ = "maintenance_windows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    ended_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    match: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    schedule_key: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)
    """`<config window name>@<start>` for a scheduled occurrence: the unique key makes it start once."""
    suppressed: Mapped[int] = mapped_column(BigInteger, default=0)
    paused: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    @property
    def ref(self) -> str:
        return f"M-{self.id}"


class SuppressedEvent(Base):
    """An inbound event a maintenance window kept from opening an incident or paging: recorded, not lost."""

    __tablename__ = "maintenance_suppressed"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    window_id: Mapped[int] = mapped_column(ForeignKey("maintenance_windows.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event_type: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(Text)
    severity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class EventOccurrence(Base):
    """One inbound event counted toward a routing rule's min_occurrences (deleted when the incident opens)."""

    __tablename__ = "event_occurrences"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(300), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IncidentReminder(Base):
    """A reminder sent (kind unacknowledged / update / monitoring) or a snooze (kind snooze, `due_at` is
    until when). Reminders are due at a time computed from the database alone, so two processes computing
    the same reminder insert the same (incident, kind, due_at) and the second loses on the unique key
    (core/reminders.py); a restarted process reads the same rows and neither repeats nor forgets one."""

    __tablename__ = "incident_reminders"
    __table_args__ = (UniqueConstraint("incident_id", "kind", "due_at", name="uq_incident_reminders_due"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("incident_messages.id"), nullable=True)
