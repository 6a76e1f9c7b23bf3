"""Telegram: the bot-API page (sendMessage HTML) and the bot's incident card, keyboard and thread notes.

Plain strings and Bot API JSON (no telegram SDK); the adapter turns `keyboard()` into its markup type.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from core.appearance.card import IncidentCard
from core.appearance.common import offers_ack, page_fields, page_links, shown_state
from core.appearance.reminders import SNOOZE_VERB, snooze_button
from core.appearance.vocabulary import (
    BUTTON_LABELS,
    KIND_LABELS,
    role_label,
    SEVERITY_EMOJI,
    STATE_EMOJI,
    escape_html,
    escape_telegram,
    fmt_duration,
    kind_label,
    one_line,
    severity_label,
    state_label,
    truncate,
)
from core.delivery.message import Notification

MAX_TEXT = 4096
"""Bot API limit for a message, counted in UTF-16 code units after entity parsing."""
TOAST_MAX = 200
"""answerCallbackQuery text limit."""
CALLBACK_PREFIX = "tocsin"
BUTTONS = ("ack", "monitor", "resolve")
"""Card actions a button can do in one tap (updates need text: `/incident update`)."""
_TITLE_MAX = 1000
_DESCRIPTION_MAX = 2000
_NOTE_MAX = 3800
"""Budgets in UTF-16 units of escaped HTML: measuring markup, not parsed text, errs on the safe side."""
_LOOPBACK = ("localhost", "127.", "::1", "0.0.0.0")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def esc_clip(text: str, limit: int) -> str:
    """Escape `text` and cut it so the escaped form stays within `limit` UTF-16 units (ellipsis if cut)."""
    text = text.strip()
    out = escape_telegram(text)
    if utf16_len(out) <= limit:
        return out
    parts: list[str] = []
    used = 0
    for ch in text:
        e = escape_telegram(ch)
        n = utf16_len(e)
        if used + n > limit - 1:
            break
        parts.append(e)
        used += n
    return "".join(parts).rstrip() + "\u2026"


# --- page (bot API message) ------------------------------------------------------------------------


def _telegram_html(n: Notification, body: str) -> str:
    meta = []
    if n.severity:
        meta.append(f"{SEVERITY_EMOJI.get(n.severity, '')} {severity_label(n.severity)}".strip())
    if n.incident:
        meta.append(n.incident)
    meta.append(kind_label(n.kind))
    lines = [f"<b>{escape_telegram(' · '.join(meta))}</b>", f"<b>{escape_telegram(one_line(n.title))}</b>"]
    if body:
        lines += ["", escape_telegram(body)]
    state = shown_state(n)
    if state:
        lines += ["", f"State: <i>{escape_telegram(state)}</i>"]
    if n.fields:
        if not state:
            lines.append("")
        lines += [f"<b>{escape_telegram(k)}:</b> {escape_telegram(v)}" for k, v in page_fields(n)]
    links = [f'<a href="{escape_html(url)}">{escape_telegram(name)}</a>' for name, url in page_links(n)]
    ack = offers_ack(n)
    if ack:
        links.insert(0, f'<a href="{escape_html(ack)}">{BUTTON_LABELS["ack"]}</a>')
    if links:
        lines += ["", " | ".join(links)]
    return "\n".join(lines)


def render_telegram(n: Notification, *, max_length: int = MAX_TEXT) -> str:
    """sendMessage text for parse_mode=HTML, the body cut so the message stays within max_length."""
    body = n.body.strip()
    out = _telegram_html(n, body)
    if utf16_len(out) <= max_length:
        return out
    # Entities do not count against Telegram's limit, so measuring the markup is conservative.
    lo, hi = 0, len(body)
    while lo < hi:  # longest body prefix that fits
        mid = (lo + hi + 1) // 2
        if utf16_len(_telegram_html(n, truncate(body, mid))) <= max_length:
            lo = mid
        else:
            hi = mid - 1
    out = _telegram_html(n, truncate(body, lo) if lo else "")
    if utf16_len(out) > max_length:  # fields alone are too long: keep the page, drop the facts
        out = _telegram_html(Notification.from_json({**n.to_json(), "fields": {}}), "")
    return out


# --- card (bot) ----------------------------------------------------------------------------------------


def linkable(url: str) -> bool:
    """Telegram rejects messages whose links point at loopback hosts; the default public_url is one."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme in ("http", "https") and bool(host) and not host.startswith(_LOOPBACK)


