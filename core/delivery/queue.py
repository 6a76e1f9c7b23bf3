"""The durable queue: enqueue inside the caller's transaction; claim with a lease; finish or reschedule.

Claims are one statement that both picks and leases rows, so two workers (tasks or processes) never hold
the same delivery: on PostgreSQL the picking subquery is `FOR UPDATE SKIP LOCKED`; on SQLite the whole
`UPDATE ... RETURNING` runs under the database write lock (our transactions begin IMMEDIATE). A lease
that is not renewed (the process died) expires and `reclaim_expired` puts the row back in the queue.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, bindparam, func, insert, literal_column, null, select, text, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import sqlite_driver
from core.clock import utc
from core.config import Config
from core.db import Prepared, connection, pg_insert_unnest
from core.delivery.message import Envelope, Notification
from core.delivery.policy import retry_policy
from core.models import Delivery, DeliveryAttempt, MessagePayload

_T = Delivery.__table__
_P = MessagePayload.__table__
NOTIFY_CHANNEL = "tocsin_deliveries"
"""PostgreSQL LISTEN/NOTIFY channel: enqueue notifies it on commit so workers in other processes wake."""


@dataclass(frozen=True)
class NewDelivery:
    recipient: str
    channel: str
    address: str
    notification: Notification
    purpose: str = "page"
    reason: str | None = None
    """Why (rule, escalation level, schedule shift): stored on the row, shown in the delivery matrix."""
    ack_url: str | None = None
    """This recipient's own ack link (core.acklinks), in place of the shared notification's."""


def idempotency_key(*, message_id: int | str, recipient: str, channel: str) -> str:
    """Stable per (message, recipient, channel): a retry after a crash carries the same key."""
    return f"tocsin-{message_id}-{channel}-{recipient}"[:200]


ENQUEUE_CHUNK = 1000
"""Rows per INSERT when a fan-out queues many: bounds how long one stretch of work holds the event loop
(SQLite statements run on the loop thread, so the loop is handed back between chunks explicitly)."""


@dataclass(frozen=True, slots=True)
class Queued:
    """A row `enqueue` wrote: what its callers count and report (building 20,000 ORM objects for that held
    the event loop for a quarter of a second)."""

    id: int
    recipient: str
    channel: str
    purpose: str

SHARE_MIN_ROWS = 8
"""A notification sent by at least this many rows of a message is stored once (message_payloads); sent by
fewer, it stays whole in each row (the shared row would cost a statement more than the copies it saves)."""
FEW_ROWS = 16
"""Up to this many rows are inserted one small statement each on SQLite's fast path (core.db.Prepared)."""
_INSERT_ONE = Prepared(insert(_T).returning(_T.c.id))
_INSERT_MANY = Prepared(insert(_T))
_MAX_ID = Prepared(select(func.max(_T.c.id)))
_IDS_AFTER = Prepared(select(_T.c.idempotency_key, _T.c.id).where(_T.c.id > bindparam("b")))

EVENT_CHANNELS = frozenset({"webhook"})
"""Channels whose rendering uses Notification.event (core.appearance.webhook's body)."""


