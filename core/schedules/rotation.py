"""Who is on call when: pure functions of (schedule config, overrides, time), tested with tables.

Every handoff is computed in the schedule's own zone on the wall clock (a 09:00 handoff stays 09:00 local
across daylight-saving changes, so the shift that spans the change is an hour shorter or longer), then
turned into UTC. `hours:n` rotations count local clock hours the same way. Later layers win where they
cover; an override wins over every layer.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from core.config import parse_rotation

if TYPE_CHECKING:
    from core.config import Schedule, ScheduleLayer

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Override:
    """Someone covers a schedule from `start` to `end` (UTC), whatever the layers say."""

    id: int
    contact: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Shift:
    """One shift of one layer, bounds in UTC (before any restriction is applied)."""

    layer: str
    contact: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class OnCall:
    """Who decides a moment: `contact` (None: nobody), and the layer shift or override that decided it.
    `start`/`end` bound that shift or override, so handoff times can be shown."""

    contact: str | None
    source: str
    """`layer <name>`, `override #<id>` or `nobody`."""
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of the final timeline with one person (or nobody) on call."""

    start: datetime
    end: datetime
    contact: str | None
    source: str
    override_id: int | None = None


def _as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _local(naive: datetime, tz: ZoneInfo) -> datetime:
    """A wall-clock time in `tz` as UTC. A time skipped by a spring-forward change is taken as the first
    instant after the gap (fold=0 read through UTC); a repeated one is the first of the two."""
    return naive.replace(tzinfo=tz).astimezone(timezone.utc)


