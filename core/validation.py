"""One validation for every entry point (chat, API, CLI, console): titles, texts, severities, incident ids.

The limits and the wording live here. IncidentService calls these on every write, so chat, the events
API, the CLI and the console give the same answer; an adapter that must answer before the service runs
(the Slack declare modal, the command parser) calls the same functions.

Control characters are STRIPPED, not refused: an alert whose summary carries a terminal colour code
must still page (we never drop a page over formatting), but no raw control character is stored, so none
reaches an operator's terminal, chat or e-mail. Removed: ANSI/VT escape sequences (with their
parameters), C0 controls and DEL (texts keep newline and tab; in titles any whitespace control becomes a
space), C1 controls (U+0080-U+009F, where U+009B is a one-byte CSI), and bidi embeddings, overrides and
isolates (U+202A-U+202E, U+2066-U+2069), which can make a title read backwards.
"""
from __future__ import annotations

import re

from core.config import SEVERITIES, Config, normalize_severity
from core.errors import InvalidInput, NotFound

TITLE_MAX = 500
"""Characters in an incident title, after cleaning."""

_REF = re.compile(r"^(?:inc-?)?(\d{1,12})$", re.IGNORECASE)
_ANSI = re.compile(r"""
    \x1b\[[0-?]*[ -/]*[@-~]                      # CSI ... final byte (colours, cursor moves, clear screen)
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?           # OSC ... BEL or ST (window titles, hyperlinks)
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?                # DCS, SOS, PM, APC strings
  | \x1b[ -/]*[0-~]?                             # any other escape (and a lone ESC)
  | \x9b[0-?]*[ -/]*[@-~]                        # 8-bit CSI
""", re.VERBOSE)
_WS_CONTROLS = re.compile(r"[\t\n\r\v\f]")
_TEXT_DROP = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_TITLE_DROP = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str | None) -> str:
    """A multi-line text with escape sequences and control characters removed (newline and tab kept);
    CR LF becomes LF. Surrounding whitespace is trimmed."""
    t = _ANSI.sub("", (text or "").replace("\r\n", "\n"))
    return _TEXT_DROP.sub("", t).strip()


def clean_title(title: str | None) -> str:
    """A one-line title: whitespace controls become spaces, other controls and escapes are removed."""
    t = _WS_CONTROLS.sub(" ", _ANSI.sub("", title or ""))
    return _TITLE_DROP.sub("", t).strip()


def check_title(title: str | None) -> str:
    """The cleaned title, or InvalidInput naming the field."""
    t = clean_title(title)
    if not t:
        raise InvalidInput("an incident needs a title")
    if len(t) > TITLE_MAX:
        raise InvalidInput(f"the title is longer than {TITLE_MAX} characters")
    return t


def check_text(text: str | None, *, what: str) -> str:
    """The cleaned text, or InvalidInput saying what needs text (e.g. 'an update needs text')."""
    t = clean_text(text)
    if not t:
        raise InvalidInput(f"{what} needs text")
    return t


def check_severity(sev: str) -> str:
    s = normalize_severity(sev)
    if s not in SEVERITIES:
        raise InvalidInput(f"unknown severity {sev!r}: use sev1..sev4 (or critical, high, medium, low)")
    return str(s)


def check_contact_list(cfg: Config, name: str | None) -> None:
    """A contact list named at declare or notify must exist in the live config (NotFound lists the known)."""
    if name and cfg.contact_list(name) is None:
        known = ", ".join(c.name for c in cfg.contact_lists) or "none"
        raise NotFound(f"no contact list {name!r} (known: {known})")


def parse_ref(ref: str | int) -> int:
    """'INC-12', 'inc12', '12' or 12 -> 12; anything else is InvalidInput."""
    if isinstance(ref, int):
        return ref
    m = _REF.match(str(ref).strip())
    if not m:
        raise InvalidInput(f"{_shown(ref)!r} is not an incident id (expected INC-<number>)")
    return int(m.group(1))


def is_ref(ref: str) -> bool:
    return _REF.match(ref.strip()) is not None


def _shown(ref: object) -> str:
    """An invalid id as said back: cleaned and cut, so an error message cannot carry escapes either."""
    s = clean_title(str(ref))
    return s if len(s) <= 40 else s[:39] + "…"
