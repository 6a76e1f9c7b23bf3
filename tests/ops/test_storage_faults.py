"""Storage faults are loud: when the database goes away under a running server (SQLite file deleted,
replaced or made unwritable; PostgreSQL unreachable), /readyz says so naming the database, every entry
point refuses writes (API 503 + JSON, chat answer, CLI error), an internal alert is raised once, and
nothing is reported as accepted that was not stored."""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from bot.context import Context, open_context
from bot.dispatch import run_text
from bot.server import build_app
from core.db import unavailable
from core.errors import StorageUnavailable
from core.metrics import REGISTRY
from core.models import AuditEntry, Incident, SeenKey
from core.rbac import Actor
from tests.api.conftest import API_CONFIG, OPS, event
from tests.conftest import make_config
from tests.stand_ins.tcp_proxy import TcpProxy

OPERATOR = Actor("slack:UOP", "slack")


def db_alerts() -> float:
    return REGISTRY.get_sample_value("tocsin_internal_alerts_total",
                                     {"channel": "database", "status": "unavailable"}) or 0.0


@asynccontextmanager
async def served(url: str) -> AsyncIterator[tuple[TestClient, Context]]:
    ctx = await open_context(cfg=make_config(url, **API_CONFIG))
    try:
        app, _rt = await build_app(ctx)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client, ctx
    finally:
        await ctx.close()


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make the file unwritable for this process: immutable for root (which ignores modes), read-only else."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
            pytest.skip("running as root without chattr +i support: cannot make a file unwritable")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)


@contextmanager
def break_file(kind: str, path: Path) -> Iterator[None]:
    if kind == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        yield
    elif kind == "replaced":  # e.g. a restore or a deploy copied another file over it
        copy = path.with_name("copy.db")
        shutil.copyfile(path, copy)
        os.replace(copy, path)
        yield
    else:
        with unwritable(path):
            yield


async def incident_count(ctx: Context) -> int:
    async with ctx.db.sessions() as s:
        return len((await s.execute(select(Incident.id))).all())


async def stored_events(ctx: Context) -> set[str]:
    """Which event ids the database remembers (de-duplication keys commit with the change)."""
    async with ctx.db.sessions() as s:
        keys = (await s.execute(select(SeenKey.key))).scalars().all()
    return {e for e in ("evt-1", "evt-2", "evt-3", "evt-busy") if any(e in k for k in keys)}


async def assert_refused_everywhere(client: TestClient, ctx: Context, *, names: str, evt: str) -> None:
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 503, body
    assert names in body["failing"]["database"], body
    r = await client.post("/api/v1/events", json=event(evt), headers=OPS)
    body = await r.json()
    assert r.status == 503, body
    assert body["error"] == "database_unavailable" and names in body["message"], body
    assert r.headers.get("Retry-After")
    ok, text = await say(ctx, "/incident declare sev1 Payments down")
    assert not ok and "database is unavailable" in text and "nothing was done" in text, text
    with pytest.raises(StorageUnavailable, match="database unavailable"):  # what the CLI prints as error: ...
        await ctx.service.declare(actor=Actor("cli:admin", "cli"), title="x", severity="sev2")


async def say(ctx: Context, text: str) -> tuple[bool, str]:
    _, reply = await run_text(ctx.service, OPERATOR, text)
    return reply.ok, reply.text


