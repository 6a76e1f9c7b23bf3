"""Chat surfaces: every incident's card on Slack, Teams and Telegram, kept in sync through the queue.

The core queues one `chat:<platform>` delivery per incident change and enabled platform (see
IncidentService._fan_out). The worker hands it to a SurfaceSender, which posts the card the first time,
then edits it and replies in its thread. So a failed card update is retried like any page and never
blocks the incident, and incidents declared anywhere (CLI, API, another chat) appear everywhere.
"""
from __future__ import annotations

import asyncio
import logging
from typing import ClassVar, Protocol

from core.appearance.card import IncidentCard
from core.cards import PENDING, CardRef, CardStore
from core.delivery.message import DeliveryResult, Envelope, Notification
from core.errors import NotFound
from core.incidents import IncidentService

log = logging.getLogger("tocsin.surface")


class SurfaceError(Exception):
    """A platform call failed. `retry` false means permanent (bad channel, no permission)."""

    def __init__(self, message: str, *, retry: bool = True, after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.after = after
        self.status = status


class ChatSurface(Protocol):
    """What a platform adapter implements to show incidents. Raise SurfaceError on failure."""

    platform: str

    async def post_card(self, card: IncidentCard) -> CardRef: ...

    async def update_card(self, ref: CardRef, card: IncidentCard) -> None: ...

    async def reply(self, ref: CardRef, card: IncidentCard, note: Notification) -> None: ...


class SurfaceSender:
    """A Sender for `chat:<platform>` deliveries that drives a ChatSurface."""

    rate_per_second: ClassVar[float | None] = None

    def __init__(self, surface: ChatSurface, *, service: IncidentService, cards: CardStore) -> None:
        self.surface = surface
        self.service = service
        self.cards = cards
        self.channel = f"chat:{surface.platform}"
        self._locks: dict[int, asyncio.Lock] = {}

    async def send(self, envelope: Envelope) -> DeliveryResult:
        note = envelope.notification
        try:
            incident_id = int(envelope.address)
            inc = await self.service.get(incident_id)
        except (ValueError, NotFound) as exc:
            return DeliveryResult.permanent(f"no incident for card delivery: {exc}")
        card = IncidentCard.of(inc, self.service.cfg.server.public_url)
        # One incident's card changes are applied in order within this process (post before reply).
        lock = self._locks.setdefault(incident_id, asyncio.Lock())
        try:
            async with lock:
                ref = await self.cards.get(incident_id, self.surface.platform)
                if ref is not None and ref.message_ref == PENDING:
                    # Another process is posting the first card: come back when it exists.
                    return DeliveryResult.retry("card is being posted by another process", after=1.0)
                if ref is None:
                    if not await self.cards.reserve(incident_id, self.surface.platform):
                        return DeliveryResult.retry("card is being posted by another process", after=1.0)
                    try:
                        ref = await self.surface.post_card(card)
                    except BaseException:
                        await self.cards.release(incident_id, self.surface.platform)
                        raise
                    await self.cards.save(incident_id, ref)
                    if note.kind != "INITIAL":
                        await self.surface.reply(ref, card, note)
                    return DeliveryResult.ok(f"card posted {ref.channel}/{ref.message_ref}")
                await self.surface.update_card(ref, card)
                if note.kind != "INITIAL":
                    await self.surface.reply(ref, card, note)
                return DeliveryResult.ok(f"card updated {ref.channel}/{ref.message_ref}")
        except SurfaceError as exc:
            if exc.retry:
                return DeliveryResult.retry(str(exc), exc.status, exc.after)
            return DeliveryResult.permanent(str(exc), exc.status)
        finally:
            if not lock.locked() and len(self._locks) > 1000:
                self._locks.pop(incident_id, None)

    async def aclose(self) -> None:
        return None
