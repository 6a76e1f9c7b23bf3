"""Reminders on a frozen clock: each fires once (however many ticks and processes), snooze postpones,
resolve stops them, a restarted process rebuilds them from the database, and two processes on PostgreSQL
never double-fire. Deliveries are news (no phone rings) to the commander, plus the chat thread entry."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.context import open_context
from bot.dispatch import execute
from bot.commands import parse
from core.clock import FrozenClock
from core.errors import Forbidden, InvalidInput, InvalidTransition
from core.models import Delivery, IncidentReminder
from core.rbac import Actor
from core.reminders import Reminders, ReminderTimer
from tests.conftest import make_config, pg_schema
from tests.reminders.conftest import REMINDERS, audit_actions, reminder_deliveries, thread

ALICE = Actor("cli:alice", "cli", "alice")


async def declare(ctx: Any, severity: str = "sev1") -> Any:
    out = await ctx.service.declare(actor=ALICE, title="Checkout down", severity=severity)
    return out.incident


async def snooze_rows(ctx: Any) -> int:
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(IncidentReminder)
                                    .where(IncidentReminder.kind == "snooze"))).scalar_one())


async def test_an_unacknowledged_incident_reminds_the_commander_once_per_interval(rctx: Any,
                                                                                  clock: FrozenClock) -> None:
    inc = await declare(rctx)
    r = Reminders(rctx.service)
    clock.advance(minutes=9, seconds=59)
    assert await r.run_due() == 0
    clock.advance(seconds=1)
    assert await r.run_due() == 1
    assert await r.run_due() == 0 and sum(await asyncio.gather(r.run_due(), r.run_due())) == 0  # once
    assert await thread(rctx) == [f"{inc.ref} is still unacknowledged 10 min after it was declared. "
                                  f"Acknowledge it: /incident ack {inc.ref}\nSnooze: /incident snooze {inc.ref} 30m"]
    # news, not a page: alice's sev1 list is voice, sms, email; the reminder goes by email only
    assert await reminder_deliveries(rctx) == [("alice", "email", "reminder")]
    assert "incident.reminder" in await audit_actions(rctx)
    clock.advance(minutes=10)
    assert await r.run_due() == 1  # still unacknowledged: again after another interval
    await rctx.service.acknowledge(inc.ref, actor=Actor("cli:op", "cli"))
    clock.advance(minutes=9)
    assert await r.run_due() == 0  # acknowledged: no more of these (the update cadence is at 30m)
    assert len(await thread(rctx)) == 2


async def test_update_cadence_counts_from_the_last_update(rctx: Any, clock: FrozenClock) -> None:
    inc = await declare(rctx)
    await rctx.service.acknowledge(inc.ref, actor=Actor("cli:op", "cli"))
    r = Reminders(rctx.service)
    clock.advance(minutes=30)
    assert await r.run_due() == 1
    clock.advance(minutes=2)
    await rctx.service.update(inc.ref, actor=ALICE, text="Rolled back the deploy")
    clock.advance(minutes=29)
    assert await r.run_due() == 0
    clock.advance(minutes=3)
    assert await r.run_due() == 1
    assert [t.splitlines()[0] for t in await thread(rctx)] == [
        f"Time for an update: none yet, declared 30 min ago. /incident update {inc.ref} <text>",
        f"Time for an update: last one 32 min ago. /incident update {inc.ref} <text>"]


async def test_monitoring_too_long_asks_resolve_or_reopen(rctx: Any, clock: FrozenClock) -> None:
    inc = await declare(rctx)
    clock.advance(minutes=5)
    await rctx.service.monitor(inc.ref, actor=ALICE)
    r = Reminders(rctx.service)
    clock.advance(hours=1, minutes=59)
    assert await r.run_due() == 0
    clock.advance(minutes=1)
    assert await r.run_due() == 1
    assert (await thread(rctx))[-1].startswith(f"{inc.ref} has been in Monitoring for 2 h. Resolve or reopen?")


async def test_snooze_postpones_every_reminder_and_resolve_stops_them(rctx: Any, clock: FrozenClock) -> None:
    inc = await declare(rctx)
    r = Reminders(rctx.service)
    clock.advance(minutes=5)
    reply = await execute(rctx.service, ALICE, parse(f"/incident snooze {inc.ref} 40m"))
    assert reply.ok and reply.ephemeral
    assert reply.text == f"{inc.ref}: reminders snoozed for 40m by alice, until 2026-01-01 00:45 UTC."
    clock.advance(minutes=39)
    assert await r.run_due() == 0  # the unacknowledged one (due at 10m) and the update one (30m) wait
    clock.advance(minutes=1)
    assert await r.run_due() == 2
    assert "incident.snooze" in await audit_actions(rctx)
    # the button's snooze: the configured 30m
    reply = await execute(rctx.service, ALICE, parse(f"snooze {inc.ref}"))
    assert "snoozed for 30m" in reply.text
    await rctx.service.resolve(inc.ref, actor=ALICE)
    clock.advance(hours=5)
    assert await r.run_due() == 0 and await r.pending() == []
    assert len(await thread(rctx)) == 2
    # the two reminder e-mails the worker had not sent yet went with the resolve
    async with rctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery.status, Delivery.last_error)
                                .where(Delivery.purpose == "reminder"))).all()
    assert [tuple(r) for r in rows] == [("cancelled", "cancelled: incident resolved")] * 2


async def test_snooze_bad_input_is_refused_and_stores_nothing(rctx: Any, clock: FrozenClock) -> None:
    inc = await declare(rctx)
    before = (await snooze_rows(rctx), len(await audit_actions(rctx)))
    reply = await execute(rctx.service, ALICE, parse(f"snooze {inc.ref} 2d"))
    assert not reply.ok and "longer than reminders.max_snooze (12h)" in reply.text
    assert "Usage: /incident snooze <INC-n>" in reply.text
    reply = await execute(rctx.service, Actor("cli:viewer", "cli"), parse(f"snooze {inc.ref} 10m"))
    assert not reply.ok and reply.text.startswith("Not allowed")
    reply = await execute(rctx.service, ALICE, parse("snooze INC-999 10m"))
    assert not reply.ok and "no incident INC-999" in reply.text
    with pytest.raises(InvalidInput):
        await Reminders(rctx.service).snooze(inc.ref, actor=ALICE, length=timedelta(seconds=20))
    await rctx.service.resolve(inc.ref, actor=ALICE)
    after_resolve = len(await audit_actions(rctx))
    reply = await execute(rctx.service, ALICE, parse(f"snooze {inc.ref} 10m"))
    assert not reply.ok
    assert reply.text == f"{inc.ref} is resolved; it has no reminders to snooze (nothing was stored)."
    with pytest.raises(InvalidTransition):
        await Reminders(rctx.service).snooze(inc.ref, actor=ALICE)
    with pytest.raises(Forbidden):
        await Reminders(rctx.service).snooze(inc.ref, actor=Actor("cli:viewer", "cli"))
    assert await snooze_rows(rctx) == before[0] == 0
    assert len(await audit_actions(rctx)) == after_resolve


async def test_a_restarted_process_neither_repeats_nor_forgets(db_url: str, clock: FrozenClock) -> None:
    cfg = make_config(db_url, **REMINDERS)
    a = await open_context(cfg=cfg, clock=clock)
    try:
        inc = await declare(a)
        clock.advance(minutes=10)
        assert await Reminders(a.service).run_due() == 1
        clock.advance(minutes=5)
        await Reminders(a.service).snooze(inc.ref, actor=ALICE, length=timedelta(minutes=20))
    finally:
        await a.close()
    clock.advance(minutes=3)  # 18m: down while the next one (20m) was still to come
    b = await open_context(cfg=cfg, clock=clock)
    try:
        r = Reminders(b.service)
        assert await r.run_due() == 0  # the 10m one is not sent again
        assert [(d.kind, d.at) for _, d in await r.pending()] == [
            ("unacknowledged", clock.now() + timedelta(minutes=17)), ("update", clock.now() + timedelta(minutes=17))]
        clock.advance(minutes=17)  # the snooze (until 35m) was kept in the database
        assert await r.run_due() == 2
        assert len(await thread(b)) == 3
    finally:
        await b.close()


async def test_two_processes_on_postgresql_never_double_fire() -> None:
    async with pg_schema() as url:
        cfg = make_config(url, **REMINDERS)
        clock = FrozenClock()
        a = await open_context(cfg=cfg, clock=clock)
        b = await open_context(cfg=cfg, clock=clock)
        try:
            for _ in range(5):
                await declare(a)
            ra, rb = Reminders(a.service), Reminders(b.service)
            clock.advance(minutes=30)  # each: unacknowledged and update due
            results = await asyncio.gather(*[r.run_due() for r in (ra, rb, ra, rb)])
            assert sum(results) == 10
            assert await asyncio.gather(ra.run_due(), rb.run_due()) == [0, 0]
            async with a.db.sessions() as s:
                sent = (await s.execute(select(IncidentReminder.incident_id, IncidentReminder.kind)
                                        .where(IncidentReminder.kind != "snooze"))).all()
            assert sorted(sent) == sorted((i, k) for i in range(1, 6) for k in ("unacknowledged", "update"))
            assert len(await thread(a)) == 10
            assert len(await reminder_deliveries(a)) == 10  # one e-mail to alice each, no chat surfaces here
        finally:
            await a.close()
            await b.close()


async def test_the_timer_component_sends_on_its_own(make_ctx: Callable[..., Any], clock: FrozenClock) -> None:
    """Started as `tocsin run` starts it (APScheduler, real ticks): a reminder already due goes out at
    the first tick, and the date job planned for the next one fires when the clock reaches it."""
    ctx = await make_ctx(**REMINDERS)
    await declare(ctx)
    clock.advance(minutes=10)
    timer = ReminderTimer(ctx.service, tick_seconds=0.2)
    await timer.start()
    try:
        for _ in range(100):
            if timer.sent:
                break
            await asyncio.sleep(0.05)
        assert timer.sent == 1
        await asyncio.sleep(0.5)  # more ticks: nothing more is due
        assert timer.sent == 1
    finally:
        await timer.close()
    assert len(await thread(ctx)) == 1


async def test_nothing_configured_means_no_reminders(make_ctx: Callable[..., Any], clock: FrozenClock) -> None:
    ctx = await make_ctx()
    await ctx.service.declare(actor=Actor("cli:op", "cli"), title="x", severity="sev1")
    clock.advance(days=2)
    assert await Reminders(ctx.service).run_due() == 0


@pytest.mark.parametrize(("text", "problem"), [
    ("snooze", "`snooze` needs an incident id like INC-12."),
    ("snooze 12x 10m", "'12x' is not an incident id (expected INC-<number>)."),
    ("snooze INC-3 soon", "Duration 'soon': must be a duration like 90s, 10m, 2h or 7d (got 'soon')."),
    ("snooze INC-3 0m", "A snooze must last longer than nothing, e.g. 30m."),
    ("snooze INC-3 10m 20m", "`snooze` takes the incident id and one duration like 30m, not '10m 20m'."),
])
def test_the_parser_refuses_bad_snoozes(text: str, problem: str) -> None:
    from bot.commands import UsageError

    with pytest.raises(UsageError) as err:
        parse(text)
    assert err.value.problem == problem
    assert "Usage: /incident snooze <INC-n> [duration, e.g. 30m]" in err.value.text


def test_the_parser_reads_snoozes() -> None:
    assert parse("/incident snooze inc-7 45m").duration == "45m"
    assert parse("snooze 7").incident == "INC-7" and parse("snooze 7").duration is None


async def test_update_reminders_go_to_commander_and_comms_and_follow_reassignment(rctx: Any,
                                                                                  clock: FrozenClock) -> None:
    """Roles (issue 20 §1): the update reminder reaches comms too; a reassigned commander gets the next
    reminders, the declarer no longer. Both by their news channels (bob's list is sms, email: e-mail only)."""
    from core.incident_roles import IncidentRoles

    inc = await declare(rctx)
    roles = IncidentRoles(rctx.service)
    await roles.assign(inc.ref, role="comms", person="bob", actor=Actor("cli:op", "cli"))
    clock.advance(minutes=30)
    assert await Reminders(rctx.service).run_due() == 2  # unacknowledged (again) and update
    got = [(who, ch) for who, ch, purpose in await reminder_deliveries(rctx) if purpose == "reminder"]
    assert sorted(got) == [("alice", "email"), ("alice", "email"), ("bob", "email")]
    async with rctx.db.sessions() as s:
        reasons = (await s.execute(select(Delivery.recipient, Delivery.reason)
                                   .where(Delivery.purpose == "reminder").order_by(Delivery.id))).all()
    assert ("bob", "reminder to the comms") in [tuple(r) for r in reasons]
    await roles.assign(inc.ref, role="commander", person="bob", actor=Actor("cli:op", "cli"))
    await rctx.service.acknowledge(inc.ref, actor=Actor("cli:op", "cli"))
    clock.advance(minutes=30)
    assert await Reminders(rctx.service).run_due() == 1  # update: bob is commander and comms, told once
    got = [(who, ch) for who, ch, purpose in await reminder_deliveries(rctx) if purpose == "reminder"]
    assert got[3:] == [("bob", "email")]


def test_snooze_from_the_cli(tmp_path: Any) -> None:
    """`tocsin incident snooze` goes through the one dispatcher (a real process, the shipped config)."""
    from tests.core.test_cli import tocsin

    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    assert tocsin(tmp_path, "incident", "declare", "sev2", "Queue", "backlog").returncode == 0
    r = tocsin(tmp_path, "incident", "snooze", "INC-1", "45m")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("INC-1: reminders snoozed for 45m by cli:alice, until ")
    r = tocsin(tmp_path, "incident", "snooze", "INC-1", "soon")
    assert r.returncode == 1 and "Duration 'soon': must be a duration like" in r.stderr
    assert tocsin(tmp_path, "incident", "resolve", "INC-1").returncode == 0
    r = tocsin(tmp_path, "incident", "snooze", "INC-1")
    assert r.returncode == 1 and "INC-1 is resolved; it has no reminders to snooze" in r.stderr
    r = tocsin(tmp_path, "audit", "show", "--incident", "INC-1")
    assert r.stdout.count("incident.snooze") == 1
