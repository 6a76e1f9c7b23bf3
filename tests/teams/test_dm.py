"""teams_dm pages over real HTTP: the bot opens the 1:1 chat with the contact's Teams user id
(POST /v3/conversations on the loopback Bot Connector) and posts the incident card there; Acknowledge
pressed in that chat (Action.Execute or Action.Submit) acts as the contact once and stops escalation; later
changes edit that card and answer under it; a person the connector refuses a chat with fails permanently
naming why, and the next preferred channel pages them. SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from bot.context import Context
from core.delivery.fallback import page_next_channel
from core.delivery.message import DeliveryResult, Notification
from core.delivery.queue import Claimed
from core.models import Delivery
from tests.teams.helpers import (
    action_titles,
    activity,
    bot_connector,
    card_of,
    card_text,
    execute,
    plain,
    submit,
    teams_config,
)
from tests.teams.test_http import post, teams_server
from tests.twoway.helpers import OP, PUBLIC, audit, deliveries, drive_dm_pages, paging_config

ALICE, BOB = "aad-alice", "aad-bob"
ALICE_DM = f"a:dm-{ALICE}"


def dm_config(service_url: str) -> dict[str, Any]:
    contacts = [{"name": "alice", "email": "alice@example.com", "chat": {"teams": ALICE},
                 "preferences": {"sev1": ["teams_dm", "email"], "default": ["email"]}},
                {"name": "bob", "email": "bob@example.com", "phone": "+15550100002", "chat": {"teams": BOB},
                 "preferences": {"sev1": ["teams_dm", "sms"], "default": ["email"]}},
                {"name": "carol", "email": "carol@example.com"}]
    # alice acts as a paged contact, not through a role
    return {**paging_config(contacts=contacts), **teams_config(service_url, tenant_id="t-1"),
            "access": {"cli:op": "operator"}}


def in_dm(body: dict[str, Any], user: str = ALICE) -> dict[str, Any]:
    """The activity as Teams sends it from a personal chat with the bot."""
    body["conversation"] = {"id": f"a:dm-{user}", "conversationType": "personal", "tenantId": "t-1"}
    body["channelData"] = {"tenant": {"id": "t-1"}}
    return body


async def sync_dms(ctx: Context, sender: Any) -> list[DeliveryResult]:
    return await drive_dm_pages(ctx, sender, "teams_dm")


async def test_teams_dm_page_ack_in_the_chat_and_later_changes(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        bc.refused[BOB] = 403  # the app is not installed for bob
        ctx = await make_ctx(**dm_config(bc.url))
        async with teams_server(ctx) as (url, rt):
            sender = rt.chat_senders["teams_dm"]
            out = await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
            iid = out.incident.id
            await ctx.service.escalate(iid, actor=OP)
            assert sorted(r.outcome for r in await sync_dms(ctx, sender)) == ["delivered", "permanent"]

            created = [r.json for r in bc.created()]
            assert {c["members"][0]["id"] for c in created} == {ALICE, BOB}
            # no teams.app_id in these tests: the bot account is 28:tocsin
            assert all(c["isGroup"] is False and c["channelData"]["tenant"]["id"] == "t-1"
                       and c["bot"]["id"] == "28:tocsin" for c in created)
            (dm,) = bc.sends(ALICE_DM)
            assert dm.path == f"/v3/conversations/{ALICE_DM}/activities" and not dm.json.get("replyToId")
            card = card_of(dm.json)
            assert "DB down" in card_text(card) and action_titles(card)[:1] == ["Acknowledge"]
            # Open incident: a link to the console page (server.public_url), last, as on Slack and Telegram
            assert card["actions"][-1] == {"type": "Action.OpenUrl", "title": "Open incident",
                                           "url": f"{PUBLIC}/incidents/{iid}"}
            [bob] = await deliveries(ctx, channel="teams_dm", recipient="bob")
            assert bob.status == "failed" and "never opened a direct message with the bot" in (bob.last_error or "")
            assert "cannot open a 1:1 chat" in (bob.last_error or "") and "403" in (bob.last_error or "")
            assert bc.sends(f"a:dm-{BOB}") == []

            # Alice presses Acknowledge on the card in her chat with the bot (Action.Execute).
            status, body = await post(url, in_dm(execute("ack", f"INC-{iid}", card_id="srv-1", user=ALICE,
                                                         service_url=bc.url)))
            assert status == 200 and "Acknowledged by" in card_text(body["value"]), body
            inc = await ctx.service.get(iid)
            assert inc.acknowledged_by == f"teams:{ALICE}"
            [entry] = await audit(ctx, "incident.ack")
            assert entry.actor == f"teams:{ALICE}"
            assert [d.status for d in await deliveries(ctx, purpose="escalation")] == ["cancelled"]

            # Pressed again with Action.Submit (an older card): changes nothing, answered in the chat.
            status, _ = await post(url, in_dm(submit({"tocsin": "ack", "incident": f"INC-{iid}"}, card_id="srv-1",
                                                     user=ALICE, service_url=bc.url)))
            assert status == 200
            assert len(await audit(ctx, "incident.ack")) == 1

            # The ACK notice: the DM card is edited in place and the note answers under it.
            await sync_dms(ctx, sender)
            edits = bc.updates(ALICE_DM)
            assert edits and edits[-1].path == f"/v3/conversations/{ALICE_DM}/activities/srv-1"
            assert "Acknowledged by" in card_text(card_of(edits[-1].json))
            notes = [r for r in bc.replies(ALICE_DM) if r.path.endswith("/activities/srv-1")
                     and plain(r.json.get("text")).startswith("Acknowledged")]
            assert notes and notes[-1].json["replyToId"] == "srv-1"

            await ctx.service.resolve(f"INC-{iid}", actor=OP, text="failed over")
            await sync_dms(ctx, sender)
            assert "RESOLVED" in card_text(card_of(bc.updates(ALICE_DM)[-1].json))
            assert plain(bc.replies(ALICE_DM)[-1].json["text"]) == "Resolved: failed over"
            # one chat opened and one card posted per person and incident, ever
            assert [c["members"][0]["id"] for c in created].count(ALICE) == 1
            assert len([r for r in bc.created() if r.json["members"][0]["id"] == ALICE]) == 1
            assert len(bc.sends(ALICE_DM)) == 1


async def test_a_stranger_pressing_the_dm_card_changes_nothing(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        ctx = await make_ctx(**dm_config(bc.url))
        async with teams_server(ctx) as (url, rt):
            out = await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
            await sync_dms(ctx, rt.chat_senders["teams_dm"])
            status, body = await post(url, in_dm(execute("ack", f"INC-{out.incident.id}", card_id="srv-1",
                                                         user="aad-stranger", service_url=bc.url), ALICE))
            assert status == 200 and "Acknowledged by" not in card_text(body["value"])
            assert (await ctx.service.get(out.incident.id)).acknowledged_at is None
            assert await audit(ctx, "incident.ack") == []


async def test_unreachable_teams_user_pages_the_next_preferred_channel(make_ctx: Callable[..., Any]) -> None:
    """A 404 from createConversation (no such user in the tenant) is permanent with the reason; the worker's
    fallback (core/delivery/fallback.py) then queues bob's next channel (sms) once."""
    async with bot_connector() as bc:
        bc.refused[BOB] = 404
        ctx = await make_ctx(**dm_config(bc.url))
        async with teams_server(ctx) as (_url, rt):
            out = await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
            async with ctx.db.transaction() as s:  # as if routing had paged only the DM
                for d in (await s.execute(select(Delivery).where(Delivery.recipient == "bob",
                                                                 Delivery.channel == "sms"))).scalars():
                    await s.delete(d)
            [dm] = await deliveries(ctx, channel="teams_dm", recipient="bob")
            claimed = Claimed(id=dm.id, incident_id=dm.incident_id, message_id=dm.message_id, recipient="bob",
                              channel="teams_dm", address=BOB, purpose="page",
                              notification=Notification.from_json(dm.notification_json), idempotency_key=dm.idempotency_key,
                              attempt=1, max_attempts=4, created_at=dm.created_at)
            result = await rt.chat_senders["teams_dm"].send(claimed.envelope())
            assert (result.outcome, result.status_code) == ("permanent", 404)
            assert result.summary.startswith("never opened a direct message with the bot: missing conversation "
                                             "reference: cannot open a 1:1 chat")
            for _ in range(2):
                async with ctx.db.transaction() as s:
                    assert await page_next_channel(s, ctx.cfg, claimed, now=ctx.clock.now()) == "sms"
            [sms] = await deliveries(ctx, channel="sms", recipient="bob")
            assert (sms.address, sms.status, sms.message_id) == ("+15550100002", "queued", out.message.id)


