"""Remember inbound keys (Slack retries, Telegram update_ids, event ids) so each is acted on once."""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.db import Database
from core.models import SeenKey


class SeenKeys:
    """`first_time(key)` is True exactly once per key, across processes (primary key on the table)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def first_time(self, key: str, result: dict[str, Any] | None = None) -> bool:
        try:
            async with self.db.transaction() as s:
                await self.claim(s, key, result)
        except IntegrityError:
            return False
        return True

    async def claim(self, session: AsyncSession, key: str, result: dict[str, Any] | None = None) -> None:
        """Insert inside the caller's transaction (raises IntegrityError if seen): dedup + change commit together."""
        await session.execute(insert(SeenKey).values(key=key[:300], created_at=self.clock.now(), result=result or {}))

    async def result(self, key: str) -> dict[str, Any] | None:
        async with self.db.sessions() as s:
            row = (await s.execute(select(SeenKey.result).where(SeenKey.key == key[:300]))).first()
        return None if row is None else dict(row[0] or {})

    async def forget_older_than(self, prefix: str, cutoff: Any) -> int:
        async with self.db.transaction() as s:
            res = await s.execute(delete(SeenKey).where(SeenKey.key.like(prefix + "%"), SeenKey.created_at < cutoff))
        return int(res.rowcount or 0)
