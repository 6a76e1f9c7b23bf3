"""Overrides: stored, audited, validated (unknown schedule/contact, overlap, zero length, past, take by a
non-member: a clear answer, nothing stored) and permission-checked per role; they survive a restart."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.context import Context, open_context
from core.clock import FrozenClock
from core.errors import Forbidden, InvalidInput, NotFound
from core.models import AuditEntry, ScheduleOverride
from core.rbac import Actor
from tests.schedules.conftest import berlin

ADMIN, MANAGER = Actor("cli:admin", "cli"), Actor("cli:manager", "cli")
OP, VIEWER = Actor("cli:op", "cli"), Actor("cli:viewer", "cli")
ALICE_SLACK, DAVE_SLACK = Actor("slack:UALICE", "slack"), Actor("slack:UDAVE", "slack")
H2 = timedelta(hours=2)


async def stored(ctx: Context) -> int:
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(ScheduleOverride))).scalar_one())


@pytest.mark.parametrize("kwargs, error, text", [
    ({"name": "secondary", "contact": "dave"}, NotFound, "unknown schedule 'secondary' (schedules: primary)"),
    ({"name": "primary", "contact": "zed"}, NotFound, "unknown contact 'zed'"),
    ({"name": "primary", "contact": "dave", "length": timedelta(0)}, InvalidInput, "zero time"),
    ({"name": "primary", "contact": "dave", "start": berlin(2026, 1, 7, 10)}, InvalidInput, "in the past"),
    ({"name": "primary", "contact": "dave", "start": berlin(2026, 1, 8), "end": berlin(2026, 1, 7, 23)},
     InvalidInput, "end before it starts"),
])
async def test_bad_overrides_are_refused_and_nothing_is_stored(sctx: Context, kwargs: dict, error: type,
                                                               text: str) -> None:
    kwargs = {"length": H2, **kwargs}
    name, contact = kwargs.pop("name"), kwargs.pop("contact")
    if "end" in kwargs:
        kwargs.pop("length")
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        await sctx.service.schedules.override(name, contact, actor=MANAGER, **kwargs)
    assert await stored(sctx) == 0


async def test_overlap_is_refused_naming_the_other_override(sctx: Context) -> None:
    first = await sctx.service.schedules.override("primary", "dave", actor=MANAGER, length=H2)
    with pytest.raises(InvalidInput, match=f"overlaps override #{first.id} \\(dave"):
        await sctx.service.schedules.override("primary", "carol", actor=MANAGER, start=berlin(2026, 1, 7, 13),
                                              length=H2)
    await sctx.service.schedules.override("primary", "carol", actor=MANAGER, start=berlin(2026, 1, 7, 14),
                                          length=H2)  # back to back is fine
    assert await stored(sctx) == 2


@pytest.mark.parametrize("actor, contact, allowed", [
    (ADMIN, "dave", True), (MANAGER, "dave", True),
    (OP, "dave", False), (VIEWER, "dave", False),
    (ALICE_SLACK, "alice", True),    # a member covering for themselves
    (ALICE_SLACK, "bob", False),     # ... but not for someone else
    (DAVE_SLACK, "dave", False),     # not a member of the schedule
])
async def test_permissions_per_role(sctx: Context, actor: Actor, contact: str, allowed: bool) -> None:
    svc = sctx.service.schedules
    if allowed:
        row = await svc.override("primary", contact, actor=actor, length=H2)
        assert row.created_by == actor.identity
    else:
        with pytest.raises(Forbidden):
            await svc.override("primary", contact, actor=actor, length=H2)
    # everyone may look
    await svc.overrides("primary", actor=VIEWER)
    await svc.timeline("primary", actor=VIEWER)


async def test_take_is_for_members_only(sctx: Context) -> None:
    svc = sctx.service.schedules
    row = await svc.take("primary", actor=Actor("slack:UBOB", "slack"), length=timedelta(hours=3))
    assert row.contact == "bob"
    with pytest.raises(Forbidden, match="slack:UDAVE is not a member of schedule 'primary' \\(you are contact dave\\)"):
        await svc.take("primary", actor=DAVE_SLACK, length=H2)
    with pytest.raises(Forbidden, match="no contact has this chat id"):
        await svc.take("primary", actor=Actor("slack:UNOBODY", "slack"), length=H2)
    assert await stored(sctx) == 1


async def test_cancel_is_audited_and_overrides_survive_a_restart(sctx: Context, clock: FrozenClock,
                                                                 db_url: str) -> None:
    svc = sctx.service.schedules
    a = await svc.override("primary", "dave", actor=MANAGER, length=H2)
    b = await svc.override("primary", "carol", actor=MANAGER, start=berlin(2026, 1, 8, 9), length=H2)
    with pytest.raises(Forbidden):
        await svc.cancel(a.id, actor=OP)
    await svc.cancel(a.id, actor=MANAGER)
    with pytest.raises(InvalidInput, match="already cancelled"):
        await svc.cancel(a.id, actor=MANAGER)
    with pytest.raises(NotFound):
        await svc.cancel(999, actor=MANAGER)
    async with sctx.db.sessions() as s:
        actions = (await s.execute(select(AuditEntry.action, AuditEntry.resource)
                                   .order_by(AuditEntry.seq))).all()
    assert [tuple(r) for r in actions] == [("schedule.override", "schedule:primary")] * 2 + [
        ("schedule.cancel", "schedule:primary")]
    # a fresh process (same database) sees the override that is left
    other = await open_context(cfg=sctx.cfg, clock=clock)
    try:
        rows = await other.service.schedules.overrides("primary", actor=VIEWER)
        assert [r.id for r in rows] == [b.id]
        clock.set(berlin(2026, 1, 8, 10))
        out = await other.service.declare(actor=OP, title="x", severity="sev3")
        assert out.plan is not None and [d.recipient for d in out.plan.deliveries] == ["carol"]
    finally:
        await other.close()