async def test_connector_trouble_opening_the_chat_is_retried(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        bc.refused[ALICE] = 503
        ctx = await make_ctx(**dm_config(bc.url))
        async with teams_server(ctx) as (_url, rt):
            await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
            results = {r.outcome for r in await sync_dms(ctx, rt.chat_senders["teams_dm"])}
            assert results == {"retry", "delivered"}  # alice's 503 is retried, bob's chat opened
            del bc.refused[ALICE]
            assert [r.outcome for r in await sync_dms(ctx, rt.chat_senders["teams_dm"])] == ["delivered"]
            assert len(bc.sends(ALICE_DM)) == 1


def test_teams_dm_needs_teams_enabled_at_load() -> None:
    import pytest

    from core.errors import ConfigError
    from tests.conftest import make_config

    contacts = [{"name": "alice", "email": "a@example.com", "chat": {"teams": ALICE},
                 "preferences": {"sev1": ["teams_dm"], "default": ["email"]}}]
    with pytest.raises(ConfigError) as err:
        make_config(contacts=contacts, contact_lists=[], routing={"default_targets": {"contacts": ["alice"], "lists": []}})
    assert "contacts[0].preferences.sev1[0]: teams_dm needs teams.enabled: true" in str(err.value)
    cfg = make_config(contacts=contacts, contact_lists=[], routing={"default_targets": {"contacts": ["alice"], "lists": []}},
                      teams={"enabled": True, "allow_unauthenticated": True})
    assert cfg.contacts[0].preferences.sev1 == ["teams_dm"]


def cards_sent(bc: Any, conversation: str) -> list[Any]:
    return [r for r in bc.sends(conversation) if r.json.get("attachments")]


def personal_install(user: str, service_url: str, *, conversation: str, kind: str = "conversationUpdate",
                     **fields: Any) -> dict[str, Any]:
    """Teams installing the app in a person's personal scope: the bot added to the 1:1 chat."""
    body = activity(kind, service_url=service_url, user=user, **fields)
    body["conversation"] = {"id": conversation, "conversationType": "personal", "tenantId": "t-1"}
    body["channelData"] = {"tenant": {"id": "t-1"}}
    return body


async def test_a_personal_install_stores_the_reference_and_dm_pages_use_it(make_ctx: Callable[..., Any]) -> None:
    """conversationUpdate (bot added to alice's personal chat) stores her reference; the page goes there
    without createConversation; uninstalling forgets it, and the next page opens a chat again."""
    async with bot_connector() as bc:
        ctx = await make_ctx(**dm_config(bc.url))
        async with teams_server(ctx) as (url, rt):
            edge = rt.components[0].edge
            status, _ = await post(url, personal_install(ALICE, bc.url, conversation="a:installed-alice",
                                                         membersAdded=[{"id": "28:tocsin-bot"}]))
            assert status in (200, 201)
            stored = await edge.conversations.get("teams", ALICE)
            assert stored is not None and stored["conversation"]["id"] == "a:installed-alice"
            assert stored["serviceUrl"] == bc.url and stored["user"]["aadObjectId"] == ALICE
            # a channel conversationUpdate is no personal chat: nothing stored for its sender
            await post(url, activity("conversationUpdate", service_url=bc.url, user=BOB,
                                     membersAdded=[{"id": "28:tocsin-bot"}]))
            assert await edge.conversations.get("teams", BOB) is None

            out = await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
            await sync_dms(ctx, rt.chat_senders["teams_dm"])
            assert [r.json["members"][0]["id"] for r in bc.created()] == [BOB]  # only bob needed a new chat
            (dm,) = cards_sent(bc, "a:installed-alice")  # (the other send is the bot's hello)
            assert "DB down" in card_text(card_of(dm.json))
            assert (await edge.conversations.get("teams", BOB))["conversation"]["id"] == f"a:dm-{BOB}"

            # alice removes the app: her reference goes; the next page asks the connector for a chat
            status, _ = await post(url, personal_install(ALICE, bc.url, conversation="a:installed-alice",
                                                         kind="installationUpdate", action="remove"))
            assert status in (200, 201) and await edge.conversations.get("teams", ALICE) is None
            await ctx.service.declare(actor=OP, title="Cache down", severity="sev1")
            await sync_dms(ctx, rt.chat_senders["teams_dm"])
            assert [r.json["members"][0]["id"] for r in bc.created()] == [BOB, ALICE]
            assert len(cards_sent(bc, ALICE_DM)) == 1 and len(cards_sent(bc, "a:installed-alice")) == 1
            assert out.incident is not None


async def test_a_refused_stored_reference_falls_back_and_a_missing_one_fails_naming_it(
        make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        bc.refused[BOB] = 403
        bc.peer.on("/v3/conversations/a:gone-alice/activities", lambda _r: (403, {"error": {
            "code": "BotNotInConversationRoster", "message": "The bot is not part of the conversation roster."}}))
        bc.peer._handlers.insert(0, bc.peer._handlers.pop())  # ahead of the generic connector answer
        ctx = await make_ctx(**dm_config(bc.url))
        async with teams_server(ctx) as (url, rt):
            edge = rt.components[0].edge
            await post(url, personal_install(ALICE, bc.url, conversation="a:gone-alice", kind="installationUpdate",
                                             action="add"))
            assert (await edge.conversations.get("teams", ALICE))["conversation"]["id"] == "a:gone-alice"
            await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
            results = sorted(r.outcome for r in await sync_dms(ctx, rt.chat_senders["teams_dm"]))
            assert results == ["delivered", "permanent"]
            assert len(bc.sends("a:gone-alice")) == 1 and len(bc.sends(ALICE_DM)) == 1  # fell back, delivered
            assert (await edge.conversations.get("teams", ALICE))["conversation"]["id"] == ALICE_DM
            [bob] = await deliveries(ctx, channel="teams_dm", recipient="bob")
            assert bob.status == "failed" and "missing conversation reference" in (bob.last_error or "")
            assert await edge.conversations.get("teams", BOB) is None
