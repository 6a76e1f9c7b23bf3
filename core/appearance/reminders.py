"""How reminders read (issue 20): the thread entry and message for each kind, the Snooze button's label and
the answers to a snooze. The one place this wording lives; each platform module draws the button."""
from __future__ import annotations

from datetime import datetime, timedelta

from core.appearance.vocabulary import BUTTON_LABELS
from core.config import format_duration
from core.delivery.message import Notification

SNOOZE_VERB = "snooze"
"""The verb a Snooze button runs (`/incident snooze <INC-n>`, with the configured default duration)."""
SNOOZE_REPEATED = "This snooze was already done (the press arrived twice)."


def ago(td: timedelta) -> str:
    """`32 min`, `2 h 05 min`, `3 d 4 h`: how long, as a reminder says it (whole minutes, never seconds)."""
    minutes = max(0, int(td.total_seconds() // 60))
    days, rem = divmod(minutes, 1440)
    hours, mins = divmod(rem, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins:02d} min" if mins else f"{hours} h"
    return f"{mins} min"


def reminder_text(kind: str, *, ref: str, since: datetime, declared: datetime, now: datetime,
                  snooze: timedelta) -> str:
    """The reminder itself, the same in the thread and in the role holders' messages; its last line says
    how to snooze it (the button does `snooze` for reminders.snooze)."""
    if kind == "unacknowledged":
        text = (f"{ref} is still unacknowledged {ago(now - since)} after it was declared. "
                f"Acknowledge it: /incident ack {ref}")
    elif kind == "update":
        last = (f"none yet, declared {ago(now - since)} ago" if since <= declared
                else f"last one {ago(now - since)} ago")
        text = f"Time for an update: {last}. /incident update {ref} <text>"
    elif kind == "monitoring":
        text = (f"{ref} has been in Monitoring for {ago(now - since)}. Resolve or reopen? "
                f"/incident resolve {ref}, or post an update if it is not fixed")
    else:
        raise ValueError(f"unknown reminder kind {kind!r}")
    return f"{text}\nSnooze: /incident snooze {ref} {format_duration(snooze)}"


def snoozed(ref: str, until: datetime, length: timedelta, who: str) -> str:
    """The answer to a snooze, also its audit-friendly description."""
    return (f"{ref}: reminders snoozed for {format_duration(length)} by {who}, until "
            f"{until:%Y-%m-%d %H:%M} UTC.")


def snooze_resolved(ref: str) -> str:
    return f"{ref} is resolved; it has no reminders to snooze (nothing was stored)."


def snooze_too_long(length: timedelta, longest: timedelta) -> str:
    return (f"a snooze of {format_duration(length)} is longer than reminders.max_snooze "
            f"({format_duration(longest)})")


def snooze_button(note: Notification) -> tuple[int, str] | None:
    """For a reminder's thread entry or message: (incident id, button label); None for anything else.
    Each platform module draws it (Slack block action, Teams card action, Telegram callback). The length
    (reminders.snooze) is said in the reminder's text and in the answer to the press."""
    ref = note.incident or ""
    if note.kind != "REMINDER" or not ref.upper().startswith("INC-") or not ref[4:].isdigit():
        return None
    return int(ref[4:]), BUTTON_LABELS[SNOOZE_VERB]