async def enqueue(session: AsyncSession, cfg: Config, *, incident_id: int | None, message_id: int,
                  items: Iterable[NewDelivery], now: datetime) -> list[Queued]:
    """Write one queued row per item. Must run in the same transaction as the change that caused it."""
    values: list[dict[str, Any]] = []
    # A fan-out shares one Notification: it is serialized and stored once (twice: with and without the
    # event) in message_payloads, and each row keeps only what is its own (its ack link). A notification
    # fewer than SHARE_MIN_ROWS rows send stays whole in each of them.
    groups: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    bodies: dict[tuple[int, bool], dict[str, Any]] = {}
    max_attempts: dict[str, int] = {}
    for it in items:
        # Only the generic webhook sends the routed event (up to server.max_body_bytes of payload); every
        # other row's payload leaves it out, so an event's size is not stored twice for nothing.
        with_event = it.channel in EVENT_CHANNELS or it.notification.kind == "DIGEST"  # figures in the event
        group = (id(it.notification), with_event)
        if group not in bodies:
            body = bodies[group] = it.notification.to_stored()
            if not with_event:
                body["event"] = {}
        if it.channel not in max_attempts:
            max_attempts[it.channel] = retry_policy(cfg, it.channel).max_retries + 1
        key = idempotency_key(message_id=message_id, recipient=it.recipient, channel=it.channel)
        if values and len(values) % ENQUEUE_CHUNK == 0:
            await asyncio.sleep(0)  # a large fan-out lets acks and other requests in between
        row = {
            "incident_id": incident_id, "message_id": message_id, "recipient": it.recipient,
            "channel": it.channel, "address": it.address, "purpose": it.purpose, "payload_id": None,
            "payload": {"ack_url": it.ack_url} if it.ack_url is not None else {},
            "reason": it.reason, "idempotency_key": key, "status": "queued", "attempts": 0,
            "max_attempts": max_attempts[it.channel], "next_attempt_at": now, "created_at": now,
            "updated_at": now}
        values.append(row)
        groups.setdefault(group, []).append(row)
    for group, members in groups.items():
        if len(members) < SHARE_MIN_ROWS:
            for row in members:
                row["payload"] = {**bodies[group], **row["payload"]}
            continue
        payload_id = (await session.execute(
            insert(_P).values(message_id=message_id, payload=bodies[group]).returning(_P.c.id))).scalar_one()
        for row in members:
            row["payload_id"] = payload_id
    if not values:
        return []
    # Multi-row INSERT ... RETURNING (a unit-of-work flush would send one INSERT per row), in chunks with
    # the event loop handed back between them, so 20,000 recipients do not hold it for a second. Only the
    # ids come back, matched on the unique key; the records handed back are built from what we wrote.
    ids: dict[str, int] = {}
    fast = sqlite_driver.loop_thread_connection((await connection(session)).sync_connection) is not None
    if fast and len(values) <= FEW_ROWS:
        # A few rows (a page to a rota, an escalation): one small INSERT each straight on sqlite3, inside
        # the write lock; the multi-row path's per-execution work cost more than the rows.
        for v in values:
            ids[v["idempotency_key"]] = (await _INSERT_ONE.run(session, v))[0][0]
    elif fast:
        # Many rows: one sqlite3 executemany per chunk, then their ids in one read of the rowid range
        # after the highest id before them (we hold the write lock: nobody else adds rows meanwhile).
        before = (await _MAX_ID.run(session, {}))[0][0] or 0
        for i in range(0, len(values), ENQUEUE_CHUNK):
            if i:
                await asyncio.sleep(0)
            await _INSERT_MANY.run_many(session, values[i:i + ENQUEUE_CHUNK])
        ids = dict(await _IDS_AFTER.run(session, {"b": before}))
    elif session.bind.dialect.name == "postgresql":
        for i in range(0, len(values), ENQUEUE_CHUNK):
            if i:
                await asyncio.sleep(0)
            ids.update(await pg_insert_unnest(session, _T, values[i:i + ENQUEUE_CHUNK],
                                              ("idempotency_key", "id")))
    else:
        stmt = insert(_T).returning(_T.c.idempotency_key, _T.c.id)
        for i in range(0, len(values), ENQUEUE_CHUNK):
            if i:
                await asyncio.sleep(0)
            ids.update((await session.execute(stmt, values[i:i + ENQUEUE_CHUNK])).all())
    rows = sorted((Queued(ids[v["idempotency_key"]], v["recipient"], v["channel"], v["purpose"]) for v in values),
                  key=lambda r: r.id)
    if rows and session.bind.dialect.name == "postgresql":
        # Delivered at commit (and dropped on rollback): workers in other processes wake at once.
        await session.execute(text("SELECT pg_notify(:ch, '')"), {"ch": NOTIFY_CHANNEL})
    return rows


async def cancel_escalation_pages(session: AsyncSession, *, incident_id: int, now: datetime) -> int:
    """An ack stops paging: every not-yet-sent escalation page of the incident is cancelled."""
    res = await session.execute(
        update(Delivery)
        .where(Delivery.incident_id == incident_id, Delivery.purpose == "escalation",
               Delivery.status == "queued")
        .values(status="cancelled", updated_at=now, last_error="cancelled: incident acknowledged"))
    return int(res.rowcount or 0)


async def cancel_reminders(session: AsyncSession, *, incident_id: int, now: datetime) -> int:
    """Resolve stops reminders: the incident's queued, not-yet-sent reminder messages go with it."""
    res = await session.execute(
        update(Delivery)
        .where(Delivery.incident_id == incident_id, Delivery.purpose == "reminder", Delivery.status == "queued")
        .values(status="cancelled", updated_at=now, last_error="cancelled: incident resolved"))
    return int(res.rowcount or 0)


