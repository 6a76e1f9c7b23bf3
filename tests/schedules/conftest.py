"""A context with a `primary` schedule (alice, bob weekly from Mon 5 Jan 2026 09:00 Berlin; carol is the
fallback via the `leads` list) on SQLite and PostgreSQL, with a frozen clock."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.context import Context

BERLIN = ZoneInfo("Europe/Berlin")

SCHEDULES: dict[str, Any] = {
    "contacts": [
        {"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
         "chat": {"slack": "UALICE", "telegram": "4242", "teams": "aad-alice"},
         "preferences": {"default": ["email"]}},
        {"name": "bob", "email": "bob@example.com", "phone": "+15550100002",
         "chat": {"slack": "UBOB", "telegram": "4343", "teams": "aad-bob"},
         "preferences": {"default": ["email"]}},
        {"name": "carol", "email": "carol@example.com", "preferences": {"default": ["email"]}},
        {"name": "dave", "email": "dave@example.com", "chat": {"slack": "UDAVE"},
         "preferences": {"default": ["email"]}},
    ],
    "access": {"cli:admin": "admin", "cli:manager": "manager", "cli:op": "operator", "cli:viewer": "viewer",
               "slack:UADMIN": "admin", "slack:UOP": "operator", "cli:alice": "operator",
               "slack:UALICE": "operator", "slack:UBOB": "operator", "telegram:4242": "operator",
               "telegram:4343": "operator", "teams:aad-alice": "operator", "teams:aad-bob": "operator",
               "telegram:7": "admin", "teams:aad-admin": "admin",
               "slack:UDAVE": "operator", "cli:bob": "viewer"},
    "schedules": [{
        "name": "primary", "timezone": "Europe/Berlin",
        "layers": [{"name": "weekly", "members": ["alice", "bob"], "rotation": "weekly", "handoff": "09:00",
                    "handoff_day": "monday", "start": "2026-01-05"}],
        "fallback": {"lists": ["leads"]}}],
    "routing": {"default_targets": {"lists": [], "schedules": ["primary"]}, "rules": []},
}


def berlin(*a: int) -> datetime:
    """A Berlin wall-clock time, as the UTC instant (what clocks hand out)."""
    return datetime(*a, tzinfo=BERLIN).astimezone(timezone.utc)


@pytest.fixture
async def sctx(make_ctx: Callable[..., Any], clock: Any) -> Context:
    clock.set(berlin(2026, 1, 7, 12))  # Wednesday of alice's first week
    return await make_ctx(**SCHEDULES)
