"""Reminder fixtures: a config with reminders for every kind, alice (a contact, operator) declares from
the CLI and so is commander; bob is comms-to-be; a frozen clock."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from bot.context import Context
from core.models import AuditEntry, Delivery, IncidentMessage

REMINDERS: dict[str, Any] = {
    "access": {"cli:admin": "admin", "cli:op": "operator", "cli:viewer": "viewer", "cli:alice": "operator",
               "slack:UALICE": "operator", "telegram:4242": "operator", "teams:aad-alice": "operator"},
    "contacts": [
        {"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
         "chat": {"slack": "UALICE", "telegram": "4242", "teams": "aad-alice"},
         "preferences": {"sev1": ["voice", "sms", "email"], "default": ["email"]}},
        {"name": "bob", "email": "bob@example.com", "phone": "+15550100002",
         "preferences": {"default": ["sms", "email"]}},
    ],
    "contact_lists": [{"name": "oncall", "members": ["bob"]}],
    "reminders": {"unacknowledged": {"sev1": "10m", "sev2": "15m"}, "update_every": {"critical": "30m", "sev2": "1h"},
                  "monitoring": {"sev1": "2h", "sev3": "4h"}, "snooze": "30m", "max_snooze": "12h"},
}


@pytest.fixture
async def rctx(make_ctx: Callable[..., Any]) -> Context:
    return await make_ctx(**REMINDERS)


async def thread(ctx: Context, kind: str = "REMINDER") -> list[str]:
    """The incident thread's entries of `kind`, oldest first."""
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(IncidentMessage.body).where(IncidentMessage.kind == kind)
                                     .order_by(IncidentMessage.id))).scalars())


async def reminder_deliveries(ctx: Context) -> list[tuple[str, str, str]]:
    """(recipient, channel, purpose) of every queued reminder (chat threads included)."""
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery).order_by(Delivery.id))).scalars().all()
    return [(r.recipient, r.channel, r.purpose) for r in rows if r.notification_json.get("kind") == "REMINDER"]


async def audit_actions(ctx: Context) -> list[str]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(AuditEntry.action).order_by(AuditEntry.seq))).scalars())
