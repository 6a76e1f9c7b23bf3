"""Per-channel rendering of one neutral Notification: email, SMS, voice, Slack, Teams, Telegram, webhook.

Pure functions, no I/O: senders call them at send time, the outbox stores `render_text()`.
"""
from __future__ import annotations

import html
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from core.delivery.message import Notification

KIND_LABELS: dict[str, str] = {
    "INITIAL": "New incident",
    "UPDATE": "Update",
    "BRIDGE": "Bridge",
    "RESOLVED": "Resolved",
    "ONE_TIME": "Notice",
    "ACK": "Acknowledged",
    "MONITORING": "Monitoring",
    "ESCALATION": "Escalation",
    "ALERT": "Alert",
}
SEVERITY_WORDS: dict[str, str] = {"sev1": "critical", "sev2": "high", "sev3": "medium", "sev4": "low"}
SEVERITY_EMOJI: dict[str, str] = {
    "sev1": "\U0001F534", "sev2": "\U0001F7E0", "sev3": "\U0001F7E1", "sev4": "\U0001F535",
}
SEVERITY_HTML_COLOR: dict[str, str] = {
    "sev1": "#b3261e", "sev2": "#d9730d", "sev3": "#b58900", "sev4": "#2f6fb3",
}
RESOLVED_COLOR = "#2e7d32"

SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_FIELD_MAX = 2000
TEAMS_MAX_BYTES = 28_000
"""Teams rejects messages over about 28 KB; we measure the whole serialized body, in UTF-8 bytes."""
TELEGRAM_MAX = 4096
VOICE_BODY_MAX = 600
"""About forty seconds of speech: long enough for context, short enough to reach "press 1"."""
VOICE_TITLE_MAX = 300
SUBJECT_MAX = 200

_SAFE_SCHEMES = ("http://", "https://", "mailto:", "tel:")


# --- shared helpers ---------------------------------------------------------------------------------


def kind_label(kind: str) -> str:
    """Thread position as people read it (INITIAL → "New incident")."""
    return KIND_LABELS.get(kind.upper(), kind.replace("_", " ").title())


def severity_label(severity: str | None) -> str:
    return severity.upper() if severity else ""


def safe_url(url: str | None) -> str | None:
    """Only http(s)/mailto/tel links become clickable: an event must not smuggle `javascript:` in."""
    if not url:
        return None
    u = url.strip()
    return u if u.lower().startswith(_SAFE_SCHEMES) and not any(c in u for c in "\r\n\t ") else None


def one_line(text: str, limit: int | None = None) -> str:
    """Collapse whitespace (headers and titles must not carry newlines)."""
    out = " ".join(text.split())
    return truncate(out, limit) if limit else out


def truncate(text: str, limit: int, ellipsis: str = "…") -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ellipsis))].rstrip() + ellipsis


def headline(n: Notification) -> str:
    """`[SEV1] INC-12 New incident: Database down` — the one line every channel starts from."""
    parts = []
    if n.severity:
        parts.append(f"[{severity_label(n.severity)}]")
    if n.incident:
        parts.append(n.incident)
    parts.append(f"{kind_label(n.kind)}: {one_line(n.title)}")
    return " ".join(parts)


def _fields(n: Notification) -> list[tuple[str, str]]:
    """Field pairs as strings (a notification read back from JSON may carry numbers)."""
    return [(str(k), "" if v is None else str(v)) for k, v in n.fields.items()]


def _links(n: Notification) -> list[tuple[str, str]]:
    return [(name, u) for name, url in n.links.items() if (u := safe_url(url))]


# --- email ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str


@cache
def _jinja() -> Environment:
    # HTML templates autoescape; the plain-text template must not turn "&" into "&amp;".
    return Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=select_autoescape(enabled_extensions=("html",), disabled_extensions=("txt",),
                                     default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _template_context(n: Notification) -> dict[str, Any]:
    if n.kind.upper() == "RESOLVED":
        color = RESOLVED_COLOR
    else:
        color = SEVERITY_HTML_COLOR.get(n.severity or "", "#555555")
    return {
        "n": n,
        "headline": headline(n),
        "title": one_line(n.title),
        "kind": kind_label(n.kind),
        "severity": severity_label(n.severity),
        "severity_word": SEVERITY_WORDS.get(n.severity or "", ""),
        "color": color,
        "fields": _fields(n),
        "links": _links(n),
        "ack_url": safe_url(n.ack_url),
    }


def email_subject(n: Notification) -> str:
    return one_line(headline(n), SUBJECT_MAX)


def render_email(n: Notification) -> EmailContent:
    """Subject, plain text and HTML (multipart/alternative) from the templates in templates/."""
    ctx = _template_context(n)
    env = _jinja()
    return EmailContent(
        subject=email_subject(n),
        text=env.get_template("email.txt").render(**ctx),
        html=env.get_template("email.html").render(**ctx),
    )


# --- SMS ----------------------------------------------------------------------------------------------

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
"""Characters that cost two septets (escape + char)."""

# Typography that would force a whole SMS into UCS-2 (70 chars a segment) for no good reason.
_GSM_FRIENDLY = str.maketrans({
    "‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-", "‐": "-",
    "…": "...", "\u00a0": " ", "\t": " ", "•": "-", "·": "-",
})


@dataclass(frozen=True)
class SmsInfo:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int
    """Septets for GSM-7, UTF-16 code units for UCS-2."""
    segments: int


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)


