"""Web Push: the small JSON the console's service worker turns into a notification."""
from __future__ import annotations

from typing import Any

from core.appearance.common import headline, offers_ack, page_links
from core.appearance.vocabulary import truncate
from core.delivery.message import Notification

BODY_MAX = 400
"""Push services accept about 4 KB of encrypted payload; a notification shows a few lines anyway."""


def render_webpush(n: Notification) -> dict[str, Any]:
    links = dict(page_links(n))
    return {
        "title": truncate(headline(n), 120),
        "body": truncate(" ".join(n.body.split()), BODY_MAX),
        "tag": n.incident or n.kind.lower(),
        "url": links.get("Incident") or next(iter(links.values()), None),
        "ack_url": offers_ack(n),
        "severity": n.severity,
        "require_interaction": n.severity == "sev1",
    }
