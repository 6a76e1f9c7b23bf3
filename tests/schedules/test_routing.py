"""A page to `schedules: [primary]` goes to exactly whoever the rotation or an override names at the
moment it is queued (frozen clock, SQLite and PostgreSQL); nobody on call pages the fallback and raises
an internal alert; the delivery records the schedule and shift."""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.context import Context
from core.clock import FrozenClock
from core.metrics import ALERTS
from core.models import Delivery
from core.rbac import Actor
from tests.schedules.conftest import berlin

OP = Actor("cli:op", "cli")
MANAGER = Actor("cli:manager", "cli")


async def paged(ctx: Context, incident_id: int, purpose: str = "page") -> list[tuple[str, str | None]]:
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.incident_id == incident_id,
                                                       Delivery.purpose == purpose)
                                .order_by(Delivery.id))).scalars().all()
    return [(r.recipient, r.reason) for r in rows]


async def test_default_targets_page_whoever_is_on_call_now(sctx: Context, clock: FrozenClock) -> None:
    out = await sctx.service.declare(actor=OP, title="db down", severity="sev2")
    assert await paged(sctx, out.incident.id) == [
        ("alice", "schedule primary: layer weekly Mon 05 Jan 09:00 CET - Mon 12 Jan 09:00 CET")]
    clock.set(berlin(2026, 1, 12, 9))  # the handoff: bob's week
    out = await sctx.service.declare(actor=OP, title="db down again", severity="sev2")
    assert [r for r, _ in await paged(sctx, out.incident.id)] == ["bob"]


async def test_an_override_decides_while_it_lasts(sctx: Context, clock: FrozenClock) -> None:
    o = await sctx.service.schedules.override("primary", "dave", actor=MANAGER, length=timedelta(hours=2))
    out = await sctx.service.declare(actor=OP, title="cpu", severity="sev3")
    assert await paged(sctx, out.incident.id) == [
        ("dave", f"schedule primary: override #{o.id} Wed 07 Jan 12:00 CET - Wed 07 Jan 14:00 CET")]
    clock.advance(hours=2)
    out = await sctx.service.declare(actor=OP, title="cpu again", severity="sev3")
    assert [r for r, _ in await paged(sctx, out.incident.id)] == ["alice"]


async def test_nobody_on_call_pages_the_fallback_and_raises_an_alert(
        sctx: Context, clock: FrozenClock, caplog: pytest.LogCaptureFixture) -> None:
    clock.set(berlin(2026, 1, 5, 8, 59))  # before the rotation starts
    before = ALERTS.labels(channel="schedule", status="nobody_on_call")._value.get()
    with caplog.at_level(logging.ERROR, logger="tocsin.incidents"):
        out = await sctx.service.declare(actor=OP, title="early", severity="sev2")
    assert await paged(sctx, out.incident.id) == [("carol", "schedule primary: nobody on call, fallback")]
    assert ALERTS.labels(channel="schedule", status="nobody_on_call")._value.get() == before + 1
    assert any(r.message == "schedule.nobody_on_call" for r in caplog.records)


async def test_escalation_level_targets_a_schedule(make_ctx, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    from tests.schedules.conftest import SCHEDULES

    clock.set(berlin(2026, 1, 9, 23))
    ctx = await make_ctx(**{**SCHEDULES, "escalation_policies": [
        {"name": "p", "levels": [{"wait_minutes": 5, "targets": {"contacts": ["carol"]}},
                                 {"wait_minutes": 5, "targets": {"schedules": ["primary"]}}]}],
        "routing": {"default_targets": {"lists": [], "contacts": ["carol"]},
                    "rules": [{"name": "all", "event_types": ["declare"], "targets": {"contacts": ["carol"]},
                                   "escalation_policy": "p"}]}})
    out = await ctx.service.declare(actor=OP, title="disk", severity="sev2")
    clock.advance(minutes=5)
    await ctx.service.escalate(out.incident.id, actor=OP)  # level 1: carol
    # the schedule resolves when the level fires, not when the incident opened: a handoff happened between
    clock.set(berlin(2026, 1, 12, 9, 30))
    await ctx.service.escalate(out.incident.id, actor=OP)
    pages = await paged(ctx, out.incident.id, "escalation")
    assert pages[-1] == ("bob", "schedule primary: layer weekly Mon 12 Jan 09:00 CET - Mon 19 Jan 09:00 CET")


async def test_route_explain_names_the_shift(sctx: Context) -> None:
    out = await sctx.service.declare(actor=OP, title="x", severity="sev3")
    text = await sctx.service.explain_route(out.incident.id, actor=Actor("cli:admin", "cli"), event_type="update")
    assert "alice" in text and "schedule primary: layer weekly" in text
