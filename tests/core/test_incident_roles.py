"""Incident roles and timeline notes on SQLite and PostgreSQL: who may assign, what is stored (thread entry,
audit, private message to the new holder, card sync) and that bad input stores nothing."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from bot.context import Context
from bot.dispatch import run_text
from core.audit.log import verify
from core.config import DEFAULT_ROLE_DESCRIPTIONS
from core.delivery.message import Notification
from core.models import AuditEntry, Delivery, Incident, IncidentMessage
from core.rbac import Actor

OP = Actor("cli:op", "cli")
VIEWER = Actor("cli:viewer", "cli")
ALICE_SLACK = Actor("slack:UALICE", "slack", "Alice")  # contact alice's Slack id; role from default (viewer)


async def say(ctx: Context, actor: Actor, text: str) -> tuple[bool, str]:
    _, reply = await run_text(ctx.service, actor, text)
    return reply.ok, reply.text


async def rows(ctx: Context) -> dict[str, int]:
    """How many rows every table that a role change or note writes has: nothing stored means all equal."""
    async with ctx.db.sessions() as s:
        out = {}
        for model in (IncidentMessage, Delivery, AuditEntry):
            out[model.__tablename__] = int((await s.execute(select(func.count()).select_from(model))).scalar_one())
    return out


async def incident(ctx: Context) -> Incident:
    async with ctx.db.sessions() as s:
        return (await s.execute(select(Incident))).scalars().one()


async def test_assign_stores_role_thread_audit_and_tells_the_holder_privately(make_ctx: Any) -> None:
    ctx = await make_ctx(roles={"comms": {"description": "Post an update every 30 minutes."}})
    await ctx.service.declare(actor=OP, title="Checkout down", severity="sev2")
    ok, text = await say(ctx, OP, "role INC-1 comms alice")
    assert ok, text
    assert text == "INC-1: alice is now comms (assigned by cli:op); 1 private message(s) queued."
    inc = await incident(ctx)
    assert (inc.commander, inc.comms, inc.scribe) == ("cli:op", "contact:alice", None)
    d = await ctx.service.detail("INC-1")
    assert [(m.kind, m.body) for m in d.thread][-1] == ("ROLE", "alice is now comms (assigned by cli:op)")
    [told] = [x for x in d.deliveries if x.purpose == "notice"]
    # alice's news channels for sev2: her default list [email] (sms is only in her sev1 list)
    assert (told.recipient, told.channel, told.address) == ("alice", "email", "alice@example.com")
    note = Notification.from_json(told.notification_json)
    assert note.kind == "ROLE" and note.body.endswith("Post an update every 30 minutes.")
    assert note.body.startswith("You are now comms of INC-1 (Checkout down).")
    async with ctx.db.sessions() as s:
        [entry] = (await s.execute(select(AuditEntry).where(AuditEntry.action == "incident.role"))).scalars().all()
    assert entry.actor == "cli:op" and entry.resource == "INC-1" and '"holder":"contact:alice"' in entry.details
    assert (await verify(ctx.db.engine)).ok


async def test_default_descriptions_and_reassigning_commander(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="DB slow", severity="sev3")
    ok, text = await say(ctx, OP, "role INC-1 commander bob")
    assert ok and text.endswith(", was cli:op; 1 private message(s) queued.")
    d = await ctx.service.detail("INC-1")
    [told] = [x for x in d.deliveries if x.purpose == "notice"]
    assert Notification.from_json(told.notification_json).body.endswith(DEFAULT_ROLE_DESCRIPTIONS["commander"])
    assert d.incident.commander == "contact:bob"
    # The same again changes nothing and says so.
    before = await rows(ctx)
    ok, text = await say(ctx, OP, "role INC-1 ic bob")
    assert ok and text == "bob already is commander of INC-1." and await rows(ctx) == before


async def test_anyone_may_take_an_empty_role_with_me_but_not_a_taken_one(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="DB slow", severity="sev3")
    ok, text = await say(ctx, ALICE_SLACK, "role INC-1 scribe me")  # a viewer
    assert ok and text.startswith("INC-1: alice took scribe"), text
    assert (await incident(ctx)).scribe == "slack:UALICE"
    before = await rows(ctx)
    ok, text = await say(ctx, VIEWER, "role INC-1 scribe me")
    assert not ok and text == ("Scribe of INC-1 is already alice; `me` only takes an empty role "
                               "(an operator can reassign it by name)")
    ok, text = await say(ctx, VIEWER, "role INC-1 comms bob")
    assert not ok and text.startswith("Not allowed: cli:viewer has role VIEWER, which may not assign incident "
                                      "roles to others") and "`/incident role INC-n comms me`" in text
    assert await rows(ctx) == before


@pytest.mark.parametrize("command, problem", [
    ("role INC-9 comms alice", "no incident INC-9"),
    ("role INC-1 captain alice", "unknown role 'captain': use one of commander, comms, scribe"),
    ("role INC-1 comms zed", "unknown person 'zed': name a contact from config"),
    ("role INC-1 comms @nobody", "unknown person '@nobody'"),
    ("role INC-1 comms telegram:abc", "is not a Telegram user id"),
    ("role INC-1 comms", "`role` needs a role (commander, comms or scribe) and a person"),
    ("note INC-1", "`note` needs the text"),
    ("note INC-9 hello", "no incident INC-9"),
])
async def test_bad_input_names_the_problem_and_stores_nothing(ctx: Context, command: str, problem: str) -> None:
    await ctx.service.declare(actor=OP, title="DB slow", severity="sev3")
    before = await rows(ctx)
    ok, text = await say(ctx, OP, command)
    assert not ok and problem in text, text
    assert await rows(ctx) == before


async def test_mentions_and_telegram_usernames_resolve(make_ctx: Any) -> None:
    ctx = await make_ctx(contacts=[
        {"name": "alice", "email": "alice@example.com", "chat": {"slack": "UALICE", "telegram_username": "@al_ops"}},
        {"name": "bob", "email": "bob@example.com"}], contact_lists=[], routing={"default_targets": {"lists": []}})
    await ctx.service.declare(actor=OP, title="DB slow", severity="sev3")
    assert (await say(ctx, OP, "role INC-1 comms <@UALICE|alice.s>"))[0]
    assert (await say(ctx, OP, "role INC-1 scribe <@UZED|zed>"))[0]  # a Slack user who is no contact
    inc = await incident(ctx)
    assert (inc.comms, inc.scribe, inc.role_names) == ("slack:UALICE", "slack:UZED",
                                                       {"comms": "alice", "scribe": "zed"})
    ok, text = await say(ctx, OP, "role INC-1 comms @AL_OPS")
    assert ok and (await incident(ctx)).comms == "contact:alice"
    # zed is no contact and Slack is off here: the role is his, with nobody to tell privately
    ok, text = await say(ctx, OP, "role INC-1 commander <@UZED>")
    assert ok and "has no contact or chat DM" in text


async def test_notes_page_nobody_and_role_holders_may_add_them(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="DB slow", severity="sev1")
    before = await rows(ctx)
    ok, text = await say(ctx, OP, "note INC-1 Found the bad index")
    assert (ok, text) == (True, "INC-1: note added to the timeline.")
    after = await rows(ctx)
    assert after["deliveries"] == before["deliveries"]  # no surfaces here and no person is told
    assert after["incident_messages"] == before["incident_messages"] + 1
    ok, text = await say(ctx, VIEWER, "note INC-1 me too")
    assert not ok and "may not add notes to incident timelines" in text and "nor hold a role on INC-1" in text
    assert (await say(ctx, VIEWER, "role INC-1 scribe me"))[0]
    assert await say(ctx, VIEWER, "note INC-1 viewer as scribe") == (True, "INC-1: note added to the timeline.")
    d = await ctx.service.detail("INC-1")
    assert [m.body for m in d.thread if m.kind == "NOTE"] == ["Found the bad index", "viewer as scribe"]
    async with ctx.db.sessions() as s:
        actions = (await s.execute(select(AuditEntry.action).order_by(AuditEntry.seq))).scalars().all()
    assert actions == ["incident.declare", "incident.note", "incident.role", "incident.note"]


async def test_declare_naming_another_commander_is_one_transaction(ctx: Context) -> None:
    ok, text = await say(ctx, OP, "declare sev2 Checkout down --commander bob")
    assert ok and text.startswith("Declared INC-1 [sev2] Checkout down: ") and text.endswith(" Commander: bob."), text
    inc = await incident(ctx)
    assert (inc.title, inc.commander, inc.role_names) == ("Checkout down", "contact:bob", {"commander": "bob"})
    d = await ctx.service.detail("INC-1")
    assert [m.kind for m in d.thread] == ["INITIAL", "ROLE"]
    assert [x.recipient for x in d.deliveries if x.purpose == "notice"] == ["bob"]
    async with ctx.db.sessions() as s:
        actions = (await s.execute(select(AuditEntry.action).order_by(AuditEntry.seq))).scalars().all()
    assert actions == ["incident.declare", "incident.role"]
    # Naming nobody known stores nothing at all: no incident, no page, no audit entry.
    before = await rows(ctx)
    ok, text = await say(ctx, OP, "declare sev1 Search down --commander zed")
    assert not ok and "unknown person 'zed'" in text and await rows(ctx) == before
    ok, text = await say(ctx, OP, "declare sev1 Search down --commander")
    assert not ok and "`--commander` needs a person" in text
    async with ctx.db.sessions() as s:
        assert int((await s.execute(select(func.count()).select_from(Incident))).scalar_one()) == 1
    # Naming yourself is the default: no second entry.
    ok, text = await say(ctx, OP, "declare sev3 Slow page --commander me")
    assert ok and "Commander:" not in text


async def test_a_resolved_incident_keeps_its_roles_but_takes_notes(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="DB slow", severity="sev3")
    await ctx.service.resolve("INC-1", actor=OP)
    before = await rows(ctx)
    ok, text = await say(ctx, OP, "role INC-1 scribe carol")
    assert not ok and text == "INC-1 is resolved; its roles stay as they were" and await rows(ctx) == before
    ok, text = await say(ctx, OP, "note INC-1 Postmortem on Thursday")  # the timeline goes on after resolve
    assert ok and (await rows(ctx))["incident_messages"] == before["incident_messages"] + 1
