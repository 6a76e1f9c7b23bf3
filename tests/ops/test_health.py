"""/healthz says the process is up; /readyz says whether it can do its job, and names the part that cannot."""
from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from bot.context import Context
from bot.server import build_app
from core.db import create_engine


async def test_healthz_and_readyz_when_all_is_well(ctx: Context) -> None:
    app, rt = await build_app(ctx)
    async with TestClient(TestServer(app)) as c:
        r = await c.get("/healthz")
        assert r.status == 200 and (await r.json())["status"] == "ok"
        r = await c.get("/readyz")
        body = await r.json()
        assert r.status == 200, body
        assert body["status"] == "ready" and "database" in body["checks"]


async def test_readyz_names_a_failing_component(ctx: Context) -> None:
    """Worker and scheduler register checks in rt.health; a failing or raising one turns readyz to 503."""
    app, rt = await build_app(ctx)

    async def worker_dead() -> str | None:
        return "worker task exited: RuntimeError('boom')"

    async def scheduler_raises() -> str | None:
        raise ConnectionError("scheduler store unreachable")

    async def fine() -> str | None:
        return None

    rt.health.update(worker=worker_dead, scheduler=scheduler_raises, other=fine)
    async with TestClient(TestServer(app)) as c:
        r = await c.get("/readyz")
        body = await r.json()
        assert r.status == 503
        assert body["status"] == "unavailable"
        assert set(body["failing"]) == {"worker", "scheduler"}
        assert "worker task exited" in body["failing"]["worker"]
        assert body["failing"]["scheduler"] == "ConnectionError: scheduler store unreachable"
        # Liveness is independent: a restart would not help a dead dependency.
        assert (await c.get("/healthz")).status == 200


async def test_readyz_503_when_the_database_is_unreachable(ctx: Context) -> None:
    app, rt = await build_app(ctx)
    good = ctx.db.engine
    ctx.db.engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    try:
        async with TestClient(TestServer(app)) as c:
            r = await c.get("/readyz")
            body = await r.json()
    finally:
        await ctx.db.engine.dispose()
        ctx.db.engine = good
    assert r.status == 503
    assert list(body["failing"]) == ["database"]


async def test_readyz_503_when_migrations_are_not_current(ctx: Context) -> None:
    """E.g. a newer tocsin migrated the shared database: this process must not report ready."""
    from sqlalchemy import text

    app, _rt = await build_app(ctx)
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/readyz")).status == 200
        async with ctx.db.transaction() as s:
            await s.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
        r = await c.get("/readyz")
        body = await r.json()
    assert r.status == 503
    assert "tocsin db upgrade" in body["failing"]["database"]
