"""Group commit (core/db.py GroupCommit): on SQLite operations that arrive together share one transaction,
each in its own savepoint; a failing one leaves the others committed; a failed commit answers every member
with the error, so nothing answered as accepted is lost. On PostgreSQL (one transaction per operation) the
same guarantees are checked against the same storms."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select, text

from bot.context import Context
from core.audit.log import verify
from core.models import AuditEntry, Incident, IncidentMessage
from core.rbac import Actor

OP = Actor("cli:op", "cli")


async def _titles(ctx: Context) -> list[str]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(Incident.title).order_by(Incident.id))).scalars().all())


async def _together(ctx: Context, coros: list[Any]) -> list[Any]:
    """Run the operations as one storm: they all arrive while the write gate is busy, so on SQLite they
    join one group (statements run on the loop thread there, so an operation that arrives alone finishes
    before the next one starts and commits on its own)."""
    async with ctx.db.write_gate:
        tasks = [asyncio.ensure_future(c) for c in coros]
        await asyncio.sleep(0.05)
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_failing_operation_leaves_the_rest_of_its_group_committed(ctx: Context) -> None:
    heard: list[int] = []
    ctx.service.events.subscribe(lambda ev: heard.append(ev.incident_id))

    async def declare(i: int) -> Any:
        return await ctx.service.declare(actor=OP, title=f"storm {i}", severity="high")

    async def doomed() -> None:
        async with ctx.db.grouped() as s:  # writes an incident, its pages and audit entry, then fails
            await ctx.service.declare(actor=OP, title="doomed", severity="high", session=s)
            raise RuntimeError("boom")

    tasks = [declare(i) for i in range(5)] + [doomed()] + [declare(i) for i in range(5, 10)]
    results = await _together(ctx, tasks)
    assert isinstance(results[5], RuntimeError)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 5)
    if ctx.db.sqlite:  # they really shared a transaction (PostgreSQL keeps one per operation)
        assert ctx.db.groups.stats["largest"] >= 3, ctx.db.groups.stats
    titles = await _titles(ctx)
    assert sorted(titles) == sorted(f"storm {i}" for i in range(10))
    # audit entries in arrival order, one per accepted declare, and the chain intact
    async with ctx.db.sessions() as s:
        declared = (await s.execute(select(AuditEntry.details).where(AuditEntry.action == "incident.declare")
                                    .order_by(AuditEntry.seq))).scalars().all()
    assert [d for d in declared if "doomed" in d] == []
    order = [int(d.split('"storm ')[1].split('"')[0]) for d in declared]
    assert order == list(range(10)) if ctx.db.sqlite else sorted(order) == list(range(10))
    assert (await verify(ctx.db.engine)).ok
    # listeners heard each committed incident once, never the rolled-back one
    stored = {r.incident.id for r in results if not isinstance(r, BaseException) and r is not None}
    assert sorted(heard) == sorted(stored)


async def test_failed_group_commit_answers_every_member_with_the_error(ctx: Context) -> None:
    async def declare(i: int) -> Any:
        return await ctx.service.declare(actor=OP, title=f"crash {i}", severity="high")

    async def breaks_the_commit() -> None:
        async with ctx.db.grouped() as s:
            if ctx.db.sqlite:  # a foreign key checked only at COMMIT: the whole group's commit fails
                await s.execute(text("PRAGMA defer_foreign_keys=ON"))
                s.add(IncidentMessage(incident_id=424242, kind="UPDATE", body="orphan", author="t",
                                      created_at=ctx.clock.now(), extra={}))
                await s.flush()
            else:  # the group's connection dies before its COMMIT (a crashed server, a cut network)
                pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                async with ctx.db.engine.connect() as other:
                    await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                    await other.commit()

    tasks = [declare(i) for i in range(4)] + [breaks_the_commit()] + [declare(i) for i in range(4, 8)]
    results = await _together(ctx, tasks)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert failed, "the commit failed: its members must hear it"
    if ctx.db.sqlite:
        assert all(isinstance(results[i], BaseException) for i in range(4))  # they were in the failed commit
    titles = await _titles(ctx)
    # nothing answered as accepted is missing; nothing that raised was stored
    for i, r in enumerate(results):
        if i == 4:
            continue
        n = i if i < 4 else i - 1
        assert (f"crash {n}" in titles) == (not isinstance(r, BaseException))
    assert len(titles) == sum(1 for r in accepted if r is not None)
    # the store works again afterwards
    out = await ctx.service.declare(actor=OP, title="after", severity="high")
    assert out.incident is not None and "after" in await _titles(ctx)
    assert (await verify(ctx.db.engine)).ok


async def test_nested_grouped_call_joins_the_same_transaction(ctx: Context) -> None:
    if not ctx.db.sqlite:
        pytest.skip("PostgreSQL keeps one transaction per operation: nothing to join")
    async with ctx.db.grouped() as s:
        out = await ctx.service.declare(actor=OP, title="outer", severity="high")  # no session passed
        async with ctx.db.sessions() as r:  # not visible outside yet: same, uncommitted transaction
            seen = (await r.execute(select(func.count()).select_from(Incident))).scalar_one()
        assert out.incident is not None
    assert seen == 0
    assert await _titles(ctx) == ["outer"]
