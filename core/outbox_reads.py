"""Reading the outbox (what each channel would have sent), for every adapter: the VIEW check lives here,
not in the CLI."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from core.config import ConfigHolder
from core.db import Database
from core.models import OutboxMessage
from core.rbac import Actor, Permission, require


class OutboxReads:
    """`latest` and `after` as `actor`; both need the VIEW permission."""

    def __init__(self, db: Database, config: ConfigHolder) -> None:
        self.db = db
        self.config = config

    async def latest(self, *, actor: Actor, limit: int) -> Sequence[OutboxMessage]:
        """The newest `limit` messages, oldest first."""
        require(self.config.cfg, actor, Permission.VIEW)
        async with self.db.sessions() as s:
            rows = list((await s.execute(select(OutboxMessage).order_by(OutboxMessage.id.desc())
                                         .limit(limit))).scalars().all())
        rows.reverse()
        return rows

    async def after(self, *, actor: Actor, last: int, limit: int = 1000) -> Sequence[OutboxMessage]:
        """Messages stored after id `last`, oldest first (for `--follow`)."""
        require(self.config.cfg, actor, Permission.VIEW)
        async with self.db.sessions() as s:
            return (await s.execute(select(OutboxMessage).where(OutboxMessage.id > last)
                                    .order_by(OutboxMessage.id).limit(limit))).scalars().all()
