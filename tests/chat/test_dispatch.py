"""The platform-neutral dispatcher: every outcome is a Reply with words a responder can act on."""
from __future__ import annotations

import re
from typing import Any

from bot.context import Context
from bot.dispatch import run_text
from core.rbac import Actor

OP = Actor("slack:UOP", "slack")
ADMIN = Actor("slack:UADMIN", "slack")
VIEWER = Actor("slack:USTRANGER", "slack")


async def say(ctx: Context, actor: Actor, text: str) -> tuple[bool, str]:
    _, reply = await run_text(ctx.service, actor, text)
    return reply.ok, reply.text


async def test_full_conversation(ctx: Context) -> None:
    ok, text = await say(ctx, OP, "declare sev2 Payments failing")
    assert ok and text.startswith("Declared INC-1 [sev2] Payments failing")
    ok, text = await say(ctx, OP, "ack INC-1")  # says what it queued, like the other verbs
    assert ok and re.fullmatch(r"INC-1: acknowledged by slack:UOP, \d+ pages queued\.", text), text
    ok, text = await say(ctx, OP, "ack INC-1")
    assert ok and "already acknowledged by slack:UOP" in text
    assert (await say(ctx, OP, "update INC-1 rolled back"))[0]
    ok, text = await say(ctx, VIEWER, "status INC-1")
    assert ok and "INC-1 [sev2] open" in text and "Acknowledged by slack:UOP" in text and "UPDATE: rolled back" in text
    ok, text = await say(ctx, OP, "list")
    assert ok and text.startswith("INC-1 [sev2] open")
    ok, text = await say(ctx, ADMIN, "route INC-1 update")
    assert ok and "Rules:" in text and "deliveries would be queued" in text
    assert (await say(ctx, OP, "resolve INC-1 done"))[0]
    assert (await say(ctx, OP, "list")) == (True, "No open incidents.")
    ok, text = await say(ctx, ADMIN, "route INC-1 update")  # resolved: an update would be refused
    assert ok and "INC-1 is resolved: /incident update would be refused" in text and "Rules:" not in text


async def test_a_list_says_how_many_more_there_are(ctx: Context) -> None:
    for n in range(27):
        await ctx.service.declare(actor=OP, title=f"Incident {n}", severity="sev3")
    ok, text = await say(ctx, OP, "list")
    lines = text.splitlines()
    assert ok and len(lines) == 26 and lines[0].startswith("INC-27 ") and lines[-1].startswith("... and 2 more")


async def test_errors_are_replies(ctx: Context) -> None:
    ok, text = await say(ctx, VIEWER, "declare sev1 x")
    assert not ok and text.startswith("Not allowed: slack:USTRANGER has role VIEWER")
    ok, text = await say(ctx, OP, "update INC-77 hello")
    assert not ok and text == "no incident INC-77"
    ok, text = await say(ctx, OP, "frob")
    assert not ok and "Unknown command 'frob'" in text and "Incident commands:" in text
    ok, text = await say(ctx, OP, "notify nobody hi")
    assert not ok and "no contact list 'nobody'" in text
    await say(ctx, OP, "declare sev3 x")
    await say(ctx, OP, "resolve INC-1")
    ok, text = await say(ctx, OP, "resolve INC-1")
    assert not ok and "already resolved" in text
    ok, text = await say(ctx, OP, "route INC-1")
    assert not ok and "may not manage settings" in text


async def test_the_chat_actor_is_not_told_about_their_own_action(make_ctx: Any) -> None:
    """alice (slack:UALICE) updates and resolves from chat: bob hears, alice does not (issue 23)."""
    from sqlalchemy import select

    from core.models import Delivery, IncidentMessage

    ctx = await make_ctx(access={"slack:UALICE": "operator"})
    alice = Actor("slack:UALICE", "slack")
    assert (await say(ctx, OP, "declare sev2 db down"))[0]
    assert (await say(ctx, alice, "update INC-1 failing over"))[0]
    assert (await say(ctx, alice, "resolve INC-1 fixed"))[0]
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(IncidentMessage.kind, Delivery.recipient).join(
            Delivery, Delivery.message_id == IncidentMessage.id))).all()
    told: dict[str, set[str]] = {}
    for kind, who in rows:
        told.setdefault(kind, set()).add(who)
    assert told["INITIAL"] == {"alice", "bob"}
    assert told["UPDATE"] == told["RESOLVED"] == {"bob"}
