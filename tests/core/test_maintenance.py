"""Maintenance windows: matching inbound events are recorded but open and page nothing; matching open
incidents pause their escalation (queued escalation pages cancelled) and resume at the end; windows expire
and may not exceed the maximum; only MANAGER and above start or end them; scheduled windows start once.
Frozen clock; SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.commands import parse
from bot.context import Context
from bot.dispatch import execute, run_text
from core.errors import Forbidden, InvalidInput, InvalidTransition
from core.escalation import Escalator
from core.heartbeats import Heartbeats
from core.maintenance import Maintenance, matches
from core.metrics import REGISTRY
from core.models import AuditEntry, Delivery, Incident, MaintenanceWindow, SuppressedEvent
from core.rbac import Actor
from core.routing import RouteEvent
from tests.escalation.conftest import policy_config

ADMIN, MANAGER = Actor("cli:admin", "cli"), Actor("cli:manager", "cli")
OP, VIEWER = Actor("cli:op", "cli"), Actor("cli:viewer", "cli")
PROMETHEUS = Actor("api:alertmanager", "10.0.0.9")


async def _count(ctx: Context, model: Any, *where: Any) -> int:
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


@pytest.mark.parametrize("match, event, hit", [
    ({}, RouteEvent("alertmanager", source="alertmanager"), True),
    ({"source": "alertmanager"}, RouteEvent("alertmanager", source="alertmanager"), True),
    ({"source": "Alertmanager"}, RouteEvent("x", source="alertmanager"), True),
    ({"source": "alertmanager", "labels.team": "db"}, RouteEvent("x", source="alertmanager",
                                                                 labels={"team": "db"}), True),
    ({"source": "alertmanager", "labels.team": "db"}, RouteEvent("x", source="alertmanager",
                                                                 labels={"team": "web"}), False),
    ({"labels.team": "db"}, RouteEvent("x", source="alertmanager"), False),
    ({"event_type": "heartbeat.missed"}, RouteEvent("heartbeat.missed", source="heartbeat"), True),
    ({"payload.verdict": "FAIL"}, RouteEvent("scan", payload={"verdict": "fail"}), True),
    ({"labels": "x"}, RouteEvent("scan", labels={"a": "b"}), False),
])
def test_matching_table(match: dict[str, str], event: RouteEvent, hit: bool) -> None:
    assert matches(match, event) is hit


async def test_matching_events_are_recorded_and_open_nothing(ctx: Context) -> None:
    win = await Maintenance(ctx.service).start(actor=MANAGER, duration=timedelta(hours=2),
                                               match="source=alertmanager,labels.team=db", reason="DB upgrade")
    out = await ctx.service.declare(actor=PROMETHEUS, title="Disk full on db1", severity="sev1",
                                    source="alertmanager", labels={"team": "db"}, event_type="alertmanager")
    assert out.incident is None and out.suppressed_by is not None and win.ref in out.note
    one = await ctx.service.notify(actor=PROMETHEUS, text="db1 restarted", contact_list="oncall",
                                   source="alertmanager", labels={"team": "db"}, event_type="alertmanager")
    assert one.queued == 0 and one.suppressed_by is not None
    assert await _count(ctx, Incident) == 0 and await _count(ctx, Delivery) == 0
    assert await _count(ctx, SuppressedEvent, SuppressedEvent.window_id == win.id) == 2
    assert await _count(ctx, AuditEntry, AuditEntry.action == "maintenance.suppressed") == 2
    # another team, and a person declaring, are not suppressed
    other = await ctx.service.declare(actor=PROMETHEUS, title="web down", severity="sev1", source="alertmanager",
                                      labels={"team": "web"}, event_type="alertmanager")
    person = await ctx.service.declare(actor=OP, title="db is slow", severity="sev2", source="alertmanager",
                                       labels={"team": "db"})
    assert other.incident is not None and person.incident is not None
    [view] = await Maintenance(ctx.service).list(actor=VIEWER)
    assert view.window.suppressed == 2 and [e.title for e in view.recent] == ["db1 restarted", "Disk full on db1"]
    text = view.line(ctx.clock.now())
    assert "M-1 [source=alertmanager,labels.team=db] active" in text and "suppressed 2 event(s)" in text
    assert (REGISTRY.get_sample_value("tocsin_maintenance_suppressed_total", {"kind": "event"}) or 0) >= 2
    # after the window, the same event opens
    ctx.clock.advance(hours=2, seconds=1)
    assert await Maintenance(ctx.service).expire() == ["M-1"]
    again = await ctx.service.declare(actor=PROMETHEUS, title="Disk full on db1", severity="sev1",
                                      source="alertmanager", labels={"team": "db"}, event_type="alertmanager")
    assert again.incident is not None


async def test_escalation_pauses_cancels_queued_pages_and_resumes_at_the_end(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**policy_config(5, 10))
    esc = Escalator(ctx.service)
    inc = (await ctx.service.declare(actor=OP, title="db down", severity="sev1", labels={"team": "db"})).incident
    assert inc is not None
    ctx.clock.advance(minutes=5)
    assert len(await esc.run_due()) == 1  # level 1 paged; level 2 due in 10 minutes
    queued = await _count(ctx, Delivery, Delivery.incident_id == inc.id, Delivery.purpose == "escalation",
                          Delivery.status == "queued")
    assert queued > 0
    ctx.clock.advance(minutes=4)  # 6 minutes left before level 2
    win = await Maintenance(ctx.service).start(actor=MANAGER, duration=timedelta(hours=1), match="labels.team=db")
    assert win.paused == {str(inc.id): 360.0}
    assert await _count(ctx, Delivery, Delivery.incident_id == inc.id, Delivery.purpose == "escalation",
                        Delivery.status == "queued") == 0
    ctx.clock.advance(minutes=30)
    assert await esc.run_due() == []  # paused
    ended = await Maintenance(ctx.service).end(win.ref, actor=MANAGER)
    assert ended.ended_by == "cli:manager"
    async with ctx.db.sessions() as s:
        row = await s.get(Incident, inc.id)
    assert row is not None and row.next_escalation_at is not None
    ctx.clock.advance(minutes=5)
    assert await esc.run_due() == []
    ctx.clock.advance(minutes=1, seconds=1)
    assert len(await esc.run_due()) == 1  # level 2, with the 6 minutes it had left
    with pytest.raises(InvalidTransition):
        await Maintenance(ctx.service).end(win.ref, actor=MANAGER)


async def test_an_acknowledged_incident_does_not_resume(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**policy_config(5, 10))
    inc = (await ctx.service.declare(actor=OP, title="db down", severity="sev1")).incident
    assert inc is not None
    win = await Maintenance(ctx.service).start(actor=MANAGER, duration=timedelta(hours=1))
    await ctx.service.acknowledge(inc.id, actor=OP)
    ctx.clock.advance(hours=1, seconds=1)
    assert await Maintenance(ctx.service).expire() == [win.ref]
    async with ctx.db.sessions() as s:
        row = await s.get(Incident, inc.id)
    assert row is not None and row.next_escalation_at is None


async def test_windows_must_end(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx()
    m = Maintenance(ctx.service)
    with pytest.raises(InvalidInput, match="at most 8h"):
        await m.start(actor=ADMIN, duration=timedelta(hours=8, minutes=1))
    win = await m.start(actor=ADMIN, duration=timedelta(hours=8))
    ctx.clock.advance(hours=7, minutes=59)
    assert await m.expire() == []
    ctx.clock.advance(minutes=2)
    assert await m.expire() == [win.ref] and await m.expire() == []
    async with ctx.db.sessions() as s:
        row = await s.get(MaintenanceWindow, win.id)
    assert row is not None and row.ended_by == "system:maintenance"
    assert await m.list(actor=VIEWER) == []
    short = await make_ctx(maintenance={"max_duration": "1h"})
    with pytest.raises(InvalidInput, match="at most 1h"):
        await Maintenance(short.service).start(actor=ADMIN, duration=timedelta(hours=2))


@pytest.mark.parametrize("actor, allowed", [(ADMIN, True), (MANAGER, True), (OP, False), (VIEWER, False)])
async def test_permissions_per_role(ctx: Context, actor: Actor, allowed: bool) -> None:
    reply = await execute(ctx.service, actor, parse("/incident maintenance start 1h source=api reason"))
    assert reply.ok is allowed, reply.text
    if not allowed:
        assert reply.text.startswith("Not allowed") and await _count(ctx, MaintenanceWindow) == 0
        with pytest.raises(Forbidden):
            await Maintenance(ctx.service).start(actor=actor, duration=timedelta(hours=1))
        win = await Maintenance(ctx.service).start(actor=ADMIN, duration=timedelta(hours=1))
        assert not (await execute(ctx.service, actor, parse(f"/incident maintenance end {win.ref}"))).ok
    listing = await execute(ctx.service, actor, parse("/incident maintenance list"))
    assert listing.ok and "M-1" in listing.text


async def test_from_chat_start_list_end(ctx: Context) -> None:
    _, reply = await run_text(ctx.service, MANAGER,
                              "/incident maintenance start 2h source=alertmanager,labels.team=db DB upgrade")
    assert reply.ok and "Maintenance M-1 started by cli:manager for 2h" in reply.text and "DB upgrade" in reply.text
    await ctx.service.declare(actor=PROMETHEUS, title="Disk full", severity="sev1", source="alertmanager",
                              labels={"team": "db"}, event_type="alertmanager")
    _, reply = await run_text(ctx.service, VIEWER, "/incident maintenance list")
    assert "suppressed 1 event(s)" in reply.text and "Disk full" in reply.text
    _, reply = await run_text(ctx.service, MANAGER, "/incident maintenance end M-1")
    assert reply.ok and "ended" in reply.text
    _, reply = await run_text(ctx.service, MANAGER, "/incident maintenance start 9h")
    assert not reply.ok and "at most 8h" in reply.text
    _, reply = await run_text(ctx.service, MANAGER, "/incident maintenance start soon")
    assert not reply.ok and "Usage: /incident maintenance start" in reply.text


async def test_scheduled_windows_start_once_and_end(make_ctx: Callable[..., Any]) -> None:
    """Config windows, one-off and cron; two processes' timers start each occurrence once."""
    cfg = {"maintenance": {"windows": [
        {"name": "nightly", "cron": "0 2 * * *", "duration": "1h", "match": "source=heartbeat"},
        {"name": "once", "start": "2026-01-01T05:00:00Z", "duration": "30m"}]}}
    a = await make_ctx(**cfg)
    b = await make_ctx(**cfg)
    ma, mb = Maintenance(a.service), Maintenance(b.service)
    assert await ma.start_scheduled() == []  # 00:00: nothing covers now
    a.clock.advance(hours=2, minutes=10)
    assert [len(await m.start_scheduled()) for m in (ma, mb, ma)] == [1, 0, 0]
    [view] = await ma.list(actor=VIEWER)
    assert view.window.schedule_key == "nightly@2026-01-01T02:00:00+00:00"
    assert view.window.ends_at.replace(tzinfo=None) == a.clock.now().replace(tzinfo=None, hour=3, minute=0)
    # a heartbeat missing during the window is recorded once, and pages after the window
    a.clock.advance(minutes=51)
    assert await ma.expire() == [view.window.ref]
    a.clock.advance(hours=2)  # 05:01: the one-off window
    assert len(await mb.start_scheduled()) == 1 and await ma.start_scheduled() == []


async def test_a_missed_heartbeat_during_maintenance_pages_after_it(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(heartbeats=[{"name": "backup", "interval": "1h"}])
    beats = Heartbeats(ctx.service)
    await beats.sync()
    await Maintenance(ctx.service).start(actor=MANAGER, duration=timedelta(hours=3), match="source=heartbeat")
    ctx.clock.advance(hours=1, minutes=1)
    assert await beats.check() == [] and await beats.check() == []
    assert await _count(ctx, SuppressedEvent) == 1 and await _count(ctx, Incident) == 0
    ctx.clock.advance(hours=2)
    assert await Maintenance(ctx.service).expire() == ["M-1"]
    assert len(await beats.check()) == 1