class LayerClock:
    """Shift boundaries of one layer: boundary(k) is when shift k begins (k may be negative: before start,
    nobody is on call for this layer)."""

    def __init__(self, layer: ScheduleLayer, tz: ZoneInfo) -> None:
        self.layer = layer
        self.tz = tz
        self.kind, self.n = parse_rotation(layer.rotation)
        hh, mm = (int(x) for x in layer.handoff.split(":"))
        self.first = datetime.combine(layer.start, time(hh, mm))
        """Naive local start of shift 0."""
        if self.kind == "weekly":
            want = WEEKDAYS.index(layer.handoff_day) if layer.handoff_day else layer.start.weekday()
            ahead = (want - layer.start.weekday()) % 7 or 7
            self.anchor = self.first + timedelta(days=ahead)
            """Naive local start of shift 1: the first handoff day after the start date."""

    def _naive(self, k: int) -> datetime:
        if self.kind == "daily":
            return self.first + timedelta(days=k)
        if self.kind == "hours":
            return self.first + timedelta(hours=self.n * k)
        return self.first if k == 0 else self.anchor + timedelta(days=7 * (k - 1))

    def boundary(self, k: int) -> datetime:
        return _local(self._naive(k), self.tz)

    def index_at(self, at: datetime) -> int:
        """The k with boundary(k) <= at < boundary(k+1); -1 before the layer starts."""
        at = _as_utc(at)
        if at < self.boundary(0):
            return -1
        step_h = {"daily": 24, "hours": self.n, "weekly": 168}[self.kind]
        k = max(0, int((at - self.boundary(0)).total_seconds() // (step_h * 3600)))
        while k > 0 and self.boundary(k) > at:
            k -= 1
        while self.boundary(k + 1) <= at:
            k += 1
        return k

    def shift(self, k: int) -> Shift:
        members = self.layer.members
        return Shift(self.layer.name, members[k % len(members)], self.boundary(k), self.boundary(k + 1))

    def shifts(self, start: datetime, end: datetime) -> list[Shift]:
        """Shifts overlapping [start, end)."""
        k = max(0, self.index_at(start))
        out = []
        while True:
            s = self.shift(k)
            if s.start >= end:
                return out
            if s.end > start:
                out.append(s)
            k += 1


def _restrict_windows(layer: ScheduleLayer, tz: ZoneInfo, start: datetime,
                      end: datetime) -> list[tuple[datetime, datetime]] | None:
    """UTC windows in which a restricted layer may cover, overlapping [start, end); None: unrestricted.
    A window belongs to the day it starts on; `from` after `to` runs past midnight."""
    r = layer.restrict
    if r is None:
        return None
    days = set(r.days)
    t_from = time.fromisoformat(r.from_ or "00:00")
    t_to = time.fromisoformat(r.to or "00:00")
    out = []
    d: date = _as_utc(start).astimezone(tz).date() - timedelta(days=1)
    last = _as_utc(end).astimezone(tz).date()
    while d <= last:
        if WEEKDAYS[d.weekday()] in days:
            ws = _local(datetime.combine(d, t_from), tz)
            end_day = d if t_to > t_from else d + timedelta(days=1)
            we = _local(datetime.combine(end_day, t_to), tz)
            if we > start and ws < end:
                out.append((ws, we))
        d += timedelta(days=1)
    return out


def _in_windows(at: datetime, windows: list[tuple[datetime, datetime]] | None) -> bool:
    return windows is None or any(ws <= at < we for ws, we in windows)


def who_at(schedule: Schedule, at: datetime, overrides: Sequence[Override] = ()) -> OnCall:
    """Who is on call at `at`: the latest-starting override covering it, else the last layer covering it."""
    at = _as_utc(at)
    covering = [o for o in overrides if _as_utc(o.start) <= at < _as_utc(o.end)]
    if covering:
        o = max(covering, key=lambda o: (_as_utc(o.start), o.id))
        return OnCall(o.contact, f"override #{o.id}", _as_utc(o.start), _as_utc(o.end))
    tz = ZoneInfo(schedule.timezone)
    for layer in reversed(schedule.layers):
        clock = LayerClock(layer, tz)
        k = clock.index_at(at)
        if k < 0:
            continue
        windows = _restrict_windows(layer, tz, at, at + timedelta(seconds=1))
        if not _in_windows(at, windows):
            continue
        s = clock.shift(k)
        return OnCall(s.contact, f"layer {layer.name}", s.start, s.end)
    return OnCall(None, "nobody")


def timeline(schedule: Schedule, start: datetime, end: datetime,
             overrides: Sequence[Override] = ()) -> list[Segment]:
    """The final on-call timeline over [start, end): consecutive segments, merged where the same person
    stays on call by the same source. Every change point (shift boundary, restriction edge, override
    edge) is evaluated with who_at, so the timeline and who_at can never disagree."""
    start, end = _as_utc(start), _as_utc(end)
    tz = ZoneInfo(schedule.timezone)
    points = {start, end}
    for layer in schedule.layers:
        for s in LayerClock(layer, tz).shifts(start, end):
            points.update((s.start, s.end))
        for ws, we in _restrict_windows(layer, tz, start, end) or []:
            points.update((ws, we))
    for o in overrides:
        points.update((_as_utc(o.start), _as_utc(o.end)))
    cuts = sorted(p for p in points if start <= p <= end)
    out: list[Segment] = []
    for a, b in zip(cuts, cuts[1:]):
        who = who_at(schedule, a, overrides)
        oid = int(who.source.split("#")[1]) if who.source.startswith("override #") else None
        if out and out[-1].contact == who.contact and out[-1].source == who.source and out[-1].end == a:
            out[-1] = Segment(out[-1].start, b, who.contact, who.source, oid)
        else:
            out.append(Segment(a, b, who.contact, who.source, oid))
    return out


def gaps(schedule: Schedule, start: datetime, end: datetime,
         overrides: Sequence[Override] = ()) -> list[Segment]:
    """Stretches with nobody on call (the fallback is paged then)."""
    return [s for s in timeline(schedule, start, end, overrides) if s.contact is None]


def handoffs(schedule: Schedule, start: datetime, end: datetime,
             overrides: Sequence[Override] = ()) -> list[tuple[datetime, str | None, str | None]]:
    """(time, outgoing, incoming) for every change of person in (start, end]."""
    segs = timeline(schedule, start, end + timedelta(seconds=1), overrides)
    out = []
    for prev, nxt in zip(segs, segs[1:]):
        if prev.contact != nxt.contact and start < nxt.start <= end:
            out.append((nxt.start, prev.contact, nxt.contact))
    return out
