"""Answering the Slack user: response_url, else an ephemeral message, else a DM (mixed into SlackAdapter)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.slack.requests import channel_of

if TYPE_CHECKING:
    from core.config import SlackConfig

log = logging.getLogger("tocsin.slack")

# Where chat.postEphemeral cannot reach the user (bot not in the channel, a DM): answer by DM instead.
_UNREACHABLE = frozenset({"channel_not_found", "not_in_channel", "user_not_in_channel", "is_archived"})


class Answers:
    """Needs `client`, `http` and `retry_handlers` (set by SlackAdapter)."""

    client: AsyncWebClient
    http: aiohttp.ClientSession
    retry_handlers: list[AsyncRetryHandler]
    cfg: SlackConfig


    async def _answer(self, body: dict[str, Any], text: str, *, in_channel: bool) -> None:
        """Slash command answers go to its response_url (works in DMs and channels the bot is not in)."""
        url = body.get("response_url")
        if url and await self._respond(url, text, in_channel=in_channel):
            return
        where = {"user": {"id": body.get("user_id")}, "channel": {"id": body.get("channel_id")}}
        await self._tell_user(where, text)

    async def _respond(self, url: str, text: str, *, in_channel: bool) -> bool:
        hook = AsyncWebhookClient(url, session=self.http, timeout=10,
                                  retry_handlers=list(self.retry_handlers),
                                  logger=logging.getLogger("tocsin.slack.web"))
        resp = await hook.send(text=text, response_type="in_channel" if in_channel else "ephemeral",
                               replace_original=False)
        if resp.status_code == 200:
            return True
        log.warning("slack.respond.failed", extra={"status": resp.status_code, "body": str(resp.body)[:200]})
        return False

    async def _tell_user(self, body: dict[str, Any], text: str, *, metadata: dict[str, Any] | None = None,
                         in_channel: bool = False) -> None:
        """Answer the presser/submitter: the form's response_url when it has one, else an ephemeral
        message in the channel, else (bot not in that channel) a DM."""
        user = str((body.get("user") or {}).get("id") or "")
        meta = metadata or {}
        url = meta.get("response_url")
        if isinstance(url, str) and url and await self._respond(url, text, in_channel=in_channel):
            return
        channel = meta.get("channel") or channel_of(body)
        if channel:
            try:
                await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
                return
            except SlackApiError as exc:
                if exc.response.get("error") not in _UNREACHABLE:
                    raise
                log.info("slack.ephemeral.unreachable", extra={"error": exc.response.get("error")})
        await self.client.chat_postMessage(channel=user, text=text)
