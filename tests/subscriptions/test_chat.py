"""`/incident subscribe|unsubscribe|subscriptions` through the real Slack, Telegram and Teams adapters against
their stand-ins, the same person behind each platform's id (the one identity -> contact mapping); a follower's
news reaches their Telegram DM through the real telegram_dm sender; and the grammar, on its own."""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import pytest
from botbuilder.core.adapters import TestAdapter
from sqlalchemy import select

from bot.commands import Command, UsageError, parse
from bot.teams.bot import TeamsBot
from core.models import Subscription
from core.rbac import Actor
from tests.slack.conftest import make_slack_env, slack_api  # noqa: F401  (fixtures)
from tests.teams.helpers import teams_msg
from tests.telegram.botapi import command
from tests.telegram.conftest import Harness, api, harness  # noqa: F401  (fixtures)
from tests.twoway.helpers import deliveries, drive_dm_pages

OP = Actor("cli:op", "cli")
CONTACTS = [
    {"name": "alice", "email": "alice@example.com", "tenants": ["acme"],
     "chat": {"slack": "UALICE", "telegram": "4242", "teams": "aad-alice"}},
    {"name": "bob", "email": "bob@example.com"},
    {"name": "carol", "email": "carol@example.com", "chat": {"slack": "UCAROL", "telegram": "5151",
                                                            "teams": "aad-carol"},
     "preferences": {"default": ["email"]}},
]
DM_NEWS = [dict(c, preferences={"default": ["email"], "updates": ["telegram_dm"]}) if c["name"] == "carol" else c
           for c in CONTACTS]
"""carol takes her news in a Telegram DM (needs Telegram on)."""


