"""Where each incident's card lives on each chat platform (so adapters never touch the database)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from core.clock import Clock
from core.db import Database
from core.models import ChatCard


PENDING = ""
"""message_ref of a card that one process is posting right now."""


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
        if row.message_ref == PENDING:
            return CardRef(row.platform, row.channel, PENDING, None, {})
        return CardRef(row.platform, row.channel, row.message_ref, row.thread_ref, dict(row.extra or {}))

    async def find(self, platform: str, channel: str, message_ref: str) -> int | None:
        """The incident whose card is this message (a button press names the message, not the incident)."""
        async with self.db.sessions() as s:
            return (await s.execute(select(ChatCard.incident_id).where(
                ChatCard.platform == platform, ChatCard.channel == channel,
                ChatCard.message_ref == message_ref))).scalars().first()

    async def reserve(self, incident_id: int, platform: str) -> bool:
        """Claim the right to post the first card for (incident, platform). Exactly one caller wins, across
        processes (unique constraint); the others must wait for the card instead of posting a second one.
        Card writes join group commit (core/db.py: own savepoint, answered after the commit): a burst of
        declares has as many cards to record, and a transaction each queued behind the declares' groups."""
        now = self.clock.now()
        try:
            async with self.db.grouped() as s:  # shares a transaction with writes arriving together
                s.add(ChatCard(incident_id=incident_id, platform=platform, channel="", message_ref=PENDING,
                               thread_ref=None, extra={}, created_at=now, updated_at=now))
        except IntegrityError:
            return False
        return True

    async def release(self, incident_id: int, platform: str) -> None:
        """Give a reservation back (posting failed) so a retry can claim it again."""
        async with self.db.grouped() as s:  # shares a transaction with writes arriving together
            await s.execute(delete(ChatCard).where(ChatCard.incident_id == incident_id,
                                                   ChatCard.platform == platform, ChatCard.message_ref == PENDING))

    async def save(self, incident_id: int, ref: CardRef) -> None:
        now: datetime = self.clock.now()
        async with self.db.grouped() as s:  # shares a transaction with writes arriving together
            row = (await s.execute(select(ChatCard).where(ChatCard.incident_id == incident_id,
                                                          ChatCard.platform == ref.platform))).scalars().first()
            if row is None:
                s.add(ChatCard(incident_id=incident_id, platform=ref.platform, channel=ref.channel,
                               message_ref=ref.message_ref, thread_ref=ref.thread_ref, extra=ref.extra or {},
                               created_at=now, updated_at=now))
            else:
                row.channel, row.message_ref, row.thread_ref = ref.channel, ref.message_ref, ref.thread_ref
                row.extra, row.updated_at = ref.extra or {}, now