def card_html(card: IncidentCard) -> str:
    """The card body: what, how bad, where it stands, who owns it, how long ack/resolve took."""
    icon = STATE_EMOJI.get(card.state) or SEVERITY_EMOJI.get(card.severity, "")
    state = state_label(card.state, flapping=card.flapping).upper()
    facts = f"{card.ref} \u00b7 {card.severity.upper()} \u00b7 {state}"
    head = f"{icon} <b>{escape_telegram(facts)}</b>"
    lines = [head.strip(), f"<b>{esc_clip(card.title, _TITLE_MAX)}</b>"]
    if card.description and card.description.strip() != card.title.strip():
        lines += ["", esc_clip(card.description, _DESCRIPTION_MAX)]
    lines += ["", *(f"{role_label(role)}: {escape_telegram(name)}" for role, _, name in card.roles()),
              f"{KIND_LABELS['INITIAL']}: {card.created_at:%Y-%m-%d %H:%M} UTC"]
    if card.acknowledged_by:
        lines.append(f"Acknowledged by {escape_telegram(card.acknowledged_by)} after {fmt_duration(card.time_to_ack)}")
    if card.time_to_resolve:
        lines.append(f"Resolved after {fmt_duration(card.time_to_resolve)}")
    if linkable(card.link):
        lines += ["", f'<a href="{escape_html(card.link)}">Open {escape_telegram(card.ref)}</a>']
    return "\n".join(lines)


def note_html(note: Notification) -> str:
    """A thread reply under the card for one incident change (update, ack, bridge, resolve...)."""
    label = kind_label(note.kind)
    head = f"<b>{escape_telegram(label)}</b>" + (f" \u00b7 {escape_telegram(note.incident)}" if note.incident else "")
    body = esc_clip(note.body, _NOTE_MAX)
    return head + (f"\n{body}" if body else "")


def post_html(note: Notification) -> str:
    """A plain post in the incident chat that belongs to no incident (an on-call handoff)."""
    return esc_clip(note.body or note.title, _NOTE_MAX)


def keyboard(card: IncidentCard) -> dict[str, Any] | None:
    """Bot API `reply_markup`: the actions still meaningful, then an Open incident URL button to the console
    page (server.public_url; left out where Telegram would refuse the link, e.g. a loopback host). None
    when neither is left (a resolved card on a loopback URL: the markup is removed)."""
    rows: list[list[dict[str, Any]]] = []
    row = [{"text": BUTTON_LABELS[action], "callback_data": callback_data(action, card.id)}
           for action in BUTTONS if action in card.buttons]
    if row:
        rows.append(row)
    if linkable(card.link):
        rows.append([{"text": BUTTON_LABELS["open"], "url": card.link}])
    return {"inline_keyboard": rows} if rows else None


def note_keyboard(note: Notification) -> dict[str, Any] | None:
    """Bot API `reply_markup` of a thread reply: a reminder's Snooze button, else none."""
    snooze = snooze_button(note)
    if snooze is None:
        return None
    incident_id, label = snooze
    return {"inline_keyboard": [[{"text": label, "callback_data": callback_data(SNOOZE_VERB, incident_id)}]]}


def callback_data(action: str, incident_id: int) -> str:
    """`tocsin:<action>:<incident id>`: well under Telegram's 64-byte limit for any id."""
    data = f"{CALLBACK_PREFIX}:{action}:{incident_id}"
    assert len(data.encode()) <= 64, data
    return data


def parse_callback(data: str | None) -> tuple[str, int] | None:
    """(action, incident id) from a button press, or None when it is not one of our buttons."""
    parts = (data or "").split(":")
    if len(parts) != 3 or parts[0] != CALLBACK_PREFIX or parts[1] not in (*BUTTONS, SNOOZE_VERB) \
            or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def toast(text: str) -> str:
    """A callback answer fits in 200 characters."""
    return truncate(text.strip(), TOAST_MAX)


def plain(text: str) -> str:
    """A plain-text reply that fits in one message."""
    return text if utf16_len(text) <= MAX_TEXT else truncate(text.strip(), MAX_TEXT // 2)
