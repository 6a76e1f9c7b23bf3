"""Set-based escalation groups (core/escalation.py EscalationBatch) on the frozen clock, on SQLite and
PostgreSQL: a group writes exactly what one escalation at a time writes (incident rows, thread messages,
queued pages and followers' news, audit chain, events), an ack racing a group wins exactly once, and two
processes' groups over the same incidents fire each escalation once."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from bot.context import Context, open_context
from core.audit.log import verify
from core.clock import FrozenClock, utc
from core.escalation import Escalator
from core.events import IncidentEvent
from core.models import AuditEntry, Delivery, Incident, IncidentMessage, MessagePayload
from core.rbac import Actor
from core.subscriptions import Subscriptions
from tests.conftest import make_config, pg_schema
from tests.escalation.conftest import policy_config

OP = Actor("cli:op", "cli")
ESCALATE_RULE = {"name": "esc-sev1", "event_types": ["escalate"], "min_severity": "sev1",
                 "targets": {"contacts": ["bob"]}}


def config(rule_for_escalations: bool) -> dict[str, Any]:
    cfg = policy_config(5, 10, 15)  # leads (carol), then bob, then alice (sms too on sev1)
    if rule_for_escalations:  # routing then depends on each incident: no plan is shared
        cfg["routing"]["rules"].append(ESCALATE_RULE)
    return cfg


@pytest.fixture
async def twin_url(db_url: str, tmp_path: Any) -> AsyncIterator[str]:
    """A second, empty database of the same kind as this test's."""
    if db_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'twin.db'}"
        return
    async with pg_schema() as url:
        yield url


async def scenario(ctx: Context) -> list[tuple[int, datetime]]:
    """Followers (one of an incident, one of a filter), then incidents of several severities, all due."""
    subs = Subscriptions(ctx.db, ctx.holder, audit=ctx.audit, clock=ctx.clock)
    await subs.subscribe(actor=Actor("cli:alice", "cli"), what="sev2")
    ids = []
    for i, sev in enumerate(["sev1", "sev2", "sev1", "sev2", "sev1", "sev2", "sev1"]):
        ids.append((await ctx.service.declare(actor=OP, title=f"i{i}", severity=sev)).incident.id)
    await subs.subscribe(actor=Actor("cli:bob", "cli"), what=f"INC-{ids[1]}")
    async with ctx.db.sessions() as s:
        due = (await s.execute(select(Incident.id, Incident.next_escalation_at).order_by(Incident.id))).all()
    return [(int(i), utc(d)) for i, d in due]  # type: ignore[misc]


