"""Slack incoming-webhook sender: Block Kit message to a destination's webhook URL."""
from __future__ import annotations

import logging
from typing import ClassVar

from core.appearance.common import json_bytes
from core.appearance.slack import render_slack
from core.delivery.message import Envelope
from core.delivery.transport import DestinationSender

log = logging.getLogger(__name__)


class SlackWebhookSender(DestinationSender):
    """Slack answers 200 "ok", 429 with Retry-After, or 4xx with a reason such as channel_not_found."""

    channel: ClassVar[str] = "slack_webhook"
    rate_per_second: ClassVar[float | None] = 1.0
    """Slack allows about one message per second per incoming webhook."""
    log = log

    def body(self, envelope: Envelope) -> bytes:
        return json_bytes(render_slack(envelope.notification))
