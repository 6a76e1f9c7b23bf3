"""Flapping: an incident whose correlation key resolved and reopened more than K times within T is held
open, marked flapping, pages once; later resolves and re-fires add thread entries and page nobody; when
nothing changed for T the timer clears the mark (once across processes) and resolves it if the last event
was a resolve. Event sequences go through the real events API (ingest) and the Alertmanager receiver with
a frozen clock; SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.api.alertmanager import receive
from bot.api.events import ingest
from bot.api.schemas import AlertmanagerWebhook, InboundEvent
from bot.context import Context
from bot.metrics_http import refresh_gauges
from core.appearance.card import IncidentCard
from core.appearance.slack import card_blocks
from core.appearance.telegram import card_html
from core.config import loads
from core.errors import ConfigError
from core.flapping import FlappingTimer
from core.metrics import REGISTRY
from core.models import Delivery, Incident, IncidentMessage, IncidentStateChange
from core.rbac import Actor
from tests.api.conftest import am_alert, am_hook

API = Actor("api:ci", "10.0.0.1")
AM = Actor("api:alertmanager", "10.0.0.2")
FLAPPING: dict[str, Any] = {
    "api": {"keys": [{"name": "ci", "key": "tk-ops-4f1c2a9b7e", "role": "operator"}]},
    "flapping": {"reopens": 2, "within": "30m"},
    "routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
        {"name": "up", "event_types": ["probe.up"], "action": "resolve"}]},
}


class Feed:
    """Sends `F` (probe.down: opens or updates) and `R` (probe.up: resolves) for one correlation key."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.n = 0

    async def send(self, code: str) -> str:
        self.n += 1
        body = {"event_type": "probe.down" if code == "F" else "probe.up", "event_id": f"e{self.n}",
                "timestamp": "2026-01-01T10:30:00Z", "tenant_id": "acme",
                "payload": {"title": "db1 unreachable", "severity": "sev2"},
                "metadata": {"source_service": "prober", "correlation_id": "db1-ping"}}
        out = await ingest(self.ctx, InboundEvent.model_validate(body), actor=API)
        return out.result.action

    async def run(self, sequence: str, *, gap_minutes: float = 1) -> list[str]:
        actions = []
        for code in sequence.replace(" ", ""):
            if gap_minutes:
                self.ctx.clock.advance(minutes=gap_minutes)
            actions.append(await self.send(code))
        return actions


async def incidents(ctx: Context) -> list[Incident]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(Incident).order_by(Incident.id))).scalars())


async def pages(ctx: Context, iid: int) -> int:
    """Deliveries to people (not chat-card syncs) for one incident."""
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(Delivery).where(
            Delivery.incident_id == iid, Delivery.purpose != "surface"))).scalar_one())


async def thread(ctx: Context, iid: int) -> list[str]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(IncidentMessage.kind).where(IncidentMessage.incident_id == iid)
                                     .order_by(IncidentMessage.id))).scalars())


@pytest.mark.parametrize("sequence, gap, actions, opened, flapping", [
    # K=2 within 30m: the 3rd reopen (4th incident) is more than 2 -> flapping; it pages once
    ("FRFRFRF", 1, ["opened", "resolved"] * 3 + ["opened"], 4, True),
    ("FRFRF", 1, ["opened", "resolved"] * 2 + ["opened"], 3, False),      # 2 reopens: not more than K
    ("FRFRFRF", 20, ["opened", "resolved"] * 3 + ["opened"], 4, False),   # spread out: 1 resolve within 30m
    ("FRFRFRFRFR", 1, ["opened", "resolved"] * 3 + ["opened", "held", "held", "held"], 4, True),
    ("FRFRFRFF", 1, ["opened", "resolved"] * 3 + ["opened", "held"], 4, True),  # a repeat while flapping
])
async def test_flapping_table(make_ctx: Callable[..., Any], sequence: str, gap: float, actions: list[str],
                              opened: int, flapping: bool) -> None:
    ctx = await make_ctx(**FLAPPING)
    got = await Feed(ctx).run(sequence, gap_minutes=gap)
    assert got == actions
    rows = await incidents(ctx)
    assert len(rows) == opened
    last = rows[-1]
    assert bool(last.flapping) is flapping
    if flapping:
        assert last.state == "open"
        assert last.description.startswith("Flapping: resolved and reopened 3 times within 30m (more than 2).")
        paged_at_open = await pages(ctx, last.id)
        assert paged_at_open == 2  # alice and bob, once, for the INITIAL
        kinds = await thread(ctx, last.id)
        assert kinds == ["INITIAL"] + ["FLAPPING"] * actions.count("held")
    else:
        assert all(not r.flapping for r in rows)


