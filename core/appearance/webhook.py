"""Generic webhook: the versioned JSON body receivers parse and de-duplicate on."""
from __future__ import annotations

from typing import Any

from core.delivery.message import Notification

WEBHOOK_VERSION = "1"


def render_webhook(n: Notification, *, idempotency_key: str, delivery_id: int,
                   attempt: int) -> dict[str, Any]:
    """The JSON body: the routed event, the notification, and the idempotency key receivers dedupe on."""
    return {
        "version": WEBHOOK_VERSION,
        "type": f"tocsin.{n.kind.lower()}",
        "idempotency_key": idempotency_key,
        "delivery_id": delivery_id,
        "attempt": attempt,
        "incident": n.incident,
        "event": n.event,
        "notification": n.to_json(),
    }
