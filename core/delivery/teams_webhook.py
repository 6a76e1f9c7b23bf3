"""Microsoft Teams webhook sender (Workflows or legacy connector): an Adaptive Card 1.4 message."""
from __future__ import annotations

import logging
import re
import time
from typing import ClassVar

import aiohttp

from core.config import Config, RetryPolicy
from core.delivery.base import classify_http
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.policy import DEFAULT_RETRY
from core.delivery.render import TEAMS_MAX_BYTES, json_bytes, render_teams
from core.delivery.webhook import (
    HttpReply,
    attempt_timeout,
    log_result,
    post_to_destination,
    resolve_destination,
)

log = logging.getLogger(__name__)

# Legacy Office 365 connectors answer HTTP 200 and put the real failure in the body.
_EMBEDDED_ERROR = re.compile(r"returned HTTP error (\d{3})")


def classify_teams(reply: HttpReply) -> DeliveryResult:
    """Workflows answer 202; legacy connectors 200 "1", or 200 with "...returned HTTP error 429..."."""
    if 200 <= reply.status < 300:
        m = _EMBEDDED_ERROR.search(reply.text)
        if m:
            return classify_http(int(m.group(1)), retry_after=reply.headers.get("Retry-After"),
                                 summary=reply.text.strip())
    return reply.classify()


class TeamsWebhookSender:
    """POSTs `{"type": "message", "attachments": [adaptive card]}`, kept under Teams' ~28 KB limit."""

    channel: ClassVar[str] = "teams_webhook"
    max_length: ClassVar[int | None] = TEAMS_MAX_BYTES
    rate_per_second: ClassVar[float | None] = 4.0
    """Teams throttles a webhook at a few requests per second (and answers 429 beyond that)."""
    default_retry: ClassVar[RetryPolicy] = DEFAULT_RETRY["teams_webhook"]

    def __init__(self, cfg: Config, *, http: aiohttp.ClientSession) -> None:
        self._cfg = cfg
        self._http = http
        self._timeout = attempt_timeout(cfg, self.channel)

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        dest = resolve_destination(self._cfg, envelope.address, self.channel)
        if isinstance(dest, DeliveryResult):
            return log_result(log, envelope, dest, started=started)
        body = json_bytes(render_teams(envelope.notification))
        reply = await post_to_destination(self._http, dest, body=body, timeout=self._timeout)
        result = classify_teams(reply) if isinstance(reply, HttpReply) else reply
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""
