"""The one owner of inbound duplicate keys (`seen_keys`): Slack retries and clicks, Telegram update_ids,
Teams activity ids, event API event ids and Alertmanager groups. Each is acted on once; keys are kept for
their platform's replay window (KEEP) and then pruned by one periodic job for every prefix
(Alertmanager groups and event ids: configurable, config `retention`)."""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.config import Config, ConfigHolder
from core.db import Database, Prepared, connection
from core.models import SeenKey
from core.timers import PeriodicJob

log = logging.getLogger("tocsin.seen")

KEY_MAX = 300  # seen_keys.key is String(300)

KEEP: dict[str, timedelta] = {
    "slack:": timedelta(days=1),      # Slack retries within minutes; clicks are double within seconds
    "telegram:": timedelta(days=2),   # Telegram keeps undelivered updates for 24 hours
    "teams:": timedelta(days=2),      # Bot Connector redelivers within minutes
    "event:": timedelta(days=7),      # event API senders retry for hours, sometimes replay a day later
    "sms:": timedelta(days=2),        # SNS retries a notification for up to an hour; Twilio resends rarely
    "am:": timedelta(days=30),        # Alertmanager group -> incident; refreshed on every notification
}
"""How long each kind of key is remembered after it was last written. Every prefix in use is here."""


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


_T = SeenKey.__table__
_RECALL = select(_T.c.key, _T.c.created_at, _T.c.result).where(_T.c.key == bindparam("key"))
_AT = bindparam("created_at", type_=_T.c.created_at.type)
_RESULT = bindparam("result", type_=_T.c.result.type)
_UPSERT = {
    name: Prepared(ins(_T).values(key=bindparam("key", type_=_T.c.key.type), created_at=_AT, result=_RESULT)
                   .on_conflict_do_update(index_elements=[_T.c.key], set_={"result": _RESULT, "created_at": _AT}))
    for name, ins in (("postgresql", pg_insert), ("sqlite", sqlite_insert))}
_CLAIM = Prepared(insert(_T).values(key=bindparam("key", type_=_T.c.key.type), created_at=_AT, result=_RESULT))
"""Built once (every inbound event runs them): Core statements on the session's connection."""


async def recall(session: AsyncSession, key: str) -> SeenKey | None:
    """What `key` did, if it was seen (a detached row: read its fields, do not change it)."""
    conn = await connection(session)
    row = (await conn.execute(_RECALL, {"key": key})).first()
    return None if row is None else SeenKey(key=row.key, created_at=row.created_at, result=row.result)


async def remember(session: AsyncSession, key: str, *, result: dict[str, Any], now: datetime) -> None:
    """Store (or replace) what `key` did; the caller's transaction commits it with the change itself.
    Replacing also refreshes the time, so a key in use (an Alertmanager group) is never pruned. One upsert
    statement (SQLite and PostgreSQL both have INSERT ... ON CONFLICT), not a read and an ORM flush."""
    upsert = _UPSERT["postgresql" if session.bind.dialect.name == "postgresql" else "sqlite"]
    await upsert.run(session, {"key": key, "created_at": now, "result": result})


class SeenKeys:
    """`first_time(key)` is True exactly once per key, across processes (primary key on the table)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def first_time(self, key: str, result: dict[str, Any] | None = None) -> bool:
        """Claims `key` in a transaction shared with the operations arriving at the same moment (group
        commit, own savepoint: a duplicate rolls back only itself); True once that has committed."""
        try:
            async with self.db.grouped() as s:
                await self.claim(s, key, result)
        except IntegrityError:
            return False
        return True

    async def claim(self, session: AsyncSession, key: str, result: dict[str, Any] | None = None) -> None:
        """Insert inside the caller's transaction (raises IntegrityError if seen): dedup + change commit together."""
        await _CLAIM.run(session, {"key": key[:KEY_MAX], "created_at": self.clock.now(), "result": result or {}})

    async def result(self, key: str) -> dict[str, Any] | None:
        async with self.db.sessions() as s:
            row = (await s.execute(select(SeenKey.result).where(SeenKey.key == key[:KEY_MAX]))).first()
        return None if row is None else dict(row[0] or {})

    async def prune(self, keep: dict[str, timedelta] | None = None) -> dict[str, int]:
        """Forget every key older than its prefix's window (KEEP, or `retention(cfg)`), in one transaction;
        returns removed per prefix."""
        now = self.clock.now()
        removed: dict[str, int] = {}
        async with self.db.transaction() as s:
            for prefix, window in (keep or KEEP).items():
                res = await s.execute(delete(SeenKey).where(SeenKey.key.like(prefix + "%"),
                                                            SeenKey.created_at < now - window)
                                      .execution_options(tocsin_offload=True))  # may be many rows
                removed[prefix] = int(getattr(res, "rowcount", 0) or 0)
        log.info("seen.pruned", extra={"removed": sum(removed.values()),
                                       **{f"removed_{p.rstrip(':')}": n for p, n in removed.items() if n}})
        return removed


def retention(cfg: Config) -> dict[str, timedelta]:
    """KEEP with the configurable windows of config `retention` (Alertmanager groups, event ids)."""
    return {**KEEP, "am:": cfg.retention.alertmanager_groups, "event:": cfg.retention.event_ids}


def pruner(seen: SeenKeys, holder: ConfigHolder, *, tick_seconds: float = 60.0) -> PeriodicJob:
    """The pruning job of `tocsin run`: every `retention.prune_every`, in one process of however many run
    (core/timers.py), with the windows of the live config."""
    return PeriodicJob("prune-seen-keys", lambda: seen.prune(retention(holder.cfg)), db=seen.db,
                       clock=seen.clock, every=lambda: holder.cfg.retention.prune_every,
                       tick_seconds=tick_seconds)
