"""The timeline and postmortem export against a hand-checked fixture: an incident worked on a frozen clock
(so every time is known), exported as Markdown and JSON, on SQLite and PostgreSQL."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bot.context import Context
from bot.dispatch import run_text
from core.appearance.export import render
from core.clock import FrozenClock
from core.errors import InvalidInput, NotFound
from core.models import Delivery
from core.rbac import Actor
from core.escalation import ESCALATOR
from core.timeline import incident_timeline

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
OP = Actor("cli:op", "cli")
ALICE = Actor("contact:alice", "voice", "alice")  # acknowledges from her voice call (she was paged)


ESCALATING = {"routing": {"rules": [{"name": "sev2-pages-oncall", "min_severity": "sev2",
                                     "targets": {"lists": ["oncall"]}, "escalation_policy": "standard"}]},
              "escalation_policies": [{"name": "standard", "levels": [
                  {"wait_minutes": 1, "targets": {"lists": ["leads"]}},
                  {"wait_minutes": 5, "targets": {"contacts": ["bob"]}}]}]}


@pytest.fixture
async def ctx(make_ctx: Any) -> Context:
    return await make_ctx(**ESCALATING)


async def worked_incident(ctx: Context, clock: FrozenClock) -> None:
    """INC-1, as the fixture describes it: declared 09:00:00 (alice and bob paged), escalated to carol by the
    timer 09:01:00, alice acknowledges 09:02:00, bob becomes comms 09:03:00, an update 09:05:00, a bridge
    09:06:00, a note 09:09:00, monitoring 09:11:00, resolved 09:21:00."""
    clock.set(T0)
    svc = ctx.service
    out = await svc.declare(actor=OP, title="Checkout is failing", severity="sev2",
                            description="Payments time out | 30% of requests")
    # The outbox worker's part (out of scope here): alice's page arrived 4 s after it was queued.
    async with ctx.db.transaction() as s:
        await s.execute(update(Delivery).where(Delivery.message_id == out.message.id,
                                               Delivery.recipient == "alice")
                        .values(status="delivered", delivered_at=T0 + timedelta(seconds=4), attempts=1))
    clock.advance(minutes=1)
    assert (await svc.escalate("INC-1", actor=ESCALATOR, due_at=clock.now())).changed
    clock.advance(minutes=1)
    await svc.acknowledge("INC-1", actor=ALICE)
    clock.advance(minutes=1)
    assert (await run_text(svc, OP, "role INC-1 comms bob"))[1].ok
    clock.advance(minutes=2)
    await svc.update("INC-1", actor=OP, text="Rolled back release 42")
    clock.advance(minutes=1)
    await svc.bridge("INC-1", actor=OP, details="https://meet.example/inc1")
    clock.advance(minutes=3)
    assert (await run_text(svc, OP, "note INC-1 Error rate back to baseline\nafter the rollback"))[1].ok
    clock.advance(minutes=2)
    await svc.monitor("INC-1", actor=OP)
    clock.advance(minutes=10)
    await svc.resolve("INC-1", actor=OP, text="Error rate normal for 10 minutes")
    clock.advance(hours=1)


async def test_markdown_export_matches_the_hand_checked_fixture(ctx: Context, clock: FrozenClock) -> None:
    await worked_incident(ctx, clock)
    tl = await incident_timeline(ctx.service, "INC-1", actor=Actor("cli:viewer", "cli"))
    assert render(tl, "md") == (FIXTURES / "export_INC-1.md").read_text()


async def test_json_export_has_the_same_facts(ctx: Context, clock: FrozenClock) -> None:
    await worked_incident(ctx, clock)
    data = json.loads(render(await incident_timeline(ctx.service, "INC-1", actor=OP), "json"))
    assert data["incident"]["ref"] == "INC-1" and data["incident"]["declared_at"] == "2026-03-10T09:00:00+00:00"
    assert data["durations"] == {"time_to_acknowledge_seconds": 120.0, "time_to_resolve_seconds": 1260.0}
    assert data["roles"] == {"commander": {"identity": "cli:op", "name": "cli:op"},
                             "comms": {"identity": "contact:bob", "name": "bob"}, "scribe": None}
    assert [(s["state"], s["seconds"]) for s in data["states"]] == [("open", 660.0), ("monitoring", 600.0)]
    assert [e["kind"] for e in data["timeline"]] == [
        "STATE", "INITIAL", "PAGED", "ESCALATION", "PAGED", "ACK", "TOLD", "ROLE", "TOLD", "UPDATE", "TOLD",
        "BRIDGE", "TOLD", "NOTE", "STATE", "MONITORING", "TOLD", "STATE", "RESOLVED", "TOLD"]
    alice = [p for p in data["pages"] if p["recipient"] == "alice"]
    assert alice[0] == {"recipient": "alice", "channel": "email", "purpose": "page",
                        "reason": "rule sev2-pages-oncall",
                        "queued_at": "2026-03-10T09:00:00+00:00", "delivered_at": "2026-03-10T09:00:04+00:00",
                        "status": "delivered", "attempts": 1, "acknowledged_at": "2026-03-10T09:02:00+00:00"}
    assert [p["status"] for p in data["pages"] if p["reason"] == "escalation level 1"] == ["cancelled"]
    assert all(p["acknowledged_at"] is None for p in data["pages"] if p["recipient"] != "alice")
    assert {p["purpose"] for p in data["pages"]} == {"page", "news", "notice"}
    assert data["postmortem"] == {"impact": "", "root_cause": "", "what_went_well": "", "action_items": []}


@pytest.mark.parametrize("ref, fmt, actor, error", [
    ("INC-9", "md", OP, NotFound),
    ("INC-1", "pdf", OP, InvalidInput),
    ("INC-1", "md", Actor("slack:USTRANGER", "slack"), None),  # viewers may read (VIEW), like status
])
async def test_export_errors(ctx: Context, ref: str, fmt: str, actor: Actor, error: Any) -> None:
    await ctx.service.declare(actor=OP, title="x", severity="sev3")
    if error is None:
        assert render(await incident_timeline(ctx.service, ref, actor=actor), fmt).startswith("# INC-1: x")
        return
    with pytest.raises(error):
        render(await incident_timeline(ctx.service, ref, actor=actor), fmt)
