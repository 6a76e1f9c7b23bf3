"""Audit reads, console users and role lists: the core checks permissions itself, from the one table."""
from __future__ import annotations

import pytest

from bot.context import Context
from core.audit_reads import AuditReads
from core.config import ROLES as CONFIG_ROLES
from core.errors import Forbidden
from core.rbac import MATRIX, Actor, Permission, Role, allows
from core.users import UserService

ADMIN, MANAGER, OP, VIEWER = Actor("cli:admin"), Actor("cli:manager"), Actor("cli:op"), Actor("cli:viewer")


async def test_audit_reads_check_view_audit_themselves(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="db down", severity="sev2")
    reads = AuditReads(ctx.db, ctx.holder)
    assert [e.action for e in await reads.entries(actor=MANAGER)] == ["incident.declare"]
    assert (await reads.verify(actor=ADMIN)).ok
    for who in (OP, VIEWER):
        with pytest.raises(Forbidden):
            await reads.entries(actor=who)
        with pytest.raises(Forbidden):
            await reads.verify(actor=who)


async def test_only_who_manages_settings_adds_console_users(ctx: Context) -> None:
    users = UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder)
    for who in (MANAGER, OP, VIEWER):
        with pytest.raises(Forbidden):
            await users.add(name="eve", role="admin", password="long-enough-pw", actor=who)
    assert await users.role_of("eve") is None
    user = await users.add(name="ada", role="viewer", password="long-enough-pw", actor=ADMIN)
    assert user.role == "viewer"


def test_role_names_and_checks_come_from_the_enum_and_the_table() -> None:
    assert CONFIG_ROLES == tuple(r.value for r in Role)
    for role in Role:
        for perm in Permission:
            assert allows(role, perm) == (perm in MATRIX[role])
        assert allows(role.value, Permission.ACKNOWLEDGE) == (role is not Role.VIEWER)


async def test_outbox_reads_check_view_from_the_table(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox service asks the one table: every role may VIEW today, so a viewer reads it; take VIEW away
    from viewers in the table and the core refuses, with no adapter involved."""
    from core.outbox_reads import OutboxReads

    reads = OutboxReads(ctx.db, ctx.holder)
    assert list(await reads.latest(actor=VIEWER, limit=5)) == []
    assert list(await reads.after(actor=VIEWER, last=0)) == []
    monkeypatch.setitem(MATRIX, Role.VIEWER, frozenset())
    with pytest.raises(Forbidden):
        await reads.latest(actor=VIEWER, limit=5)
    with pytest.raises(Forbidden):
        await reads.after(actor=VIEWER, last=0)
    assert list(await reads.latest(actor=OP, limit=5)) == []
