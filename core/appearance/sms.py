"""SMS: GSM-7/UCS-2 segment math and the compact page that keeps its ack link within the segment budget."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

from core.appearance.common import offers_ack, page_fields, shown_state, wants_ack
from core.appearance.vocabulary import kind_label, one_line, severity_label
from core.delivery.message import Notification

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


REPLY_KIND = "REPLY"
"""The confirmation sent back for an SMS reply ("INC-12 acknowledged. Paging stopped."): its text only."""


def reply_codes(n: Notification) -> str:
    """`Reply 4 to ack INC-12` (GSM-7 only) on every page that can still be acknowledged."""
    return f"Reply 4 to ack {n.incident}" if wants_ack(n) and n.incident else ""


def _sms_clean(text: str) -> str:
    """GSM-friendly typography, no pictographs, one space between words, line breaks kept."""
    return "\n".join(" ".join(line.split()) for line in strip_symbols(gsm_friendly(text)).split("\n"))


def render_sms(n: Notification, *, max_segments: int = 3) -> str:
    """What a phone shows first is what matters: severity, id, thread position and title, then how to ack
    (the link); state (when the kind does not say it), body (unless it only repeats the title) and fields
    follow and are cut first to stay within `max_segments`; the page ends with the reply code. If even the
    lead does not fit, the title is cut and how to ack survives."""
    if n.kind.upper() == REPLY_KIND:
        return fit_sms(" ".join(strip_symbols(gsm_friendly(n.title)).split()), max_segments=max_segments)
    bits = [b for b in (severity_label(n.severity), n.incident) if b]
    lead = _sms_clean(" ".join(bits + [f"{kind_label(n.kind)}: {one_line(n.title)}"]))
    ack = offers_ack(n)
    ack_line = gsm_friendly(f"\nAck: {ack}") if ack else ""
    codes = reply_codes(n)
    tail = f"\n{codes}" if codes else ""
    rest = ""
    if (state := shown_state(n)) and state != "Open":
        rest += f"\nState: {state}"
    if n.body.strip() and one_line(n.body) != one_line(n.title):
        rest += "\n" + one_line(n.body)
    for key, value in page_fields(n):
        rest += f"\n{key}: {one_line(value)}"
    rest = _sms_clean(rest)
    if sms_info(lead + ack_line + tail).segments > max_segments:
        return fit_sms(lead, ack_line + tail, max_segments=max_segments)
    if sms_info(lead + ack_line + rest + tail).segments <= max_segments:
        return lead + ack_line + rest + tail
    return lead + ack_line + _cut_to_fit(lead + ack_line, rest, tail, max_segments=max_segments) + tail


def _cut_to_fit(kept: str, rest: str, after: str = "", *, max_segments: int) -> str:
    """The longest prefix of `rest` (marked "...") that fits between `kept` and `after`. Segments grow with the prefix
    except where its first non-GSM-7 character switches the whole text to UCS-2, so search each side of
    that point on its own and prefer the longer."""
    marker = "..."

    def fits(k: int) -> bool:
        return sms_info(kept + rest[:k].rstrip() + marker + after).segments <= max_segments

    def longest(lo: int, hi: int) -> int | None:
        if lo > hi or not fits(lo):
            return None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    switch = next((i for i, c in enumerate(rest) if not is_gsm7(c)), len(rest))
    k = longest(switch + 1, len(rest))
    if k is None:
        k = longest(0, switch)
    return rest[:k].rstrip() + marker if k else ""


def strip_symbols(text: str) -> str:
    """Drop emoji and other pictographs (they cannot be spoken and cost SMS their GSM-7 encoding)."""
    return "".join(
        " " if unicodedata.category(c) in ("So", "Cs", "Co", "Cn") or c in "\u200d\ufe0f\ufe0e" else c
        for c in text
    )
