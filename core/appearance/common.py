"""What every page starts from: the headline, a notification's fields and links, and wire-exact JSON."""
from __future__ import annotations

import json
from typing import Any

import orjson

from core.appearance.vocabulary import kind_label, one_line, safe_url, severity_label, severity_long, state_label
from core.delivery.message import Notification

NO_ACK_KINDS = ("RESOLVED", "ACK")
"""Pages of these kinds carry no Acknowledge link or button."""


def offers_ack(n: Notification) -> str | None:
    """The ack link to show on this page, or None (unsafe link, or nothing left to acknowledge)."""
    ack = safe_url(n.ack_url)
    return ack if ack and n.kind.upper() not in NO_ACK_KINDS else None


def wants_ack(n: Notification) -> bool:
    """A page of an incident someone can still acknowledge from the page itself (voice keypress, SMS reply
    code, DM button): not a one-time message, not a resolution or an ack notice, and nothing sent once the
    incident was acknowledged (the core leaves ack_url out then)."""
    return bool(n.incident) and n.kind.upper() not in (*NO_ACK_KINDS, "ONE_TIME") and offers_ack(n) is not None


def headline(n: Notification) -> str:
    """`[SEV1] INC-12 Declared: Database down` - the one line every channel starts from."""
    parts = []
    if n.severity:
        parts.append(f"[{severity_label(n.severity)}]")
    if n.incident:
        parts.append(n.incident)
    parts.append(f"{kind_label(n.kind)}: {one_line(n.title)}")
    return " ".join(parts)


def page_fields(n: Notification) -> list[tuple[str, str]]:
    """Field pairs as strings (a notification read back from JSON may carry numbers)."""
    return [(str(k), "" if v is None else str(v)) for k, v in n.fields.items()]


def shown_state(n: Notification) -> str | None:
    """The state worth printing: none when the headline's kind already says it (Resolved, Monitoring)."""
    if not n.state:
        return None
    label = state_label(n.state)
    return None if label == kind_label(n.kind) else label


def page_facts(n: Notification) -> list[tuple[str, str]]:
    """Severity (with its word), state and the notification's own fields: each once, in that order."""
    out = []
    if n.severity:
        out.append(("Severity", severity_long(n.severity)))
    if (state := shown_state(n)):
        out.append(("State", state))
    return out + [(k, v) for k, v in page_fields(n) if k not in ("Severity", "State")]


def page_links(n: Notification) -> list[tuple[str, str]]:
    return [(name, u) for name, url in n.links.items() if (u := safe_url(url))]


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON: the exact bytes senders put on the wire (and the size limits measure). orjson (a
    fan-out renders a body per page); what it refuses (an integer beyond 64 bits) through the standard
    library, in the same compact form."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
