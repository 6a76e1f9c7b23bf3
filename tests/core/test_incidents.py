"""IncidentService on SQLite and PostgreSQL: lifecycle, transitions, roles, one transaction, fan-out."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.context import Context
from core.audit.log import verify
from core.clock import FrozenClock, utc
from core.errors import Forbidden, InvalidInput, InvalidTransition, NotFound
from core.models import AuditEntry, Delivery, Incident, IncidentMessage, IncidentStateChange
from core.rbac import Actor

ADMIN = Actor("cli:admin", "cli")
OP = Actor("cli:op", "cli")
VIEWER = Actor("cli:viewer", "cli")
STRANGER = Actor("slack:UNOBODY", "slack")


async def count(ctx: Context, model: Any, *where: Any) -> int:
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


async def test_lifecycle_records_thread_states_deliveries_and_audit(ctx: Context, clock: FrozenClock) -> None:
    svc = ctx.service
    out = await svc.declare(actor=OP, title="Checkout errors", severity="high", contact_list="leads")
    inc = out.incident
    assert inc.ref == "INC-1" and inc.severity == "sev2" and inc.state == "open"
    # no rule matches; the named list (carol) is the route, so default_targets are not added
    assert out.queued == 1
    clock.advance(minutes=2)
    ack = await svc.acknowledge("inc-1", actor=OP)
    assert ack.incident.acknowledged_by == "cli:op"
    assert utc(ack.incident.acknowledged_at) == clock.now()
    clock.advance(minutes=3)
    await svc.update("INC-1", actor=OP, text="Rolled back release 42")
    await svc.bridge("INC-1", actor=OP, details="https://meet.example/inc1", text="join")
    await svc.monitor("INC-1", actor=OP)
    clock.advance(minutes=10)
    done = await svc.resolve("INC-1", actor=OP, text="Error rate normal")
    assert done.incident.state == "resolved" and utc(done.incident.resolved_at) == clock.now()

    d = await svc.detail("INC-1")
    assert [m.kind for m in d.thread] == ["INITIAL", "ACK", "UPDATE", "BRIDGE", "MONITORING", "RESOLVED"]
    assert [(c.from_state, c.to_state) for c in d.state_changes] == [
        (None, "open"), ("open", "monitoring"), ("monitoring", "resolved")]
    assert d.state_changes[1].seconds_in_previous == pytest.approx(300)
    assert d.state_changes[2].seconds_in_previous == pytest.approx(600)
    assert len(d.deliveries) == 6 and {x.status for x in d.deliveries} == {"queued"}
    async with ctx.db.sessions() as s:
        actions = (await s.execute(select(AuditEntry.action).order_by(AuditEntry.seq))).scalars().all()
    assert actions == ["incident.declare", "incident.ack", "incident.update", "incident.bridge",
                       "incident.monitor", "incident.resolve"]
    assert (await verify(ctx.db.engine)).ok


@pytest.mark.parametrize("op", ["update", "bridge", "resolve", "ack", "monitor"])
async def test_resolved_incident_refuses_changes(ctx: Context, op: str) -> None:
    svc = ctx.service
    await svc.declare(actor=OP, title="x", severity="sev3")
    await svc.resolve("INC-1", actor=OP)
    before = await count(ctx, IncidentMessage)
    call = {"update": lambda: svc.update("INC-1", actor=OP, text="more"),
            "bridge": lambda: svc.bridge("INC-1", actor=OP, details="tel:123"),
            "resolve": lambda: svc.resolve("INC-1", actor=OP),
            "ack": lambda: svc.acknowledge("INC-1", actor=OP),
            "monitor": lambda: svc.monitor("INC-1", actor=OP)}[op]
    with pytest.raises(InvalidTransition, match="INC-1 is (already )?resolved"):
        await call()
    assert await count(ctx, IncidentMessage) == before


async def test_ack_is_idempotent(ctx: Context, clock: FrozenClock) -> None:
    svc = ctx.service
    await svc.declare(actor=OP, title="x", severity="sev3")
    first = await svc.acknowledge("INC-1", actor=OP)
    clock.advance(minutes=1)
    again = await svc.acknowledge("INC-1", actor=ADMIN)
    assert first.changed and not again.changed
    assert "already acknowledged by cli:op" in again.note
    assert (await svc.get("INC-1")).acknowledged_by == "cli:op"
    assert await count(ctx, IncidentMessage, IncidentMessage.kind == "ACK") == 1


async def test_roles_are_enforced_inside_the_service(ctx: Context) -> None:
    svc = ctx.service
    with pytest.raises(Forbidden, match="has role VIEWER, which may not send incidents"):
        await svc.declare(actor=VIEWER, title="x", severity="sev1")
    with pytest.raises(Forbidden):
        await svc.declare(actor=STRANGER, title="x", severity="sev1")  # unknown -> viewer
    await svc.declare(actor=OP, title="x", severity="sev3")
    for call in (lambda: svc.update("INC-1", actor=VIEWER, text="t"),
                 lambda: svc.resolve("INC-1", actor=VIEWER),
                 lambda: svc.acknowledge("INC-1", actor=STRANGER),
                 lambda: svc.notify(actor=VIEWER, text="hi", contact_list="oncall"),
                 lambda: svc.explain_route("INC-1", actor=OP)):
        with pytest.raises(Forbidden):
            await call()
    assert (await svc.list(actor=VIEWER))[0].ref == "INC-1"  # viewers can read
    assert await count(ctx, AuditEntry) == 1  # refusals wrote nothing


async def test_paged_contact_may_acknowledge_without_a_role(ctx: Context) -> None:
    svc = ctx.service
    await svc.declare(actor=OP, title="x", severity="sev3")  # pages oncall: alice (slack UALICE) and bob
    alice = Actor("slack:UALICE", "slack")
    assert (await svc.acknowledge("INC-1", actor=alice)).changed
    await svc.declare(actor=OP, title="y", severity="sev3", contact_list="leads")
    with pytest.raises(Forbidden):
        await svc.acknowledge("INC-2", actor=Actor("telegram:999", "telegram"))


async def test_bad_input_is_rejected_clearly(ctx: Context) -> None:
    svc = ctx.service
    with pytest.raises(InvalidInput, match="unknown severity 'sev7'"):
        await svc.declare(actor=OP, title="x", severity="sev7")
    with pytest.raises(InvalidInput, match="needs a title"):
        await svc.declare(actor=OP, title="  ", severity="sev1")
    with pytest.raises(NotFound, match="no contact list 'nope'"):
        await svc.declare(actor=OP, title="x", severity="sev1", contact_list="nope")
    with pytest.raises(NotFound, match="no incident INC-42"):
        await svc.update("INC-42", actor=OP, text="x")
    with pytest.raises(InvalidInput, match="not an incident id"):
        await svc.get("banana")
    with pytest.raises(InvalidInput, match="unknown filter"):
        await svc.list(state="weird")
    assert await count(ctx, Incident) == 0


async def test_change_and_deliveries_and_audit_commit_together(ctx: Context, monkeypatch: Any) -> None:
    """If any write of the unit fails (here: the audit append), nothing of it remains."""
    svc = ctx.service

    async def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ctx.audit, "append", broken)
    with pytest.raises(RuntimeError):
        await svc.declare(actor=OP, title="x", severity="sev1")
    for model in (Incident, IncidentMessage, IncidentStateChange, Delivery, AuditEntry):
        assert await count(ctx, model) == 0, model


async def test_one_time_notify_has_no_incident(ctx: Context) -> None:
    out = await ctx.service.notify(actor=OP, text="Maintenance at 22:00", contact_list="leads")
    assert out.incident is None and out.message.kind == "ONE_TIME" and out.queued == 1
    async with ctx.db.sessions() as s:
        row = (await s.execute(select(Delivery))).scalars().one()
    assert row.incident_id is None and row.recipient == "carol" and row.channel == "email"
    assert row.notification_json["kind"] == "ONE_TIME"


async def test_idempotency_keys_are_stable_and_unique(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="x", severity="sev1")
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery))).scalars().all()
    keys = [r.idempotency_key for r in rows]
    assert len(keys) == len(set(keys))
    # sev1 for alice = sms + email, bob = email
    assert sorted((r.recipient, r.channel) for r in rows) == [("alice", "email"), ("alice", "sms"), ("bob", "email")]


async def test_ack_racing_resolve_never_reopens(ctx: Context) -> None:
    """Concurrent ack and resolve: both may succeed in some order, but the incident ends resolved."""
    svc = ctx.service
    await svc.declare(actor=OP, title="race", severity="sev2")
    results = await asyncio.gather(svc.acknowledge("INC-1", actor=OP), svc.resolve("INC-1", actor=OP),
                                   return_exceptions=True)
    for r in results:
        assert not isinstance(r, Exception) or isinstance(r, InvalidTransition), r
    inc = await svc.get("INC-1")
    assert inc.state == "resolved"
    assert (await verify(ctx.db.engine)).ok


async def test_list_filters(ctx: Context) -> None:
    svc = ctx.service
    for i in range(3):
        await svc.declare(actor=OP, title=f"i{i}", severity="sev3")
    await svc.monitor("INC-2", actor=OP)
    await svc.resolve("INC-3", actor=OP)
    assert [i.ref for i in await svc.list()] == ["INC-2", "INC-1"]
    assert [i.ref for i in await svc.list(state="all")] == ["INC-3", "INC-2", "INC-1"]
    assert [i.ref for i in await svc.list(state="resolved")] == ["INC-3"]


async def test_event_bus_subscribe_unsubscribe_and_a_failing_listener() -> None:
    """Subscribers hear each committed change once (subscribing twice is harmless), stop hearing after
    unsubscribe, and one listener's exception neither reaches the caller nor silences the others."""
    from core.events import EventBus, IncidentEvent

    bus = EventBus()
    heard: list[str] = []

    def broken(_ev: IncidentEvent) -> None:
        raise RuntimeError("listener bug")

    async def also(ev: IncidentEvent) -> None:
        heard.append("async:" + ev.kind)

    bus.subscribe(broken)
    bus.subscribe(heard.append)  # type: ignore[arg-type]
    bus.subscribe(heard.append)  # type: ignore[arg-type]
    bus.subscribe(also)
    ev = IncidentEvent("ack", 1, 2, "cli:op")
    await bus.publish(ev)
    assert heard == [ev, "async:ack"]
    bus.unsubscribe(heard.append)  # type: ignore[arg-type]
    bus.unsubscribe(heard.append)  # type: ignore[arg-type]
    await bus.publish(ev)
    assert heard == [ev, "async:ack", "async:ack"] and not bus.subscribed(heard.append)  # type: ignore[arg-type]