def summarize(rows: Iterable[Delivery]) -> dict[str, Any]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.status] = out.get(r.status, 0) + 1
    return out


# --- the worker's side: claim, renew, reclaim, release, complete ---------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A leased delivery as the worker needs it; `attempt` already counts this try (1-based)."""

    id: int
    incident_id: int | None
    message_id: int | None
    recipient: str
    channel: str
    address: str
    purpose: str
    notification: Notification
    idempotency_key: str
    attempt: int
    max_attempts: int
    created_at: datetime

    @property
    def resource(self) -> str:
        """What audit entries and log lines name: the incident, or the one-time message."""
        return f"INC-{self.incident_id}" if self.incident_id is not None else f"message:{self.message_id}"

    def envelope(self) -> Envelope:
        return Envelope(delivery_id=self.id, channel=self.channel, recipient=self.recipient,
                        address=self.address, idempotency_key=self.idempotency_key, attempt=self.attempt,
                        notification=self.notification)


_CLAIM_COLUMNS = (_T.c.id, _T.c.incident_id, _T.c.message_id, _T.c.recipient, _T.c.channel, _T.c.address,
                  _T.c.purpose, _T.c.payload_id, type_coerce(_T.c.payload, Text).label("payload"),
                  _T.c.idempotency_key, _T.c.attempts, _T.c.max_attempts,
                  type_coerce(_T.c.created_at, Text).label("created_at"))
"""`payload` comes back as JSON text (decoded once per distinct text, not once per row); `created_at` as
SQLite stores it (datetime.fromisoformat reads it several times faster than the column type's parser)."""


def _stored_time(value: datetime | str | None) -> datetime | None:
    """A timestamp column read as text on SQLite ("YYYY-MM-DD HH:MM:SS.ffffff", UTC) or as a datetime on
    PostgreSQL, as an aware UTC datetime."""
    if value is None or isinstance(value, datetime):
        return utc(value)
    return utc(datetime.fromisoformat(value))

SharedPayloads = dict[int, tuple[dict[str, Any], Notification]]
"""payload_id -> (its JSON, its Notification): a worker keeps one across claims (payloads never change), so a
fan-out's shared payload is read and decoded once, and its rows share one Notification object."""
SHARED_CACHE_MAX = 1024


async def _shared(session: AsyncSession, ids: set[int], cache: SharedPayloads) -> SharedPayloads:
    missing = [i for i in ids if i not in cache]
    if missing:
        if len(cache) + len(missing) > SHARED_CACHE_MAX:
            cache.clear()
        rows = (await session.execute(select(_P.c.id, type_coerce(_P.c.payload, Text))
                                      .where(_P.c.id.in_(missing)))).all()
        for pid, raw in rows:
            data = (json.loads(raw) if isinstance(raw, str) else raw) or {}
            cache[int(pid)] = (data, Notification.from_json(data))
    return cache


