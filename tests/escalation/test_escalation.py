"""Escalation logic on the frozen clock, on SQLite and PostgreSQL: level progression with thread entries,
repeat, stop on ack/monitor/resolve (ack cancels queued escalation pages in the same transaction), manual
escalation, restart in the middle of a policy, config reload mid-incident (snapshot), racing processes."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.context import Context
from core.audit.log import verify
from core.clock import FrozenClock, utc
from core.metrics import ESCALATIONS
from core.models import AuditEntry, Delivery, Incident, IncidentMessage
from core.rbac import Actor
from tests.conftest import make_config
from tests.escalation.conftest import policy_config

OP = Actor("cli:op", "cli")
ADMIN = Actor("cli:admin", "cli")


async def thread(ctx: Context, iid: int, kind: str = "ESCALATION") -> list[str]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(IncidentMessage.body).where(
            IncidentMessage.incident_id == iid, IncidentMessage.kind == kind).order_by(IncidentMessage.id)))
            .scalars().all())


async def row(ctx: Context, iid: int) -> Incident:
    async with ctx.db.sessions() as s:
        inc = await s.get(Incident, iid)
    assert inc is not None
    return inc


async def pages(ctx: Context, iid: int, purpose: str = "escalation") -> list[tuple[str, str, str]]:
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.incident_id == iid,
                                                       Delivery.purpose == purpose)
                                .order_by(Delivery.id))).scalars().all()
    return [(d.recipient, d.channel, d.status) for d in rows]


def metric(level: int) -> float:
    return ESCALATIONS.labels(level=str(level))._value.get()


async def test_levels_fire_in_order_with_thread_entries_and_repeat(
        make_ctx: Callable[..., Any], clock: FrozenClock, escalators: Callable[..., Any]) -> None:
    ctx = await make_ctx(**policy_config(5, 10, repeat=1))
    esc = await escalators(ctx, start=False)
    t0 = clock.now()
    out = await ctx.service.declare(actor=OP, title="db down", severity="sev1")
    iid = out.incident.id
    inc = await row(ctx, iid)
    assert inc.escalation_policy == "p" and inc.escalation_snapshot["levels"][1]["wait_minutes"] == 10
    assert utc(inc.next_escalation_at) == t0 + timedelta(minutes=5)
    before = metric(1), metric(2)

    clock.advance(minutes=4, seconds=59)
    assert await esc.run_due() == []
    expected = [  # minutes after the previous fire -> thread entry, who gets paged
        (5, "Escalated to level 1", [("carol", "email", "queued")]),
        (10, "Escalated to level 2", [("bob", "email", "queued")]),
        (5, "Escalated to level 1 (round 2)", [("carol", "email", "queued")]),
        (10, "Escalated to level 2 (round 2)", [("bob", "email", "queued")]),
    ]
    clock.set(t0)
    seen_pages: list[tuple[str, str, str]] = []
    for i, (wait, body, paged) in enumerate(expected):
        clock.advance(minutes=wait, seconds=-1)
        assert await esc.run_due() == [], f"step {i} fired early"
        clock.advance(seconds=1)
        (fired,) = await esc.run_due()
        assert fired.changed and fired.message.body == body
        seen_pages += paged
        assert await pages(ctx, iid) == seen_pages
    inc = await row(ctx, iid)
    assert inc.next_escalation_at is None and (inc.escalation_level, inc.escalation_round) == (2, 1)
    clock.advance(hours=5)
    assert await esc.run_due() == []
    assert await thread(ctx, iid) == [e[1] for e in expected]
    assert (metric(1) - before[0], metric(2) - before[1]) == (2, 2)
    async with ctx.db.sessions() as s:
        acts = (await s.execute(select(AuditEntry.actor, AuditEntry.details).where(
            AuditEntry.action == "incident.escalate").order_by(AuditEntry.seq))).all()
    assert len(acts) == 4 and all(a == "system:escalation" for a, _ in acts)
    assert '"level":1' in acts[0][1] and '"manual":false' in acts[0][1]


@pytest.mark.parametrize("stop", ["ack", "monitor", "resolve"])
async def test_ack_monitoring_and_resolved_stop_escalation(
        make_ctx: Callable[..., Any], clock: FrozenClock, escalators: Callable[..., Any], stop: str) -> None:
    ctx = await make_ctx(**policy_config(5, 10))
    esc = await escalators(ctx, start=False)
    iid = (await ctx.service.declare(actor=OP, title="db down", severity="sev1")).incident.id
    clock.advance(minutes=5)
    assert len(await esc.run_due()) == 1
    assert await pages(ctx, iid) == [("carol", "email", "queued")]
    page_rows = await pages(ctx, iid, "page")
    clock.advance(minutes=1)
    svc = ctx.service
    out = await {"ack": lambda: svc.acknowledge(iid, actor=OP), "monitor": lambda: svc.monitor(iid, actor=OP),
                 "resolve": lambda: svc.resolve(iid, actor=OP)}[stop]()
    # the queued, not-yet-sent escalation page is cancelled by the same call; normal pages are not
    assert out.cancelled_pages == 1
    assert await pages(ctx, iid) == [("carol", "email", "cancelled")]
    assert (await pages(ctx, iid, "page"))[:len(page_rows)] == page_rows
    assert (await row(ctx, iid)).next_escalation_at is None
    clock.advance(hours=2)
    assert await esc.run_due() == []
    assert await thread(ctx, iid) == ["Escalated to level 1"]


async def test_ack_cancels_pages_in_the_same_transaction(make_ctx: Callable[..., Any], clock: FrozenClock,
                                                         escalators: Callable[..., Any]) -> None:
    """If anything in the ack's transaction fails, neither the ack nor the cancellation happens."""
    ctx = await make_ctx(**policy_config(5))
    esc = await escalators(ctx, start=False)
    iid = (await ctx.service.declare(actor=OP, title="db down", severity="sev1")).incident.id
    clock.advance(minutes=5)
    await esc.run_due()
    real_append = ctx.audit.append

    async def failing_append(session: Any, **kw: Any) -> Any:
        if kw.get("action") == "incident.ack":
            # the cancellation has already been executed in this transaction by now
            n = (await session.execute(select(func.count()).select_from(Delivery).where(
                Delivery.incident_id == iid, Delivery.status == "cancelled"))).scalar_one()
            assert n == 1
            raise RuntimeError("disk full")
        return await real_append(session, **kw)

    ctx.audit.append = failing_append  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="disk full"):
        await ctx.service.acknowledge(iid, actor=OP)
    ctx.audit.append = real_append  # type: ignore[method-assign]
    assert await pages(ctx, iid) == [("carol", "email", "queued")]
    assert (await row(ctx, iid)).acknowledged_at is None
    out = await ctx.service.acknowledge(iid, actor=OP)
    assert out.cancelled_pages == 1 and await pages(ctx, iid) == [("carol", "email", "cancelled")]
    async with ctx.db.sessions() as s:
        details = (await s.execute(select(AuditEntry.details)
                                   .where(AuditEntry.action == "incident.ack"))).scalar_one()
    assert '"cancelled_escalation_pages":1' in details
    assert (await verify(ctx.db.engine)).ok


