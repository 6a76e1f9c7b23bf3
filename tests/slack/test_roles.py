"""Roles and timeline notes from Slack, end to end: signed slash commands and events API requests into the
real server app, the loopback Web API out (cards, DMs, conversations.replies for pinned messages).
SQLite and PostgreSQL."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from core.delivery.message import Notification
from core.models import AuditEntry, IncidentMessage
from tests.slack.conftest import SlackEnv
from tests.slack.standin import INCIDENT_CHANNEL, sign

CARD_TS = "1700000000.000001"


def fields_of(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", []))


async def react(env: SlackEnv, *, user: str, ts: str, reaction: str = "pushpin", channel: str = INCIDENT_CHANNEL,
                event_id: str = "Ev1", retry: int | None = None) -> int:
    """A signed events API `reaction_added` callback, as Slack posts it."""
    body = json.dumps({"token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
                       "event_id": event_id, "event_time": 1700000500, "event": {
                           "type": "reaction_added", "user": user, "reaction": reaction, "item_user": "UALICE",
                           "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": "1700000500.1"}})
    headers = {"Content-Type": "application/json", **sign(body)}
    if retry is not None:
        headers.update({"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"})
    resp = await env.client.post("/slack/events", data=body.encode(), headers=headers)
    await env.adapter.drain()
    return resp.status


async def stored(env: SlackEnv) -> list[int]:
    async with env.ctx.db.sessions() as s:
        return [int((await s.execute(select(func.count()).select_from(m))).scalar_one())
                for m in (IncidentMessage, AuditEntry)]


async def notes(env: SlackEnv) -> list[IncidentMessage]:
    async with env.ctx.db.sessions() as s:
        return list((await s.execute(select(IncidentMessage).where(IncidentMessage.kind == "NOTE")
                                     .order_by(IncidentMessage.id))).scalars().all())


async def test_roles_from_slack_show_on_the_card_and_tell_the_holder(env: SlackEnv) -> None:
    await env.command("declare sev2 Checkout is down")
    await env.sync_cards()
    [card] = env.api.posts(top=True)
    assert "*Commander*\n<@UOP>" in fields_of(card["blocks"])

    status, answers = await env.command("role INC-1 comms <@UALICE|alice>")
    assert status == 200
    assert answers[-1]["text"] == ("INC-1: alice is now comms (assigned by op); 1 private message(s) queued.")
    inc = (await env.incidents())[0]
    assert inc.comms == "slack:UALICE"
    [entry] = await env.audit("incident.role")
    assert entry.actor == "slack:UOP" and '"role":"comms"' in entry.details

    await env.sync_cards()
    upd = env.api.calls("chat.update")[-1]
    assert upd["ts"] == CARD_TS and "*Comms*\n<@UALICE>" in fields_of(upd["blocks"])
    assert env.api.posts(thread_ts=CARD_TS)[-1]["text"].startswith(":bust_in_silhouette: *Role*: alice is now comms")

    # A Slack user who is no contact hears about the role in a DM from the bot.
    status, answers = await env.command("role INC-1 scribe <@UZED|zed>")
    assert answers[-1]["text"].startswith("INC-1: zed is now scribe")
    assert [r.outcome for r in await env.sync_cards("slack_dm")] == ["delivered"]
    dm = [c for c in env.api.posts() if c["channel"] == "UZED"]
    assert len(dm) == 2 and "Checkout is down" in dm[0]["text"]  # the card, then the note under it
    assert dm[1]["thread_ts"] == dm[0].get("ts", dm[1]["thread_ts"])
    assert "You are now scribe of INC-1" in dm[1]["text"] and "keep the timeline" in dm[1]["text"]

    # Refusals: answered to the asker only, nothing stored.
    before = await stored(env)
    _, answers = await env.command("role INC-1 comms bob", user="USTRANGER")
    assert "Not allowed: slack:USTRANGER has role VIEWER" in answers[-1]["text"]
    assert answers[-1]["response_type"] == "ephemeral"
    _, answers = await env.command("role INC-1 scribe me", user="USTRANGER")
    assert "Scribe of INC-1 is already zed" in answers[-1]["text"]
    _, answers = await env.command("role INC-1 chef me", user="USTRANGER")
    assert "unknown role 'chef'" in answers[-1]["text"]
    assert await stored(env) == before


async def test_pushpin_in_the_thread_and_note_command_add_to_the_timeline(env: SlackEnv) -> None:
    await env.command("declare sev1 Payments failing")
    await env.sync_cards()
    said = env.api.say(INCIDENT_CHANNEL, "Root cause: the TLS cert expired at 09:00", user="UALICE",
                       thread_ts=CARD_TS)

    assert await react(env, user="UOP", ts=said) == 200
    [note] = await notes(env)
    assert (note.body, note.author) == ("Root cause: the TLS cert expired at 09:00", "slack:UOP")
    assert note.extra == {"via": "slack pushpin", "slack_channel": INCIDENT_CHANNEL, "slack_ts": said,
                          "slack_author": "UALICE"}
    [fetch] = env.api.calls("conversations.replies")
    assert (fetch["channel"], fetch["ts"]) == (INCIDENT_CHANNEL, said)
    [entry] = await env.audit("incident.note")
    assert entry.actor == "slack:UOP" and entry.resource == "INC-1"
    # Notes page nobody: only the card follows (its thread gets the note).
    async with env.ctx.db.sessions() as s:
        from core.models import Delivery
        rows = (await s.execute(select(Delivery).where(Delivery.message_id == note.id))).scalars().all()
    assert [(d.channel, d.purpose) for d in rows] == [("chat:slack", "surface")]
    assert Notification.from_json(rows[0].notification_json).kind == "NOTE"

    # Slack's retry of the same event, another reaction, a pin outside any incident thread, a pin on the
    # card itself: nothing more.
    assert await react(env, user="UOP", ts=said, retry=1) == 200
    assert await react(env, user="UOP", ts=said, reaction="thumbsup", event_id="Ev2") == 200
    elsewhere = env.api.say("CGENERAL", "lunch?", user="UALICE")
    assert await react(env, user="UOP", ts=elsewhere, channel="CGENERAL", event_id="Ev3") == 200
    assert await react(env, user="UOP", ts=CARD_TS, event_id="Ev4") == 200
    assert len(await notes(env)) == 1

    # A viewer's pin is refused to them alone, nothing stored.
    before = await stored(env)
    assert await react(env, user="USTRANGER", ts=said, event_id="Ev5") == 200
    [eph] = env.api.calls("chat.postEphemeral")
    assert eph["user"] == "USTRANGER" and eph["text"].startswith("Not added to the timeline: slack:USTRANGER")
    assert await stored(env) == before

    # The same as a command (what Teams and Telegram use too).
    _, answers = await env.command("note INC-1 Rotated the cert, errors dropping")
    assert answers[-1]["text"] == "INC-1: note added to the timeline."
    assert [n.body for n in await notes(env)][-1] == "Rotated the cert, errors dropping"
    await env.sync_cards()
    assert env.api.posts(thread_ts=CARD_TS)[-1]["text"] == ":pushpin: *Note*: Rotated the cert, errors dropping"


async def test_declare_naming_the_commander_from_slack(env: SlackEnv) -> None:
    _, answers = await env.command("declare sev2 Search is down --commander <@UALICE|alice>")
    assert answers[-1]["text"].startswith("Declared INC-1 [sev2] Search is down: ")
    assert answers[-1]["text"].endswith("Commander: alice.")
    inc = (await env.incidents())[0]
    assert inc.commander == "slack:UALICE"
    assert [e.action for e in await env.audit()] == ["incident.declare", "incident.role"]
    await env.sync_cards()
    [card] = env.api.posts(top=True)
    assert "*Commander*\n<@UALICE>" in fields_of(card["blocks"])
    assert env.api.posts(thread_ts=CARD_TS)[-1]["text"].startswith(":bust_in_silhouette: *Role*: alice is now "
                                                                    "commander (assigned by op), was op")