async def written(ctx: Context) -> dict[str, list[tuple[Any, ...]]]:
    async with ctx.db.sessions() as s:
        incs = (await s.execute(select(Incident).order_by(Incident.id))).scalars().all()
        msgs = (await s.execute(select(IncidentMessage).order_by(IncidentMessage.id))).scalars().all()
        dels = (await s.execute(select(Delivery).order_by(Delivery.id))).scalars().all()
        shared = (await s.execute(select(MessagePayload).order_by(MessagePayload.id))).scalars().all()
        audit = (await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars().all()
    return {
        "incidents": [(i.id, i.version, i.escalation_level, i.escalation_round, utc(i.next_escalation_at),
                       utc(i.updated_at)) for i in incs],
        "messages": [(m.id, m.incident_id, m.kind, m.body, m.author, utc(m.created_at), m.extra) for m in msgs],
        "deliveries": [(d.id, d.incident_id, d.message_id, d.recipient, d.channel, d.address, d.purpose,
                        d.reason, d.status, d.idempotency_key, d.max_attempts, d.payload_id, d.payload)
                       for d in dels],
        "payloads": [(p.id, p.message_id, p.payload) for p in shared],
        "audit": [(a.seq, a.actor, a.action, a.resource, a.details, a.hash) for a in audit],
    }


@pytest.mark.parametrize("rule_for_escalations", [False, True], ids=["shared-plans", "own-plans"])
async def test_a_group_writes_what_one_at_a_time_writes(make_ctx: Callable[..., Any], twin_url: str,
                                                       clock: FrozenClock, rule_for_escalations: bool) -> None:
    one = await make_ctx(**config(rule_for_escalations))
    group = await open_context(cfg=make_config(twin_url, **config(rule_for_escalations)), clock=clock)
    try:
        due_one, due_group = await scenario(one), await scenario(group)
        assert due_one == due_group
        heard: dict[str, list[IncidentEvent]] = {"one": [], "group": []}
        one.service.events.subscribe(heard["one"].append)
        group.service.events.subscribe(heard["group"].append)
        for _ in range(3):  # levels 1, 2 and 3
            clock.advance(minutes=15)
            outs = await Escalator(one.service).run_due()  # one transaction each
            esc = Escalator(group.service)
            async with group.db.sessions() as s:
                due = (await s.execute(select(Incident.id, Incident.next_escalation_at)
                                       .where(Incident.next_escalation_at <= clock.now()))).all()
            await esc._fire_group([(int(i), utc(d)) for i, d in due])  # type: ignore[misc]
            assert len(outs) == esc.fired == esc.grouped == len(due_one)
        a, b = await written(one), await written(group)
        for table in a:
            assert a[table] == b[table], table
        escalations = [e for e in heard["group"] if e.kind == "escalate"]
        assert escalations == [e for e in heard["one"] if e.kind == "escalate"]
        assert len(escalations) == 3 * len(due_one) and all(e.message_id for e in escalations)
        news = {(d[3], d[1]) for d in b["deliveries"] if d[6] == "subscription"}
        assert ("alice", due_one[1][0]) in news and ("bob", due_one[1][0]) in news  # followers heard it
        alice = {(d[1], d[4]) for d in b["deliveries"] if d[6] == "escalation" and d[3] == "alice"}
        assert (due_one[0][0], "sms") in alice and (due_one[1][0], "sms") not in alice  # by severity
        assert (await verify(group.db.engine)).ok
    finally:
        await group.close()


async def test_an_ack_racing_a_group_wins_exactly_once(make_ctx: Callable[..., Any], clock: FrozenClock) -> None:
    ctx = await make_ctx(**config(False))
    ids = [(await ctx.service.declare(actor=OP, title=f"i{i}", severity="sev1")).incident.id for i in range(8)]
    clock.advance(minutes=5)
    esc = Escalator(ctx.service)
    acked = ids[3]
    await asyncio.gather(esc._fire_group([(i, clock.now()) for i in ids]),
                         ctx.service.acknowledge(acked, actor=OP))
    async with ctx.db.sessions() as s:
        msgs = (await s.execute(select(IncidentMessage.incident_id).where(
            IncidentMessage.kind == "ESCALATION"))).scalars().all()
        inc = await s.get(Incident, acked)
        pages = (await s.execute(select(Delivery.status).where(
            Delivery.incident_id == acked, Delivery.purpose == "escalation"))).scalars().all()
    assert sorted(m for m in msgs if m != acked) == sorted(i for i in ids if i != acked)  # once each
    assert msgs.count(acked) in (0, 1)
    assert inc is not None and inc.acknowledged_at is not None and inc.next_escalation_at is None
    # escalated first: the ack cancelled its page in its own transaction; acked first: nothing was paged
    assert pages == (["cancelled"] if msgs.count(acked) else [])
    assert esc.fired == len(ids) - 1 + msgs.count(acked)
    assert (await verify(ctx.db.engine)).ok


async def test_two_processes_groups_over_the_same_incidents_fire_each_once(
        make_ctx: Callable[..., Any], clock: FrozenClock) -> None:
    a = await make_ctx(**config(False))
    b = await make_ctx(**config(False))
    ids = [(await a.service.declare(actor=OP, title=f"i{i}", severity="sev1")).incident.id for i in range(12)]
    clock.advance(minutes=5)
    ea, eb = Escalator(a.service), Escalator(b.service)
    due = clock.now()
    await asyncio.gather(ea._fire_group([(i, due) for i in ids]),
                         eb._fire_group([(i, due) for i in reversed(ids[4:])]))  # overlapping, other order
    assert ea.fired + eb.fired == len(ids)
    async with a.db.sessions() as s:
        msgs = (await s.execute(select(IncidentMessage.incident_id).where(
            IncidentMessage.kind == "ESCALATION"))).scalars().all()
    assert sorted(msgs) == sorted(ids)
    assert (await verify(a.db.engine)).ok
