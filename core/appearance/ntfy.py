"""ntfy: the JSON publish body (title, message, priority from severity, tags, click and actions)."""
from __future__ import annotations

from typing import Any

from core.appearance.common import headline, offers_ack, page_fields, page_links
from core.appearance.vocabulary import BUTTON_LABELS, truncate
from core.delivery.message import Notification

NTFY_PRIORITY: dict[str, int] = {"sev1": 5, "sev2": 4, "sev3": 3, "sev4": 2}
"""ntfy priorities: 5 urgent (long vibration, bypasses Do Not Disturb on Android) ... 1 min."""
NTFY_TAGS: dict[str, str] = {"sev1": "rotating_light", "sev2": "warning", "sev3": "warning",
                             "sev4": "information_source"}
"""Tags that match an emoji shortcode show as that emoji before the title."""
KIND_TAGS: dict[str, str] = {"RESOLVED": "white_check_mark", "ACK": "eyes", "ESCALATION": "arrow_double_up",
                             "TEST": "test_tube"}
MESSAGE_MAX = 3500
"""ntfy keeps messages up to 4096 bytes as text (larger ones become attachments); stay well under."""


def ntfy_message(n: Notification) -> str:
    lines = [n.body.strip()] if n.body.strip() else []
    lines += [f"{k}: {v}" for k, v in page_fields(n)]
    return truncate("\n".join(lines) or headline(n), MESSAGE_MAX)


def render_ntfy(n: Notification, *, topic: str) -> dict[str, Any]:
    """The body of `POST <server>/` (ntfy's JSON publishing): everything the phone shows and can do."""
    tags = [t for t in (NTFY_TAGS.get(n.severity or ""), KIND_TAGS.get(n.kind.upper())) if t]
    if n.incident:
        tags.append(n.incident)
    body: dict[str, Any] = {
        "topic": topic,
        "title": truncate(headline(n), 250),
        "message": ntfy_message(n),
        "priority": NTFY_PRIORITY.get(n.severity or "", 3),
        "tags": tags,
    }
    links = dict(page_links(n))
    click = links.get("Incident") or next(iter(links.values()), None)
    actions: list[dict[str, Any]] = []
    if click:
        body["click"] = click
        actions.append({"action": "view", "label": BUTTON_LABELS["open"], "url": click, "clear": False})
    ack = offers_ack(n)
    if ack and ack != click:
        # A view action, not ntfy's http action: the signed /ack/<token> link opens its confirm page (a bare
        # POST is refused there, so a prefetch or a stray request acknowledges nothing); one more tap.
        actions.append({"action": "view", "label": BUTTON_LABELS["ack"], "url": ack, "clear": True})
    if actions:
        body["actions"] = actions[:3]  # ntfy allows three actions
    return body