@pytest.mark.parametrize("kind", ["deleted", "replaced", "unwritable"])
async def test_a_sqlite_file_lost_while_running_is_loud(tmp_path: Path, kind: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tocsin.db"
    async with served(f"sqlite+aiosqlite:///{path}") as (client, ctx):
        r = await client.post("/api/v1/events", json=event("evt-1"), headers=OPS)
        assert r.status == 202, await r.text()
        assert (await client.get("/readyz")).status == 200
        alerts = db_alerts()
        with caplog.at_level(logging.ERROR, logger="tocsin.db"), break_file(kind, path):
            word = {"deleted": "was deleted", "replaced": "was replaced", "unwritable": "is not writable"}[kind]
            await assert_refused_everywhere(client, ctx, names=f"{path} {word}", evt="evt-2")
            # One internal alert per outage, however many requests and worker polls hit it.
            assert db_alerts() == alerts + 1
            assert [r for r in caplog.records if getattr(r, "event", r.msg) == "storage.unavailable"
                    and r.levelno == logging.ERROR]
        if kind == "unwritable":
            # Writable again: ready, accepting, and the outage is in the audit trail.
            assert (await client.get("/readyz")).status == 200
            r = await client.post("/api/v1/events", json=event("evt-3"), headers=OPS)
            assert r.status == 202, await r.text()
            async with ctx.db.sessions() as s:
                outage = (await s.execute(select(AuditEntry).where(AuditEntry.action == "storage.unavailable"))
                          ).scalars().all()
            assert len(outage) == 1 and "not writable" in outage[0].details
            assert await stored_events(ctx) == {"evt-1", "evt-3"}  # the refused evt-2 left nothing
    if kind == "replaced":
        # What the replacing file holds is all there is: the refused request is not in it either.
        later = await open_context(cfg=make_config(f"sqlite+aiosqlite:///{path}"))
        try:
            assert await incident_count(later) == 1 and await stored_events(later) == {"evt-1"}
        finally:
            await later.close()


async def test_a_change_committed_into_a_file_deleted_meanwhile_is_not_reported_stored(tmp_path: Path) -> None:
    """The file vanished during the transaction: SQLite commits into the orphaned inode, lost at restart.
    The caller hears StorageUnavailable, so no entry point answers "accepted"."""
    path = tmp_path / "tocsin.db"
    ctx = await open_context(cfg=make_config(f"sqlite+aiosqlite:///{path}"))
    try:
        with pytest.raises(StorageUnavailable, match="was not stored"):
            async with ctx.db.transaction() as s:
                await ctx.audit.append(s, actor="cli:admin", action="test.write")
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
    finally:
        await ctx.close()


async def test_postgresql_unreachable_is_loud_and_recovers(pg_url: str) -> None:
    async with TcpProxy("127.0.0.1", int(pg_url.split("@127.0.0.1:")[1].split("/")[0])) as proxy:
        url = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        assert url != pg_url
        async with served(url) as (client, ctx):
            r = await client.post("/api/v1/events", json=event("evt-1"), headers=OPS)
            assert r.status == 202, await r.text()
            alerts = db_alerts()
            await proxy.cut()
            await assert_refused_everywhere(client, ctx, names=f"127.0.0.1:{proxy.port}", evt="evt-2")
            r = await client.get("/api/v1/incidents", headers=OPS)  # reads too: 503, not 500
            assert r.status == 503 and (await r.json())["error"] == "database_unavailable"
            assert db_alerts() == alerts + 1
            await proxy.restore()
            r = await client.get("/readyz")
            assert r.status == 200, await r.text()
            r = await client.post("/api/v1/events", json=event("evt-3"), headers=OPS)
            assert r.status == 202, await r.text()
            assert await stored_events(ctx) == {"evt-1", "evt-3"}
            async with ctx.db.sessions() as s:
                actions = (await s.execute(select(AuditEntry.action))).scalars().all()
            assert "storage.unavailable" in actions


@pytest.mark.parametrize(("exc", "expected"), [
    (ConnectionRefusedError(111, "Connection refused"), True),
    (TimeoutError(), True),
    (sa_exc.OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O error")), True),
    (sa_exc.OperationalError("INSERT", {}, sqlite3.OperationalError("attempt to write a readonly database")), True),
    (sa_exc.InterfaceError("SELECT", {}, Exception("connection is closed")), True),
    (StorageUnavailable("database unavailable: x"), True),
    # Not storage faults: busy (the busy timeout and retries handle it), constraint violations, bugs.
    (sa_exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")), False),
    (sa_exc.OperationalError("SELEC", {}, sqlite3.OperationalError('near "SELEC": syntax error')), False),
    (sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")), False),
    (ValueError("hour must be in 0..23"), False),
])
def test_which_errors_mean_the_database_is_unavailable(exc: BaseException, expected: bool) -> None:
    assert unavailable(exc) is expected


async def test_a_busy_sqlite_database_is_a_json_503_not_an_outage(tmp_path: Path) -> None:
    """Another writer holds SQLite's lock past busy_timeout_ms: the API answers 503 JSON with Retry-After
    (Alertmanager and scripts retry), stores nothing, and raises no storage alert (the database is fine)."""
    path = tmp_path / "tocsin.db"
    ctx = await open_context(cfg=make_config(f"sqlite+aiosqlite:///{path}", database={"busy_timeout_ms": 200},
                                             worker={"enabled": False}, **API_CONFIG))
    try:
        app, _rt = await build_app(ctx)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            alerts = db_alerts()
            other = sqlite3.connect(str(path), timeout=1, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                r = await client.post("/api/v1/events", json=event("evt-busy"), headers=OPS)
                body = await r.json()
                assert r.status == 503 and body["error"] == "database_busy", body
                assert r.headers["Retry-After"] == "1"
            finally:
                other.execute("ROLLBACK")
                other.close()
            assert db_alerts() == alerts
            assert await stored_events(ctx) == set()
            r = await client.post("/api/v1/events", json=event("evt-busy"), headers=OPS)
            assert r.status == 202, await r.text()
    finally:
        await ctx.close()