async def claim(session: AsyncSession, *, owner: str, now: datetime, lease_seconds: float, limit: int,
                exclude_channels: Collection[str] = (), shared: SharedPayloads | None = None) -> list[Claimed]:
    """Lease up to `limit` due queued deliveries (oldest due first) to `owner`, counting the attempt.

    `exclude_channels`: channels this worker has no free slot for, so their rows stay for others.
    `shared`: the caller's cache of shared payloads (SharedPayloads), kept between claims."""
    if limit <= 0:
        return []
    pick = (select(_T.c.id)
            .where(_T.c.status == "queued", _T.c.next_attempt_at <= now)
            .order_by(_T.c.next_attempt_at, _T.c.id)
            .limit(limit))
    if exclude_channels:
        pick = pick.where(_T.c.channel.not_in(list(exclude_channels)))
    if session.bind.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (update(_T)
            .where(_T.c.id.in_(pick.scalar_subquery()))
            .values(status="sending", lease_owner=owner, attempts=_T.c.attempts + 1, updated_at=now,
                    lease_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(*_CLAIM_COLUMNS))
    rows = (await session.execute(stmt)).all()
    cache = await _shared(session, {r.payload_id for r in rows if r.payload_id is not None},
                          {} if shared is None else shared)
    notes: dict[tuple[int | None, str], Notification] = {}  # one object per distinct payload in this claim
    out = []
    for r in rows:
        raw = r.payload if isinstance(r.payload, str) else json.dumps(r.payload, sort_keys=True)
        note = notes.get((r.payload_id, raw))
        if note is None:
            own = json.loads(raw) or {}
            if r.payload_id is None:  # a row written before message_payloads: its payload is whole
                note = Notification.from_json(own)
            else:
                data, base = cache[r.payload_id]
                note = base if not own else Notification.from_json({**data, **own})
            notes[(r.payload_id, raw)] = note
        out.append(Claimed(id=r.id, incident_id=r.incident_id, message_id=r.message_id, recipient=r.recipient,
                           channel=r.channel, address=r.address, purpose=r.purpose, notification=note,
                           idempotency_key=r.idempotency_key, attempt=r.attempts, max_attempts=r.max_attempts,
                           created_at=_stored_time(r.created_at) or now))
    # RETURNING order is not guaranteed; keep the queue order the subquery chose.
    out.sort(key=lambda c: c.id)
    return out


async def has_due(session: AsyncSession, *, now: datetime, exclude_channels: Collection[str] = ()) -> bool:
    """Is another queued row due (after a claim that filled its limit)? Asked in the claim's transaction,
    so the dispatcher does not learn it from an empty claim of its own: a transaction more per burst."""
    q = select(_T.c.id).where(_T.c.status == "queued", _T.c.next_attempt_at <= now).limit(1)
    if exclude_channels:
        q = q.where(_T.c.channel.not_in(list(exclude_channels)))
    return (await session.execute(q)).first() is not None


async def extend_leases(session: AsyncSession, *, owner: str, now: datetime, lease_seconds: float) -> int:
    """Heartbeat: push back the lease of every row `owner` still holds (slow sends, rows waiting a slot)."""
    res = await session.execute(
        update(_T).where(_T.c.lease_owner == owner, _T.c.status == "sending")
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds)))
    return int(res.rowcount or 0)


async def reclaim_expired(session: AsyncSession, *, now: datetime) -> list[tuple[int, str, str | None]]:
    """Put rows whose lease ran out (their worker died or hung) back in the queue, due now.

    The attempt they were on stays counted: a delivery that crashes its worker every time ends dead
    (and alerts) instead of looping forever. Returns (id, channel, previous owner) per row."""
    expired = (select(_T.c.id, _T.c.channel, _T.c.lease_owner)
               .where(_T.c.status == "sending", _T.c.lease_expires_at < now))
    if session.bind.dialect.name == "postgresql":
        expired = expired.with_for_update(skip_locked=True)
    found = [(int(r[0]), str(r[1]), r[2]) for r in (await session.execute(expired)).all()]
    if not found:
        return []
    await session.execute(
        update(_T)
        .where(_T.c.id.in_([f[0] for f in found]), _T.c.status == "sending", _T.c.lease_expires_at < now)
        .values(status="queued", lease_owner=None, lease_expires_at=None, next_attempt_at=now, updated_at=now,
                last_error="lease expired: the worker holding it stopped before finishing"))
    return found


async def release(session: AsyncSession, *, owner: str, ids: Sequence[int], now: datetime,
                  undo_attempt: bool) -> int:
    """Give leased rows back (shutdown): queued, due now, lease cleared. `undo_attempt` when never tried."""
    if not ids:
        return 0
    values: dict[str, Any] = {"status": "queued", "lease_owner": None, "lease_expires_at": None,
                              "next_attempt_at": now, "updated_at": now}
    if undo_attempt:
        values["attempts"] = _T.c.attempts - 1
    res = await session.execute(
        update(_T).where(_T.c.id.in_(list(ids)), _T.c.lease_owner == owner, _T.c.status == "sending")
        .values(**values))
    return int(res.rowcount or 0)


async def cancel_claimed(session: AsyncSession, *, owner: str, ids: Sequence[int], now: datetime,
                         reason: str) -> list[int]:
    """Cancel rows we hold but have not started (an ack arrived while they waited for a slot)."""
    if not ids:
        return []
    res = await session.execute(
        update(_T).where(_T.c.id.in_(list(ids)), _T.c.lease_owner == owner, _T.c.status == "sending")
        .values(status="cancelled", lease_owner=None, lease_expires_at=None, updated_at=now,
                last_error=reason, attempts=_T.c.attempts - 1)
        .returning(_T.c.id))
    return [int(r[0]) for r in res.all()]