@pytest.mark.parametrize("text, expected", [
    ("/incident subscribe INC-7", Command("subscribe", target="INC-7")),
    ("subscribe 7", Command("subscribe", target="INC-7")),
    ("follow high TENANT:acme", Command("subscribe", target="sev2 tenant:acme")),
    ("subscribe source:alertmanager sev1", Command("subscribe", target="sev1 source:alertmanager")),
    ("unfollow tenant:acme", Command("unsubscribe", target="tenant:acme")),
    ("/incident subscriptions", Command("subscriptions")),
])
def test_grammar(text: str, expected: Command) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize("text, problem", [
    ("subscribe", "Say what to follow"),
    ("subscribe sev5", "'sev5' is not something to follow"),
    ("subscribe team:db", "'team:db' is not something to follow"),
    ("subscribe tenant:a tenant:b", "Two tenant terms"),
    ("subscribe INC-3 sev1", "follow one incident on its own"),
    ("unsubscribe", "Say what to follow"),
    ("subscriptions all", "takes nothing after it"),
])
def test_grammar_errors_show_usage(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse(text)
    assert problem in exc.value.text and "Usage: /incident " in exc.value.text


async def followed(ctx: Any) -> list[tuple[str, str, str]]:
    async with ctx.db.sessions() as s:
        return [(r.contact, r.key, r.created_by)
                for r in (await s.execute(select(Subscription).order_by(Subscription.id))).scalars()]


async def test_slack(make_slack_env: Callable[..., Any]) -> None:  # noqa: F811
    env = await make_slack_env(contacts=CONTACTS)
    ctx = env.ctx
    await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev2")
    _, [ok] = await env.command("subscribe INC-1", user="UALICE")
    assert ok["response_type"] == "ephemeral" and ok["text"].startswith("alice now follows INC-1")
    _, [scoped] = await env.command("subscribe tenant:acme sev1", user="UALICE")
    assert scoped["text"].startswith("alice now follows sev1 tenant:acme")
    _, [refused] = await env.command("subscribe tenant:acme", user="UCAROL")
    assert refused["response_type"] == "ephemeral"
    assert refused["text"].startswith("Not allowed: slack:UCAROL (contact carol) may not follow tenant 'acme'")
    _, [bad] = await env.command("subscribe sev7", user="UCAROL")
    assert "'sev7' is not something to follow" in bad["text"] and "Usage: /incident subscribe" in bad["text"]
    _, [unknown] = await env.command("subscribe INC-99", user="UCAROL")
    assert unknown["text"].startswith("no incident INC-99")
    _, [stranger] = await env.command("subscribe INC-1", user="UNOBODY")
    assert stranger["text"].startswith("slack:UNOBODY is not linked to a contact")
    _, [listing] = await env.command("subscriptions", user="UALICE")
    assert "alice follows (2)" in listing["text"] and "sev1 tenant:acme" in listing["text"]
    _, [gone] = await env.command("unsubscribe INC-1", user="UALICE")
    assert gone["text"] == "alice no longer follows INC-1."
    _, [again] = await env.command("unsubscribe INC-1", user="UALICE")
    assert again["text"].startswith("alice does not follow INC-1 (see /incident subscriptions)")
    assert await followed(ctx) == [("alice", "sev1 tenant:acme", "slack:UALICE")]


async def test_telegram_and_news_to_the_followers_dm(harness: Callable[..., Any]) -> None:  # noqa: F811
    h: Harness = await harness({"worker": {"enabled": False}, "contacts": DM_NEWS})
    ctx = h.ctx
    await ctx.service.declare(actor=OP, title="Search slow", severity="sev3")
    await h.post(command(1, "/incident subscribe INC-1", user_id=5151))
    await h.post(command(2, "/incident subscribe tenant:acme", user_id=5151))
    await h.post(command(3, "/incident subscriptions", user_id=5151))
    await h.post(command(4, "/incident unsubscribe sev3", user_id=5151))
    ok, refused, listing, missing = [c.params["text"] for c in await h.api.wait_calls("sendMessage", 4)]
    assert ok.startswith("carol now follows INC-1")
    assert refused.startswith("Not allowed: telegram:5151 (contact carol) may not follow tenant 'acme'")
    assert "carol follows (1)" in listing and "INC-1" in listing
    assert missing.startswith("carol does not follow sev3")
    # alice updates from Telegram; carol, who follows, gets it in her Telegram DM as news.
    await h.post(command(5, "/incident update INC-1 index rebuilt, latency back to normal", user_id=4242))
    await h.api.wait_calls("sendMessage", 5)
    results = await drive_dm_pages(ctx, h.rt.chat_senders["telegram_dm"], "telegram_dm")
    assert [r.outcome for r in results] == ["delivered"]
    [dm] = await deliveries(ctx, channel="telegram_dm")
    assert (dm.recipient, dm.purpose, dm.reason) == ("carol", "subscription", "follows INC-1")
    sent = [c for c in h.api.calls("sendMessage") if str(c.params["chat_id"]) == "5151"]
    assert sent and "index rebuilt" in str(sent[-1].params["text"])
    assert "tocsin:ack:" not in str(sent[-1].params.get("reply_markup", ""))  # news: nothing to ack


async def test_teams(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(worker={"enabled": False}, contacts=CONTACTS)
    await ctx.service.declare(actor=OP, title="Login errors", severity="sev1")
    adapter = TestAdapter(TeamsBot(service=ctx.service, seen=ctx.seen, cards_follow=False).on_turn)
    await adapter.send(teams_msg("<at>Tocsin</at> incident follow INC-1", "aad-carol"))
    await adapter.send(teams_msg("incident subscribe critical", "aad-carol"))
    await adapter.send(teams_msg("incident subscribe tenant:acme", "aad-alice"))
    await adapter.send(teams_msg("incident subscribe tenant:acme", "aad-carol"))
    await adapter.send(teams_msg("incident subscriptions", "aad-carol"))
    follow, sev, tenant, refused, listing = (html.unescape(a.text) for a in adapter.activity_buffer)
    assert follow.startswith("carol now follows INC-1")
    assert sev.startswith("carol now follows sev1: every new incident matching it")
    assert tenant.startswith("alice now follows tenant:acme")
    assert refused.startswith("Not allowed: teams:aad-carol (contact carol) may not follow tenant 'acme'")
    assert "carol follows (2)" in listing
    assert await followed(ctx) == [("carol", "INC-1", "teams:aad-carol"), ("carol", "sev1", "teams:aad-carol"),
                                   ("alice", "tenant:acme", "teams:aad-alice")]
