"""Chat surfaces: every incident's card on Slack, Teams and Telegram, kept in sync through the queue.

The core queues one `chat:<platform>` delivery per incident change and enabled platform (see
IncidentService._fan_out). The worker hands it to a SurfaceSender, which posts the card the first time,
then edits it and replies in its thread. So a failed card update is retried like any page and never
blocks the incident, and incidents declared anywhere (CLI, API, another chat) appear everywhere.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import ClassVar, Protocol

from core.appearance.card import IncidentCard
from core.cards import PENDING, CardRef, CardStore
from core.delivery.message import CHANNEL_POST, DeliveryResult, Envelope, Notification
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

    async def post(self, note: Notification) -> str:
        """A plain message in the incident channel that belongs to no incident (an on-call handoff):
        rendered by core/appearance like a thread reply, no card. Returns the platform's message id."""
        ...


class SurfaceSender:
    """A Sender for `chat:<platform>` deliveries that drives a ChatSurface."""

    rate_per_second: ClassVar[float | None] = None

    def __init__(self, surface: ChatSurface, *, service: IncidentService, cards: CardStore) -> None:
        self.surface = surface
        self.service = service
        self.cards = cards
        self.channel = f"chat:{surface.platform}"
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}

    async def send(self, envelope: Envelope) -> DeliveryResult:
        if envelope.address == CHANNEL_POST:  # a plain post (a handoff), queued as `chat:<platform>` too
            return await self._post(envelope.notification)
        try:
            incident_id = int(envelope.address)
        except ValueError as exc:
            return DeliveryResult.permanent(f"no incident for card delivery: {exc}")
        return await self._sync(self.surface, self.surface.platform, incident_id, envelope.notification)

    async def _post(self, note: Notification) -> DeliveryResult:
        try:
            ref = await self.surface.post(note)
        except SurfaceError as exc:
            if exc.retry:
                return DeliveryResult.retry(str(exc), exc.status, exc.after)
            return DeliveryResult.permanent(str(exc), exc.status)
        log.info("surface.posted", extra={"platform": self.surface.platform, "kind": note.kind, "message": ref})
        return DeliveryResult.ok(f"posted {ref}")

    async def _sync(self, surface: ChatSurface, key: str, incident_id: int, note: Notification) -> DeliveryResult:
        """Post the card the first time (under `key`), then edit it and reply in its thread."""
        try:
            inc = await self.service.get(incident_id)
        except NotFound as exc:
            return DeliveryResult.permanent(f"no incident for card delivery: {exc}")
        card = IncidentCard.of(inc, self.service.cfg.server.public_url)
        # One incident's card changes are applied in order within this process (post before reply).
        lock = self._locks.setdefault((incident_id, key), asyncio.Lock())
        try:
            async with lock:
                ref = await self.cards.get(incident_id, key)
                if ref is not None and ref.message_ref == PENDING:
                    # Another process is posting the first card: come back when it exists.
                    return DeliveryResult.retry("card is being posted by another process", after=1.0)
                if ref is None:
                    if not await self.cards.reserve(incident_id, key):
                        return DeliveryResult.retry("card is being posted by another process", after=1.0)
                    try:
                        ref = await surface.post_card(card)
                    except BaseException:
                        await self.cards.release(incident_id, key)
                        raise
                    await self.cards.save(incident_id, CardRef(key, ref.channel, ref.message_ref, ref.thread_ref,
                                                               ref.extra))
                    if note.kind != "INITIAL":
                        await surface.reply(ref, card, note)
                    return DeliveryResult.ok(f"card posted {ref.channel}/{ref.message_ref}")
                await surface.update_card(ref, card)
                if note.kind != "INITIAL":
                    await surface.reply(ref, card, note)
                return DeliveryResult.ok(f"card updated {ref.channel}/{ref.message_ref}")
        except SurfaceError as exc:
            if exc.retry:
                return DeliveryResult.retry(str(exc), exc.status, exc.after)
            return DeliveryResult.permanent(str(exc), exc.status)
        finally:
            if not lock.locked() and len(self._locks) > 1000:
                self._locks.pop((incident_id, key), None)

    async def aclose(self) -> None:
        return None


def dm_card_key(platform: str, user: str) -> str:
    """Where a person's DM card of an incident is recorded (chat_cards.platform holds 16 characters):
    `dm` + 14 hex digits of a hash of platform and user, distinct from the platform names of channel cards."""
    return "dm" + hashlib.sha256(f"{platform}:{user}".encode()).hexdigest()[:14]


class DirectMessageSender(SurfaceSender):
    """A Sender for `<platform>_dm` pages: the incident card (Acknowledge / Open incident buttons) as a
    direct message to one person (envelope.address: their chat id), edited on every later change, which
    is also answered in that DM's thread. Pressing Acknowledge goes through the platform's card-button
    handler and acts as that person (a paged contact may always ack)."""

    def __init__(self, platform: str, surface_for: Callable[[str], ChatSurface], *, service: IncidentService,
                 cards: CardStore, never_opened: frozenset[str]) -> None:
        # No channel-card surface of its own: `surface_for(user)` gives the surface of one person's DM.
        self.service = service
        self.cards = cards
        self._locks = {}
        self.platform = platform
        self.channel = f"{platform}_dm"
        self.surface_for = surface_for
        self.never_opened = never_opened

    async def send(self, envelope: Envelope) -> DeliveryResult:
        ref = envelope.notification.incident or ""
        if not ref.upper().startswith("INC-") or not ref[4:].isdigit():
            return DeliveryResult.permanent("a direct-message page needs an incident (one-time messages "
                                            "are not sent as DMs)")
        user = envelope.address
        try:
            result = await self._sync(self.surface_for(user), dm_card_key(self.platform, user), int(ref[4:]),
                                      envelope.notification)
        except SurfaceError as exc:  # raised by surface_for itself (e.g. no conversation reference)
            result = DeliveryResult.permanent(str(exc), exc.status)
        if result.outcome == "permanent" and any(code in result.summary for code in self.never_opened):
            # The person has to open a DM with the bot once; until then the next channel pages them.
            result = DeliveryResult.permanent(f"never opened a direct message with the bot: {result.summary}",
                                              result.status_code)
        return result
