"""Generic webhook sender (the plumbing it shares with other senders is in core/delivery/transport.py).

Body: JSON (core/appearance/webhook.py). Headers: the destination's own, `Idempotency-Key` (the same on every
retry, so a slow receiver that got the first attempt can drop the repeat) and, when the destination has an
`hmac_secret`, `X-Tocsin-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import ClassVar

from core.appearance.common import json_bytes
from core.appearance.webhook import render_webhook, render_webhook_shared
from core.config import Destination
from core.delivery.message import Envelope, Notification
from core.delivery.transport import DestinationSender

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Tocsin-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


# --- signatures -------------------------------------------------------------------------------------


def sign_body(secret: str | bytes, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the exact bytes sent, keyed by the destination's hmac_secret."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """What a receiver runs: constant-time comparison of the header with our own signature."""
    if not header:
        return False
    return hmac.compare_digest(sign_body(secret, body), header.strip())


class WebhookSender(DestinationSender):
    """POST/PUT the event + notification as JSON to a named destination, signed when it has a secret."""

    channel: ClassVar[str] = "webhook"
    rate_per_second: ClassVar[float | None] = None
    log = log

    _tail: tuple[Notification, bytes] | None = None
    """The serialized shared part of the last notification's body (see `body`)."""

    def body(self, envelope: Envelope) -> bytes:
        """render_webhook's JSON, byte for byte. The rows of a fan-out share one Notification object
        (core.delivery.queue.claim decodes a payload once per claim), so the shared part (incident, event,
        notification) is serialized once per notification and only the per-delivery head per page."""
        n = envelope.notification
        whole = render_webhook(n, idempotency_key=envelope.idempotency_key, delivery_id=envelope.delivery_id,
                               attempt=envelope.attempt, shared=False)
        tail = self._tail
        if tail is None or tail[0] is not n:
            tail = self._tail = (n, json_bytes(render_webhook_shared(n))[1:])
        return json_bytes(whole)[:-1] + b"," + tail[1]

    def headers(self, dest: Destination, envelope: Envelope, body: bytes) -> dict[str, str]:
        headers = {
            IDEMPOTENCY_HEADER: envelope.idempotency_key,
            "X-Tocsin-Delivery": str(envelope.delivery_id),
            "X-Tocsin-Attempt": str(envelope.attempt),
        }
        if dest.hmac_secret is not None and dest.hmac_secret.get_secret_value():
            headers[SIGNATURE_HEADER] = sign_body(dest.hmac_secret.get_secret_value(), body)
        return headers