async def test_a_held_resolve_pages_nobody_and_stable_for_t_resolves_once(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**FLAPPING)
    feed = Feed(ctx)
    await feed.run("FRFRFRF")
    [*_, inc] = await incidents(ctx)
    before = await pages(ctx, inc.id)
    assert await feed.run("RFR", gap_minutes=5) == ["held"] * 3
    assert await pages(ctx, inc.id) == before  # nobody paged for the held events
    [*_, inc] = await incidents(ctx)
    assert inc.state == "open" and inc.flapping["last"] == "resolve" and inc.flapping["held"] == 3
    timer = FlappingTimer(ctx.service.flaps, db=ctx.db, clock=ctx.clock)
    ctx.clock.advance(minutes=29)
    assert await ctx.service.flaps.settle_due() == []  # 29m after the last change: not yet stable
    ctx.clock.advance(minutes=1, seconds=1)
    assert await timer.tick() is True and timer.settled == [f"{inc.ref} resolved"]
    assert await ctx.service.flaps.settle_due() == []  # once
    [*_, inc] = await incidents(ctx)
    assert inc.state == "resolved" and not inc.flapping and inc.flapping_until is None
    assert (await thread(ctx, inc.id))[-2:] == ["FLAPPING", "RESOLVED"]
    assert await pages(ctx, inc.id) > before  # the resolution is news, as for any resolve


async def test_a_re_fire_restarts_the_clock_and_a_stable_firing_incident_stays_open(
        make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**FLAPPING)
    feed = Feed(ctx)
    await feed.run("FRFRFRF")
    await feed.run("R")
    await feed.run("F", gap_minutes=20)        # state flipped again: stable only 30m from now
    ctx.clock.advance(minutes=20)
    assert await ctx.service.flaps.settle_due() == []
    await feed.run("F", gap_minutes=5)         # a repeat of the same state does not restart the clock
    ctx.clock.advance(minutes=5, seconds=1)
    [*_, inc] = await incidents(ctx)
    assert await ctx.service.flaps.settle_due() == [f"{inc.ref} cleared"]
    [*_, inc] = await incidents(ctx)
    assert inc.state == "open" and not inc.flapping
    thread_bodies = [m.body for m in (await ctx.service.detail(inc.id)).thread]
    assert thread_bodies[-3].startswith("Fired again (flapping, nobody paged); stable at")
    assert thread_bodies[-2].startswith("Update (flapping, nobody paged)")  # same state: the clock runs on
    assert "still firing" in thread_bodies[-1]
    # no longer flapping: the next resolve resolves
    assert await feed.run("R") == ["resolved"]


async def test_a_person_resolves_a_flapping_incident_for_real(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**FLAPPING)
    await Feed(ctx).run("FRFRFRF")
    [*_, inc] = await incidents(ctx)
    out = await ctx.service.resolve(inc.id, actor=Actor("cli:op"), text="fixed the NIC")
    assert out.changed and out.incident is not None and out.incident.state == "resolved"
    assert await ctx.service.flaps.settle_due() == []


async def test_a_rule_setting_wins_and_people_never_flap(make_ctx: Callable[..., Any]) -> None:
    cfg = {**FLAPPING, "flapping": None, "routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
        {"name": "up", "event_types": ["probe.up"], "action": "resolve"},
        {"name": "down", "event_types": ["probe.down"], "flapping": {"reopens": 1, "within": "1h"}}]}}
    ctx = await make_ctx(**cfg)
    assert await Feed(ctx).run("FRFRF") == ["opened", "resolved", "opened", "resolved", "opened"]
    assert (await incidents(ctx))[-1].flapping["limit"] == 1


async def test_alertmanager_group_flapping_is_held_and_counted_in_metrics(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**FLAPPING)
    firing = AlertmanagerWebhook.model_validate(am_hook([am_alert()]))
    resolved = AlertmanagerWebhook.model_validate(am_hook([am_alert(status="resolved")]))
    actions = []
    held_before = REGISTRY.get_sample_value("tocsin_flapping_held_total", {"kind": "resolve"}) or 0
    for hook in [firing, resolved] * 5:
        ctx.clock.advance(minutes=1)
        actions.append((await receive(ctx, hook, actor=AM)).result.action)
    assert actions == ["opened", "resolved"] * 3 + ["opened", "held", "held", "held"]
    [*_, inc] = await incidents(ctx)
    assert inc.flapping and inc.state == "open" and inc.payload["previous_incident"] == "INC-3"
    assert REGISTRY.get_sample_value("tocsin_flapping_held_total", {"kind": "resolve"}) == held_before + 2
    await refresh_gauges(ctx.db, ctx.clock)
    assert REGISTRY.get_sample_value("tocsin_incidents_flapping") == 1
    card = IncidentCard.of(inc, "http://127.0.0.1:8080")
    assert card.flapping and "Open (flapping)" in str(card_blocks(card, now=ctx.clock.now()))
    assert "OPEN (FLAPPING)" in card_html(card)
    ctx.clock.advance(minutes=31)
    assert await ctx.service.flaps.settle_due() == [f"{inc.ref} resolved"]
    await refresh_gauges(ctx.db, ctx.clock)
    assert REGISTRY.get_sample_value("tocsin_incidents_flapping") == 0


