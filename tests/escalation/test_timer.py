"""The APScheduler timer on the real clock, with short waits: escalations fire within 1 s of their due
time, a restart picks up where the last process stopped, and two processes fire each escalation once."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.context import Context
from core.audit.log import verify
from core.clock import utc
from core.metrics import ESCALATIONS
from core.models import AuditEntry, Incident, IncidentMessage
from core.rbac import Actor
from tests.escalation.conftest import policy_config

OP = Actor("cli:op", "cli")
WAIT = 0.01  # minutes: 0.6 s


async def escalations(ctx: Context) -> list[tuple[int, str, datetime, dict[str, Any]]]:
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(IncidentMessage).where(IncidentMessage.kind == "ESCALATION")
                                .order_by(IncidentMessage.id))).scalars().all()
    return [(m.incident_id, m.body, utc(m.created_at), m.extra) for m in rows]  # type: ignore[misc]


async def wait_until(cond: Callable[[], Any], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_escalations_fire_within_a_second_of_due(real_ctx: Callable[..., Any],
                                                       escalators: Callable[..., Any]) -> None:
    ctx = await real_ctx(**policy_config(WAIT, WAIT))
    esc = await escalators(ctx)
    out = await ctx.service.declare(actor=OP, title="db down", severity="sev1")
    due1 = utc(out.incident.next_escalation_at)

    async def two() -> bool:
        return len(await escalations(ctx)) == 2

    await wait_until(two, 10)
    (_, b1, t1, _), (_, b2, t2, _) = await escalations(ctx)
    assert (b1, b2) == ("Escalated to level 1", "Escalated to level 2")
    late1 = (t1 - due1).total_seconds()
    late2 = (t2 - (t1 + timedelta(minutes=WAIT))).total_seconds()  # level 2 is due a wait after level 1
    assert 0 <= late1 < 1.0 and 0 <= late2 < 1.0, (late1, late2)
    assert esc.fired == 2
    await asyncio.sleep(1.0)  # and nothing more: the policy has ended
    assert len(await escalations(ctx)) == 2 and esc.scheduled() == {}


async def test_restart_midway_with_the_real_timer(real_ctx: Callable[..., Any],
                                                  escalators: Callable[..., Any]) -> None:
    cfg = policy_config(WAIT, 0.03)  # level 2 comes 1.8 s after level 1
    ctx1 = await real_ctx(**cfg)
    esc1 = await escalators(ctx1)
    iid = (await ctx1.service.declare(actor=OP, title="db down", severity="sev1")).incident.id

    async def level1() -> bool:
        return len(await escalations(ctx1)) == 1

    await wait_until(level1, 10)
    await esc1.close()
    await ctx1.close()

    ctx2 = await real_ctx(**cfg)
    esc2 = await escalators(ctx2)
    assert iid in esc2.scheduled()

    async def level2() -> bool:
        return len(await escalations(ctx2)) == 2

    await wait_until(level2, 10)
    (_, _, t1, _), (_, b2, t2, _) = await escalations(ctx2)
    assert b2 == "Escalated to level 2"
    assert 0 <= (t2 - (t1 + timedelta(minutes=0.03))).total_seconds() < 1.0
    assert esc2.fired == 1


async def test_two_processes_fire_each_escalation_exactly_once(real_ctx: Callable[..., Any],
                                                               escalators: Callable[..., Any]) -> None:
    """Two contexts with separate engines (two processes' worth of connections), each with an Escalator;
    on PostgreSQL the row lock + compare-and-set decide, on SQLite the IMMEDIATE write lock."""
    cfg = policy_config(WAIT, WAIT)
    a = await real_ctx(**cfg)
    b = await real_ctx(**cfg)
    outcomes: list[str] = []
    for ctx in (a, b):
        real = ctx.service.escalate

        async def counted(*args: Any, _real: Any = real, **kw: Any) -> Any:
            out = await _real(*args, **kw)
            outcomes.append("fired" if out.changed else out.note)
            return out

        ctx.service.escalate = counted  # type: ignore[method-assign]
    esc_a = await escalators(a, rescan_seconds=0.5)
    esc_b = await escalators(b, rescan_seconds=0.5)
    n = 12
    for i in range(n):
        await (a if i % 2 else b).service.declare(actor=OP, title=f"i{i}", severity="sev1")
    # each process hears only its own declares; the 0.5 s rescan makes both schedule every incident
    async def done() -> bool:
        return len(await escalations(a)) >= 2 * n

    await wait_until(done, 20)
    await asyncio.sleep(1.5)  # room for a duplicate to show up, were there one
    rows = await escalations(a)
    per_incident: dict[int, list[str]] = {}
    for iid, body, _, _ in rows:
        per_incident.setdefault(iid, []).append(body)
    assert len(per_incident) == n
    both = ["Escalated to level 1", "Escalated to level 2"]
    assert all(v == both for v in per_incident.values()), per_incident
    assert esc_a.fired + esc_b.fired == 2 * n == outcomes.count("fired")
    # both timers really went for the same escalations, and the losers were no-ops
    assert outcomes.count("not due") > 0 and set(outcomes) == {"fired", "not due"}
    async with a.db.sessions() as s:
        left = (await s.execute(select(Incident.id).where(Incident.next_escalation_at.is_not(None)))).all()
    assert left == []
    assert (await verify(a.db.engine)).ok


async def test_a_burst_is_group_committed_and_a_failed_group_falls_back_to_one_each(
        real_ctx: Callable[..., Any], escalators: Callable[..., Any]) -> None:
    ctx = await real_ctx(**policy_config(WAIT))
    svc = ctx.service
    real = svc.escalate
    broken: set[int] = set()

    async def flaky(ref: Any, **kw: Any) -> Any:
        # the first group containing INC-5 fails as a whole (e.g. a lost connection mid-transaction)
        if ref == 5 and kw.get("session") is not None and 5 not in broken:
            broken.add(5)
            raise ConnectionError("connection reset")
        return await real(ref, **kw)

    svc.escalate = flaky  # type: ignore[method-assign]
    before = ESCALATIONS.labels(level="1")._value.get()
    n = 30
    for i in range(n):  # all due at (nearly) the same moment
        await svc.declare(actor=OP, title=f"i{i}", severity="sev1")
    await asyncio.sleep(WAIT * 60 + 0.1)  # every one is due before the timer starts: one burst
    esc = await escalators(ctx, workers=1)

    async def done() -> bool:
        return len(await escalations(ctx)) >= n

    await wait_until(done, 15)
    await asyncio.sleep(0.5)
    rows = await escalations(ctx)
    assert sorted(r[0] for r in rows) == list(range(1, n + 1))  # each exactly once, INC-5 included
    assert esc.fired == n and esc.grouped > 0 and broken == {5}
    # counted once each, only after their transaction committed (the failed group counted nothing)
    assert ESCALATIONS.labels(level="1")._value.get() - before == n
    # one audit entry each (the groups write theirs with one append_many), and the chain is intact
    async with ctx.db.sessions() as s:
        audited = (await s.execute(select(AuditEntry.resource).where(
            AuditEntry.action == "incident.escalate"))).scalars().all()
    assert sorted(audited) == sorted(f"INC-{i}" for i in range(1, n + 1))
    assert (await verify(ctx.db.engine)).ok
