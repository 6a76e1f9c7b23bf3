"""People's 1:1 conversations with the bot, per chat platform: what a platform told us when a person
installed the app or opened a chat (Teams' conversationUpdate / installationUpdate), kept so a DM page can
reach them through it. Adapters read and write it here, never the database."""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from core.clock import Clock
from core.db import Database
from core.models import ChatConversation

log = logging.getLogger("tocsin.conversations")


class ConversationStore:
    """One row per (platform, user id): the platform's reference to that person's 1:1 chat (JSON)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def get(self, platform: str, user: str) -> dict[str, Any] | None:
        async with self.db.sessions() as s:
            row = await s.get(ChatConversation, (platform, user))
        return dict(row.reference) if row is not None and row.reference else None

    async def save(self, platform: str, user: str, reference: dict[str, Any]) -> None:
        """Insert or replace (the newest reference wins; two processes storing at once both succeed)."""
        now = self.clock.now()
        for _ in range(2):
            try:
                async with self.db.transaction() as s:
                    row = await s.get(ChatConversation, (platform, user))
                    if row is None:
                        s.add(ChatConversation(platform=platform, user_id=user, reference=reference, updated_at=now))
                    else:
                        row.reference = reference
                        row.updated_at = now
                break
            except IntegrityError:  # another process inserted it first: update theirs
                continue
        log.info("conversation.stored", extra={"platform": platform, "user": user})

    async def forget(self, platform: str, user: str) -> bool:
        """The person removed the app (or the platform refused the reference): True if one was stored."""
        async with self.db.transaction() as s:
            res = await s.execute(delete(ChatConversation).where(ChatConversation.platform == platform,
                                                                 ChatConversation.user_id == user))
        gone = int(getattr(res, "rowcount", 0) or 0) > 0
        if gone:
            log.info("conversation.forgotten", extra={"platform": platform, "user": user})
        return gone
