"""Heartbeats: a missed ping opens one incident through routing, the next ping resolves it (frozen clock);
two processes never open a miss twice; the deadline survives a restart. SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.cli_heartbeat import rows
from bot.context import Context
from bot.metrics_http import refresh_gauges
from core.clock import SystemClock
from core.config import loads
from core.errors import ConfigError, NotFound
from core.heartbeats import MISSED, RECOVERED, Heartbeats, HeartbeatTimer
from core.metrics import HEARTBEAT_AGE, HEARTBEAT_MISSED, REGISTRY
from core.models import Delivery, Incident, IncidentMessage

BEATS: dict[str, Any] = {
    "heartbeats": [{"name": "nightly-backup", "interval": "24h", "grace": "30m", "severity": "sev2",
                    "token": "hb-secret-0123456789"}],
    "routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
        {"name": "beats", "event_types": [MISSED, RECOVERED], "targets": {"lists": ["leads"]}}]},
}


async def _incidents(ctx: Context) -> list[Incident]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(Incident).order_by(Incident.id))).scalars())


async def _thread(ctx: Context, iid: int) -> list[tuple[str, str]]:
    async with ctx.db.sessions() as s:
        msgs = (await s.execute(select(IncidentMessage).where(IncidentMessage.incident_id == iid)
                                .order_by(IncidentMessage.id))).scalars()
        return [(m.kind, m.body) for m in msgs]


async def _paged(ctx: Context, iid: int) -> set[str]:
    async with ctx.db.sessions() as s:
        return set((await s.execute(select(Delivery.recipient).where(Delivery.incident_id == iid))).scalars())


async def test_missed_after_interval_plus_grace_opens_once_and_the_next_ping_recovers(
        make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**BEATS)
    beats = Heartbeats(ctx.service)
    assert await beats.sync() == 1 and await beats.sync() == 0
    await beats.ping("nightly-backup", via="test")
    ctx.clock.advance(hours=24, minutes=29)
    assert await beats.check() == []  # inside the grace
    ctx.clock.advance(minutes=2)
    opened = await beats.check()
    assert len(opened) == 1
    assert await beats.check() == [] and await beats.check() == []  # once, not once per check
    [inc] = await _incidents(ctx)
    assert (inc.source, inc.severity, inc.state, inc.correlation_key) == ("heartbeat", "sev2", "open",
                                                                          "heartbeat:nightly-backup")
    assert inc.title == "Heartbeat missed: nightly-backup"
    assert await _paged(ctx, inc.id) == {"carol"}  # routed by event type heartbeat.missed
    ctx.clock.advance(hours=2)
    assert await beats.check() == []
    result = await beats.ping("nightly-backup", via="curl")
    assert result.recovered == inc.ref
    [inc] = await _incidents(ctx)
    assert inc.state == "resolved"
    kinds = await _thread(ctx, inc.id)
    assert kinds[-1][0] == "RESOLVED" and kinds[-1][1].startswith("RECOVERED: heartbeat nightly-backup")
    again = await beats.ping("nightly-backup", via="curl")
    assert again.recovered is None and len(await _incidents(ctx)) == 1
    # the next miss is a new incident
    ctx.clock.advance(hours=25)
    assert len(await beats.check()) == 1 and len(await _incidents(ctx)) == 2


async def test_a_start_is_not_a_miss_and_an_unknown_heartbeat_is_not_found(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**BEATS)
    beats = Heartbeats(ctx.service)
    await beats.sync()
    ctx.clock.advance(hours=24)
    assert await beats.check() == []
    ctx.clock.advance(minutes=31)
    assert len(await beats.check()) == 1
    with pytest.raises(NotFound):
        await beats.ping("nope", via="test")


async def test_a_manually_resolved_miss_is_cleared_by_the_next_ping(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**BEATS)
    beats = Heartbeats(ctx.service)
    await beats.sync()
    ctx.clock.advance(hours=25)
    [ref] = await beats.check()
    from tests.core.test_incidents import OP  # an operator actor
    await ctx.service.resolve(ref, actor=OP)
    assert (await beats.ping("nightly-backup", via="t")).recovered is None
    [view] = await beats.list()
    assert not view.missed and view.pings == 1


async def test_two_processes_checking_at_once_open_one_incident(make_ctx: Callable[..., Any]) -> None:
    """Two contexts with their own engines (two processes' worth of connections) race on every check."""
    a = await make_ctx(**BEATS)
    b = await make_ctx(**BEATS)
    ba, bb = Heartbeats(a.service), Heartbeats(b.service)
    await asyncio.gather(ba.sync(), bb.sync())
    a.clock.advance(hours=25)
    results = await asyncio.gather(*(x.check() for x in (ba, bb, ba, bb, ba, bb)))
    assert sum(len(r) for r in results) == 1
    assert len(await _incidents(a)) == 1


async def test_two_real_timers_fire_a_miss_once_and_a_restart_keeps_the_deadline(
        make_ctx: Callable[..., Any]) -> None:
    """The APScheduler timers of two processes on the system clock; then both stop, a new one starts."""
    cfg = {**BEATS, "heartbeats": [{"name": "fast", "interval": "2s", "grace": "0s"}]}
    a = await make_ctx(clock=SystemClock(), **cfg)
    b = await make_ctx(clock=SystemClock(), **cfg)
    ta = HeartbeatTimer(Heartbeats(a.service), check_seconds=0.3)
    tb = HeartbeatTimer(Heartbeats(b.service), check_seconds=0.3)
    await ta.start()
    await tb.start()
    try:
        for _ in range(100):
            if await _incidents(a):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # room for a duplicate, were there one
        assert len(await _incidents(a)) == 1 and len(ta.opened) + len(tb.opened) == 1
        await Heartbeats(b.service).ping("fast", via="test")
    finally:
        await ta.close()
        await tb.close()
    assert (await _incidents(a))[0].state == "resolved"
    # Restart: the deadline written by the ping is in the database; a new timer misses it on time.
    c = await make_ctx(clock=SystemClock(), **cfg)
    tc = HeartbeatTimer(Heartbeats(c.service), check_seconds=0.3)
    await tc.start()
    try:
        for _ in range(100):
            if len(await _incidents(c)) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(await _incidents(c)) == 2 and len(tc.opened) == 1
    finally:
        await tc.close()


async def test_list_rows_and_metrics_show_last_ping_age(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**BEATS)
    beats = Heartbeats(ctx.service)
    await beats.sync()
    [(name, allowed, last, deadline, state)] = rows(await beats.list(), ctx.clock.now())
    assert (name, allowed, last, state) == ("nightly-backup", "1d + 30m", "never", "ok")
    assert "(in 1d)" not in deadline and "in 1470m" in deadline
    await beats.ping("nightly-backup", via="t")
    ctx.clock.advance(minutes=5)
    await refresh_gauges(ctx.db, ctx.clock)
    assert REGISTRY.get_sample_value("tocsin_heartbeat_last_ping_age_seconds",
                                     {"heartbeat": "nightly-backup"}) == 300.0
    assert REGISTRY.get_sample_value("tocsin_heartbeat_missed", {"heartbeat": "nightly-backup"}) == 0
    ctx.clock.advance(hours=25)
    await beats.check()
    [row] = rows(await beats.list(), ctx.clock.now())
    assert row[2].endswith("ago)") and row[4].startswith("MISSED (INC-")
    await refresh_gauges(ctx.db, ctx.clock)
    assert REGISTRY.get_sample_value("tocsin_heartbeat_missed", {"heartbeat": "nightly-backup"}) == 1
    HEARTBEAT_AGE.clear()
    HEARTBEAT_MISSED.clear()


@pytest.mark.parametrize("text, where", [
    ("heartbeats:\n  - name: a\n    interval: soon\n", "c.yaml:3 heartbeats[0].interval"),
    ("heartbeats:\n  - name: 'a b'\n    interval: 1h\n", "c.yaml:2 heartbeats[0].name"),
    ("heartbeats:\n  - name: a\n    interval: 1h\n  - name: a\n    interval: 2h\n", "c.yaml:4 heartbeats[1].name"),
    ("alertmanager:\n  watchdog:\n    heartbeat: nope\n", "c.yaml:3 alertmanager.watchdog.heartbeat"),
])
def test_heartbeat_config_errors_name_file_and_line(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(text, filename="c.yaml", env={})
    assert where in str(err.value), str(err.value)


def test_a_heartbeat_allows_interval_plus_grace() -> None:
    cfg = loads("heartbeats:\n  - {name: b, interval: 24h, grace: 30m}\n", filename="c.yaml", env={})
    assert cfg.heartbeats[0].allowed == timedelta(hours=24, minutes=30)
