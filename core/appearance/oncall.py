"""How on-call schedules read: times in the schedule's zone, `who is on call` answers, shift reasons on
deliveries, handoff messages. The one place this wording lives (chat, CLI, console and pages use it)."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from core.appearance.vocabulary import escape_terminal as clean
from core.schedules.rotation import OnCall, Segment


def when(at: datetime | None, tz: str) -> str:
    """`Mon 05 Jan 09:00 CET` in the schedule's zone; `-` for an open end."""
    if at is None:
        return "-"
    return at.astimezone(ZoneInfo(tz)).strftime("%a %d %b %H:%M %Z")


def shift_reason(schedule: str, tz: str, who: OnCall) -> str:
    """What a delivery records about where it came from: schedule, layer or override, and the shift."""
    return f"schedule {schedule}: {who.source} {when(who.start, tz)} - {when(who.end, tz)}"


def fallback_reason(schedule: str) -> str:
    return f"schedule {schedule}: nobody on call, fallback"


def nobody_alert(schedule: str, at: datetime, tz: str) -> str:
    return (f"Nobody is on call in schedule {schedule} at {when(at, tz)}: its fallback was paged instead. "
            f"Add an override (`/incident oncall override {schedule} <contact> <duration>`) or fix the layers.")


def now_and_next(schedule: str, tz: str, segments: Sequence[Segment]) -> str:
    """`/incident oncall` and `tocsin oncall show`: who now (and why), who next, handoff times."""
    if not segments:
        return f"{schedule}: no shifts"
    cur = segments[0]
    lines = [f"{schedule} ({tz})"]
    who = clean(cur.contact) if cur.contact else "nobody (the fallback is paged)"
    lines.append(f"  now:  {who} - {cur.source}, until {when(cur.end, tz)}")
    nxt = next((s for s in segments[1:] if s.contact != cur.contact), None)
    if nxt is not None:
        who_next = clean(nxt.contact) if nxt.contact else "nobody"
        lines.append(f"  next: {who_next} - {nxt.source}, from {when(nxt.start, tz)}")
    return "\n".join(lines)


def week_table(schedule: str, tz: str, segments: Sequence[Segment]) -> str:
    """`--week`: one line per stretch, aligned, with who decided it."""
    rows = week_rows(tz, segments)
    width = max([len(r[2]) for r in rows] + [6])
    lines = [f"{schedule} ({tz}), next 7 days", f"  {'from':<20} {'to':<20} {'who':<{width}}  decided by"]
    lines += [f"  {a:<20} {b:<20} {who:<{width}}  {src}" for a, b, who, src in rows]
    return "\n".join(lines)


def week_rows(tz: str, segments: Sequence[Segment]) -> list[tuple[str, str, str, str]]:
    """(from, to, who, decided by) rows for `tocsin oncall show --week`."""
    return [(when(s.start, tz), when(s.end, tz), clean(s.contact) if s.contact else "nobody", s.source)
            for s in segments]


def override_line(oid: int, schedule: str, contact: str, start: datetime, end: datetime, tz: str,
                  by: str) -> str:
    return (f"override #{oid}: {clean(contact)} covers {schedule} from {when(start, tz)} to {when(end, tz)} "
            f"(set by {clean(by)})")


def handoff_incoming(schedule: str, tz: str, at: datetime, until: datetime | None,
                     incidents: Sequence[str]) -> tuple[str, str]:
    """(title, body) for the person who goes on call."""
    title = f"You are on call for {schedule} from {when(at, tz)}"
    body = [title + (f" until {when(until, tz)}." if until else ".")]
    if incidents:
        body.append(f"Open incidents you inherit ({len(incidents)}):")
        body += [f"  {clean(i)}" for i in incidents]
    else:
        body.append("No open incidents.")
    return title, "\n".join(body)


def handoff_outgoing(schedule: str, tz: str, at: datetime, incoming: str | None) -> tuple[str, str]:
    title = f"Your {schedule} shift ended at {when(at, tz)}"
    return title, f"{title}; {clean(incoming) if incoming else 'nobody'} is on call now. Thank you."


def handoff_announce(schedule: str, tz: str, at: datetime, outgoing: str | None, incoming: str | None) -> str:
    return (f"On-call handoff for {schedule} at {when(at, tz)}: {clean(outgoing) if outgoing else 'nobody'} -> "
            f"{clean(incoming) if incoming else 'nobody'}")
