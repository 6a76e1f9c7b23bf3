"""Builds the core objects (config, database, audit, incident service) once, for the CLI and the server."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core import config as config_mod
from core import migrate
from core.audit.log import AuditLog
from core.cards import CardStore
from core.clock import Clock, SystemClock
from core.config import Config
from core.db import Database
from core.incidents import ConfigHolder, IncidentService
from core.logs import set_secret_values
from core.seen import SeenKeys

PLATFORMS = ("slack", "teams", "telegram")


def surfaces_for(cfg: Config) -> list[str]:
    """Chat platforms whose incident card follows every incident: the enabled ones with a target."""
    out = []
    if cfg.slack.enabled and cfg.slack.incident_channel:
        out.append("slack")
    if cfg.teams.enabled and cfg.teams.incident_conversation:
        out.append("teams")
    if cfg.telegram.enabled and cfg.telegram.incident_chat_id:
        out.append("telegram")
    return out


def secret_values(cfg: Config) -> list[str]:
    """Every SecretStr value in the config, so the log formatter can blank them out wherever they appear."""
    found: list[str] = []

    def walk(obj: object) -> None:
        from pydantic import BaseModel, SecretStr

        if isinstance(obj, SecretStr):
            found.append(obj.get_secret_value())
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name))
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(cfg)
    return found


@dataclass
class Context:
    config_path: Path
    holder: ConfigHolder
    db: Database
    audit: AuditLog
    service: IncidentService
    clock: Clock
    cards: CardStore
    seen: SeenKeys

    @property
    def cfg(self) -> Config:
        return self.holder.cfg

    async def close(self) -> None:
        await self.db.close()


def make_audit(cfg: Config) -> AuditLog:
    key = cfg.audit.checkpoint_key.get_secret_value().encode()
    return AuditLog(checkpoint_key=key, checkpoint_every=cfg.audit.checkpoint_every)


async def open_context(config_path: str | os.PathLike[str] | None = None, *, cfg: Config | None = None,
                       clock: Clock | None = None, upgrade: bool = True) -> Context:
    """Load config, open the database, apply migrations, wire the service."""
    path = config_mod.resolve_path(config_path)
    cfg = cfg or config_mod.load(path)
    set_secret_values(secret_values(cfg))
    db = Database(cfg.database)
    if upgrade:
        await migrate.upgrade(db.engine)
    holder = ConfigHolder(cfg)
    clock = clock or SystemClock()
    audit = make_audit(cfg)
    service = IncidentService(db, holder, audit=audit, clock=clock, surfaces=surfaces_for(cfg))
    return Context(path, holder, db, audit, service, clock, CardStore(db, clock), SeenKeys(db, clock))
