"""Generic webhook: the versioned JSON body receivers parse and de-duplicate on."""
from __future__ import annotations

from typing import Any

from core.delivery.message import Notification

WEBHOOK_VERSION = "1"


def render_webhook(n: Notification, *, idempotency_key: str, delivery_id: int,
                   attempt: int, shared: bool = True) -> dict[str, Any]:
    """The JSON body: the routed event, the notification, and the idempotency key receivers dedupe on.
    `shared=False` leaves out the part every page of one notification has in common
    (render_webhook_shared), for a sender that serializes it once per fan-out."""
    head = {
        "version": WEBHOOK_VERSION,
        "type": f"tocsin.{n.kind.lower()}",
        "idempotency_key": idempotency_key,
        "delivery_id": delivery_id,
        "attempt": attempt,
    }
    return {**head, **render_webhook_shared(n)} if shared else head


def render_webhook_shared(n: Notification) -> dict[str, Any]:
    """The body's keys after the per-delivery ones, in order: the same for every page of `n`."""
    return {"incident": n.incident, "event": n.event, "notification": n.to_json()}