def _char_units(text: str, gsm: bool) -> list[int]:
    if gsm:
        return [2 if c in GSM7_EXTENDED else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def _pack(units: list[int], single: int, multi: int) -> int:
    """Segments needed; a character never straddles two segments (escapes and surrogate pairs)."""
    total = sum(units)
    if total <= single:
        return 1 if units else 0
    segments, used = 1, 0
    for u in units:
        if used + u > multi:
            segments, used = segments + 1, 0
        used += u
    return segments


def sms_info(text: str) -> SmsInfo:
    """Encoding and segment count: GSM-7 160/153 septets, else UCS-2 70/67 code units."""
    gsm = is_gsm7(text)
    units = _char_units(text, gsm)
    if gsm:
        return SmsInfo("GSM-7", sum(units), _pack(units, 160, 153))
    return SmsInfo("UCS-2", sum(units), _pack(units, 70, 67))


def split_sms(text: str) -> list[str]:
    """The segments a handset would receive (for display and tests; SNS concatenates by itself)."""
    info = sms_info(text)
    if info.segments <= 1:
        return [text] if text else []
    gsm = info.encoding == "GSM-7"
    limit = 153 if gsm else 67
    out, cur, used = [], "", 0
    for c, u in zip(text, _char_units(text, gsm), strict=True):
        if used + u > limit:
            out.append(cur)
            cur, used = "", 0
        cur += c
        used += u
    out.append(cur)
    return out


def gsm_friendly(text: str) -> str:
    return text.translate(_GSM_FRIENDLY)


def fit_sms(head: str, tail: str = "", *, max_segments: int) -> str:
    """`head + tail` within max_segments, cutting the end of `head` (marked "...") but keeping `tail`.

    `tail` holds what must survive (the ack link); if even the tail does not fit it is cut too.
    """
    full = head + tail
    if sms_info(full).segments <= max_segments:
        return full
    marker = "..."

    def fits(k: int) -> bool:
        return sms_info(head[:k].rstrip() + marker + tail).segments <= max_segments

    # Segment count only grows with the prefix length, so binary search the longest prefix.
    lo, hi = 0, len(head)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    if lo > 0 or fits(0):
        return head[:lo].rstrip() + marker + tail
    return fit_sms(full, "", max_segments=max_segments)


def render_sms(n: Notification, *, max_segments: int = 3) -> str:
    """Compact text: severity, incident, thread position, title, body; the ack link always survives."""
    bits = [b for b in (severity_label(n.severity), n.incident) if b]
    head = " ".join(bits + [f"{kind_label(n.kind)}: {one_line(n.title)}"])
    if n.state and n.kind.upper() not in ("RESOLVED", "ACK"):
        head += f" [{n.state}]"
    if n.body.strip():
        head += "\n" + one_line(n.body)
    for key, value in _fields(n):
        head += f"\n{key}: {one_line(value)}"
    ack = safe_url(n.ack_url)
    tail = f"\nAck: {ack}" if ack else ""
    head = "\n".join(" ".join(line.split()) for line in strip_symbols(gsm_friendly(head)).split("\n"))
    return fit_sms(head, gsm_friendly(tail), max_segments=max_segments)


# --- voice --------------------------------------------------------------------------------------------

_MD_LINK = re.compile(r"\[([^\]]*)\]\((?:[^)]*)\)")
_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.IGNORECASE)
_INC = re.compile(r"\bINC-(\d+)\b", re.IGNORECASE)
_SEV = re.compile(r"\bsev\s*-?\s*([1-4])\b", re.IGNORECASE)
_MD_CHARS = re.compile(r"[*_~`#<>|\\]+")
_SLACK_EMOJI = re.compile(r":[a-z0-9_+\-]+:")


def strip_symbols(text: str) -> str:
    """Drop emoji and other pictographs (they cannot be spoken and cost SMS their GSM-7 encoding)."""
    return "".join(
        " " if unicodedata.category(c) in ("So", "Cs", "Co", "Cn") or c in "\u200d\ufe0f\ufe0e" else c
        for c in text
    )


