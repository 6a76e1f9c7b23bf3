"""Signed ack links over real HTTP, on SQLite and PostgreSQL: used, reused, expired, forged, wrong delivery or
contact, cross-site form, resolved incident; a GET never changes state."""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot.context import Context
from core.acklinks import AckClaim, make_token, read_token
from core.models import AckLinkUse, AuditEntry, Delivery, Incident
from core.rbac import Actor
from tests.web.console import console_client

OP = Actor("cli:op", "cli")
SECRET = "ack-link-test-secret-0123456789abcdef"
PUBLIC = "http://127.0.0.1:8080"


@pytest.fixture
async def site(make_ctx: Any) -> AsyncIterator[tuple[Context, TestClient]]:
    ctx = await make_ctx(worker={"enabled": False}, console={"session_secret": "console-test-secret"},
                         server={"ack_link_secret": SECRET, "ack_link_hours": 24})
    async with console_client(ctx) as client:
        yield ctx, client


async def page_links(ctx: Context, incident_id: int = 1, kind: str = "INITIAL") -> dict[tuple[str, str], str | None]:
    """(recipient, channel) -> the ack_url stored in that page's payload."""
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.incident_id == incident_id,
                                                       Delivery.purpose != "surface"))).scalars().all()
    return {(d.recipient, d.channel): d.notification_json.get("ack_url") for d in rows
            if d.idempotency_key and (d.notification_json.get("kind") == kind)}


def path_of(url: str) -> str:
    assert url.startswith(PUBLIC + "/ack/"), url
    return url[len(PUBLIC):]


def form_of(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(nonce|issued|proof)" value="([^"]+)"', html))


async def incident(ctx: Context) -> Incident:
    async with ctx.db.sessions() as s:
        inc = await s.get(Incident, 1)
    assert inc is not None
    return inc


async def uses(ctx: Context) -> int:
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(AckLinkUse))).scalar_one())


async def test_link_acknowledges_once_as_the_contact(site: tuple[Context, TestClient]) -> None:
    ctx, client = site
    await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev2")
    links = await page_links(ctx)
    alice, bob = links[("alice", "email")], links[("bob", "email")]
    assert alice and bob and alice != bob                      # one link per person
    # GET shows a confirmation and changes nothing, however often it is opened (mail scanners prefetch)
    for _ in range(2):
        resp = await client.get(path_of(alice))
        html = await resp.text()
        assert resp.status == 200 and "Acknowledge INC-1 as alice?" in html and 'method="post"' in html
        assert resp.headers["Referrer-Policy"] == "no-referrer" and resp.headers["Cache-Control"] == "no-store"
    assert (await incident(ctx)).acknowledged_at is None and await uses(ctx) == 0
    # POST acknowledges as alice, audited with her identity and the link as source
    resp = await client.post(path_of(alice), data=form_of(html))
    assert resp.status == 200 and "INC-1 is acknowledged by alice. Thank you." in await resp.text()
    inc = await incident(ctx)
    assert inc.acknowledged_by == "contact:alice"
    async with ctx.db.sessions() as s:
        audit = (await s.execute(select(AuditEntry.actor, AuditEntry.source).where(
            AuditEntry.action == "incident.ack"))).all()
    assert audit == [("contact:alice", "ack_link")]
    # the same link again: refused, clearly, on GET and POST
    again = await client.get(path_of(alice))
    assert again.status == 409 and "already used" in await again.text()
    resp = await client.post(path_of(alice), data=form_of(html))
    assert resp.status == 409 and "already used" in await resp.text()
    assert await uses(ctx) == 1
    # bob's link now says who acknowledged, offers no button
    resp = await client.get(path_of(bob))
    text = await resp.text()
    assert resp.status == 200 and "INC-1 was acknowledged by contact:alice." in text and 'method="post"' not in text
    # what is sent after the acknowledgement offers no Acknowledge at all
    after = await page_links(ctx, kind="ACK")
    assert after and set(after.values()) == {None}


