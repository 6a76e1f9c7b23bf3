"""Idempotency of inbound requests: serialize work on the same key and remember what it did (seen_keys),
in the same transaction as the incident change, so a replay answers the first result and nothing is
half-stored when a request fails."""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import SeenKey

KEY_MAX = 300  # seen_keys.key is String(300)


def bounded_key(prefix: str, value: str, *, limit: int = KEY_MAX) -> str:
    """`prefix:value`, or `prefix:sha256:<hex>` when that would not fit the column."""
    key = f"{prefix}:{value}"
    if len(key) <= limit:
        return key
    return f"{prefix}:sha256:{hashlib.sha256(value.encode('utf-8')).hexdigest()}"


async def lock_keys(session: AsyncSession, *keys: str) -> None:
    """Hold a lock per key until the transaction ends, so two requests for the same event or group run
    one after the other. SQLite already serializes writers (BEGIN IMMEDIATE); PostgreSQL takes
    transaction-scoped advisory locks, in sorted order so two requests never wait on each other."""
    if session.bind.dialect.name != "postgresql":
        return
    for key in sorted(set(keys)):
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


async def recall(session: AsyncSession, key: str) -> SeenKey | None:
    return (await session.execute(select(SeenKey).where(SeenKey.key == key))).scalars().first()


async def remember(session: AsyncSession, key: str, *, result: dict[str, Any], now: datetime) -> SeenKey:
    """Store (or replace) what `key` did; the caller's transaction commits it with the change itself."""
    row = await recall(session, key)
    if row is None:
        row = SeenKey(key=key, created_at=now, result=result)
        session.add(row)
    else:
        row.result = result
    await session.flush()
    return row