def speakable(text: str) -> str:
    """What text-to-speech can say: no emoji, markdown or URLs.

    INC-12 becomes "incident 12" and sev1 "severity 1".
    """
    t = _MD_LINK.sub(r"\1", text)
    t = _URL.sub(" ", t)
    t = _SLACK_EMOJI.sub(" ", t)
    t = strip_symbols(t)
    t = _MD_CHARS.sub(" ", t).replace("&", " and ")
    t = _INC.sub(lambda m: f"incident {m.group(1)}", t)
    t = _SEV.sub(lambda m: f"severity {m.group(1)}", t)
    t = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in t)
    return " ".join(t.split())


def spoken_severity(severity: str | None) -> str:
    if not severity:
        return ""
    word = SEVERITY_WORDS.get(severity)
    return f"{speakable(severity)}, {word}" if word else speakable(severity)


def render_voice(n: Notification) -> str:
    """The script read on the call (the TwiML wraps it with the "press 1" gather)."""
    parts = ["This is Tocsin."]
    lead = kind_label(n.kind)
    if n.incident:
        lead += f" for {speakable(n.incident)}"
    if n.severity:
        lead += f", {spoken_severity(n.severity)}"
    parts.append(lead + ".")
    parts.append(truncate(speakable(n.title), VOICE_TITLE_MAX, ellipsis="").rstrip(".…") + ".")
    if n.body.strip():
        body = truncate(speakable(n.body), VOICE_BODY_MAX, ellipsis="")
        parts.append(body.rstrip(".…") + ".")
    if n.state and n.kind.upper() not in ("RESOLVED",):
        parts.append(f"State: {speakable(n.state)}.")
    return " ".join(p for p in parts if p.strip(" ."))


# --- Slack Block Kit --------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters; everything else is left to Slack's own formatting."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_slack(n: Notification) -> dict[str, Any]:
    """An incoming-webhook body: Block Kit blocks plus the `text` fallback for notifications."""
    title = one_line(n.title)
    head = f"{n.incident} · {title}" if n.incident else title
    context = [f"*{kind_label(n.kind)}*"]
    if n.severity:
        context.append(f"{SEVERITY_EMOJI.get(n.severity, '')} {severity_label(n.severity)}".strip())
    if n.state:
        context.append(f"state: *{slack_escape(n.state)}*")
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": truncate(head, SLACK_HEADER_MAX), "emoji": True}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
    ]
    if n.body.strip():
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": truncate(slack_escape(n.body), SLACK_SECTION_MAX)}})
    items = _fields(n)
    for start in range(0, min(len(items), 40), 10):  # a section holds at most 10 fields
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": truncate(f"*{slack_escape(k)}*\n{slack_escape(v)}", SLACK_FIELD_MAX)}
            for k, v in items[start:start + 10]
        ]})
    links = _links(n)
    ack = safe_url(n.ack_url)
    buttons: list[dict[str, Any]] = []
    if ack and n.kind.upper() not in ("RESOLVED", "ACK"):
        buttons.append({"type": "button", "text": {"type": "plain_text", "text": "Acknowledge"},
                        "url": ack, "style": "danger"})
    for name, url in links[:24]:
        if len(url) <= 3000:
            buttons.append({"type": "button", "text": {"type": "plain_text", "text": truncate(name, 75)},
                            "url": url})
    if buttons:
        blocks.append({"type": "actions", "elements": buttons[:25]})
    return {"text": slack_escape(headline(n)), "blocks": blocks[:50]}


# --- Teams Adaptive Card ----------------------------------------------------------------------------


def _teams_color(n: Notification) -> str:
    if n.kind.upper() == "RESOLVED":
        return "Good"
    return {"sev1": "Attention", "sev2": "Attention", "sev3": "Warning"}.get(n.severity or "", "Default")


def _teams_card(n: Notification, body_text: str) -> dict[str, Any]:
    meta = [kind_label(n.kind)]
    if n.incident:
        meta.insert(0, n.incident)
    if n.severity:
        meta.append(f"{severity_label(n.severity)} ({SEVERITY_WORDS.get(n.severity, '')})")
    if n.state:
        meta.append(f"state: {n.state}")
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": " · ".join(meta), "weight": "Bolder", "color": _teams_color(n),
         "wrap": True},
        {"type": "TextBlock", "text": one_line(n.title), "size": "Large", "weight": "Bolder", "wrap": True},
    ]
    if body_text:
        body.append({"type": "TextBlock", "text": body_text, "wrap": True})
    if n.fields:
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _fields(n)]})
    actions: list[dict[str, Any]] = []
    ack = safe_url(n.ack_url)
    if ack and n.kind.upper() not in ("RESOLVED", "ACK"):
        actions.append({"type": "Action.OpenUrl", "title": "Acknowledge", "url": ack, "style": "destructive"})
    actions += [{"type": "Action.OpenUrl", "title": name, "url": url} for name, url in _links(n)]
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if actions:
        card["actions"] = actions
    return card


