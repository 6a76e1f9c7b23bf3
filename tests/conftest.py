"""Shared fixtures: databases (SQLite and PostgreSQL), configs, a frozen clock, a wired core context.

PostgreSQL tests use postgresql+asyncpg://postgres@127.0.0.1:5432/test (override with TOCSIN_TEST_PG_URL),
each test in its own schema, dropped afterwards. Without PostgreSQL they skip, except under CI.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from bot.context import Context, open_context
from core.clock import FrozenClock
from core.config import Config, loads

PG_URL = os.environ.get("TOCSIN_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


# --- offline guard: tests talk to loopback only --------------------------------------------------

_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    h = host.decode() if isinstance(host, bytes) else host
    if h not in (None, "localhost", "127.0.0.1", "::1", "0.0.0.0", "") and not str(h).startswith("127."):
        raise OSError(f"tests may not reach the network: lookup of {h!r} refused by the offline guard")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_only  # type: ignore[assignment]


# --- PostgreSQL availability ------------------------------------------------------------------------

_pg_state: dict[str, str | None] = {}


def pg_unavailable_reason() -> str | None:
    """None when PostgreSQL answers; the reason otherwise (checked once per run)."""
    if "reason" in _pg_state:
        return _pg_state["reason"]
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg", "postgresql"), timeout=3)
        await conn.close()

    import concurrent.futures

    try:
        # Fixtures call this from inside a running loop: probe on a thread with its own loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, probe()).result(timeout=10)
        reason = None
    except Exception as exc:  # any failure to connect means: no PostgreSQL here
        reason = f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}: {exc}"
    _pg_state["reason"] = reason
    return reason


def require_pg() -> None:
    reason = pg_unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (required in CI)")
        pytest.skip(reason)


@asynccontextmanager
async def pg_schema(*, migrated: bool = False) -> AsyncIterator[str]:
    """A URL on a fresh PostgreSQL schema of its own, dropped afterwards (skips, or fails in CI, without PG).
    migrated=True: the schema starts at the migrations' head (see `_pg_template_sql`)."""
    import asyncpg

    require_pg()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = PG_URL.replace("postgresql+asyncpg", "postgresql")
    script = await _pg_template_sql() if migrated else None
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        if script is not None:
            await conn.execute(script.replace(_TEMPLATE_PREFIX, f"{schema}."))
    finally:
        await conn.close()
    try:
        yield pg_url_for_schema(schema)
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


# --- migrated templates ------------------------------------------------------------------------------
# Most tests open a context on a new database, and `open_context` migrates it: 65 migrations through
# alembic cost 0.1 s on SQLite and 0.25 s on PostgreSQL, over a thousand times per run. The fixtures'
# databases start instead as a copy of one database migrated by the real migrations once per test run
# (the migrations' own tests run them, tests/core/test_migrations.py). `open_context` finds the head and
# migrates nothing, as on a restart.

_template: dict[str, Any] = {}
_TEMPLATE_PREFIX = f"tmpl_{uuid.uuid4().hex[:12]}."
"""The template schema's name as pg_dump qualifies every object with it (replaced per test)."""


async def fresh_sqlite(path: Path) -> str:
    """A URL on a SQLite file at `path`, at the migrations' head: a copy of the run's template, which the
    first call makes."""
    template = _template.get("sqlite")
    if template is None:
        from core import migrate
        from core.db import create_engine

        folder = Path(tempfile.mkdtemp(prefix="tocsin-template-"))
        atexit.register(shutil.rmtree, folder, True)
        template = folder / "tocsin.db"
        engine = create_engine(f"sqlite+aiosqlite:///{template}")
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()
        with closing(sqlite3.connect(template)) as raw:  # all in the main file: the copy is the database
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _template["sqlite"] = template
    shutil.copyfile(template, path)
    return f"sqlite+aiosqlite:///{path}"


