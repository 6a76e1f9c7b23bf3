"""iCalendar (.ics) feeds of a schedule's final timeline, built with the `icalendar` library, so people can
subscribe from their calendar app (GET /api/v1/schedules/{name}.ics?token=...) or export a file."""
from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import NotFound

if TYPE_CHECKING:
    from core.rbac import Actor
    from core.schedules.service import ScheduleService


async def feed(service: ScheduleService, name: str, *, actor: Actor, weeks: int = 4,
               contact: str | None = None) -> bytes:
    """One VEVENT per on-call stretch (overrides marked) from now for `weeks`; `contact` keeps only theirs."""
    if contact is not None and service.cfg.contact(contact) is None:
        raise NotFound(f"unknown contact {contact!r}")
    from icalendar import Calendar, Event  # here, not at the top: a server that never serves a feed never loads it

    sc, segments, _ = await service.timeline(name, actor=actor, days=7 * weeks)
    cal = Calendar()
    cal.add("prodid", "-//Tocsin//on-call schedules//EN")
    cal.add("version", "2.0")
    cal.add("x-wr-calname", f"On call: {name}" + (f" ({contact})" if contact else ""))
    cal.add("x-wr-timezone", sc.timezone)
    stamp = service.clock.now()
    for seg in segments:
        if seg.contact is None or (contact is not None and seg.contact != contact):
            continue
        ev = Event()
        # Stable per stretch: a calendar app updates the event instead of adding a twin on every refresh.
        ev.add("uid", f"{name}-{int(seg.start.timestamp())}-{seg.contact}@tocsin")
        ev.add("dtstamp", stamp)
        ev.add("dtstart", seg.start)
        ev.add("dtend", seg.end)
        override = seg.override_id is not None
        ev.add("summary", f"On call: {seg.contact}" + (" (override)" if override else ""))
        ev.add("description", f"Schedule {name}, {seg.source}")
        if override:
            ev.add("categories", ["override"])
        cal.add_component(ev)
    return cal.to_ical()
