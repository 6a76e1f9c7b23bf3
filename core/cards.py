"""Where each incident's card lives on each chat platform (so adapters never touch the database)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from core.clock import Clock
from core.db import Database
from core.models import ChatCard


@dataclass(frozen=True)
class CardRef:
    platform: str
    channel: str
    message_ref: str
    thread_ref: str | None = None
    extra: dict[str, Any] | None = None


class CardStore:
    """Read and record card locations. One row per (incident, platform)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def get(self, incident_id: int, platform: str) -> CardRef | None:
        async with self.db.sessions() as s:
            row = (await s.execute(select(ChatCard).where(ChatCard.incident_id == incident_id,
                                                          ChatCard.platform == platform))).scalars().first()
        if row is None:
            return None
        return CardRef(row.platform, row.channel, row.message_ref, row.thread_ref, dict(row.extra or {}))

    async def find(self, platform: str, channel: str, message_ref: str) -> int | None:
        """The incident whose card is this message (a button press names the message, not the incident)."""
        async with self.db.sessions() as s:
            return (await s.execute(select(ChatCard.incident_id).where(
                ChatCard.platform == platform, ChatCard.channel == channel,
                ChatCard.message_ref == message_ref))).scalars().first()

    async def save(self, incident_id: int, ref: CardRef) -> None:
        now: datetime = self.clock.now()
        async with self.db.transaction() as s:
            row = (await s.execute(select(ChatCard).where(ChatCard.incident_id == incident_id,
                                                          ChatCard.platform == ref.platform))).scalars().first()
            if row is None:
                s.add(ChatCard(incident_id=incident_id, platform=ref.platform, channel=ref.channel,
                               message_ref=ref.message_ref, thread_ref=ref.thread_ref, extra=ref.extra or {},
                               created_at=now, updated_at=now))
            else:
                row.channel, row.message_ref, row.thread_ref = ref.channel, ref.message_ref, ref.thread_ref
                row.extra, row.updated_at = ref.extra or {}, now
