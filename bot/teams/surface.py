"""TeamsSurface: the incident card in the Teams incident conversation, posted and kept in sync proactively.

The delivery worker calls it through bot.surface.SurfaceSender. Each call is a proactive turn
(`continue_conversation`) on a stored conversation reference: the first post builds one from config
(incident_conversation + service_url), and the CardRef keeps the reference JSON in `extra`, so later
updates and thread replies go exactly where the card is even if config changes.
"""
from __future__ import annotations

import logging
from copy import copy
from collections.abc import Awaitable, Callable
from typing import Any

from botbuilder.core import BotAdapter, CardFactory, TurnContext
from botbuilder.schema import (
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
    ResourceResponse,
)
from msrest.exceptions import ClientRequestError, HttpOperationError

from bot.surface import SurfaceError
from bot.teams.bot import card_attachment, outgoing
from core.appearance.card import IncidentCard
from core.appearance.teams import message_html, note_card, note_text, post_text
from core.cards import CardRef
from core.config import TeamsConfig
from core.conversations import ConversationStore
from core.delivery.base import classify_http
from core.delivery.message import Notification

log = logging.getLogger("tocsin.teams.surface")

CHANNEL_SUFFIXES = ("@thread.tacv2", "@thread.skype")
"""Team channel conversation ids (group chats end in @thread.v2, personal chats start with a:)."""
PUBLIC_SERVICE_URL = "https://smba.trafficmanager.net/teams/"
"""Teams' global Bot Connector endpoint for the public cloud: proactive posts work there before the bot has
seen any activity from the tenant (set teams.service_url for GCC/sovereign clouds or a regional URL)."""


def incident_reference(teams: TeamsConfig) -> ConversationReference:
    """Where cards of incidents declared anywhere go: the configured Teams conversation."""
    if not teams.incident_conversation:
        raise ValueError("teams.incident_conversation is not set")
    app_id = teams.app_id or "tocsin"
    return ConversationReference(
        channel_id="msteams", service_url=teams.service_url or PUBLIC_SERVICE_URL,
        conversation=ConversationAccount(id=teams.incident_conversation, is_group=True,
                                         tenant_id=teams.tenant_id),
        bot=ChannelAccount(id=f"28:{app_id}", name="Tocsin"))


NO_PERSONAL_CHAT = "missing conversation reference: cannot open a 1:1 chat with this Teams user"
"""The reason a teams_dm page names when no usable conversation reference is stored for the person and the
connector refuses to create the 1:1 conversation (403/404: the app is not installed for the person, or the
id is not a user of the tenant)."""


def thread_of(reference: ConversationReference, root_id: str) -> ConversationReference:
    """The reference for replies under `root_id`: in a Teams channel a thread is its own conversation,
    `<channel id>;messageid=<root id>` (chats have no threads, so they keep their id)."""
    thread = copy(reference)
    thread.conversation = copy(reference.conversation)
    conv = reference.conversation.id
    if conv.endswith(CHANNEL_SUFFIXES) and ";messageid=" not in conv:
        thread.conversation.id = f"{conv};messageid={root_id}"
    return thread


class TeamsSurface:
    """ChatSurface for Teams over a botbuilder adapter (CloudAdapter in production, TestAdapter in tests)."""

    platform = "teams"

    def __init__(self, adapter: BotAdapter, *, app_id: str, reference: ConversationReference) -> None:
        self.adapter = adapter
        self.app_id = app_id
        self.reference = reference

    async def post_card(self, card: IncidentCard) -> CardRef:
        reference = self.reference
        sent = await self._turn(reference, lambda tc: tc.adapter.send_activities(
            tc, [outgoing(reference, reply_to=None, attachment=card_attachment(card))]))
        first: ResourceResponse | None = sent[0] if sent else None
        if first is None or not first.id:
            # Posted but unaddressable: retrying would post a second card, so stop here.
            raise SurfaceError("Teams accepted the card but returned no activity id", retry=False)
        log.info("teams.card.posted", extra={"incident": card.ref, "conversation": reference.conversation.id,
                                             "activity": first.id})
        return CardRef(self.platform, reference.conversation.id, first.id, first.id,
                       {"reference": reference.serialize()})

    async def update_card(self, ref: CardRef, card: IncidentCard) -> None:
        reference = self._reference_of(ref)
        update = outgoing(reference, reply_to=None, attachment=card_attachment(card))
        update.id = ref.message_ref
        await self._turn(reference, lambda tc: tc.adapter.update_activity(tc, update))

    async def reply(self, ref: CardRef, card: IncidentCard, note: Notification) -> None:
        root = ref.thread_ref or ref.message_ref
        reference = thread_of(self._reference_of(ref), root)
        card = note_card(note)
        out = outgoing(reference, reply_to=root, text=None if card else message_html(note_text(note)),
                       attachment=CardFactory.adaptive_card(card) if card else None)
        await self._turn(reference, lambda tc: tc.adapter.send_activities(tc, [out]))

    async def post(self, note: Notification) -> str:
        reference = self.reference
        out = outgoing(reference, reply_to=None, text=message_html(post_text(note)))
        sent = await self._turn(reference, lambda tc: tc.adapter.send_activities(tc, [out]))
        first: ResourceResponse | None = sent[0] if sent else None
        return f"{reference.conversation.id}/{first.id if first else ''}"

    def _reference_of(self, ref: CardRef) -> ConversationReference:
        stored = (ref.extra or {}).get("reference")
        if isinstance(stored, dict):
            return ConversationReference().deserialize(stored)
        # A card saved without its reference (older row): it can only be in the configured conversation.
        return self.reference

    async def _turn(self, reference: ConversationReference, action: Callable[[TurnContext], Awaitable[Any]]) -> Any:
        """Run `action` in a proactive turn and map Bot Connector failures to SurfaceError."""
        result: list[Any] = []

        async def logic(turn_context: TurnContext) -> None:
            result.append(await action(turn_context))

        await connector_call(self.adapter.continue_conversation(reference, logic, self.app_id or None))
        return result[0] if result else None