async def test_manual_escalation_now_and_timer_restarts_from_it(
        make_ctx: Callable[..., Any], clock: FrozenClock, escalators: Callable[..., Any]) -> None:
    from bot.dispatch import run_text

    ctx = await make_ctx(**policy_config(5, 10))
    esc = await escalators(ctx, start=False)
    iid = (await ctx.service.declare(actor=OP, title="db down", severity="sev1")).incident.id
    clock.advance(minutes=1)
    _, reply = await run_text(ctx.service, Actor("slack:UOP", "slack"), f"escalate INC-{iid}")
    assert reply.ok and "escalated to level 1" in reply.text
    assert utc((await row(ctx, iid)).next_escalation_at) == clock.now() + timedelta(minutes=10)
    clock.advance(minutes=4)  # the original level-1 time passes: nothing, level 1 already went out
    assert await esc.run_due() == []
    clock.advance(minutes=6)
    (out,) = await esc.run_due()
    assert out.message.body == "Escalated to level 2"
    # past the end, a manual escalation re-pages the last level; the timer has nothing more
    again = await ctx.service.escalate(iid, actor=ADMIN)
    assert again.message.body == "Escalated to level 2" and again.incident.next_escalation_at is None
    assert await thread(ctx, iid) == ["Escalated to level 1", "Escalated to level 2", "Escalated to level 2"]
    _, reply = await run_text(ctx.service, Actor("slack:UNOBODY", "slack"), f"escalate INC-{iid}")
    assert not reply.ok and "Not allowed" in reply.text


async def test_restart_in_the_middle_of_a_policy_neither_loses_nor_repeats(
        make_ctx: Callable[..., Any], clock: FrozenClock, escalators: Callable[..., Any]) -> None:
    ctx1 = await make_ctx(**policy_config(5, 10, 15))
    esc1 = await escalators(ctx1)
    iid = (await ctx1.service.declare(actor=OP, title="db down", severity="sev1")).incident.id
    clock.advance(minutes=5)
    assert len(await esc1.run_due()) == 1
    await esc1.close()
    await ctx1.close()  # the process is gone

    clock.advance(minutes=3)
    ctx2 = await make_ctx(**policy_config(5, 10, 15))  # a new process: new engine, same database
    esc2 = await escalators(ctx2)
    assert esc2.scheduled() == {iid: clock.now() + timedelta(minutes=7)}  # rebuilt from the row
    assert await esc2.run_due() == []  # level 1 is not repeated
    clock.advance(minutes=7)
    (out,) = await esc2.run_due()
    assert out.message.body == "Escalated to level 2"
    # down for longer than a wait: the overdue level fires on start, once, then the schedule continues
    await esc2.close()
    clock.advance(minutes=40)
    esc3 = await escalators(ctx2, start=False)
    assert [o.message.body for o in await esc3.run_due()] == ["Escalated to level 3"]
    assert await esc3.run_due() == []
    assert await thread(ctx2, iid) == ["Escalated to level 1", "Escalated to level 2", "Escalated to level 3"]


