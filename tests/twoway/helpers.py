"""Shared by the two-way paging tests: a config where alice is paged by SMS and an escalation level is
queued, and readers of what the database then holds."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from bot.context import Context
from core.delivery.message import DeliveryResult, Envelope, Notification
from core.models import AuditEntry, Delivery
from core.rbac import Actor
from tests.escalation.conftest import policy_config

OP = Actor("cli:op", "cli")
ALICE_PHONE = "+15550100001"
PUBLIC = "https://tocsin.example"


def paging_config(**over: Any) -> dict[str, Any]:
    """sev1 pages alice by SMS (and email) and bob by email; policy `p` escalates to carol (leads)."""
    cfg: dict[str, Any] = {"worker": {"enabled": False}, "server": {"public_url": PUBLIC}, **policy_config(5)}
    cfg.update(over)
    return cfg


async def declare_and_escalate(ctx: Context) -> int:
    """INC-n declared (alice paged by SMS) and escalated by hand, so a level-1 page sits in the queue."""
    out = await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
    assert out.incident is not None
    await ctx.service.escalate(out.incident.id, actor=OP)
    return out.incident.id


async def deliveries(ctx: Context, **where: Any) -> list[Delivery]:
    async with ctx.db.sessions() as s:
        q = select(Delivery).order_by(Delivery.id)
        for k, v in where.items():
            q = q.where(getattr(Delivery, k) == v)
        return list((await s.execute(q)).scalars().all())


async def audit(ctx: Context, action: str) -> list[AuditEntry]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(AuditEntry).where(AuditEntry.action == action)
                                     .order_by(AuditEntry.seq))).scalars().all())


async def drive_dm_pages(ctx: Context, sender: Any, channel: str) -> list[DeliveryResult]:
    """Hand every queued delivery of a DM `channel` to its sender and record the outcome, as the worker
    would (no worker racing the test)."""
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.channel == channel, Delivery.status == "queued")
                                .order_by(Delivery.id))).scalars().all()
    out = []
    for row in rows:
        result = await sender.send(Envelope(row.id, row.channel, row.recipient, row.address, row.idempotency_key, 1,
                                            Notification.from_json(row.notification_json)))
        out.append(result)
        async with ctx.db.transaction() as s:
            await s.execute(update(Delivery).where(Delivery.id == row.id).values(
                status={"delivered": "delivered", "permanent": "failed"}.get(result.outcome, "queued"),
                last_error=None if result.outcome == "delivered" else result.summary))
    return out
