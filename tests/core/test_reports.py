"""`tocsin report`'s figures (core/reports.py) against incidents built with known timings on a frozen clock,
paged through real routing, schedules and escalation, delivered by the real worker (outbox senders and a
loopback HTTP stand-in), on SQLite and PostgreSQL. Every expected number is worked out by hand below."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.context import Context
from core.clock import FrozenClock
from core.config import loads
from core.errors import ConfigError, InvalidInput
from core.models import Delivery
from core.rbac import Actor
from core.reports import Report, build, csv_rows, median, parse_since, percentile, to_csv
from core.stats import StatsReads
from tests.delivery.test_worker_kit import start_worker, wait_until
from tests.stand_ins.http import HttpStandIn

OP = Actor("cli:op", "cli")
ADMIN = Actor("cli:admin", "cli")
ALICE = Actor("contact:alice", "ack_link", "alice")
BOB = Actor("contact:bob", "ack_link", "bob")


def at(*a: int) -> datetime:
    return datetime(*a, tzinfo=timezone.utc)


WEEKLY = {"rotation": "weekly", "handoff": "09:00", "handoff_day": "monday", "start": "2026-01-05"}
REPORT_CONFIG: dict[str, Any] = {
    "contacts": [
        {"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
         "preferences": {"sev1": ["sms", "email"], "default": ["email"]},
         "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}},
        {"name": "bob", "email": "bob@example.com", "preferences": {"default": ["email"]}},
        {"name": "carol", "email": "carol@example.com", "preferences": {"default": ["email"]}},
        {"name": "dave", "email": "dave@example.com", "preferences": {"default": ["email"]}},
    ],
    "contact_lists": [{"name": "oncall", "members": ["alice", "bob"]}, {"name": "leads", "members": ["carol"]}],
    "schedules": [
        {"name": "primary", "timezone": "UTC", "layers": [{"name": "weekly", "members": ["alice", "bob"], **WEEKLY}],
         "fallback": {"lists": ["leads"]}},
        {"name": "secondary", "timezone": "UTC", "layers": [{"name": "weekly", "members": ["dave"], **WEEKLY}]},
    ],
    "routing": {"default_targets": {"lists": [], "schedules": ["primary"]}, "rules": [
        {"name": "major", "event_types": ["declare"], "min_severity": "sev1",
         "targets": {"schedules": ["primary"]}, "escalation_policy": "p"},
        {"name": "api", "event_types": ["declare"], "sources": ["api"], "targets": {"schedules": ["secondary"]}}]},
    "escalation_policies": [{"name": "p", "levels": [{"wait_minutes": 60, "targets": {"contacts": ["dave"]}}]}],
    "reports": {"night": "23:00-06:00", "timezone": "UTC"},
    "worker": {"poll_seconds": 0.1},
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def drained(ctx: Context) -> None:
    """Wait until the worker has finished every delivery queued so far."""
    async def done() -> bool:
        async with ctx.db.sessions() as s:
            n = (await s.execute(select(func.count()).select_from(Delivery)
                                 .where(Delivery.status.in_(("queued", "sending"))))).scalar_one()
        return n == 0

    await wait_until(done, what="deliveries finished")


async def scenario(ctx: Context, clock: FrozenClock) -> None:
    """Five incidents (all times UTC; primary: alice on call 5-12 Jan, bob 12-19 Jan; secondary: dave):

    INC-1 sev1 Tue 6 Jan 10:00 -> alice (sms+email: one page), ack +4m (alice, from her page), resolve +30m
    INC-2 sev2 Tue 6 Jan 22:30 -> alice (23:30 Berlin: night by her quiet hours, not by reports.night),
          ack +10m, resolve +2h
    INC-3 sev1 Tue 13 Jan 23:30 -> bob (night by reports.night 23:00-06:00 UTC) and the leads list (carol);
          escalated by hand at +5m -> dave (escalation page), ack +12m (bob, from his page), resolve +60m
    INC-4 sev3 Wed 14 Jan 12:00, source api -> secondary (dave, by day), never acknowledged
    INC-5 sev2 Sat 1 Nov 2025, before the 30-day window: paged carol (fallback), acked and resolved
    Overrides on primary: carol Thu 15 Jan 09:00 for 24h (in bob's week); dave 16 Jan, cancelled.
    """
    svc = ctx.service

    async def step(when: datetime, fn: Callable[[], Any]) -> Any:
        clock.set(when)
        out = await fn()
        await drained(ctx)
        return out

    t5 = at(2025, 11, 1, 10)
    await step(t5, lambda: svc.declare(actor=OP, title="old", severity="sev2"))
    await step(t5 + timedelta(minutes=1), lambda: svc.acknowledge("INC-1", actor=OP))
    await step(t5 + timedelta(minutes=2), lambda: svc.resolve("INC-1", actor=OP))
    # From here the refs are INC-2.. in the database; the docstring's INC-n are declared in that order.
    t1 = at(2026, 1, 6, 10)
    await step(t1, lambda: svc.declare(actor=OP, title="checkout down", severity="sev1"))
    await step(t1 + timedelta(minutes=4), lambda: svc.acknowledge("INC-2", actor=ALICE))
    await step(t1 + timedelta(minutes=30), lambda: svc.resolve("INC-2", actor=OP))
    t2 = at(2026, 1, 6, 22, 30)
    await step(t2, lambda: svc.declare(actor=OP, title="search slow", severity="sev2"))
    await step(t2 + timedelta(minutes=10), lambda: svc.acknowledge("INC-3", actor=OP))
    await step(t2 + timedelta(hours=2), lambda: svc.resolve("INC-3", actor=OP))
    t3 = at(2026, 1, 13, 23, 30)
    await step(t3, lambda: svc.declare(actor=OP, title="db failover", severity="sev1", contact_list="leads"))
    await step(t3 + timedelta(minutes=5), lambda: svc.escalate("INC-4", actor=OP))
    await step(t3 + timedelta(minutes=12), lambda: svc.acknowledge("INC-4", actor=BOB))
    await step(t3 + timedelta(minutes=60), lambda: svc.resolve("INC-4", actor=OP))
    await step(at(2026, 1, 14, 12), lambda: svc.declare(actor=OP, title="disk 80%", severity="sev3", source="api"))
    await svc.schedules.override("primary", "carol", actor=ADMIN, start=at(2026, 1, 15, 9), length=timedelta(hours=24))
    gone = await svc.schedules.override("primary", "dave", actor=ADMIN, start=at(2026, 1, 16, 9),
                                        length=timedelta(hours=24))
    await svc.schedules.cancel(int(gone.id), actor=ADMIN)
    clock.set(at(2026, 1, 20, 12))


@pytest.fixture
async def built(make_ctx: Callable[..., Any], clock: FrozenClock,
                http: aiohttp.ClientSession) -> AsyncIterator[Context]:
    ctx = await make_ctx(**REPORT_CONFIG)
    worker = await start_worker(ctx, http)
    try:
        await scenario(ctx, clock)
    finally:
        await worker.close()
    yield ctx


def rows(r: Report) -> dict[str, tuple[Any, ...]]:
    return {g.key: (g.incidents, g.acknowledged, g.resolved, g.tta.median, g.tta.p90, g.ttr.median, g.ttr.p90,
                    g.escalations) for g in [*r.groups, r.total]}


M = 60


async def test_incidents_by_severity_with_hand_computed_medians_and_p90(built: Context) -> None:
    r = await build(built.db, built.cfg, now=built.clock.now(), since=parse_since("30d"), by="severity")
    assert r.start == at(2025, 12, 21, 12) and r.end == at(2026, 1, 20, 12)
    # sev1: MTTA 4m, 12m -> median 8m, p90 (nearest rank ceil(0.9*2)=2nd) 12m; MTTR 30m, 60m -> 45m, 60m.
    # all: MTTA 4m, 10m, 12m -> median 10m, p90 (3rd of 3) 12m; MTTR 30m, 1h, 2h -> median 1h, p90 2h.
    assert rows(r) == {
        "sev1": (2, 2, 2, 8 * M, 12 * M, 45 * M, 60 * M, 1),
        "sev2": (1, 1, 1, 10 * M, 10 * M, 120 * M, 120 * M, 0),
        "sev3": (1, 0, 0, None, None, None, None, 0),
        "all": (4, 3, 3, 10 * M, 12 * M, 60 * M, 120 * M, 1),
    }
    assert [g.key for g in r.groups] == ["sev1", "sev2", "sev3"]
    assert r.total.escalated == 1


async def test_by_schedule_source_and_contact(built: Context) -> None:
    now, since = built.clock.now(), parse_since("30d")
    r = await build(built.db, built.cfg, now=now, since=since, by="schedule")
    # primary paged INC-1..3 (MTTA 4m, 10m, 12m; MTTR 30m, 2h, 1h); secondary only the open sev3.
    assert rows(r) == {"primary": (3, 3, 3, 10 * M, 12 * M, 60 * M, 120 * M, 1),
                       "secondary": (1, 0, 0, None, None, None, None, 0),
                       "all": (4, 3, 3, 10 * M, 12 * M, 60 * M, 120 * M, 1)}
    r = await build(built.db, built.cfg, now=now, since=since, by="source")
    assert {k: v[0] for k, v in rows(r).items()} == {"cli": 3, "api": 1, "all": 4}
    r = await build(built.db, built.cfg, now=now, since=since, by="contact")
    # alice: INC-1, INC-2 (MTTA 4m, 10m -> median 7m, p90 10m); dave: INC-3 (escalation) and INC-4.
    assert rows(r) == {
        "alice": (2, 2, 2, 7 * M, 10 * M, 75 * M, 120 * M, 0),
        "dave": (2, 1, 1, 12 * M, 12 * M, 60 * M, 60 * M, 1),
        "bob": (1, 1, 1, 12 * M, 12 * M, 60 * M, 60 * M, 1),
        "carol": (1, 1, 1, 12 * M, 12 * M, 60 * M, 60 * M, 1),
        "all": (4, 3, 3, 10 * M, 12 * M, 60 * M, 120 * M, 1),
    }
    assert [g.key for g in r.groups] == ["alice", "dave", "bob", "carol"]  # most incidents first, then name


async def test_pages_per_person_with_night_pages(built: Context) -> None:
    r = await build(built.db, built.cfg, now=built.clock.now(), since=parse_since("30d"))
    load = {p.contact: (p.pages, p.night, p.escalation_pages, p.incidents) for p in r.people}
    # alice: 10:00 UTC (day) and 22:30 UTC = 23:30 Berlin (night by her quiet hours, 22:00-07:00 Berlin);
    # bob: 23:30 UTC (night by reports.night); carol: 23:30 UTC (night); INC-5's fallback page to carol is
    # older than the window; dave: the 23:35 escalation (night) and 12:00 (day).
    assert load == {"alice": (2, 1, 0, 2), "dave": (2, 1, 1, 2), "bob": (1, 1, 0, 1), "carol": (1, 1, 0, 1)}
    windows = {p.contact: p.night_window for p in r.people}
    assert windows["alice"] == "22:00-07:00 Europe/Berlin" and windows["bob"] == "23:00-06:00 UTC"
    # Acknowledged (by the contact themselves: contact:alice, contact:bob; cli:op is nobody's).
    assert {p.contact: p.acknowledged for p in r.people} == {"alice": 1, "bob": 1, "carol": 0, "dave": 0}
    # Hours on call from 21 Dec 12:00 to 20 Jan 12:00. Both layers start Mon 5 Jan 09:00 (nobody before).
    # primary: alice 5-12 Jan (168h) and 19 Jan 09:00-20 Jan 12:00 (27h); bob 12-19 Jan (168h) less carol's
    # 24h override; the cancelled override counts for nobody. secondary: dave 5 Jan 09:00-20 Jan 12:00.
    hours = {p.contact: p.oncall_hours for p in r.people}
    assert hours == {"alice": 195.0, "bob": 144.0, "carol": 24.0, "dave": 363.0}
    # Most pages first, then most hours on call.
    assert [p.contact for p in r.people] == ["dave", "alice", "bob", "carol"]
    # A shorter period: the last 6 days start at 14 Jan 12:00 sharp, when INC-4 paged dave by day (the start
    # is included). alice (19 Jan 09:00 on), bob (until 19 Jan 09:00, less 24h) and carol were on call.
    r = await build(built.db, built.cfg, now=built.clock.now(), since=parse_since("6d"))
    assert [(p.contact, p.pages, p.night, p.oncall_hours) for p in r.people] == [
        ("dave", 1, 0, 144.0), ("bob", 0, 0, 93.0), ("alice", 0, 0, 27.0), ("carol", 0, 0, 24.0)]
    assert rows(r)["all"][:3] == (1, 0, 0)


async def test_csv_has_one_header_and_every_figure(built: Context) -> None:
    r = await build(built.db, built.cfg, now=built.clock.now(), since=parse_since("30d"))
    text = to_csv(r)
    lines = text.splitlines()
    assert lines[0] == "section,group,metric,value"
    assert "incidents,sev1,mtta_median_seconds,480" in lines and "incidents,all,mttr_p90_seconds,7200" in lines
    assert "incidents,sev3,mtta_median_seconds," in lines  # no data is empty, not 0
    assert "pages,alice,night_pages,1" in lines and "pages,dave,escalation_pages,1" in lines
    assert "pages,bob,oncall_hours,144.0" in lines and "pages,alice,acknowledged,1" in lines
    assert "deliveries,email,success_rate,1.0000" in lines
    assert len(lines) == 1 + len(csv_rows(r))


async def test_delivery_success_per_channel(make_ctx: Callable[..., Any], clock: FrozenClock, peer: HttpStandIn,
                                            http: aiohttp.ClientSession) -> None:
    """One incident pages alice by email (outbox) and three webhooks on a loopback stand-in: one answers 200,
    one 404 (failed, never retried), one 500 twice (retried once, then dead)."""
    peer.script("/ok", (200, "ok"))
    peer.script("/gone", (404, "no such hook"))
    peer.script("/broken", (500, "boom"), (500, "boom"))
    ctx = await make_ctx(
        destinations=[{"name": n, "channel": "webhook", "url": f"{peer.url}/{n}"} for n in ("ok", "gone", "broken")],
        routing={"default_targets": {"lists": [], "contacts": ["alice"], "destinations": ["ok", "gone", "broken"]},
                 "rules": []},
        channels={"webhook": {"outbox": False, "retry": {"max_retries": 1, "base_seconds": 1, "jitter": 0.0,
                                                         "max_seconds": 1, "timeout_seconds": 2}}},
        worker={"poll_seconds": 0.1})
    worker = await start_worker(ctx, http)
    try:
        await ctx.service.declare(actor=OP, title="payments", severity="sev2")

        async def settled(expect: dict[str, int]) -> None:
            async def check() -> bool:
                async with ctx.db.sessions() as s:
                    got = dict((await s.execute(select(Delivery.status, func.count())
                                                .where(Delivery.purpose != "surface")
                                                .group_by(Delivery.status))).all())
                return got == expect
            await wait_until(check, what=f"statuses {expect}")

        await settled({"delivered": 2, "failed": 1, "queued": 1})  # the 500 waits for its retry
        clock.advance(seconds=2)
        worker.worker.notify()
        await settled({"delivered": 2, "failed": 1, "dead": 1})
    finally:
        await worker.close()
    r = await build(ctx.db, ctx.cfg, now=clock.now(), since=parse_since("1d"))
    got = {c.channel: (c.delivered, c.failed, c.dead, c.attempts, c.retries) for c in r.channels}
    assert got == {"email": (1, 0, 0, 1, 0), "webhook": (1, 1, 1, 4, 1)}
    webhook = next(c for c in r.channels if c.channel == "webhook")
    assert webhook.success == pytest.approx(1 / 3)
    # Destinations are not people: pages per person counts alice only.
    assert [(p.contact, p.pages) for p in r.people] == [("alice", 1)]


async def test_bad_input_and_permissions(ctx: Context) -> None:
    for bad in ("3x", "30", "0d", "-1d", "", "d", "99999d"):
        with pytest.raises(InvalidInput):
            parse_since(bad)
    assert parse_since("2w") == timedelta(days=14) and parse_since("12h") == timedelta(hours=12)
    with pytest.raises(InvalidInput, match="by must be one of severity, source, schedule, contact"):
        await build(ctx.db, ctx.cfg, now=ctx.clock.now(), since=timedelta(days=1), by="colour")
    reads = StatsReads(ctx.db, ctx.holder)
    nobody = Actor("slack:UNKNOWN", "slack")  # default_role viewer may VIEW
    r = await reads.report(actor=nobody, now=ctx.clock.now(), since=timedelta(days=1))
    assert r.total.incidents == 0 and r.people == [] and r.channels == []


def test_percentiles_by_hand() -> None:
    assert median([]) is None and percentile([], 90) is None
    assert median([240.0, 720.0]) == 480.0 and median([3.0, 1.0, 2.0]) == 2.0
    ten = [float(i) for i in range(1, 11)]
    assert percentile(ten, 90) == 9.0 and percentile(ten, 50) == 5.0 and percentile(ten, 100) == 10.0
    assert percentile([5.0], 90) == 5.0 and percentile([1.0, 2.0], 90) == 2.0


def test_night_is_validated_at_load_with_file_and_line() -> None:
    for night, why in (('"22:00-7"', "must be a time from 00:00 to 23:59"), ('"22:00"', 'like "22:00-07:00"'),
                       ('"08:00-08:00"', "would be empty")):
        with pytest.raises(ConfigError) as exc:
            loads(f"reports:\n  night: {night}\n", filename="cfg.yaml", env={})
        assert any(p.startswith("cfg.yaml:2 reports.night") and why in p for p in exc.value.problems), \
            exc.value.problems
    with pytest.raises(ConfigError) as exc:
        loads("reports:\n  night: \"22:00-06:00\"\n  timezone: Mars/Olympus\n", filename="cfg.yaml", env={})
    assert exc.value.problems == ["cfg.yaml:3 reports.timezone: unknown timezone 'Mars/Olympus'"]
