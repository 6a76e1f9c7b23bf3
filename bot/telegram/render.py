"""Telegram rendering: the incident card as HTML plus its inline keyboard, thread notes, button payloads.

Pure functions, no I/O, so the surface and the handlers share one drawing of an incident.
"""
from __future__ import annotations

import html
from urllib.parse import urlsplit

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.surface import IncidentCard
from core.delivery.message import Notification

MAX_TEXT = 4096
"""Bot API limit for a message, counted in UTF-16 code units after entity parsing."""
TOAST_MAX = 200
"""answerCallbackQuery text limit."""
CALLBACK_PREFIX = "tocsin"
BUTTONS: dict[str, str] = {"ack": "Acknowledge", "monitor": "Monitoring", "resolve": "Resolve"}
"""Card actions a button can do in one tap (updates need text: `/incident update`)."""

_SEVERITY_EMOJI = {"sev1": "\U0001F534", "sev2": "\U0001F7E0", "sev3": "\U0001F7E1", "sev4": "\U0001F535"}
_STATE_EMOJI = {"monitoring": "\U0001F440", "resolved": "\u2705"}
_KIND_LABELS = {"INITIAL": "New incident", "UPDATE": "Update", "BRIDGE": "Bridge", "RESOLVED": "Resolved",
                "ACK": "Acknowledged", "MONITORING": "Monitoring", "ESCALATION": "Escalation",
                "ALERT": "Alert"}
_TITLE_MAX = 1000
_DESCRIPTION_MAX = 2000
_NOTE_MAX = 3800
"""Budgets in UTF-16 units of escaped HTML: measuring markup, not parsed text, errs on the safe side."""
_LOOPBACK = ("localhost", "127.", "::1", "0.0.0.0")


def esc(text: str) -> str:
    """Telegram's HTML mode needs only &, < and > escaped in text."""
    return html.escape(text, quote=False)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def clip(text: str, limit: int) -> str:
    """Cut plain text (before escaping) to `limit` characters with an ellipsis."""
    text = text.strip()
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "\u2026"


def esc_clip(text: str, limit: int) -> str:
    """Escape `text` and cut it so the escaped form stays within `limit` UTF-16 units (ellipsis if cut)."""
    text = text.strip()
    out = esc(text)
    if utf16_len(out) <= limit:
        return out
    parts: list[str] = []
    used = 0
    for ch in text:
        e = esc(ch)
        n = utf16_len(e)
        if used + n > limit - 1:
            break
        parts.append(e)
        used += n
    return "".join(parts).rstrip() + "\u2026"


def linkable(url: str) -> bool:
    """Telegram rejects messages whose links point at loopback hosts; the default public_url is one."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme in ("http", "https") and bool(host) and not host.startswith(_LOOPBACK)


def card_html(card: IncidentCard) -> str:
    """The card body: what, how bad, where it stands, who owns it, how long ack/resolve took."""
    icon = _STATE_EMOJI.get(card.state) or _SEVERITY_EMOJI.get(card.severity, "")
    facts = f"{card.ref} \u00b7 {card.severity.upper()} \u00b7 {card.state.upper()}"
    head = f"{icon} <b>{esc(facts)}</b>"
    lines = [head.strip(), f"<b>{esc_clip(card.title, _TITLE_MAX)}</b>"]
    if card.description and card.description.strip() != card.title.strip():
        lines += ["", esc_clip(card.description, _DESCRIPTION_MAX)]
    lines += ["", f"Commander: {esc(card.commander)}", f"Declared: {card.created_at:%Y-%m-%d %H:%M} UTC"]
    if card.acknowledged_by:
        lines.append(f"Acknowledged by {esc(card.acknowledged_by)} after {esc(card.time_to_ack or '-')}")
    if card.time_to_resolve:
        lines.append(f"Resolved after {esc(card.time_to_resolve)}")
    if linkable(card.link):
        lines += ["", f'<a href="{html.escape(card.link, quote=True)}">Open {esc(card.ref)}</a>']
    return "\n".join(lines)


def note_html(note: Notification) -> str:
    """A thread reply under the card for one incident change (update, ack, bridge, resolve...)."""
    label = _KIND_LABELS.get(note.kind.upper(), note.kind.replace("_", " ").title())
    head = f"<b>{esc(label)}</b>" + (f" \u00b7 {esc(note.incident)}" if note.incident else "")
    body = esc_clip(note.body, _NOTE_MAX)
    return head + (f"\n{body}" if body else "")


def keyboard(card: IncidentCard) -> InlineKeyboardMarkup | None:
    """Buttons for the actions still meaningful (none once resolved: the markup is removed)."""
    row = [InlineKeyboardButton(label, callback_data=callback_data(action, card.id))
           for action, label in BUTTONS.items() if action in card.buttons]
    return InlineKeyboardMarkup([row]) if row else None


def callback_data(action: str, incident_id: int) -> str:
    """`tocsin:<action>:<incident id>`: well under Telegram's 64-byte limit for any id."""
    data = f"{CALLBACK_PREFIX}:{action}:{incident_id}"
    assert len(data.encode()) <= 64, data
    return data


def parse_callback(data: str | None) -> tuple[str, int] | None:
    """(action, incident id) from a button press, or None when it is not one of our buttons."""
    parts = (data or "").split(":")
    if len(parts) != 3 or parts[0] != CALLBACK_PREFIX or parts[1] not in BUTTONS or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def toast(text: str) -> str:
    """A callback answer fits in 200 characters."""
    return clip(text, TOAST_MAX)


def plain(text: str) -> str:
    """A plain-text reply that fits in one message."""
    return text if utf16_len(text) <= MAX_TEXT else clip(text, MAX_TEXT // 2)