async def test_two_engines_settle_once(make_ctx: Callable[..., Any]) -> None:
    """Two contexts with their own engines (two processes) tick and settle the same due incident at once."""
    a = await make_ctx(**FLAPPING)
    b = await make_ctx(**FLAPPING)
    feed = Feed(a)
    await feed.run("FRFRFRFR")
    [*_, inc] = await incidents(a)
    a.clock.advance(minutes=31)
    ta = FlappingTimer(a.service.flaps, db=a.db, clock=a.clock)
    tb = FlappingTimer(b.service.flaps, db=b.db, clock=b.clock)
    ticks = await asyncio.gather(ta.tick(), tb.tick())
    assert sorted(ticks) == [False, True]  # one process has the period
    [*_, inc] = await incidents(a)
    assert inc.state == "resolved"
    # and even when both run a pass over the same due incident, only one acts
    assert (await feed.run("FRFRFRFR"))[-3:] == ["held"] * 3
    [*_, inc2] = await incidents(a)
    a.clock.advance(minutes=31)
    results = await asyncio.gather(a.service.flaps.settle(inc2.id), b.service.flaps.settle(inc2.id),
                                   a.service.flaps.settle(inc2.id), b.service.flaps.settle(inc2.id))
    assert sorted(r or "" for r in results) == ["", "", "", "resolved"]
    async with a.db.sessions() as s:
        resolves = int((await s.execute(select(func.count()).select_from(IncidentStateChange).where(
            IncidentStateChange.incident_id == inc2.id, IncidentStateChange.to_state == "resolved"))).scalar_one())
    assert resolves == 1


@pytest.mark.parametrize("yaml_text, where", [
    ("flapping:\n  reopens: 0\n  within: 10m\n", "c.yaml:2 flapping.reopens"),
    ("flapping:\n  reopens: 3\n", "c.yaml:1 flapping.within"),
    ("flapping:\n  reopens: 3\n  within: 0s\n", "c.yaml:3 flapping.within"),
    ("routing:\n  rules:\n    - name: r\n      flapping: {reopens: 2}\n", "c.yaml:4 routing.rules[0].flapping.within"),
])
def test_flapping_config_fails_at_load_with_file_and_line(yaml_text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(yaml_text, filename="c.yaml", env={})
    assert where in str(err.value)


async def test_a_flapping_heartbeat_is_held_not_reopened(make_ctx: Callable[..., Any]) -> None:
    """A heartbeat that misses and recovers over and over: the flapping incident stays the one incident,
    a recovery is held (not reported as recovered), a new miss is a held thread entry, not a new page."""
    from core.heartbeats import Heartbeats

    ctx = await make_ctx(flapping={"reopens": 1, "within": "1h"},
                         heartbeats=[{"name": "backup", "interval": "10m", "grace": "0s"}])
    beats = Heartbeats(ctx.service)
    await beats.sync()
    opened, recovered = [], []
    for _ in range(4):
        ctx.clock.advance(minutes=11)
        opened += await beats.check()
        ctx.clock.advance(minutes=1)
        recovered.append((await beats.ping("backup", via="test")).recovered)
    rows = await incidents(ctx)
    assert [r.ref for r in rows] == ["INC-1", "INC-2", "INC-3"]  # the 3rd miss flaps; the 4th is held in it
    assert opened == ["INC-1", "INC-2", "INC-3", "INC-3"]
    assert recovered == ["INC-1", "INC-2", None, None]
    inc = rows[-1]
    assert inc.flapping and inc.state == "open" and await pages(ctx, inc.id) == 2
    assert await thread(ctx, inc.id) == ["INITIAL", "FLAPPING", "FLAPPING", "FLAPPING"]
    ctx.clock.advance(hours=1)
    assert await ctx.service.flaps.settle_due() == ["INC-3 resolved"]  # the last event was a recovery


async def test_two_real_timers_settle_a_stable_incident_once(make_ctx: Callable[..., Any]) -> None:
    """The APScheduler timers of two processes on the system clock: the stable incident resolves once."""
    from core.clock import SystemClock

    cfg = {**FLAPPING, "flapping": {"reopens": 2, "within": "3s"}}
    a = await make_ctx(clock=SystemClock(), **cfg)
    b = await make_ctx(clock=SystemClock(), **cfg)
    feed = Feed(a)
    assert (await feed.run("FRFRFRFR", gap_minutes=0))[-2:] == ["opened", "held"]
    [*_, inc] = await incidents(a)
    timers = [FlappingTimer(x.service.flaps, db=x.db, clock=x.clock, every_seconds=0.3, tick_seconds=0.1)
              for x in (a, b)]
    for t in timers:
        await t.start()
    try:
        for _ in range(100):
            if (await a.service.get(inc.id)).state == "resolved":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # room for a duplicate, were there one
    finally:
        for t in timers:
            await t.close()
    assert (await a.service.get(inc.id)).state == "resolved"
    assert sum(len(t.settled) for t in timers) == 1
    async with a.db.sessions() as s:
        resolves = int((await s.execute(select(func.count()).select_from(IncidentStateChange).where(
            IncidentStateChange.incident_id == inc.id, IncidentStateChange.to_state == "resolved"))).scalar_one())
    assert resolves == 1
