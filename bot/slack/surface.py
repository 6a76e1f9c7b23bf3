"""SlackSurface: the incident card in `slack.incident_channel` via chat.postMessage / chat.update, and one
thread reply per change. Slack errors are mapped here to SurfaceError so the delivery queue decides retries.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.surface import SurfaceError
from core.appearance.card import IncidentCard
from core.appearance.slack import card_blocks, card_text, post_text, thread_blocks, thread_text
from core.cards import CardRef
from core.clock import Clock
from core.delivery.base import parse_retry_after
from core.delivery.message import Notification

log = logging.getLogger("tocsin.slack")

# ok:false errors worth another try later; every other error is a problem a retry cannot fix
# (bad channel, missing scope, revoked token, invalid blocks) and is reported as permanent.
RETRYABLE_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error",
                              "service_unavailable", "request_timeout", "team_added_to_org", "timeout"})


def map_slack_error(exc: Exception, *, method: str) -> SurfaceError:
    """One vocabulary for the core: 429 and 5xx retry (Retry-After honoured); known ok:false errors are
    permanent; transport failures retry."""
    if isinstance(exc, SlackApiError):
        resp = exc.response
        status = int(getattr(resp, "status_code", 0) or 0) or None
        data = resp.data if isinstance(getattr(resp, "data", None), dict) else {}
        error = str(data.get("error") or "") or f"HTTP {status}"
        headers: dict[str, Any] = dict(getattr(resp, "headers", {}) or {})
        retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        if isinstance(retry_after, list):
            retry_after = retry_after[0] if retry_after else None
        after = parse_retry_after(str(retry_after)) if retry_after is not None else None
        retry = status == 429 or (status is not None and status >= 500) or error in RETRYABLE_ERRORS
        return SurfaceError(f"slack {method}: {error}", retry=retry, after=after, status=status)
    return SurfaceError(f"slack {method}: {type(exc).__name__}: {exc}", retry=True)


@asynccontextmanager
async def mapped(method: str) -> AsyncIterator[None]:
    """Run a Web API call and re-raise its failure as SurfaceError (programming errors pass through)."""
    try:
        yield
    except (TimeoutError, SlackApiError, SlackClientError, aiohttp.ClientError, OSError) as exc:
        err = map_slack_error(exc, method=method)
        log.warning("slack.api.failed", extra={"method": method, "error": str(err), "retry": err.retry,
                                               "retry_after": err.after, "status": err.status})
        raise err from exc


class SlackSurface:
    """ChatSurface for Slack. Its client has no rate-limit retry handler on purpose: a 429 becomes
    SurfaceError(after=Retry-After) so the queue waits, not the worker slot."""

    platform = "slack"

    def __init__(self, client: AsyncWebClient, *, channel: str, clock: Clock) -> None:
        self.client = client
        self.channel = channel
        self.clock = clock

    async def post_card(self, card: IncidentCard) -> CardRef:
        async with mapped("chat.postMessage"):
            resp = await self.client.chat_postMessage(channel=self.channel, text=card_text(card),
                                                      blocks=card_blocks(card, now=self.clock.now()),
                                                      unfurl_links=False)
        channel, ts = str(resp.get("channel") or self.channel), str(resp.get("ts") or "")
        if not ts:
            raise SurfaceError("slack chat.postMessage: answer without ts", retry=False)
        log.info("slack.card.posted", extra={"incident": card.ref, "channel": channel, "ts": ts})
        return CardRef("slack", channel, ts, ts)

    async def update_card(self, ref: CardRef, card: IncidentCard) -> None:
        async with mapped("chat.update"):
            await self.client.chat_update(channel=ref.channel, ts=ref.message_ref, text=card_text(card),
                                          blocks=card_blocks(card, now=self.clock.now()))

    async def post(self, note: Notification) -> str:
        async with mapped("chat.postMessage"):
            resp = await self.client.chat_postMessage(channel=self.channel, text=post_text(note),
                                                      unfurl_links=False)
        return f"{resp.get('channel') or self.channel}/{resp.get('ts') or ''}"

    async def reply(self, ref: CardRef, card: IncidentCard, note: Notification) -> None:
        async with mapped("chat.postMessage"):
            await self.client.chat_postMessage(channel=ref.channel, text=thread_text(note),
                                               blocks=thread_blocks(note),  # a reminder's Snooze button
                                               thread_ts=ref.thread_ref or ref.message_ref,
                                               unfurl_links=False, reply_broadcast=note.kind == "RESOLVED")