async def test_config_reload_mid_incident_follows_the_snapshot(
        make_ctx: Callable[..., Any], clock: FrozenClock, escalators: Callable[..., Any],
        db_url: str) -> None:
    ctx = await make_ctx(**policy_config(5, 10, 15))
    esc = await escalators(ctx, start=False)
    iid = (await ctx.service.declare(actor=OP, title="db down", severity="sev1")).incident.id
    clock.advance(minutes=5)
    await esc.run_due()
    # the policy is cut to one short level, targeting someone else
    ctx.holder.replace(make_config(db_url, **policy_config(1, targets=[{"contacts": ["alice"]}])))
    clock.advance(minutes=1)
    assert await esc.run_due() == []           # no skipping ahead on the new 1-minute wait
    clock.advance(minutes=9)
    (lvl2,) = await esc.run_due()              # level 2 of the snapshot, its targets, its wait
    assert lvl2.message.body == "Escalated to level 2"
    assert [(d.recipient, d.reason) for d in lvl2.plan.deliveries] == [("bob", "escalation level 2")]
    clock.advance(minutes=15)
    (lvl3,) = await esc.run_due()
    assert lvl3.message.body == "Escalated to level 3"
    clock.advance(hours=1)
    assert await esc.run_due() == []
    assert await thread(ctx, iid) == ["Escalated to level 1", "Escalated to level 2", "Escalated to level 3"]
    # a new incident follows the new policy
    new = (await ctx.service.declare(actor=OP, title="another", severity="sev1")).incident
    assert len(new.escalation_snapshot["levels"]) == 1
    assert utc(new.next_escalation_at) == clock.now() + timedelta(minutes=1)


async def test_two_processes_racing_for_the_same_escalation_fire_once(
        make_ctx: Callable[..., Any], clock: FrozenClock) -> None:
    """Two services with their own engines call escalate(due_at=) for the same rows at the same time."""
    a = await make_ctx(**policy_config(5, 10))
    b = await make_ctx(**policy_config(5, 10))
    ids = [(await a.service.declare(actor=OP, title=f"i{i}", severity="sev1")).incident.id for i in range(8)]
    clock.advance(minutes=5)
    from core.escalation import ESCALATOR

    for _ in range(2):  # level 1, then level 2
        due = clock.now()
        outs = await asyncio.gather(*[svc.escalate(i, actor=ESCALATOR, due_at=due)
                                      for i in ids for svc in (a.service, b.service)])
        changed = [o for o in outs if o.changed]
        assert len(changed) == len(ids), [o.note for o in outs]
        assert {o.note for o in outs if not o.changed} == {"not due"}
        clock.advance(minutes=10)
    for i in ids:
        assert await thread(a, i) == ["Escalated to level 1", "Escalated to level 2"]
        assert len(await pages(a, i)) == 2
    assert (await verify(a.db.engine)).ok


async def test_listener_schedules_new_and_changed_incidents_promptly(
        make_ctx: Callable[..., Any], clock: FrozenClock, escalators: Callable[..., Any]) -> None:
    ctx = await make_ctx(**policy_config(5, 10))
    esc = await escalators(ctx)
    assert esc.scheduled() == {} and await esc.health() is None
    iid = (await ctx.service.declare(actor=OP, title="db down", severity="sev1")).incident.id
    await wait_for(lambda: iid in esc.scheduled())
    assert esc.scheduled()[iid] == clock.now() + timedelta(minutes=5)
    job = esc.scheduler.get_job(f"escalate:{iid}")
    assert job is not None
    await ctx.service.escalate(iid, actor=ADMIN)  # manual: the next time moves
    await wait_for(lambda: esc.scheduled().get(iid) == clock.now() + timedelta(minutes=10))
    await ctx.service.acknowledge(iid, actor=OP)
    await wait_for(lambda: iid not in esc.scheduled())
    assert esc.scheduler.get_job(f"escalate:{iid}") is None
    # an incident without a policy is never scheduled
    other = (await ctx.service.declare(actor=OP, title="minor", severity="sev4")).incident.id
    await asyncio.sleep(0.05)
    assert other not in esc.scheduled()
    await esc.close()
    assert not ctx.service.events.subscribed(esc._on_event)
    assert await esc.health() == "escalation timer is not running"


async def test_rescan_picks_up_changes_made_by_another_process(
        make_ctx: Callable[..., Any], clock: FrozenClock, escalators: Callable[..., Any]) -> None:
    ctx_a = await make_ctx(**policy_config(5, 10))
    ctx_b = await make_ctx(**policy_config(5, 10))
    esc_a = await escalators(ctx_a)
    iid = (await ctx_b.service.declare(actor=OP, title="db down", severity="sev1")).incident.id  # B, not A
    await asyncio.sleep(0.05)
    assert iid not in esc_a.scheduled()  # A heard nothing
    await esc_a.rescan()
    assert esc_a.scheduled() == {iid: clock.now() + timedelta(minutes=5)}
    await ctx_b.service.acknowledge(iid, actor=OP)
    await esc_a.rescan()
    assert esc_a.scheduled() == {}


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
