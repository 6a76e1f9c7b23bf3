"""slack_dm pages: the incident card as a DM to the contact's Slack user id (chat.postMessage channel=U...),
Acknowledge pressed in that DM acts as the contact once and stops paging, later changes edit the DM and
reply in its thread; a person the bot cannot DM is a permanent failure naming why, and the next preferred
channel pages them. SQLite and PostgreSQL."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from core.delivery.fallback import page_next_channel
from core.delivery.message import Notification
from core.delivery.queue import Claimed
from core.models import Delivery
from tests.slack.standin import INCIDENT_CHANNEL, action_body
from tests.twoway.helpers import OP, PUBLIC, audit, deliveries, paging_config

DM_PREFS = {"sev1": ["slack_dm", "email"], "default": ["email"]}


def dm_contacts() -> list[dict[str, Any]]:
    return [{"name": "alice", "email": "alice@example.com", "chat": {"slack": "UALICE"}, "preferences": DM_PREFS},
            {"name": "bob", "email": "bob@example.com", "phone": "+15550100002", "chat": {"slack": "UBOB"},
             "preferences": {"sev1": ["slack_dm", "sms"], "default": ["email"]}},
            {"name": "carol", "email": "carol@example.com"}]


async def test_dm_page_ack_from_the_dm_and_later_changes_in_its_thread(make_slack_env: Callable[..., Any]) -> None:
    env = await make_slack_env(**paging_config(contacts=dm_contacts()))
    out = await env.ctx.service.declare(actor=OP, title="DB down", severity="sev1")
    iid = out.incident.id
    await env.ctx.service.escalate(iid, actor=OP)
    assert [r.outcome for r in await env.sync_cards("slack_dm")] == ["delivered", "delivered"]
    dm = next(c for c in env.api.posts(top=True) if c["channel"] == "UALICE")
    assert f"incident.ack:{iid}" in str(dm["blocks"]) and f"/incidents/{iid}" in str(dm["blocks"])

    # Alice presses Acknowledge in the DM (the channel of a DM is the user's D... id; here the stand-in's).
    n = env.next_id()
    status, _ = await env.post(action_body(f"incident.ack:{iid}", user="UALICE", channel="UALICE",
                                           action_ts=f"1700000200.{n:06d}", trigger=f"trig-dm-{n}",
                                           response_url=env.api.response_url(f"dm-{n}")))
    assert status == 200
    inc = await env.ctx.service.get(iid)
    assert inc.acknowledged_by == "slack:UALICE"
    [entry] = await audit(env.ctx, "incident.ack")
    assert entry.actor == "slack:UALICE"
    assert [d.status for d in await deliveries(env.ctx, purpose="escalation")] == ["cancelled"]

    # The ACK notice goes to alice's DM: the DM card is edited and the note lands in its thread.
    await env.sync_cards("slack_dm")
    updates = [c for c in env.api.calls("chat.update") if c["channel"] == "UALICE"]
    assert updates and "Acknowledged" in str(updates[-1])
    threaded = [c for c in env.api.posts() if c["channel"] == "UALICE" and c.get("thread_ts")]
    assert threaded and threaded[-1]["thread_ts"] == updates[-1]["ts"]

    # A second press (double click, or pressed again later) changes nothing.
    n = env.next_id()
    await env.post(action_body(f"incident.ack:{iid}", user="UALICE", channel="UALICE",
                               action_ts=f"1700000300.{n:06d}", trigger=f"trig-dm-{n}",
                               response_url=env.api.response_url(f"dm-{n}")))
    assert len(await audit(env.ctx, "incident.ack")) == 1


def dm_buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The buttons of a card as posted to chat.postMessage / chat.update (blocks arrive as JSON)."""
    blocks = message["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_dm_page_has_acknowledge_and_open_incident_buttons(make_slack_env: Callable[..., Any]) -> None:
    env = await make_slack_env(**paging_config(contacts=dm_contacts()))
    out = await env.ctx.service.declare(actor=OP, title="DB down", severity="sev1")
    iid = out.incident.id
    await env.sync_cards("slack_dm")
    dm = next(c for c in env.api.posts(top=True) if c["channel"] == "UALICE")
    buttons = dm_buttons(dm)
    assert buttons[0]["text"]["text"] == "Acknowledge" and buttons[0]["action_id"] == f"incident.ack:{iid}"
    assert buttons[-1] == {"type": "button", "action_id": f"incident.open:{iid}", "url": f"{PUBLIC}/incidents/{iid}",
                           "text": {"type": "plain_text", "text": "Open incident", "emoji": True}}
    assert "Open in Tocsin" not in json.dumps(dm["blocks"])  # the link is a button, not a context line


def sent(env: Any) -> list[str]:
    """What the bot asked of Slack, bolt's own auth.test (run once, before the first request) aside."""
    return [r.path for r in env.api.requests if r.path != "/api/auth.test"]


async def test_pressing_open_incident_answers_200_and_changes_nothing(make_slack_env: Callable[..., Any],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Slack sends block_actions for a URL button too: the adapter acks it (200, empty body) and does
    nothing else: no command, no answer to the presser, no audit entry, no warning or error logged."""
    env = await make_slack_env(**paging_config(contacts=dm_contacts()))
    out = await env.ctx.service.declare(actor=OP, title="DB down", severity="sev1")
    iid = out.incident.id
    await env.sync_cards("slack_dm")
    before = (sent(env), await env.audit_count(),
              [(d.id, d.status) for d in await deliveries(env.ctx)])
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # only what the presses log
    for user, channel in (("UALICE", "UALICE"), ("USTRANGER", INCIDENT_CHANNEL)):  # from the DM and the channel card
        n = env.next_id()
        status, text = await env.post(action_body(f"incident.open:{iid}", user=user, channel=channel,
                                                  action_ts=f"1700000500.{n:06d}", trigger=f"trig-open-{n}",
                                                  response_url=env.api.response_url(f"open-{n}")))
        assert (status, text) == (200, "")
    assert (sent(env), await env.audit_count(),
            [(d.id, d.status) for d in await deliveries(env.ctx)]) == before
    inc = await env.ctx.service.get(iid)
    assert (inc.state, inc.acknowledged_at) == ("open", None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    assert not any(r.message == "slack.action.unknown" for r in caplog.records)


async def test_a_stranger_pressing_a_dm_button_changes_nothing(make_slack_env: Callable[..., Any]) -> None:
    env = await make_slack_env(**paging_config(contacts=dm_contacts()))
    out = await env.ctx.service.declare(actor=OP, title="DB down", severity="sev1")
    await env.sync_cards("slack_dm")
    n = env.next_id()
    await env.post(action_body(f"incident.ack:{out.incident.id}", user="USTRANGER", channel="UALICE",
                               action_ts=f"1700000400.{n:06d}", trigger=f"trig-x-{n}",
                               response_url=env.api.response_url(f"x-{n}")))
    assert (await env.ctx.service.get(out.incident.id)).acknowledged_at is None
    assert await audit(env.ctx, "incident.ack") == []


async def test_cannot_dm_is_permanent_with_the_reason(make_slack_env: Callable[..., Any]) -> None:
    env = await make_slack_env(**paging_config(contacts=dm_contacts()))

    def post(rec: Any) -> Any:
        from tests.slack.standin import args
        if args(rec)["channel"] == "UBOB":
            return 200, {"ok": False, "error": "cannot_dm_bot"}
        return env.api._post(rec)

    env.api._handlers.insert(0, ("/api/chat.postMessage", post))
    await env.ctx.service.declare(actor=OP, title="DB down", severity="sev1")
    results = {r.summary.split(":")[0]: r for r in await env.sync_cards("slack_dm")}
    bad = results["never opened a direct message with the bot"]
    assert bad.outcome == "permanent" and "cannot_dm_bot" in bad.summary
    [row] = await deliveries(env.ctx, channel="slack_dm", recipient="bob")
    assert row.status == "failed" and "never opened a direct message" in (row.last_error or "")


async def test_the_next_preferred_channel_pages_after_a_dm_fails(make_ctx: Callable[..., Any]) -> None:
    """page_next_channel, as the worker calls it when it records the failure: bob's next channel (sms)
    gets the page once; a channel already paged for the message is not paged twice."""
    ctx = await make_ctx(**paging_config(contacts=dm_contacts()),
                         slack={"enabled": True, "bot_token": "xoxb-test", "signing_secret": "test-secret"})
    out = await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
    [dm] = await deliveries(ctx, channel="slack_dm", recipient="bob")
    async with ctx.db.transaction() as s:  # as if routing had paged only the DM
        for d in (await s.execute(select(Delivery).where(Delivery.recipient == "bob",
                                                         Delivery.channel == "sms"))).scalars():
            await s.delete(d)
    claimed = Claimed(id=dm.id, incident_id=dm.incident_id, message_id=dm.message_id, recipient="bob",
                      channel="slack_dm", address="UBOB", purpose="page",
                      notification=Notification.from_json(dm.notification_json), idempotency_key=dm.idempotency_key,
                      attempt=1, max_attempts=4, created_at=dm.created_at)
    for _ in range(2):
        async with ctx.db.transaction() as s:
            assert await page_next_channel(s, ctx.cfg, claimed, now=ctx.clock.now()) == "sms"
    [sms] = await deliveries(ctx, channel="sms", recipient="bob")
    assert (sms.address, sms.status, sms.message_id) == ("+15550100002", "queued", out.message.id)


def test_dm_channels_need_their_platform_at_load() -> None:
    import pytest

    from core.errors import ConfigError
    from tests.conftest import make_config

    with pytest.raises(ConfigError) as err:
        make_config(contacts=[{"name": "alice", "email": "a@example.com",
                               "preferences": {"sev1": ["slack_dm", "teams_dm"], "default": ["email"]}}],
                    contact_lists=[], routing={"default_targets": {"contacts": ["alice"]}})
    text = str(err.value)
    assert "contacts[0].preferences.sev1[0]: slack_dm needs slack.enabled: true" in text
    assert "contacts[0].preferences.sev1[1]: teams_dm needs teams.enabled: true" in text
    assert "test-config.yaml:" in text