async def connector_call(call: Awaitable[Any]) -> Any:
    """Await one Bot Connector call, mapping its failures to SurfaceError (retry or permanent, with status)."""
    try:
        return await call
    except HttpOperationError as exc:
        resp = getattr(exc, "response", None)
        status = int(getattr(resp, "status_code", 0) or 0)
        headers = getattr(resp, "headers", None) or {}
        verdict = classify_http(status, retry_after=headers.get("Retry-After"), summary=str(exc))
        raise SurfaceError(f"Bot Connector: {verdict.summary}", retry=verdict.outcome == "retry",
                           after=verdict.retry_after, status=status or None) from exc
    except ClientRequestError as exc:
        raise SurfaceError(f"Bot Connector unreachable: {exc}", retry=True) from exc
    except PermissionError as exc:
        # MSAL could not get a token (wrong password, or the login endpoint failed): retried, then dead.
        raise SurfaceError(f"Bot Framework token: {exc}", retry=True) from exc


class TeamsDirectSurface(TeamsSurface):
    """One person's 1:1 chat with the bot, for teams_dm pages (bot.surface.DirectMessageSender).

    The first card of an incident goes through the person's stored conversation reference (kept from
    their personal install or chat, core/conversations.py); without one, or when the connector refuses the
    stored one (the app was removed), the chat is opened with create_conversation (Teams answers with the
    existing 1:1 conversation when there is one) and that reference is stored. The CardRef keeps the
    reference, so later changes edit that card and answer under it."""

    def __init__(self, adapter: BotAdapter, *, teams: TeamsConfig, user: str,
                 conversations: ConversationStore) -> None:
        self.teams = teams
        self.user = user
        self.conversations = conversations
        bot = ChannelAccount(id=f"28:{teams.app_id or 'tocsin'}", name="Tocsin")
        super().__init__(adapter, app_id=teams.app_id, reference=ConversationReference(
            channel_id="msteams", service_url=teams.service_url or PUBLIC_SERVICE_URL, bot=bot,
            user=ChannelAccount(id=user), conversation=None))

    async def post_card(self, card: IncidentCard) -> CardRef:
        stored = await self.conversations.get("teams", self.user)
        if stored:
            self.reference = ConversationReference().deserialize(stored)
            try:
                return await super().post_card(card)
            except SurfaceError as exc:
                if exc.retry:
                    raise
                # refused for good (app removed, chat gone): forget it and open a chat anew
                log.warning("teams.dm.stale_reference", extra={"user": self.user, "status": exc.status})
                await self.conversations.forget("teams", self.user)
        self.reference = await self.open_chat()
        await self.conversations.save("teams", self.user, self.reference.serialize())
        return await super().post_card(card)

    async def open_chat(self) -> ConversationReference:
        """The reference of the 1:1 conversation with `user` (POST /v3/conversations, isGroup false)."""
        base = self.reference
        params = ConversationParameters(
            is_group=False, bot=base.bot, members=[ChannelAccount(id=self.user)], tenant_id=self.teams.tenant_id,
            channel_data={"tenant": {"id": self.teams.tenant_id}} if self.teams.tenant_id else None)
        opened: list[ConversationReference] = []

        async def logic(turn_context: TurnContext) -> None:
            opened.append(TurnContext.get_conversation_reference(turn_context.activity))

        try:
            await connector_call(self.adapter.create_conversation(
                self.app_id or None, logic, params, "msteams", base.service_url, None))
        except SurfaceError as exc:
            if exc.retry:
                raise
            raise SurfaceError(f"{NO_PERSONAL_CHAT} ({self.user}): {exc}", retry=False, status=exc.status) from exc
        if not opened or opened[0].conversation is None or not opened[0].conversation.id:
            raise SurfaceError(f"{NO_PERSONAL_CHAT} ({self.user}): the connector returned no conversation id",
                               retry=False)
        reference = opened[0]
        reference.user = ChannelAccount(id=self.user)
        log.info("teams.dm.opened", extra={"user": self.user, "conversation": reference.conversation.id})
        return reference
