"""The durable queue: enqueue inside the caller's transaction; claim with a lease; finish or reschedule."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from core.config import Config
from core.delivery.message import Notification
from core.delivery.policy import retry_policy
from core.models import Delivery


@dataclass(frozen=True)
class NewDelivery:
    recipient: str
    channel: str
    address: str
    notification: Notification
    purpose: str = "page"


def idempotency_key(*, message_id: int | str, recipient: str, channel: str) -> str:
    """Stable per (message, recipient, channel): a retry after a crash carries the same key."""
    return f"tocsin-{message_id}-{channel}-{recipient}"[:200]


async def enqueue(session: AsyncSession, cfg: Config, *, incident_id: int | None, message_id: int,
                  items: Iterable[NewDelivery], now: datetime) -> list[Delivery]:
    """Write one queued row per item. Must run in the same transaction as the change that caused it."""
    rows = []
    for it in items:
        policy = retry_policy(cfg, it.channel)
        rows.append(Delivery(
            incident_id=incident_id, message_id=message_id, recipient=it.recipient, channel=it.channel,
            address=it.address, purpose=it.purpose, payload=it.notification.to_json(),
            idempotency_key=idempotency_key(message_id=message_id, recipient=it.recipient, channel=it.channel),
            status="queued", attempts=0, max_attempts=policy.max_retries + 1, next_attempt_at=now,
            created_at=now, updated_at=now))
    session.add_all(rows)
    await session.flush()
    return rows


async def cancel_escalation_pages(session: AsyncSession, *, incident_id: int, now: datetime) -> int:
    """An ack stops paging: every not-yet-sent escalation page of the incident is cancelled."""
    res = await session.execute(
        update(Delivery)
        .where(Delivery.incident_id == incident_id, Delivery.purpose == "escalation",
               Delivery.status == "queued")
        .values(status="cancelled", updated_at=now, last_error="cancelled: incident acknowledged"))
    return int(res.rowcount or 0)


def summarize(rows: Iterable[Delivery]) -> dict[str, Any]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.status] = out.get(r.status, 0) + 1
    return out
