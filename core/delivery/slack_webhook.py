"""Slack incoming-webhook sender: Block Kit message to a destination's webhook URL."""
from __future__ import annotations

import logging
import time
from typing import ClassVar

import aiohttp

from core.config import Config, RetryPolicy
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.policy import DEFAULT_RETRY
from core.delivery.render import json_bytes, render_slack
from core.delivery.webhook import (
    HttpReply,
    attempt_timeout,
    log_result,
    post_to_destination,
    resolve_destination,
)

log = logging.getLogger(__name__)


class SlackWebhookSender:
    """Slack answers 200 "ok", 429 with Retry-After, or 4xx with a reason such as channel_not_found."""

    channel: ClassVar[str] = "slack_webhook"
    max_length: ClassVar[int | None] = 3000
    rate_per_second: ClassVar[float | None] = 1.0
    """Slack allows about one message per second per incoming webhook."""
    default_retry: ClassVar[RetryPolicy] = DEFAULT_RETRY["slack_webhook"]

    def __init__(self, cfg: Config, *, http: aiohttp.ClientSession) -> None:
        self._cfg = cfg
        self._http = http
        self._timeout = attempt_timeout(cfg, self.channel)

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        dest = resolve_destination(self._cfg, envelope.address, self.channel)
        if isinstance(dest, DeliveryResult):
            return log_result(log, envelope, dest, started=started)
        body = json_bytes(render_slack(envelope.notification))
        reply = await post_to_destination(self._http, dest, body=body, timeout=self._timeout)
        result = reply.classify() if isinstance(reply, HttpReply) else reply
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""
