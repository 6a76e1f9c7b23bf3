"""Handoff messages: the incoming person (through their preferences, with the open incidents they inherit),
the outgoing one, and the schedule's announce targets; exactly once with two processes on PostgreSQL
(separate engines racing), rebuilt from the database after a restart; frozen clock."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bot.context import Context, open_context
from core.clock import FrozenClock
from core.models import AuditEntry, Delivery, ScheduleHandoff
from core.rbac import Actor
from core.schedules.handoffs import HandoffTimer
from tests.conftest import make_config, pg_schema
from tests.schedules.conftest import SCHEDULES, berlin

ANNOUNCE = {**SCHEDULES, "destinations": [{"name": "ops-chat", "channel": "telegram", "chat_id": "-100200"}],
            "schedules": [{**SCHEDULES["schedules"][0], "announce": {"destinations": ["ops-chat"]}}]}


async def messages(ctx: Context) -> list[tuple[str, str, str]]:
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery).order_by(Delivery.id))).scalars().all()
    return [(r.recipient, r.channel, r.notification_json["title"]) for r in rows if r.notification_json.get("kind") == "HANDOFF"]


async def test_a_handoff_messages_incoming_outgoing_and_announce(make_ctx: Callable[..., Any],
                                                                 clock: FrozenClock) -> None:
    clock.set(berlin(2026, 1, 12, 8, 0))
    ctx = await make_ctx(**ANNOUNCE)
    await ctx.service.declare(actor=Actor("cli:op", "cli"), title="Disk filling", severity="sev3")
    timer = HandoffTimer(ctx.service)
    assert await timer.run_due() == 0 and await timer.next_handoff() == berlin(2026, 1, 12, 9)
    clock.set(berlin(2026, 1, 12, 9, 0, 5))
    assert await timer.run_due() == 1
    assert await timer.run_due() == 0  # once
    got = await messages(ctx)
    assert got == [
        ("bob", "email", "You are on call for primary from Mon 12 Jan 09:00 CET"),
        ("alice", "email", "Your primary shift ended at Mon 12 Jan 09:00 CET"),
        ("ops-chat", "telegram", "On-call handoff for primary at Mon 12 Jan 09:00 CET: alice -> bob")]
    async with ctx.db.sessions() as s:
        body = (await s.execute(select(Delivery).where(Delivery.recipient == "bob"))).scalar_one() \
            .notification_json["body"]
        actions = (await s.execute(select(AuditEntry.action))).scalars().all()
    assert "until Mon 19 Jan 09:00 CET" in body and "INC-1 [sev3] open: Disk filling" in body
    assert "schedule.handoff" in actions


async def test_an_override_makes_its_own_handoffs(make_ctx: Callable[..., Any], clock: FrozenClock) -> None:
    clock.set(berlin(2026, 1, 7, 12))
    ctx = await make_ctx(**SCHEDULES)
    await ctx.service.schedules.override("primary", "dave", actor=Actor("cli:admin", "cli"),
                                         start=berlin(2026, 1, 7, 18), length=timedelta(hours=2))
    timer = HandoffTimer(ctx.service)
    clock.set(berlin(2026, 1, 7, 18, 0, 1))
    assert await timer.run_due() == 1
    clock.set(berlin(2026, 1, 7, 20, 0, 1))
    assert await timer.run_due() == 1
    assert [(r, t.split(" from ")[0].split(" shift")[0]) for r, _, t in await messages(ctx)] == [
        ("dave", "You are on call for primary"), ("alice", "Your primary"),
        ("alice", "You are on call for primary"), ("dave", "Your primary")]


async def test_two_processes_on_postgresql_announce_each_handoff_once_and_a_restart_catches_up() -> None:
    async with pg_schema() as url:
        cfg = make_config(url, **SCHEDULES)
        clock = FrozenClock(berlin(2026, 1, 12, 8, 59))
        a = await open_context(cfg=cfg, clock=clock)
        b = await open_context(cfg=cfg, clock=clock)
        try:
            ta, tb = HandoffTimer(a.service), HandoffTimer(b.service)
            clock.set(berlin(2026, 1, 12, 9, 0, 1))
            results = await asyncio.gather(*[t.run_due() for t in (ta, tb, ta, tb)])
            assert sum(results) == 1
            # both processes were down over the next handoff; a fresh one within the hour announces it
            clock.set(berlin(2026, 1, 19, 9, 40))
            c = await open_context(cfg=cfg, clock=clock)
            try:
                assert await HandoffTimer(c.service).run_due() == 1
                assert await asyncio.gather(ta.run_due(), tb.run_due()) == [0, 0]
            finally:
                await c.close()
            async with a.db.sessions() as s:
                rows = (await s.execute(select(ScheduleHandoff.incoming).order_by(ScheduleHandoff.at))).all()
            assert [r[0] for r in rows] == ["bob", "alice"]
            assert [m[0] for m in await messages(a)] == ["bob", "alice", "alice", "bob"]
        finally:
            await a.close()
            await b.close()


async def test_the_timer_component_fires_on_time(make_ctx: Callable[..., Any]) -> None:
    """Started like `tocsin run` starts it, on the real clock: its first tick announces the handoff that
    began this minute (a rotation starting now: nobody -> alice), and only that one."""
    from datetime import datetime, timezone

    from core.clock import SystemClock

    now = datetime.now(timezone.utc)
    start = (now + timedelta(seconds=2)).astimezone(timezone.utc)
    ctx = await make_ctx(clock=SystemClock(), **{**SCHEDULES, "schedules": [{
        "name": "primary", "timezone": "UTC", "layers": [{
            "name": "l", "members": ["alice", "bob"], "rotation": "hours:1",
            "handoff": start.strftime("%H:%M"), "start": start.date().isoformat()}]}]})
    timer = HandoffTimer(ctx.service, tick_seconds=0.5)
    await timer.start()
    try:
        deadline = asyncio.get_running_loop().time() + 70
        while timer.sent == 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await timer.close()
    # the rotation began at the top of this minute (handoff HH:MM): nobody -> alice
    assert timer.sent == 1 and [m[0] for m in await messages(ctx)] == ["alice"]
