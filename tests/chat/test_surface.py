"""The chat-surface subscription: one card per incident and platform, even with racing senders."""
from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from bot.context import Context
from bot.surface import SurfaceError, SurfaceSender
from core.appearance.card import IncidentCard
from core.cards import CardRef, CardStore
from core.db import Database
from core.delivery.message import CHANNEL_POST, Envelope, Notification
from core.rbac import Actor


class RecordingSurface:
    """A ChatSurface that records calls; posting is slow so racing senders overlap."""

    platform = "test"

    def __init__(self, fail_first: bool = False) -> None:
        self.posts: list[int] = []
        self.updates: list[str] = []
        self.replies: list[str] = []
        self.fail_first = fail_first

    async def post_card(self, card: IncidentCard) -> CardRef:
        await asyncio.sleep(0.2)
        if self.fail_first:
            self.fail_first = False
            raise SurfaceError("platform down", after=0.0)
        self.posts.append(card.id)
        return CardRef("test", "C1", f"m{len(self.posts)}")

    async def update_card(self, ref: CardRef, card: IncidentCard) -> None:
        self.updates.append(ref.message_ref)

    async def reply(self, ref: CardRef, card: IncidentCard, note: Notification) -> None:
        self.replies.append(note.kind)

    async def post(self, note: Notification) -> str:
        if self.fail_first:
            self.fail_first = False
            raise SurfaceError("channel_not_found", retry=False, status=404)
        self.replies.append(f"post:{note.body}")
        return "C1/p1"


def env(incident_id: int, kind: str) -> Envelope:
    return Envelope(1, "chat:test", "surface:test", str(incident_id), "k", 1, Notification(kind=kind, title="t"))


async def test_racing_senders_in_two_processes_post_one_card(ctx: Context) -> None:
    await ctx.service.declare(actor=Actor("cli:op"), title="x", severity="sev3")
    other = Database(ctx.cfg.database)  # a second "process": its own engine and card store
    try:
        surface = RecordingSurface()
        a = SurfaceSender(surface, service=ctx.service, cards=ctx.cards)
        b = SurfaceSender(surface, service=ctx.service, cards=CardStore(other, ctx.clock))
        r1, r2 = await asyncio.gather(a.send(env(1, "INITIAL")), b.send(env(1, "UPDATE")))
        outcomes = sorted([r1.outcome, r2.outcome])
        assert outcomes == ["delivered", "retry"] and surface.posts == [1]
        late = r2 if r2.outcome == "retry" else r1
        assert late.retry_after == 1.0
        assert (await b.send(env(1, "UPDATE"))).outcome == "delivered"
        assert surface.updates == ["m1"] and surface.replies == ["UPDATE"]
    finally:
        await other.close()


async def test_failed_first_post_releases_the_reservation(ctx: Context) -> None:
    await ctx.service.declare(actor=Actor("cli:op"), title="x", severity="sev3")
    surface = RecordingSurface(fail_first=True)
    sender = SurfaceSender(surface, service=ctx.service, cards=ctx.cards)
    first = await sender.send(env(1, "INITIAL"))
    assert first.outcome == "retry" and "platform down" in first.summary
    assert await ctx.cards.get(1, "test") is None
    assert (await sender.send(env(1, "INITIAL"))).outcome == "delivered"
    assert (await ctx.cards.get(1, "test")).message_ref == "m1"  # type: ignore[union-attr]


async def test_unknown_incident_is_permanent(ctx: Context) -> None:
    sender = SurfaceSender(RecordingSurface(), service=ctx.service, cards=ctx.cards)
    assert (await sender.send(env(404, "INITIAL"))).outcome == "permanent"


async def test_a_channel_post_is_a_plain_message_and_its_failures_are_classified(ctx: Context) -> None:
    """A `chat:<platform>` delivery addressed CHANNEL_POST (an on-call handoff) posts text, no card."""
    surface = RecordingSurface(fail_first=True)
    sender = SurfaceSender(surface, service=ctx.service, cards=ctx.cards)
    note = Notification(kind="HANDOFF", title="handoff", body="alice -> bob")
    envelope = Envelope(1, "chat:test", "surface:test", CHANNEL_POST, "k", 1, note)
    failed = await sender.send(envelope)
    assert (failed.outcome, failed.status_code) == ("permanent", 404)
    ok = await sender.send(envelope)
    assert ok.outcome == "delivered" and surface.replies == ["post:alice -> bob"] and surface.posts == []
