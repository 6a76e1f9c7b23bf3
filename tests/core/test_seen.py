"""Duplicate keys have one owner (core/seen.py) and every platform's keys, and the API's, are pruned."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from bot.context import Context
from core.config import loads
from core.errors import ConfigError
from core.seen import KEEP, SeenKeys, pruner, remember, retention


async def test_every_prefix_is_pruned_after_its_window_and_not_before(ctx: Context) -> None:
    seen: SeenKeys = ctx.seen
    keys = {"slack:": "slack:command:T1", "telegram:": "telegram:7:update:1", "teams:": "teams:c1:a1",
            "event:": "event:default:e-1", "am:": "am:{}:{alertname=\"X\"}", "sms:": "sms:twilio:SM1"}
    assert set(keys) == set(KEEP)  # a new prefix must get a window here, or its keys live forever
    born = ctx.clock.now()
    for key in keys.values():
        assert await seen.first_time(key)
    for window in sorted(set(KEEP.values())):
        due = {p for p in KEEP if KEEP[p] == window}
        ctx.clock.set(born + window - timedelta(minutes=1))  # just inside: kept
        await seen.prune()
        assert all([await seen.result(keys[p]) is not None for p in due]), due
        ctx.clock.set(born + window + timedelta(minutes=1))  # just past: gone, longer windows kept
        removed = await seen.prune()
        for p in KEEP:
            if p in due:
                assert removed[p] == 1 and await seen.result(keys[p]) is None, p
            elif KEEP[p] > window:
                assert await seen.result(keys[p]) is not None, (window, p)


async def test_an_alertmanager_group_in_use_is_not_pruned(ctx: Context) -> None:
    """Each notification of a group rewrites its key, which restarts its window."""
    key = "am:{}:{alertname=\"Disk\"}"
    async with ctx.db.transaction() as s:
        await remember(s, key, result={"incident_id": 1}, now=ctx.clock.now())
    for _ in range(3):
        ctx.clock.advance(days=20)
        async with ctx.db.transaction() as s:
            await remember(s, key, result={"incident_id": 1}, now=ctx.clock.now())
        await ctx.seen.prune()
        assert await ctx.seen.result(key) == {"incident_id": 1}
    ctx.clock.advance(days=31)
    await ctx.seen.prune()
    assert await ctx.seen.result(key) is None


async def test_retention_is_configurable(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(retention={"alertmanager_groups": "2d", "event_ids": "1h"})
    assert await ctx.seen.first_time("am:{}:{alertname=\"A\"}")
    assert await ctx.seen.first_time("event:t:e1")
    ctx.clock.advance(minutes=59)
    assert (await ctx.seen.prune(retention(ctx.cfg)))["event:"] == 0
    ctx.clock.advance(minutes=2)
    removed = await ctx.seen.prune(retention(ctx.cfg))
    assert removed["event:"] == 1 and removed["am:"] == 0
    ctx.clock.advance(days=2)
    assert (await ctx.seen.prune(retention(ctx.cfg)))["am:"] == 1


async def test_a_bad_retention_fails_at_load_with_its_line() -> None:
    with pytest.raises(ConfigError) as err:
        loads("retention:\n  alertmanager_groups: forever\n", filename="c.yaml", env={})
    assert "c.yaml:2 retention.alertmanager_groups" in str(err.value)


async def test_the_pruner_runs_once_per_period_across_processes(make_ctx: Callable[..., Any]) -> None:
    """Two processes' jobs tick; the compare-and-set on timer_jobs lets one of them prune per period."""
    a = await make_ctx(retention={"prune_every": "1h"})
    b = await make_ctx(retention={"prune_every": "1h"})
    assert await a.seen.first_time("teams:conv:act")
    a.clock.advance(days=3)
    ja, jb = pruner(a.seen, a.holder), pruner(b.seen, b.holder)
    results = await asyncio.gather(*(j.tick() for j in (ja, jb, ja, jb)))
    assert sorted(results) == [False, False, False, True]
    assert await a.seen.result("teams:conv:act") is None
    a.clock.advance(minutes=59)
    assert not await ja.tick() and not await jb.tick()
    a.clock.advance(minutes=2)
    assert [await jb.tick(), await ja.tick()] == [True, False]


async def test_the_pruner_job_prunes_at_start_and_closes(ctx: Context) -> None:
    assert await ctx.seen.first_time("teams:conv:act")
    ctx.clock.advance(days=3)
    job = pruner(ctx.seen, ctx.holder)
    await job.start()
    for _ in range(100):
        if await ctx.seen.result("teams:conv:act") is None:
            break
        await asyncio.sleep(0.02)
    await job.close()
    assert await ctx.seen.result("teams:conv:act") is None and job.runs == 1
