"""Engine and session factory: SQLite (WAL, busy timeout, IMMEDIATE writes) or PostgreSQL, same code."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core.config import DatabaseConfig


def is_sqlite(engine_or_url: AsyncEngine | str) -> bool:
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(cfg: DatabaseConfig | str) -> AsyncEngine:
    """Build the engine. On SQLite every transaction starts with BEGIN IMMEDIATE, so two writers
    never both read the same audit head or queue row and then collide on upgrade."""
    if isinstance(cfg, str):
        cfg = DatabaseConfig(url=cfg)
    kwargs: dict[str, Any] = {}
    url = make_url(cfg.url)
    if is_sqlite(cfg.url):
        kwargs["connect_args"] = {"timeout": cfg.busy_timeout_ms / 1000}
    else:
        kwargs["pool_size"] = cfg.pool_size
        kwargs["pool_pre_ping"] = True
        if "search_path" in url.query:
            # `?search_path=schema` puts every connection in that schema (one database, several installs).
            kwargs["connect_args"] = {"server_settings": {"search_path": str(url.query["search_path"])}}
            url = url.difference_update_query(["search_path"])
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(cfg.url):
        busy = cfg.busy_timeout_ms

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Reads (Database.sessions) begin deferred so they never hold the write lock; everything else
            # takes it up front, so a read-then-write unit cannot fail on a stale snapshot.
            deferred = conn.get_execution_options().get("tocsin_read_only", False)
            conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class Database:
    """Owns the engine and hands out transactional sessions."""

    def __init__(self, cfg: DatabaseConfig | str) -> None:
        self.cfg = cfg if isinstance(cfg, DatabaseConfig) else DatabaseConfig(url=cfg)
        self.engine = create_engine(self.cfg)
        self.sqlite = is_sqlite(self.cfg.url)
        self._writes = session_factory(self.engine)
        self.sessions = session_factory(self.engine.execution_options(tocsin_read_only=True))
        """Sessions for reading. Write through `transaction()`."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit on success, roll back on any error."""
        async with self._writes() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
