"""Reading and verifying the audit trail, for every adapter (CLI, console): the VIEW_AUDIT check lives
here, not in each adapter. core/audit itself stays free of the rest of the project."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from core.audit.chain import VerifyResult
from core.audit.log import AuditLog, verify
from core.config import ConfigHolder
from core.db import Database
from core.models import AuditEntry
from core.rbac import Actor, Permission, require


class AuditReads:
    """`entries` and `verify` as `actor`; both need the VIEW_AUDIT permission."""

    def __init__(self, db: Database, config: ConfigHolder) -> None:
        self.db = db
        self.config = config

    async def entries(self, *, actor: Actor, resource: str | None = None,
                      limit: int | None = None) -> Sequence[AuditEntry]:
        require(self.config.cfg, actor, Permission.VIEW_AUDIT)
        async with self.db.sessions() as s:
            return await AuditLog.entries(s, resource=resource, limit=limit)

    async def verify(self, *, actor: Actor, progress: Callable[[int, int], None] | None = None) -> VerifyResult:
        cfg = self.config.cfg
        require(cfg, actor, Permission.VIEW_AUDIT)
        return await verify(self.db.engine, checkpoint_key=cfg.audit.checkpoint_key.get_secret_value().encode(),
                            progress=progress)