async def _pg_template_sql() -> str | None:
    """The SQL that recreates the template schema (tables, sequences, indexes, rows), made once per run:
    a schema migrated by the real migrations, dumped by pg_dump and dropped again. None without pg_dump
    (a machine with the server but not its client tools): each test's schema is then migrated by
    open_context, as before."""
    if shutil.which("pg_dump") is None:
        return None
    found = _template.get("pg")
    if found is None:
        import asyncpg

        from core import migrate
        from core.db import create_engine

        schema = _TEMPLATE_PREFIX[:-1]
        dsn = PG_URL.replace("postgresql+asyncpg", "postgresql")
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            engine = create_engine(pg_url_for_schema(schema))
            try:
                await migrate.upgrade(engine)
            finally:
                await engine.dispose()
            url = make_url(PG_URL)
            dump = await asyncio.to_thread(subprocess.run, [
                "pg_dump", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres",
                "-d", url.database or "test", "-n", schema, "--no-owner", "--no-privileges", "--inserts"],
                capture_output=True, text=True, check=True)
        finally:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
        # psql meta-commands (\restrict) are not SQL; the schema is created by pg_schema() itself.
        lines = [ln for ln in dump.stdout.splitlines()
                 if not ln.startswith("\\") and not ln.startswith(f"CREATE SCHEMA {schema};")]
        found = _template["pg"] = "\n".join(lines)
        assert f"CREATE TABLE {_TEMPLATE_PREFIX}alembic_version" in found, "pg_dump gave no schema"
    return found  # type: ignore[no-any-return]


def pg_url_for_schema(schema: str) -> str:
    """A URL whose connections live in `schema` (core.db turns `?search_path=` into a server setting)."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}search_path={schema}"


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """Every test using this runs twice: on a SQLite file and on a fresh PostgreSQL schema, both at the
    migrations' head."""
    if request.param == "sqlite":
        yield await fresh_sqlite(tmp_path / "tocsin.db")
        return
    async with pg_schema(migrated=True) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def blank_db_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """As db_url, but empty: for the tests of the migrations themselves."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'tocsin.db'}"
        return
    async with pg_schema() as url:
        yield url


@pytest.fixture
async def sqlite_url(tmp_path: Any) -> str:
    return await fresh_sqlite(tmp_path / "tocsin.db")


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with pg_schema(migrated=True) as url:
        yield url


# --- configs ------------------------------------------------------------------------------------------

BASE_CONFIG: dict[str, Any] = {
    "server": {"public_url": "http://127.0.0.1:8080"},
    "audit": {"checkpoint_key": "test-checkpoint-key", "checkpoint_every": 10},
    "access": {"cli:admin": "admin", "cli:manager": "manager", "cli:op": "operator", "cli:viewer": "viewer",
               "slack:UADMIN": "admin", "slack:UOP": "operator"},
    "contacts": [
        {"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
         "chat": {"slack": "UALICE", "telegram": "4242"},
         "preferences": {"sev1": ["sms", "email"], "default": ["email"]}},
        {"name": "bob", "email": "bob@example.com", "phone": "+15550100002",
         "preferences": {"default": ["email"]}},
        {"name": "carol", "email": "carol@example.com", "preferences": {"default": ["email"]}},
    ],
    "contact_lists": [{"name": "oncall", "members": ["alice", "bob"]}, {"name": "leads", "members": ["carol"]}],
    "routing": {"default_targets": {"lists": ["oncall"]}, "rules": []},
    "channels": {ch: {"outbox": True} for ch in
                 ("email", "sms", "voice", "slack_webhook", "teams_webhook", "webhook", "telegram")},
}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_config(db_url: str = "sqlite+aiosqlite:///:memory:", **overrides: Any) -> Config:
    data = deep_merge(BASE_CONFIG, overrides)
    data = deep_merge(data, {"database": {"url": db_url}})
    return loads(yaml.safe_dump(data), filename="test-config.yaml", env={})


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def make_ctx(db_url: str, clock: FrozenClock) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await make_ctx(**config_overrides)` -> a migrated Context on this test's database."""
    made: list[Context] = []

    async def factory(*, clock: Any = clock, **overrides: Any) -> Context:
        """`clock=SystemClock()` for tests that need real time (timers)."""
        cfg = make_config(db_url, **overrides)
        ctx = await open_context(cfg=cfg, clock=clock)
        made.append(ctx)
        return ctx

    yield factory
    for c in made:
        await c.close()


@pytest.fixture
async def ctx(make_ctx: Callable[..., Any]) -> Context:
    return await make_ctx()


@pytest.fixture
async def peer() -> AsyncIterator[Any]:
    """A recording loopback HTTP peer (tests/stand_ins/http.py), scripted per test."""
    from tests.stand_ins.http import HttpStandIn

    async with HttpStandIn() as p:
        yield p


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    """One aiohttp client session, as the server shares one with its senders."""
    import aiohttp

    async with aiohttp.ClientSession() as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
