"""Subscriptions in the core, on SQLite and PostgreSQL: scope per role and tenant, bad input stores nothing,
audit, and the fan-out: followers get news (never pages, no ack link) on their news channels, once even when
routing also reaches them, never about their own action, and a news delivery grants no acknowledge right."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from bot.commands import parse
from bot.context import Context
from bot.dispatch import execute, run_text
from core.errors import Forbidden, InvalidInput, InvalidTransition, NotFound
from core.models import AuditEntry, Delivery, Subscription
from core.rbac import Actor
from core.subscriptions import Subscriptions
from tests.conftest import make_config

CONTACTS = [
    {"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
     "chat": {"slack": "UALICE", "telegram": "4242"}, "tenants": ["acme"],
     "preferences": {"sev1": ["sms", "email"], "default": ["email"]}},
    {"name": "bob", "email": "bob@example.com", "phone": "+15550100002", "preferences": {"default": ["email"]}},
    {"name": "carol", "email": "carol@example.com", "phone": "+15550100003", "tenants": ["beta"],
     "preferences": {"default": ["sms", "email"]}},
    {"name": "root", "email": "root@example.com", "chat": {"cli": "admin"}},
    {"name": "mia", "email": "mia@example.com", "chat": {"cli": "manager"}},
]
ACCESS = {"cli:alice": "operator", "cli:op": "operator"}
OP, ALICE, CAROL = Actor("cli:op", "cli"), Actor("cli:alice", "cli"), Actor("cli:carol", "cli")


@pytest.fixture
async def ctx(make_ctx: Any) -> Context:
    return await make_ctx(worker={"enabled": False}, contacts=CONTACTS, access=ACCESS)


def subs(ctx: Context) -> Subscriptions:
    return Subscriptions(ctx.db, ctx.holder, audit=ctx.audit, clock=ctx.clock)


async def rows(ctx: Context) -> list[tuple[str, str]]:
    async with ctx.db.sessions() as s:
        return [(r.contact, r.key) for r in (await s.execute(select(Subscription).order_by(Subscription.id))).scalars()]


async def audit_count(ctx: Context) -> int:
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


async def sent(ctx: Context, message_id: int) -> list[tuple[str, str, str]]:
    async with ctx.db.sessions() as s:
        q = select(Delivery).where(Delivery.message_id == message_id, Delivery.purpose != "surface")
        return sorted((d.recipient, d.channel, d.purpose) for d in (await s.execute(q)).scalars())


async def say(ctx: Context, actor: Actor, text: str) -> str:
    reply = await execute(ctx.service, actor, parse(text))
    return reply.text


async def test_a_follower_gets_news_once_and_never_of_their_own_action(ctx: Context) -> None:
    inc = (await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev1")).incident
    assert inc is not None
    assert (await say(ctx, CAROL, "subscribe INC-1")).startswith("carol now follows INC-1")
    assert (await say(ctx, ALICE, "follow inc-1")).startswith("alice now follows INC-1")  # routed anyway
    out = await ctx.service.update("INC-1", actor=OP, text="rolling back")
    assert out.message is not None
    # alice and bob are routed (default_targets oncall): once each, as news (alice's sev1 list minus sms);
    # carol only follows: her news list (default minus sms), purpose `subscription`, not counted as a page.
    assert await sent(ctx, out.message.id) == [("alice", "email", "page"), ("bob", "email", "page"),
                                               ("carol", "email", "subscription")]
    assert out.queued == 2
    async with ctx.db.sessions() as s:
        d = (await s.execute(select(Delivery).where(Delivery.recipient == "carol"))).scalar_one()
    assert d.reason == "follows INC-1" and d.notification_json["ack_url"] is None and d.notification_json["kind"] == "UPDATE"
    # alice acts: she is told nothing (routing and following alike); carol hears it.
    out = await ctx.service.resolve("INC-1", actor=ALICE, text="fixed")
    assert out.message is not None
    assert await sent(ctx, out.message.id) == [("bob", "email", "page"), ("carol", "email", "subscription")]


async def test_news_grants_no_acknowledge_right(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="Search slow", severity="sev3")
    await say(ctx, Actor("telegram:999", "telegram"), "subscribe INC-1")  # not a contact: refused
    await say(ctx, CAROL, "subscribe INC-1")
    await ctx.service.update("INC-1", actor=OP, text="looking")
    with pytest.raises(Forbidden):
        await ctx.service.acknowledge("INC-1", actor=Actor("contact:carol", "voice"))


async def test_a_filter_follows_every_new_matching_incident(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="Old sev1", severity="sev1")
    ctx.clock.advance(seconds=5)
    assert "every new incident" in await say(ctx, CAROL, "subscribe critical")
    ctx.clock.advance(seconds=5)
    new = await ctx.service.declare(actor=OP, title="New sev1", severity="sev1")
    other = await ctx.service.declare(actor=OP, title="A sev2", severity="sev2")
    old = await ctx.service.update("INC-1", actor=OP, text="still")
    assert ("carol", "email", "subscription") in await sent(ctx, new.message.id)  # type: ignore[union-attr]
    assert all(r != "carol" for r, _, _ in await sent(ctx, other.message.id))  # type: ignore[union-attr]
    assert all(r != "carol" for r, _, _ in await sent(ctx, old.message.id))  # type: ignore[union-attr]
    # Following INC-2 through the filter: unsubscribing the incident says where its news comes from.
    text = await say(ctx, CAROL, "unsubscribe INC-2")
    assert "carol does not follow INC-2 itself; its news comes through sev1" in text
    assert "no longer follows sev1" in await say(ctx, CAROL, "unsubscribe sev1")
    later = await ctx.service.declare(actor=OP, title="Later sev1", severity="sev1")
    assert all(r != "carol" for r, _, _ in await sent(ctx, later.message.id))  # type: ignore[union-attr]


async def test_tenant_and_source_filters_and_tenant_scope(ctx: Context) -> None:
    assert "carol now follows tenant:beta source:api" in await say(ctx, CAROL, "subscribe source:api tenant:beta")
    before = (await rows(ctx), await audit_count(ctx))
    refused = await say(ctx, CAROL, "subscribe tenant:acme")
    assert refused == ("Not allowed: cli:carol (contact carol) may not follow tenant 'acme': "
                       "contacts[carol].tenants does not list it (it lists beta)")
    assert (await rows(ctx), await audit_count(ctx)) == before
    beta = await ctx.service.declare(actor=OP, title="Beta down", severity="sev3", source="api",
                                     labels={"tenant_id": "beta"})
    acme = await ctx.service.declare(actor=OP, title="Acme down", severity="sev3", source="api",
                                     labels={"tenant_id": "acme"})
    beta_cli = await ctx.service.declare(actor=OP, title="Beta by hand", severity="sev3",
                                         labels={"tenant_id": "beta"})
    assert ("carol", "email", "subscription") in await sent(ctx, beta.message.id)  # type: ignore[union-attr]
    assert all(r != "carol" for r, _, _ in await sent(ctx, acme.message.id))  # type: ignore[union-attr]
    assert all(r != "carol" for r, _, _ in await sent(ctx, beta_cli.message.id))  # type: ignore[union-attr]
    # Config no longer maps carol to beta: the stored subscription stops reaching her at once.
    unmapped = [dict(c, tenants=[]) if c["name"] == "carol" else c for c in CONTACTS]
    ctx.holder.replace(make_config(ctx.cfg.database.url, worker={"enabled": False}, contacts=unmapped,
                                   access=ACCESS))
    again = await ctx.service.declare(actor=OP, title="Beta again", severity="sev3", source="api",
                                      labels={"tenant_id": "beta"})
    assert all(r != "carol" for r, _, _ in await sent(ctx, again.message.id))  # type: ignore[union-attr]


@pytest.mark.parametrize("who, role", [("cli:carol", "viewer"), ("cli:alice", "operator"),
                                       ("cli:manager", "manager"), ("cli:admin", "admin")])
async def test_scope_per_role(ctx: Context, who: str, role: str) -> None:
    """Every role may follow an incident it can see (VIEW) and a severity; a tenant only when config maps
    the person to it, whatever their role (alice is mapped to acme; the others are not)."""
    actor = Actor(who, "cli")
    await ctx.service.declare(actor=OP, title="Visible", severity="sev2")
    assert "now follows INC-1" in await say(ctx, actor, "subscribe INC-1")
    assert "now follows sev2" in await say(ctx, actor, "subscribe sev2")
    tenant = await say(ctx, actor, "subscribe tenant:acme")
    if who == "cli:alice":
        assert tenant.startswith("alice now follows tenant:acme")
    else:
        assert tenant.startswith(f"Not allowed: {who} (contact ") and "tenants does not list it" in tenant
    listing = await say(ctx, actor, "subscriptions")
    assert "INC-1" in listing and "sev2" in listing and ("tenant:acme" in listing) == (who == "cli:alice")


async def test_bad_input_answers_clearly_and_stores_nothing(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="Done soon", severity="sev3")
    await ctx.service.resolve("INC-1", actor=OP)
    before = (await rows(ctx), await audit_count(ctx))
    cases = {
        "subscribe INC-42": "no incident INC-42",
        "subscribe INC-1": "INC-1 is resolved: it has no more news to follow",
        "subscribe sev9": "'sev9' is not something to follow",
        "subscribe severity:high": "'severity:high' is not something to follow",
        "subscribe sev1 sev2": "Two severity terms (sev1 and sev2)",
        "subscribe source:": "a source name is 1-32 characters without spaces",
        "unsubscribe sev1": "carol does not follow sev1 (see /incident subscriptions)",
        "unsubscribe INC-7": "no incident INC-7",
    }
    for text, problem in cases.items():
        _, reply = await run_text(ctx.service, CAROL, text)  # parse errors and core errors alike
        assert not reply.ok and problem in reply.text, (text, reply.text)
    stranger = await say(ctx, Actor("slack:UNOBODY", "slack"), "subscribe sev1")
    assert stranger.startswith("slack:UNOBODY is not linked to a contact") and "`chat.slack`" in stranger
    assert (await rows(ctx), await audit_count(ctx)) == before
    with pytest.raises(InvalidInput):  # the service checks too (the console and CLI call it directly)
        await subs(ctx).subscribe(actor=CAROL, what="tenant:has space")
    with pytest.raises(NotFound):
        await subs(ctx).unsubscribe(actor=CAROL, what="INC-1")
    with pytest.raises(InvalidTransition):
        await subs(ctx).subscribe(actor=CAROL, what="1")
    assert (await rows(ctx), await audit_count(ctx)) == before


async def test_subscribing_twice_stores_once_and_every_change_is_audited(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="Twice", severity="sev2")
    await say(ctx, CAROL, "subscribe INC-1")
    assert await say(ctx, CAROL, "subscribe INC-1") == "carol already follows INC-1; nothing changed."
    await say(ctx, Actor("telegram:4242", "telegram"), "subscribe sev2")  # alice, by her Telegram id
    assert await rows(ctx) == [("carol", "INC-1"), ("alice", "sev2")]
    assert "alice follows (1)" in await say(ctx, ALICE, "subscriptions")  # the same person on the CLI
    await say(ctx, CAROL, "unsubscribe INC-1")
    async with ctx.db.sessions() as s:
        entries = (await s.execute(select(AuditEntry).where(AuditEntry.action.like("subscription.%"))
                                   .order_by(AuditEntry.seq))).scalars().all()
    assert [(e.action, e.actor, e.resource) for e in entries] == [
        ("subscription.add", "cli:carol", "INC-1"), ("subscription.add", "telegram:4242", "subscription:2"),
        ("subscription.remove", "cli:carol", "INC-1")]
    assert await rows(ctx) == [("alice", "sev2")]


async def test_two_processes_subscribing_at_once_store_one(make_ctx: Any) -> None:
    """Two engines on one database (two `tocsin run` processes): the same subscription made in both at the
    same moment is stored and audited once; the other answer is 'already follows', not an error."""
    import asyncio

    one = await make_ctx(worker={"enabled": False}, contacts=CONTACTS, access=ACCESS)
    two = await make_ctx(worker={"enabled": False}, contacts=CONTACTS, access=ACCESS)
    for sev in ("sev1", "sev2", "sev3", "sev4"):
        results = await asyncio.gather(subs(one).subscribe(actor=CAROL, what=sev),
                                        subs(two).subscribe(actor=CAROL, what=sev))
        assert sorted(new for _, new in results) == [False, True]
        assert results[0][0].id == results[1][0].id
    assert await rows(one) == [("carol", s) for s in ("sev1", "sev2", "sev3", "sev4")]
    async with one.db.sessions() as s:
        added = (await s.execute(select(func.count()).select_from(AuditEntry)
                                 .where(AuditEntry.action == "subscription.add"))).scalar_one()
    assert added == 4


async def test_route_explain_names_the_followers(ctx: Context) -> None:
    await ctx.service.declare(actor=OP, title="Explained", severity="sev2")
    await say(ctx, CAROL, "subscribe INC-1")
    await say(ctx, ALICE, "subscribe INC-1")  # routed: listed with the routed, not again as a follower
    text = await ctx.service.explain_route("INC-1", actor=Actor("cli:admin", "cli"), event_type="update")
    follow = text.split("Followers (/incident subscribe) not routed for it get it as news:\n")[1].splitlines()
    assert len(follow) == 1 and follow[0].split()[:3] == ["carol", "email", "carol@example.com"]
    assert follow[0].endswith("(follows INC-1; via preferences.default without voice/sms)")