async def test_expired_link_is_refused(site: tuple[Context, TestClient]) -> None:
    ctx, client = site
    await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev2")
    alice = (await page_links(ctx))[("alice", "email")]
    assert alice
    form = form_of(await (await client.get(path_of(alice))).text())
    ctx.clock.advance(hours=24, seconds=1)  # type: ignore[attr-defined]
    resp = await client.get(path_of(alice))
    assert resp.status == 410 and "expired" in await resp.text()
    resp = await client.post(path_of(alice), data=form)
    assert resp.status == 410
    assert (await incident(ctx)).acknowledged_at is None and await uses(ctx) == 0


async def test_forged_and_misbound_links_are_refused(site: tuple[Context, TestClient]) -> None:
    ctx, client = site
    await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev2")
    alice = (await page_links(ctx))[("alice", "email")]
    assert alice
    token = path_of(alice)[len("/ack/"):]
    claim = read_token(SECRET.encode(), token)
    assert claim is not None and claim.contact == "alice" and claim.channel == "email"
    body, tag = token.split(".")
    # another contact's name with alice's tag; the right claim signed with another key; a flipped tag
    swapped = make_token(b"x" * 32, AckClaim(claim.message_id, "email", "carol", claim.expires)).split(".")[0]
    forged = [f"{swapped}.{tag}", make_token(b"another-key-" * 3, claim),
              f"{body}.{tag[:-2]}{'AA' if tag[-2:] != 'AA' else 'BB'}"]
    for bad in forged:
        resp = await client.get(f"/ack/{bad}")
        assert resp.status == 403 and "not valid" in await resp.text(), bad
        resp = await client.post(f"/ack/{bad}", data={"nonce": "n", "issued": "0", "proof": "p"})
        assert resp.status == 403
    # validly signed, but no such page: carol was never paged; alice was not paged by SMS for a sev2
    for other in (AckClaim(claim.message_id, "email", "carol", claim.expires),
                  AckClaim(claim.message_id, "sms", "alice", claim.expires),
                  AckClaim(claim.message_id + 99, "email", "alice", claim.expires)):
        resp = await client.get(f"/ack/{make_token(SECRET.encode(), other)}")
        assert resp.status == 404 and "belongs to no page" in await resp.text()
    assert (await incident(ctx)).acknowledged_at is None and await uses(ctx) == 0


async def test_form_needs_its_proof_and_our_origin(site: tuple[Context, TestClient]) -> None:
    ctx, client = site
    await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev2")
    alice = (await page_links(ctx))[("alice", "email")]
    assert alice
    form = form_of(await (await client.get(path_of(alice))).text())
    for data, headers in (({}, {}), ({**form, "proof": "0" * 64}, {}),
                          (form, {"Origin": "https://evil.example"})):
        resp = await client.post(path_of(alice), data=data, headers=headers)
        assert resp.status == 403 and "another site" in await resp.text()
    assert (await incident(ctx)).acknowledged_at is None and await uses(ctx) == 0
    resp = await client.post(path_of(alice), data=form, headers={"Origin": PUBLIC})
    assert resp.status == 200 and (await incident(ctx)).acknowledged_by == "contact:alice"


async def test_resolved_incident_link_says_so_and_stays_unused(site: tuple[Context, TestClient]) -> None:
    ctx, client = site
    await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev2")
    alice = (await page_links(ctx))[("alice", "email")]
    assert alice
    form = form_of(await (await client.get(path_of(alice))).text())
    await ctx.service.resolve(1, actor=OP, text="fixed")
    resp = await client.get(path_of(alice))
    assert resp.status == 409 and "already resolved" in await resp.text()
    resp = await client.post(path_of(alice), data=form)
    assert resp.status == 409 and "resolved" in await resp.text()
    assert await uses(ctx) == 0


async def test_without_a_secret_pages_link_the_console(make_ctx: Any) -> None:
    ctx = await make_ctx(worker={"enabled": False})
    await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev2")
    links = await page_links(ctx)
    assert set(links.values()) == {f"{PUBLIC}/incidents/1"}
    async with console_client(ctx) as client:
        assert (await client.get("/ack/abc.def")).status == 404
