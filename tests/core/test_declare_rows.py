"""A declare writes its rows with Core statements (core/incidents.py) and puts the incident object into the
session as a flush would. These check what a flush guaranteed: a declare rolled back to its savepoint
leaves no object behind, even one still referenced, so the next declare in the same transaction (which
may get the same id on SQLite) is stored and read back as itself; and later loads in the transaction
see the declared object itself (the `--commander` hand-over relies on it)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot.context import Context
from core.models import Incident, IncidentMessage, IncidentStateChange
from core.rbac import Actor

OP = Actor("cli:op", "cli")


async def test_a_rolled_back_declare_leaves_nothing_for_the_next_one(ctx: Context) -> None:
    kept: list[Any] = []  # the rolled-back incident stays referenced, as a traceback or a log might keep it
    async with ctx.db.transaction() as s:
        try:
            async with s.begin_nested():
                out = await ctx.service.declare(actor=OP, title="doomed", severity="high", session=s)
                kept.append(out.incident)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        out = await ctx.service.declare(actor=OP, title="kept", severity="high", session=s)
        assert out.incident is not None
        again = await s.get(Incident, out.incident.id)
        assert again is out.incident and again.title == "kept"
        reread = (await s.execute(select(Incident).where(Incident.id == out.incident.id))).scalars().one()
        assert reread is out.incident
    async with ctx.db.sessions() as s:
        titles = (await s.execute(select(Incident.title))).scalars().all()
        kinds = (await s.execute(select(IncidentMessage.kind, IncidentMessage.body))).all()
        changes = (await s.execute(select(IncidentStateChange.incident_id, IncidentStateChange.to_state))).all()
    assert titles == ["kept"]
    assert [tuple(k) for k in kinds] == [("INITIAL", "kept")]
    assert [tuple(c) for c in changes] == [(out.incident.id, "open")]


async def test_the_declared_object_is_the_one_later_loads_return(ctx: Context) -> None:
    async with ctx.db.transaction() as s:
        out = await ctx.service.declare(actor=OP, title="one", severity="high", session=s)
        assert out.incident is not None and out.message is not None
        loaded = await ctx.service._load(s, out.incident.id, out.incident.ref)
        assert loaded is out.incident
        await ctx.service._cas(s, loaded, commander="contact:bob")
    assert out.incident.commander == "contact:bob" and out.incident.version == 2
    got = await ctx.service.get(out.incident.id)
    assert (got.title, got.commander, got.version, got.role_names, got.labels) == (
        "one", "contact:bob", 2, {}, {})
    assert out.message.kind == "INITIAL" and out.message.incident_id == got.id
