"""Builds the core objects (config, database, audit, incident service) once, for the CLI and the server."""
from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from core import config as config_mod
from core import migrate
from core.audit.log import AuditLog
from core.cards import CardStore
from core.clock import Clock, SystemClock
from core.config import Config, ConfigHolder
from core.db import Database, resolve_sqlite_url, unavailable
from core.errors import StorageUnavailable
from core.incidents import IncidentService
from core.logs import set_secret_values
from core.seen import SeenKeys

PLATFORMS = ("slack", "teams", "telegram")


def surfaces_for(cfg: Config) -> list[str]:
    """Chat platforms whose incident card follows every incident: the enabled ones with a target."""
    return cfg.incident_surfaces()


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


def _audit_outage(db: Database, audit: AuditLog, clock: Clock) -> Callable[[str, float], Awaitable[None]]:
    """The audit entry of a storage outage, written once the database takes writes again (not before:
    while it is out, the ERROR log and tocsin_internal_alerts_total carry the alert)."""

    async def record(problem: str, since: float) -> None:
        from datetime import datetime, timezone

        async with db.transaction() as s:
            await audit.append(s, actor="system:tocsin", source="internal", action="storage.unavailable",
                               resource="database", now=clock.now(), details={
                                   "problem": problem,
                                   "since": datetime.fromtimestamp(since, timezone.utc).isoformat(),
                                   "until": clock.now().isoformat()})

    return record


def open_database(cfg: Config, config_path: Path | None, *, create: bool) -> Database:
    """The configured database, a relative SQLite path taken from the config file's directory (not the
    current one). With create=False a missing SQLite file is an error naming where we looked, so a
    command run from the wrong place never starts a fresh, empty database that nobody pages from."""
    dbcfg = cfg.database
    if config_path is not None:
        dbcfg = dbcfg.model_copy(update={"url": resolve_sqlite_url(dbcfg.url, Path(os.path.abspath(config_path)).parent)})
    db = Database(dbcfg)
    if not create and db.path is not None and not db.path.exists():
        raise StorageUnavailable(
            f"database {db.path} does not exist (database.url in {config_path or 'the config'}; a relative "
            "path is taken from the config file's directory); create it with `tocsin db upgrade` or "
            "`tocsin run`, or fix database.url")
    return db


async def open_context(config_path: str | os.PathLike[str] | None = None, *, cfg: Config | None = None,
                       clock: Clock | None = None, upgrade: bool = True, create: bool = True,
                       run_lock: bool = False) -> Context:
    """Load config, open the database, apply migrations, wire the service.

    create=False (every CLI command but `run` and `db upgrade`): refuse a database that does not exist
    or holds no Tocsin schema. run_lock=True (`tocsin run`): hold the SQLite file's run lock first."""
    path = config_mod.resolve_path(config_path)
    loaded = cfg is None
    cfg = cfg or config_mod.load(path)
    set_secret_values(secret_values(cfg))
    db = open_database(cfg, path if loaded or config_path is not None else None, create=create)
    try:
        if run_lock:
            db.lock_for_run()
        try:
            revision = await migrate.current_revision(db.engine)  # also: can we reach it at all?
            if not create and revision is None:
                raise StorageUnavailable(
                    f"database {db.name} holds no Tocsin schema (is database.url right?); create it with "
                    "`tocsin db upgrade` or `tocsin run`")
            if upgrade:
                await migrate.upgrade_unless_current(db.engine, revision)
        except Exception as exc:
            if unavailable(exc) and not isinstance(exc, StorageUnavailable):
                raise StorageUnavailable(f"database unavailable: {db.describe_error(exc)}") from exc
            raise
    except BaseException:
        await db.close()
        raise
    db.pin()
    holder = ConfigHolder(cfg)
    clock = clock or SystemClock()
    audit = make_audit(cfg)
    service = IncidentService(db, holder, audit=audit, clock=clock, surfaces=surfaces_for(cfg))
    db.on_recovered.append(_audit_outage(db, audit, clock))
    return Context(path, holder, db, audit, service, clock, CardStore(db, clock), SeenKeys(db, clock))
