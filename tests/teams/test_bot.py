"""TeamsBot handler logic on botbuilder's TestAdapter: commands, mentions, both card action kinds, roles.

Runs on SQLite and PostgreSQL (the bot acts through the real IncidentService).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botbuilder.core import TurnContext
from botbuilder.core.adapters import TestAdapter
from botbuilder.schema import Activity, ChannelAccount, ConversationAccount, Entity

from bot.context import Context
from bot.teams.bot import TeamsBot, action_text, actor_of, command_text
from tests.teams.helpers import OPERATOR, TEAMS_ACCESS, VIEWER, action_titles, card_text, plain


def mention(uid: str, text: str) -> Entity:
    """A mention entity as it arrives (unknown fields land in additional_properties)."""
    return Entity().deserialize({"type": "mention", "text": text, "mentioned": {"id": uid, "name": "x"}})


def user(aad: str, name: str = "Olga Operator") -> ChannelAccount:
    return ChannelAccount(id=f"29:{aad}", name=name, aad_object_id=aad)


def msg(text: str | None = None, *, aad: str = OPERATOR, **kw: Any) -> Activity:
    return Activity(type="message", text=text, from_property=user(aad), **kw)


def invoke(verb: str, ref: str, *, aad: str = OPERATOR, **data: Any) -> Activity:
    return Activity(type="invoke", name="adaptiveCard/action", from_property=user(aad), reply_to_id="card-9",
                    value={"action": {"type": "Action.Execute", "verb": verb,
                                      "data": {"tocsin": verb, "incident": ref, **data}}})


async def make_bot(make_ctx: Callable[..., Any], *, cards_follow: bool = False) -> tuple[Context, TestAdapter]:
    ctx = await make_ctx(access=TEAMS_ACCESS)
    bot = TeamsBot(service=ctx.service, seen=ctx.seen, cards_follow=cards_follow)
    return ctx, TestAdapter(bot.on_turn)


def take(adapter: TestAdapter) -> list[Activity]:
    out = list(adapter.activity_buffer)
    adapter.activity_buffer.clear()
    return out


# --- pure translation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, entities, expected", [
    ("<at>Tocsin</at> incident declare sev1 db down", [("bot", "<at>Tocsin</at>")], "incident declare sev1 db down"),
    ("<at>Tocsin (prod)</at> ack 3", [("bot", "<at>Tocsin (prod)</at>")], "ack 3"),
    # a person's mention inside the text stays; only the bot's own is removed
    ("<at>Tocsin</at> update 2 handed to <at>Bob</at>", [("bot", "<at>Tocsin</at>"), ("29:bob", "<at>Bob</at>")],
     "update 2 handed to <at>Bob</at>"),
    ("/incident list", [], "/incident list"),
    ("  help \n", [], "help"),
    (None, [], ""),
])
def test_command_text(text: str | None, entities: list[tuple[str, str]], expected: str) -> None:
    ents = [mention(i, t) for i, t in entities]
    # malformed entities (no `mentioned`) must not break the turn
    ents.append(Entity().deserialize({"type": "mention", "text": "<at>?</at>"}))
    a = Activity(type="message", text=text, recipient=ChannelAccount(id="bot"), entities=ents)
    assert command_text(a) == expected


@pytest.mark.parametrize("data, verb, expected", [
    ({"tocsin": "ack", "incident": "INC-3"}, None, "ack INC-3"),
    ({"tocsin": "monitor", "incident": "INC-3"}, None, "monitor INC-3"),
    ({"tocsin": "resolve", "incident": 3}, None, "resolve 3"),
    ({"incident": "INC-3"}, "resolve", "resolve INC-3"),
    ({"tocsin": "update", "incident": "INC-3", "text": "rolled back\nall good"}, None,
     "update INC-3 rolled back\nall good"),
    ({"tocsin": "declare", "severity": "sev2", "title": "Checkout slow"}, None, "declare sev2 Checkout slow"),
    # data cannot smuggle extra words into the command
    ({"tocsin": "ack", "incident": "INC-3 now"}, None, "ack"),
    ({"tocsin": "ack", "incident": ["INC-3"]}, None, "ack"),
    ({"other": "x"}, None, None),
])
def test_action_text(data: dict[str, Any], verb: str | None, expected: str | None) -> None:
    assert action_text(data, verb) == expected


def test_actor_is_the_aad_object_id() -> None:
    a = Activity(from_property=ChannelAccount(id="29:x", name="Ann", aad_object_id="aad-1"))
    assert (actor_of(a).identity, actor_of(a).source, actor_of(a).display) == ("teams:aad-1", "teams", "Ann")
    # the Emulator sends no AAD id: the channel account id stands in
    assert actor_of(Activity(from_property=ChannelAccount(id="29:y"))).identity == "teams:29:y"


# --- the handler ----------------------------------------------------------------------------------------


async def test_declare_answers_with_the_card(make_ctx: Callable[..., Any]) -> None:
    ctx, adapter = await make_bot(make_ctx)
    await adapter.send(msg("<at>Bot</at> incident declare sev1 Database down",
                           entities=[mention("bot", "<at>Bot</at>")]))
    (reply,) = take(adapter)
    assert plain(reply.text).startswith("Declared INC-1 [sev1] Database down")
    card = reply.attachments[0].content
    assert card["version"] == "1.4" and "Database down" in card_text(card)
    assert action_titles(card) == ["Acknowledge", "Add update", "Monitoring", "Resolve", "Open incident"]
    inc = await ctx.service.get(1)
    assert inc.commander == f"teams:{OPERATOR}" and inc.source == "teams"


async def test_declare_when_cards_follow_the_queue_is_text_only(make_ctx: Callable[..., Any]) -> None:
    _, adapter = await make_bot(make_ctx, cards_follow=True)
    await adapter.send(msg("@Tocsin incident declare sev2 Checkout slow"))
    (reply,) = take(adapter)
    assert plain(reply.text).startswith("Declared INC-1 [sev2]") and not reply.attachments


async def test_usage_and_errors_are_answered(make_ctx: Callable[..., Any]) -> None:
    _, adapter = await make_bot(make_ctx)
    await adapter.send(msg("incident frobnicate"))
    await adapter.send(msg("incident ack"))
    await adapter.send(msg("incident resolve INC-42"))
    await adapter.send(msg("incident help"))
    unknown, usage, missing, help_ = (plain(a.text) for a in take(adapter))
    assert "Unknown command 'frobnicate'" in unknown and "Incident commands:" in unknown
    assert "needs an incident id" in usage and "Usage: /incident ack <INC-n>" in usage
    assert missing == "no incident INC-42"
    assert help_.startswith("Incident commands:")


async def test_replies_thread_on_the_command(make_ctx: Callable[..., Any]) -> None:
    _, adapter = await make_bot(make_ctx)
    await adapter.send(msg("incident list", id="m-77"))
    (reply,) = take(adapter)
    assert reply.reply_to_id == "m-77" and plain(reply.text) == "No open incidents."


async def test_viewer_is_refused_by_the_service(make_ctx: Callable[..., Any]) -> None:
    ctx, adapter = await make_bot(make_ctx)
    await adapter.send(msg("incident declare sev1 nope", aad=VIEWER))
    (reply,) = take(adapter)
    assert plain(reply.text).startswith(f"Not allowed: teams:{VIEWER} has role VIEWER")
    assert await ctx.service.list(state="all") == []


async def test_form_then_submit_declares(make_ctx: Callable[..., Any]) -> None:
    ctx, adapter = await make_bot(make_ctx)
    await adapter.send(msg("/incident"))
    (form,) = take(adapter)
    assert form.attachments[0].content["actions"][0]["data"] == {"tocsin": "declare"}
    await adapter.send(msg(None, value={"tocsin": "declare", "severity": "sev2", "title": "Queue backlog"},
                           reply_to_id="form-1"))
    (reply,) = take(adapter)
    assert plain(reply.text).startswith("Declared INC-1 [sev2] Queue backlog") and reply.reply_to_id == "form-1"
    assert (await ctx.service.get(1)).title == "Queue backlog"


async def test_submit_replaces_the_card(make_ctx: Callable[..., Any]) -> None:
    ctx, adapter = await make_bot(make_ctx)
    await adapter.send(msg("incident declare sev1 db down"))
    take(adapter)
    await adapter.send(msg(None, value={"tocsin": "ack", "incident": "INC-1"}, reply_to_id="card-1"))
    assert take(adapter) == []  # the card is the answer
    (updated,) = adapter.updated_activities
    assert updated.id == "card-1"
    card = updated.attachments[0].content
    assert "Acknowledged by" in card_text(card) and "Acknowledge" not in action_titles(card)
    assert (await ctx.service.get(1)).acknowledged_by == f"teams:{OPERATOR}"


async def test_execute_returns_the_refreshed_card(make_ctx: Callable[..., Any]) -> None:
    ctx, adapter = await make_bot(make_ctx)
    await adapter.send(msg("incident declare sev1 db down"))
    take(adapter)
    await adapter.send(invoke("monitor", "INC-1"))
    (resp,) = take(adapter)
    assert resp.type == "invokeResponse" and resp.value.status == 200
    body = resp.value.body
    assert body["type"] == "application/vnd.microsoft.card.adaptive" and body["statusCode"] == 200
    assert "MONITORING" in card_text(body["value"]) and "Monitoring" not in action_titles(body["value"])
    await adapter.send(invoke("update", "INC-1", text="cache warmed"))
    take(adapter)
    detail = await ctx.service.detail(1)
    assert detail.incident.state == "monitoring" and detail.thread[-1].body == "cache warmed"


async def test_execute_refusal_is_said_in_the_thread_and_card_is_unchanged(make_ctx: Callable[..., Any]) -> None:
    ctx, adapter = await make_bot(make_ctx)
    await adapter.send(msg("incident declare sev1 db down"))
    take(adapter)
    await adapter.send(invoke("resolve", "INC-1", aad=VIEWER))
    said, resp = take(adapter)
    assert plain(said.text).startswith(f"Not allowed: teams:{VIEWER} has role VIEWER")
    assert said.reply_to_id == "card-9"  # in the card's thread
    assert "OPEN" in card_text(resp.value.body["value"])
    assert (await ctx.service.get(1)).state == "open"


async def test_execute_for_unknown_incident_is_an_error_response(make_ctx: Callable[..., Any]) -> None:
    _, adapter = await make_bot(make_ctx)
    await adapter.send(invoke("ack", "INC-404"))
    said, resp = take(adapter)
    assert plain(said.text) == "no incident INC-404"
    assert resp.value.body["type"] == "application/vnd.microsoft.error" and resp.value.status == 200
    assert resp.value.body["statusCode"] == 404


async def test_a_redelivered_activity_acts_once(make_ctx: Callable[..., Any]) -> None:
    ctx, adapter = await make_bot(make_ctx)
    await adapter.send(msg("incident declare sev3 once", id="same-1"))
    await adapter.send(msg("incident declare sev3 once", id="same-1"))
    assert len(take(adapter)) == 1
    assert len(await ctx.service.list(state="all")) == 1


async def test_members_added_introduces_the_bot(make_ctx: Callable[..., Any]) -> None:
    _, adapter = await make_bot(make_ctx)
    bot = adapter.template.recipient
    await adapter.send(Activity(type="conversationUpdate", members_added=[ChannelAccount(id="someone")]))
    assert take(adapter) == []
    await adapter.send(Activity(type="conversationUpdate", members_added=[bot],
                                conversation=ConversationAccount(id="19:new@thread.tacv2")))
    (hello,) = take(adapter)
    assert "incident help" in plain(hello.text) and "19:new@thread.tacv2" in plain(hello.text)


def test_turn_context_mention_helper_agrees() -> None:
    """botbuilder's own remover gives the same command text for the common case."""
    a = Activity(type="message", text="<at>Tocsin</at> incident ack 3", recipient=ChannelAccount(id="bot"),
                 entities=[mention("bot", "<at>Tocsin</at>")])
    assert command_text(a) == TurnContext.remove_recipient_mention(a).strip()