@dataclass(frozen=True)
class Completion:
    """The end of one attempt, as the database will record it."""

    delivery_id: int
    status: str
    """delivered | queued (retry later) | failed | dead"""
    at: datetime
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    attempt: int | None = None
    """None when nothing was attempted (no attempt row)."""
    started_at: datetime | None = None
    latency_ms: float = 0.0
    outcome: str = ""
    status_code: int | None = None
    summary: str = ""


_FINISH = (update(_T)
           .where(_T.c.id == bindparam("b_id"), _T.c.lease_owner == bindparam("b_owner"),
                  _T.c.status == literal_column("'sending'"))
           .values(status=bindparam("b_status"), updated_at=bindparam("b_at"),
                   delivered_at=bindparam("b_delivered_at"), next_attempt_at=bindparam("b_next"),
                   last_error=bindparam("b_error"), lease_owner=null(), lease_expires_at=null()))
"""Every parameter named (the constants are SQL literals), so the batch runs as one Prepared executemany."""
_FINISH_MANY = Prepared(_FINISH)
_PG_FINISH_MANY = text(
    "UPDATE deliveries AS d SET status = v.v_status, updated_at = v.v_at, delivered_at = v.v_delivered, "
    "next_attempt_at = v.v_next, last_error = v.v_error, lease_owner = NULL, lease_expires_at = NULL "
    "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:statuses AS VARCHAR[]), CAST(:ats AS TIMESTAMPTZ[]), "
    "CAST(:delivered AS TIMESTAMPTZ[]), CAST(:nexts AS TIMESTAMPTZ[]), CAST(:errors AS TEXT[])) "
    "AS v(v_id, v_status, v_at, v_delivered, v_next, v_error) "
    "WHERE d.id = v.v_id AND d.lease_owner = :owner AND d.status = 'sending'")
"""_FINISH for a whole batch on PostgreSQL: one statement over arrays (one parameter per column), where an
executemany ran the UPDATE once per row."""
_ATTEMPTS = Prepared(insert(DeliveryAttempt.__table__))


def _finish_params(c: Completion, owner: str) -> dict[str, Any]:
    return {"b_id": c.delivery_id, "b_owner": owner, "b_status": c.status, "b_at": c.at,
            "b_delivered_at": c.at if c.status == "delivered" else None,
            "b_next": c.next_attempt_at or c.at, "b_error": c.last_error}


async def complete(session: AsyncSession, items: Sequence[Completion], *, owner: str) -> list[int]:
    """Record many attempt outcomes in the caller's transaction: one executemany for the row updates,
    one for the attempt log. Rows whose lease `owner` lost (another worker reclaimed them) are left alone.

    Returns the ids of final failures (failed/dead) this call actually moved, so the caller raises
    exactly one alert per lost page."""
    if not items:
        return []
    bulk = [c for c in items if c.status not in ("failed", "dead")]
    finals = [c for c in items if c.status in ("failed", "dead")]
    pg = session.bind.dialect.name == "postgresql"
    if bulk and pg:
        await session.execute(_PG_FINISH_MANY, {
            "owner": owner, "ids": [c.delivery_id for c in bulk], "statuses": [c.status for c in bulk],
            "ats": [c.at for c in bulk],
            "delivered": [c.at if c.status == "delivered" else None for c in bulk],
            "nexts": [c.next_attempt_at or c.at for c in bulk], "errors": [c.last_error for c in bulk]})
    elif bulk:
        await _FINISH_MANY.run_many(session, [_finish_params(c, owner) for c in bulk])
    moved: list[int] = []
    for c in finals:  # rare: one statement each, so we know which ones we really ended
        res = await session.execute(_FINISH.returning(_T.c.id), _finish_params(c, owner))
        if res.first() is not None:
            moved.append(c.delivery_id)
    attempts = [{"delivery_id": c.delivery_id, "attempt": c.attempt, "started_at": c.started_at or c.at,
                 "latency_ms": round(c.latency_ms, 3), "outcome": c.outcome, "status_code": c.status_code,
                 "summary": c.summary[:2000]} for c in items if c.attempt is not None]
    if attempts and pg:
        await pg_insert_unnest(session, DeliveryAttempt.__table__, attempts)
    elif attempts:
        await _ATTEMPTS.run_many(session, attempts)
    return moved