def teams_message(card: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
    ]}


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON: the exact bytes senders put on the wire (and the size limits measure)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_size(obj: Any) -> int:
    return len(json_bytes(obj))


def render_teams(n: Notification, *, max_bytes: int = TEAMS_MAX_BYTES) -> dict[str, Any]:
    """The webhook body (message + Adaptive Card 1.4), body text cut until the whole is under max_bytes."""
    msg = teams_message(_teams_card(n, n.body))
    if _json_size(msg) <= max_bytes:
        return msg
    lo, hi = 0, len(n.body)
    while lo < hi:  # longest body prefix that fits
        mid = (lo + hi + 1) // 2
        if _json_size(teams_message(_teams_card(n, truncate(n.body, mid)))) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    msg = teams_message(_teams_card(n, truncate(n.body, lo) if lo else ""))
    if _json_size(msg) > max_bytes:  # fields/links alone are too big: drop the facts, keep the page
        trimmed = Notification.from_json({**n.to_json(), "fields": {}, "body": ""})
        msg = teams_message(_teams_card(trimmed, truncate(n.body, 2000)))
    return msg


# --- Telegram HTML ----------------------------------------------------------------------------------


def tg_escape(text: str) -> str:
    """Telegram's HTML mode needs only &, < and > escaped in text."""
    return html.escape(text, quote=False)


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _telegram_html(n: Notification, body: str) -> str:
    meta = []
    if n.severity:
        meta.append(f"{SEVERITY_EMOJI.get(n.severity, '')} {severity_label(n.severity)}".strip())
    if n.incident:
        meta.append(n.incident)
    meta.append(kind_label(n.kind))
    lines = [f"<b>{tg_escape(' · '.join(meta))}</b>", f"<b>{tg_escape(one_line(n.title))}</b>"]
    if body:
        lines += ["", tg_escape(body)]
    if n.state:
        lines += ["", f"State: <i>{tg_escape(n.state)}</i>"]
    if n.fields:
        if not n.state:
            lines.append("")
        lines += [f"<b>{tg_escape(k)}:</b> {tg_escape(v)}" for k, v in _fields(n)]
    links = [f'<a href="{html.escape(url, quote=True)}">{tg_escape(name)}</a>' for name, url in _links(n)]
    ack = safe_url(n.ack_url)
    if ack and n.kind.upper() not in ("RESOLVED", "ACK"):
        links.insert(0, f'<a href="{html.escape(ack, quote=True)}">Acknowledge</a>')
    if links:
        lines += ["", " | ".join(links)]
    return "\n".join(lines)


def render_telegram(n: Notification, *, max_length: int = TELEGRAM_MAX) -> str:
    """sendMessage text for parse_mode=HTML, the body cut so the message stays within max_length."""
    body = n.body.strip()
    out = _telegram_html(n, body)
    if _utf16_len(out) <= max_length:
        return out
    # Entities do not count against Telegram's limit, so measuring the markup is conservative.
    lo, hi = 0, len(body)
    while lo < hi:  # longest body prefix that fits
        mid = (lo + hi + 1) // 2
        if _utf16_len(_telegram_html(n, truncate(body, mid))) <= max_length:
            lo = mid
        else:
            hi = mid - 1
    out = _telegram_html(n, truncate(body, lo) if lo else "")
    if _utf16_len(out) > max_length:  # fields alone are too long: keep the page, drop the facts
        out = _telegram_html(Notification.from_json({**n.to_json(), "fields": {}}), "")
    return out


# --- generic webhook ----------------------------------------------------------------------------------

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


# --- plain text for any channel (outbox, previews) ----------------------------------------------------


def render_text(channel: str, notification: Notification) -> tuple[str, str]:
    """(subject, body) as plain text: what the outbox stores and a person would read for that channel."""
    subject = email_subject(notification)
    if channel == "sms":
        return subject, render_sms(notification)
    if channel == "voice":
        return subject, render_voice(notification)
    return subject, _jinja().get_template("email.txt").render(**_template_context(notification))


__all__ = [
    "KIND_LABELS",
    "EmailContent",
    "SmsInfo",
    "email_subject",
    "fit_sms",
    "headline",
    "is_gsm7",
    "json_bytes",
    "kind_label",
    "render_email",
    "render_slack",
    "render_sms",
    "render_teams",
    "render_telegram",
    "render_text",
    "render_voice",
    "render_webhook",
    "safe_url",
    "slack_escape",
    "sms_info",
    "speakable",
    "split_sms",
    "teams_message",
    "tg_escape",
]
