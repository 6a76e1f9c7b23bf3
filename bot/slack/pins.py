"""A pushpin reaction on a message in an incident's Slack thread adds that message to the incident's
timeline (events API `reaction_added`; mixed into SlackAdapter). The message text is fetched with
conversations.replies, the thread is matched to the incident by its card, and the note is added as the
person who pinned it, through the same core call as `/incident note`."""
from __future__ import annotations

import logging
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.requests import actor_of
from core.cards import CardStore
from core.errors import TocsinError
from core.notes import Notes

log = logging.getLogger("tocsin.slack")

PIN_REACTIONS = frozenset({"pushpin", "round_pushpin"})


class Pins:
    """Needs `client`, `cards`, `service`, `_spawn` and `_first_time` from SlackAdapter."""

    client: AsyncWebClient
    cards: CardStore
    service: Any

    async def _on_reaction(self, ack: AsyncAck, body: dict[str, Any], event: dict[str, Any]) -> None:
        await ack()
        if event.get("reaction") not in PIN_REACTIONS or (event.get("item") or {}).get("type") != "message":
            return
        self._spawn(self._pin(event), what="pin", tell=None)  # type: ignore[attr-defined]

    async def _pin(self, event: dict[str, Any]) -> None:
        item, user = event.get("item") or {}, str(event.get("user") or "")
        channel, ts = str(item.get("channel") or ""), str(item.get("ts") or "")
        if not (channel and ts and user):
            log.warning("slack.pin.malformed", extra={"channel": channel, "ts": ts})
            return
        # Slack's retries and a second pushpin by the same person add the message once.
        if not await self._first_time(f"slack:pin:{channel}:{ts}:{user}", retry=None):  # type: ignore[attr-defined]
            return
        try:
            # The thread's parent always comes first; oldest = latest = ts brings the pinned reply after it.
            resp = await self.client.conversations_replies(channel=channel, ts=ts, oldest=ts, latest=ts,
                                                           inclusive=True, limit=2)
        except SlackApiError as exc:
            log.warning("slack.pin.fetch_failed", extra={"channel": channel, "ts": ts,
                                                        "error": str(exc.response.get("error"))})
            await self._tell_pinner(channel, user, "I could not read that message from Slack, so it was not "
                                                   "added to the timeline. Try `/incident note` instead.")
            return
        msg = next((m for m in resp.get("messages") or [] if m.get("ts") == ts), None)
        thread = str((msg or {}).get("thread_ts") or ts)
        incident_id = await self.cards.find("slack", channel, thread)
        if msg is None or incident_id is None or thread == ts:
            # a pin outside an incident thread, or on the card itself: none of ours
            log.info("slack.pin.ignored", extra={"channel": channel, "ts": ts, "incident_id": incident_id})
            return
        text = str(msg.get("text") or "").strip()
        author = msg.get("user") or msg.get("bot_id")
        try:
            out = await Notes(self.service).add(incident_id, actor=actor_of(user, None), text=text, extra={
                "via": "slack pushpin", "slack_channel": channel, "slack_ts": ts, "slack_author": author})
        except TocsinError as exc:
            await self._tell_pinner(channel, user, f"Not added to the timeline: {exc}")
            return
        log.info("slack.pin.noted", extra={"incident_id": incident_id, "user": user,
                                           "message_id": out.message.id if out.message else None})

    async def _tell_pinner(self, channel: str, user: str, text: str) -> None:
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError:
            log.exception("slack.pin.answer_failed", extra={"channel": channel, "user": user})
