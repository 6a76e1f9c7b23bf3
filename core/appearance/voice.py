"""Voice: the script text-to-speech reads on the call (the TwiML around it lives with the sender)."""
from __future__ import annotations

import re
import unicodedata

from core.appearance.common import shown_state
from core.appearance.sms import strip_symbols
from core.appearance.vocabulary import SEVERITY_WORDS, kind_label, truncate
from core.delivery.message import Notification

VOICE_BODY_MAX = 600
"""About forty seconds of speech: long enough for context, short enough to reach "press 1"."""
VOICE_TITLE_MAX = 300

_MD_LINK = re.compile(r"\[([^\]]*)\]\((?:[^)]*)\)")
_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.IGNORECASE)
_INC = re.compile(r"\bINC-(\d+)\b", re.IGNORECASE)
_SEV = re.compile(r"\bsev\s*-?\s*([1-4])\b", re.IGNORECASE)
_MD_CHARS = re.compile(r"[*_~`#<>|\\]+")
_SLACK_EMOJI = re.compile(r":[a-z0-9_+\-]+:")


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
    if (state := shown_state(n)) and state != "Open":
        parts.append(f"State: {speakable(state)}.")
    return " ".join(p for p in parts if p.strip(" ."))
