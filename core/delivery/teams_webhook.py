"""Microsoft Teams webhook sender (Workflows or legacy connector): an Adaptive Card 1.4 message."""
from __future__ import annotations

import logging
import re
from typing import ClassVar

from core.appearance.common import json_bytes
from core.appearance.teams import render_teams
from core.delivery.base import classify_http
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.transport import DestinationSender, HttpReply

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


class TeamsWebhookSender(DestinationSender):
    """POSTs `{"type": "message", "attachments": [adaptive card]}`, kept under Teams' ~28 KB limit."""

    channel: ClassVar[str] = "teams_webhook"
    rate_per_second: ClassVar[float | None] = 4.0
    """Teams throttles a webhook at a few requests per second (and answers 429 beyond that)."""
    log = log

    def body(self, envelope: Envelope) -> bytes:
        return json_bytes(render_teams(envelope.notification))

    def classify(self, reply: HttpReply) -> DeliveryResult:
        return classify_teams(reply)
