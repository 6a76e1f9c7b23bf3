"""GET /metrics: Prometheus text, scrape-time gauges from the database, counters bumped where things happen."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bot.context import Context
from bot.server import build_app
from core.rbac import Actor

ADMIN = Actor("cli:admin", source="test")


@pytest.fixture
async def ctx(make_ctx: Callable[..., Any]) -> Context:
    """No worker in this process: exact counts and gauges without deliveries moving underneath.
    (The worker bumps its own delivery series; the counts here are the server's.)"""
    return await make_ctx(worker={"enabled": False})


@pytest.fixture
async def client(ctx: Context) -> AsyncIterator[TestClient]:
    app, _rt = await build_app(ctx)
    async with TestClient(TestServer(app)) as c:
        yield c


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


async def scrape(client: TestClient) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return await resp.text()


async def test_every_series_is_exported_with_its_labels(client: TestClient, ctx: Context) -> None:
    await ctx.service.declare(actor=ADMIN, title="db down", severity="sev2")
    body = await scrape(client)
    names = {fam.name for fam in text_string_to_metric_families(body)}
    for family in ("tocsin_events_received", "tocsin_deliveries", "tocsin_delivery_latency_seconds",
                   "tocsin_retries", "tocsin_queue_depth", "tocsin_incidents", "tocsin_escalations",
                   "tocsin_audit_entries"):
        assert family in names, family
    assert value(body, "tocsin_queue_depth", status="dead") == 0  # alertable even while empty


async def test_gauges_come_from_the_database_at_scrape_time(client: TestClient, ctx: Context) -> None:
    body = await scrape(client)
    assert value(body, "tocsin_incidents", state="open") == 0
    for i in range(3):
        await ctx.service.declare(actor=ADMIN, title=f"outage {i}", severity="sev3")
    await ctx.service.resolve("INC-1", actor=ADMIN)
    counts = await ctx.service.counts()
    body = await scrape(client)
    assert value(body, "tocsin_incidents", state="open") == counts["open"] == 2
    assert value(body, "tocsin_incidents", state="resolved") == 1
    # Queue depth equals what is in the table, whoever wrote it (another process, a CLI).
    async with ctx.db.engine.connect() as conn:
        from sqlalchemy import text

        queued = (await conn.execute(text("SELECT count(*) FROM deliveries WHERE status = 'queued'"))).scalar_one()
        await conn.execute(text("UPDATE deliveries SET status = 'dead' WHERE id = 1"))
        await conn.commit()
    assert queued > 0
    body = await scrape(client)
    assert value(body, "tocsin_queue_depth", status="queued") == queued - 1
    assert value(body, "tocsin_queue_depth", status="dead") == 1


async def test_incident_actions_and_audit_appends_are_counted(client: TestClient, ctx: Context) -> None:
    before = await scrape(client)
    declared0 = value(before, "tocsin_events_received_total", event_type="declare", outcome="accepted") or 0
    ack0 = value(before, "tocsin_events_received_total", event_type="ack", outcome="accepted") or 0
    audit0 = value(before, "tocsin_audit_entries_total") or 0
    await ctx.service.declare(actor=ADMIN, title="a", severity="sev3")
    await ctx.service.declare(actor=ADMIN, title="b", severity="sev3")
    await ctx.service.acknowledge("INC-2", actor=ADMIN)
    after = await scrape(client)
    assert value(after, "tocsin_events_received_total", event_type="declare", outcome="accepted") == declared0 + 2
    assert value(after, "tocsin_events_received_total", event_type="ack", outcome="accepted") == ack0 + 1
    assert value(after, "tocsin_audit_entries_total") == audit0 + 3


async def test_mounting_twice_does_not_double_count(ctx: Context) -> None:
    """Two apps on one context (tests, reloads) must not count each event twice."""
    await build_app(ctx)
    app, _ = await build_app(ctx)
    async with TestClient(TestServer(app)) as c:
        before = value(await scrape(c), "tocsin_audit_entries_total") or 0
        await ctx.service.declare(actor=ADMIN, title="once", severity="sev4")
        assert value(await scrape(c), "tocsin_audit_entries_total") == before + 1


async def test_database_down_drops_gauges_but_still_answers(client: TestClient, ctx: Context) -> None:
    await ctx.service.declare(actor=ADMIN, title="x", severity="sev4")
    assert value(await scrape(client), "tocsin_incidents", state="open") == 1
    await ctx.db.engine.dispose()
    broken = ctx.db.engine
    from core.db import create_engine

    ctx.db.engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    try:
        body = await scrape(client)
    finally:
        await ctx.db.engine.dispose()
        ctx.db.engine = broken
    assert value(body, "tocsin_incidents", state="open") is None  # no stale number pretending to be true
    assert value(body, "tocsin_audit_entries_total") is not None


async def test_openmetrics_when_the_scraper_asks(client: TestClient) -> None:
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).rstrip().endswith("# EOF")
