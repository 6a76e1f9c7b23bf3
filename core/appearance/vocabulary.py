"""The words every channel uses for an incident, plus the shared text helpers (truncate, escapes, durations).

One wording per kind, state, severity and button: change it here and every page, card and reply follows.
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import datetime, timedelta

from core.config import format_duration

KIND_LABELS: dict[str, str] = {
    "INITIAL": "Declared",
    "UPDATE": "Update",
    "BRIDGE": "Bridge",
    "RESOLVED": "Resolved",
    "ONE_TIME": "Notice",
    "HANDOFF": "On-call handoff",
    "ACK": "Acknowledged",
    "MONITORING": "Monitoring",
    "ESCALATION": "Escalation",
    "ALERT": "Alert",
    "TEST": "Test",
    "DIGEST": "Digest",
    "FLAPPING": "Flapping",
    "REMINDER": "Reminder",
    "ROLE": "Role",
    "NOTE": "Note",
}
"""Thread positions as people read them. INITIAL is "Declared", the verb of `/incident declare`."""
ROLE_LABELS: dict[str, str] = {"commander": "Commander", "comms": "Comms", "scribe": "Scribe"}
"""Incident roles (`/incident role`), in the order cards list them."""
STATE_LABELS: dict[str, str] = {"open": "Open", "monitoring": "Monitoring", "resolved": "Resolved"}
SEVERITY_WORDS: dict[str, str] = {"sev1": "critical", "sev2": "high", "sev3": "medium", "sev4": "low"}
SEVERITY_EMOJI: dict[str, str] = {
    "sev1": "\U0001F534", "sev2": "\U0001F7E0", "sev3": "\U0001F7E1", "sev4": "\U0001F535",
}
STATE_EMOJI: dict[str, str] = {"monitoring": "\U0001F440", "resolved": "\u2705"}
"""Shown instead of the severity colour once an incident is past its worst."""
BUTTON_LABELS: dict[str, str] = {
    "ack": "Acknowledge", "update": "Add update", "monitor": "Monitoring", "resolve": "Resolve",
    "snooze": "Snooze",
    "open": "Open incident",
}
"""Card buttons, by the verb they run (`open`: the link to the incident's console page)."""
ELLIPSIS = "\u2026"


def kind_label(kind: str) -> str:
    """Thread position as people read it (INITIAL -> "Declared"); unknown kinds are title-cased."""
    return KIND_LABELS.get(kind.upper(), kind.replace("_", " ").title())


def role_label(role: str) -> str:
    return ROLE_LABELS.get(role, role.capitalize())


def holder_name(identity: str | None, role_names: Mapping[str, object] | None, role: str) -> str | None:
    """How a card names a role's holder: the name given at assignment, else the identity (without
    `contact:`)."""
    if not identity:
        return None
    given = (role_names or {}).get(role)
    if isinstance(given, str) and given:
        return given
    return identity.removeprefix("contact:")


FLAPPING_LABEL = "flapping"
"""The mark of an incident held open because it resolves and reopens too often (core/flapping.py)."""


def state_label(state: str, *, flapping: bool = False) -> str:
    """`Open`, or `Open (flapping)` while the incident is held open as flapping."""
    label = STATE_LABELS.get(state, state.replace("_", " ").capitalize())
    return f"{label} ({FLAPPING_LABEL})" if flapping and state != "resolved" else label


def flapping_text(what: str, *, event: str | None = None, text: str = "", until: datetime | None = None,
                  stable_for: timedelta | None = None, reopens: int = 0, limit: int = 0,
                  flipped: bool = True) -> str:
    """The thread entries of a flapping incident: `opened` (the mark), `held` (an inbound resolve or
    re-fire recorded without paging), `stable` (the mark cleared), `resolved` (closed after it)."""
    span = format_duration(stable_for) if stable_for is not None else ""
    if what == "opened":
        return (f"Flapping: resolved and reopened {reopens} times within {span} "
                f"(more than {limit}). Held open; further resolves and re-fires page nobody until it is "
                f"stable for {span}.")
    if what == "held":
        verb = "Resolve held" if event == "resolve" else ("Fired again" if flipped else "Update")
        when = f"; stable at {until:%Y-%m-%d %H:%M} UTC if nothing changes" if until else ""
        return f"{verb} (flapping, nobody paged){when}." + (f"\n{text}" if text else "")
    if what == "stable":
        tail = "; the last event was a resolve" if event == "resolve" else "; still firing, stays open"
        return f"Stable for {span}: no longer flapping{tail}."
    return "Resolved: stable after flapping, and the last event was a resolve."


def severity_label(severity: str | None) -> str:
    """`SEV1`: the short form used in headlines."""
    return severity.upper() if severity else ""


def severity_long(severity: str | None) -> str:
    """`SEV1 (critical)`: the form used in facts and pickers."""
    if not severity:
        return ""
    word = SEVERITY_WORDS.get(severity)
    return f"{severity.upper()} ({word})" if word else severity.upper()


def truncate(text: str, limit: int, ellipsis: str = ELLIPSIS) -> str:
    """`text` within `limit` characters, cut at the end and marked with `ellipsis`."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ellipsis))].rstrip() + ellipsis


def one_line(text: str, limit: int | None = None) -> str:
    """Collapse whitespace (headers and titles must not carry newlines)."""
    out = " ".join(text.split())
    return truncate(out, limit) if limit else out


_SAFE_SCHEMES = ("http://", "https://", "mailto:", "tel:")


def safe_url(url: str | None) -> str | None:
    """Only http(s)/mailto/tel links become clickable: an event must not smuggle `javascript:` in."""
    if not url:
        return None
    u = url.strip()
    return u if u.lower().startswith(_SAFE_SCHEMES) and not any(c in u for c in "\r\n\t ") else None


# --- one escape per markup language ------------------------------------------------------------------


def escape_html(text: str) -> str:
    """HTML text and attribute values (quotes too)."""
    return html.escape(text, quote=True)


def escape_telegram(text: str) -> str:
    """Telegram's HTML mode needs only &, < and > escaped in text."""
    return html.escape(text, quote=False)


def escape_markdown(text: str) -> str:
    """Markdown text that stays text: `<` cannot open an HTML tag when the export is rendered."""
    return text.replace("\\", "\\\\").replace("<", "\\<")


def escape_markdown_cell(text: str) -> str:
    """Text inside a Markdown table cell: escaped as above, pipes too, line breaks as <br>, so a body
    cannot break the table or start a heading."""
    lines = escape_markdown(text).replace("|", "\\|").splitlines()
    return " <br> ".join(line.strip() for line in lines)


def escape_slack(text: str) -> str:
    """Slack mrkdwn control characters: a title like `<!channel>` must not ping a whole channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ANSI/VT sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte escapes; C1 CSI too.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")
_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f" + _BIDI + "]")
_WHITESPACE = re.compile(r"[\t\n\r\v\f]")
_CONTROL_KEEP_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + _BIDI + "]")


def escape_terminal(text: str, *, lines: bool = False) -> str:
    """Text safe to print on a terminal: no ANSI escapes, C0/C1 control characters or bidi overrides,
    so an incident title cannot move the cursor, recolour the screen or reorder what an operator reads.
    Without `lines`, line breaks and tabs become spaces (one field, one line); with it they are kept."""
    out = _ANSI.sub("", text)
    if lines:
        return _CONTROL_KEEP_LINES.sub("", out)
    return _CONTROL.sub("", _WHITESPACE.sub(" ", out))


# --- durations ------------------------------------------------------------------------------------------


def fmt_duration(value: float | timedelta | None) -> str:
    """`42s`, `5m00s`, `2h05m`; "-" when there is nothing to measure."""
    if value is None:
        return "-"
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
