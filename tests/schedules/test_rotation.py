"""Rotation math table: daily, weekly, hours:n, restricts, layers, overrides, DST both ways, future start."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core.config import Schedule
from core.schedules.rotation import Override, gaps, handoffs, timeline, who_at

BERLIN = ZoneInfo("Europe/Berlin")
NY = ZoneInfo("America/New_York")


def sched(*layers: dict[str, Any], tz: str = "Europe/Berlin") -> Schedule:
    return Schedule.model_validate({"name": "primary", "timezone": tz, "layers": list(layers)})


def layer(members: list[str], rotation: str, start: str = "2026-01-05", **kw: Any) -> dict[str, Any]:
    return {"name": kw.pop("name", rotation), "members": members, "rotation": rotation, "start": start, **kw}


def local(tz: ZoneInfo, *a: int) -> datetime:
    return datetime(*a, tzinfo=tz)


WEEKLY = layer(["alice", "bob", "carol"], "weekly", handoff="09:00", handoff_day="monday")
DAILY = layer(["alice", "bob"], "daily", handoff="09:00")


@pytest.mark.parametrize("s, at, who", [
    (sched(WEEKLY), local(BERLIN, 2026, 1, 5, 8, 59), None),  # before the start
    (sched(WEEKLY), local(BERLIN, 2026, 1, 5, 9, 0), "alice"),
    (sched(WEEKLY), local(BERLIN, 2026, 1, 12, 8, 59), "alice"),
    (sched(WEEKLY), local(BERLIN, 2026, 1, 12, 9, 0), "bob"),
    (sched(WEEKLY), local(BERLIN, 2026, 1, 19, 9, 0), "carol"),
    (sched(WEEKLY), local(BERLIN, 2026, 1, 26, 9, 0), "alice"),  # wraps around
    (sched(DAILY), local(BERLIN, 2026, 1, 6, 8, 0), "alice"),
    (sched(DAILY), local(BERLIN, 2026, 1, 6, 9, 0), "bob"),
    (sched(DAILY), local(BERLIN, 2026, 1, 7, 9, 0), "alice"),
    (sched(layer(["a", "b", "c"], "hours:8", handoff="06:00")), local(BERLIN, 2026, 1, 5, 13, 59), "a"),
    (sched(layer(["a", "b", "c"], "hours:8", handoff="06:00")), local(BERLIN, 2026, 1, 5, 14, 0), "b"),
    (sched(layer(["a", "b", "c"], "hours:8", handoff="06:00")), local(BERLIN, 2026, 1, 6, 5, 0), "c"),
    (sched(layer(["a", "b", "c"], "hours:8", handoff="06:00")), local(BERLIN, 2026, 1, 6, 6, 0), "a"),
    # a weekly layer starting on a Thursday hands off on the next Monday, then weekly
    (sched(layer(["x", "y"], "weekly", start="2026-01-08", handoff_day="mon")),
     local(BERLIN, 2026, 1, 11, 23, 0), "x"),
    (sched(layer(["x", "y"], "weekly", start="2026-01-08", handoff_day="mon")),
     local(BERLIN, 2026, 1, 12, 9, 0), "y"),
])
def test_who_is_on_call(s: Schedule, at: datetime, who: str | None) -> None:
    assert who_at(s, at).contact == who


BACKFILL = layer(["dave"], "daily", name="backfill", restrict={"days": ["sat", "sun"], "from": "10:00", "to": "16:00"})


@pytest.mark.parametrize("at, who, source", [
    (local(BERLIN, 2026, 1, 10, 9, 59), "alice", "layer weekly"),   # Saturday before the window
    (local(BERLIN, 2026, 1, 10, 10, 0), "dave", "layer backfill"),   # later layer wins inside its window
    (local(BERLIN, 2026, 1, 10, 15, 59), "dave", "layer backfill"),
    (local(BERLIN, 2026, 1, 10, 16, 0), "alice", "layer weekly"),
    (local(BERLIN, 2026, 1, 9, 12, 0), "alice", "layer weekly"),     # Friday: not a restricted day
])
def test_later_layers_win_where_their_restriction_lets_them(at: datetime, who: str, source: str) -> None:
    got = who_at(sched(WEEKLY, BACKFILL), at)
    assert (got.contact, got.source) == (who, source)


def test_restriction_past_midnight_belongs_to_the_day_it_starts() -> None:
    night = layer(["owl"], "daily", name="night", restrict={"days": ["fri"], "from": "22:00", "to": "06:00"})
    s = sched(WEEKLY, night)
    assert who_at(s, local(BERLIN, 2026, 1, 10, 5, 59)).contact == "owl"   # Saturday early: Friday's window
    assert who_at(s, local(BERLIN, 2026, 1, 10, 6, 0)).contact == "alice"
    assert who_at(s, local(BERLIN, 2026, 1, 8, 23, 0)).contact == "alice"  # Thursday night: no window


def test_override_wins_over_every_layer_and_is_named() -> None:
    o = Override(7, "erin", local(BERLIN, 2026, 1, 10, 12), local(BERLIN, 2026, 1, 10, 14))
    s = sched(WEEKLY, BACKFILL)
    got = who_at(s, local(BERLIN, 2026, 1, 10, 13), [o])
    assert (got.contact, got.source) == ("erin", "override #7")
    segs = timeline(s, local(BERLIN, 2026, 1, 10, 9), local(BERLIN, 2026, 1, 10, 17), [o])
    assert [(seg.contact, seg.start.astimezone(BERLIN).hour) for seg in segs] == [
        ("alice", 9), ("dave", 10), ("erin", 12), ("dave", 14), ("alice", 16)]
    assert segs[2].override_id == 7


@pytest.mark.parametrize("tz, spring, fall", [
    (BERLIN, date(2026, 3, 29), date(2026, 10, 25)),
    (NY, date(2026, 3, 8), date(2026, 11, 1)),
])
def test_handoffs_stay_at_local_time_across_dst_both_ways(tz: ZoneInfo, spring: date, fall: date) -> None:
    s = sched(layer(["alice", "bob"], "daily", start="2026-01-05", handoff="09:00"), tz=str(tz))
    for day in (spring, fall):
        before = datetime(day.year, day.month, day.day, 9, tzinfo=tz) - timedelta(days=1)
        hs = handoffs(s, before - timedelta(minutes=1), before + timedelta(days=2))
        locals_ = [h[0].astimezone(tz) for h in hs]
        assert [(t.hour, t.minute) for t in locals_] == [(9, 0)] * 3
        lengths = [(b - a) for a, b in zip([h[0] for h in hs], [h[0] for h in hs][1:])]
        # the shift across the change (early on `day`) is 23 h (spring) or 25 h (autumn) of real time
        assert lengths == [timedelta(hours=23 if day == spring else 25), timedelta(hours=24)]


def test_hours_rotation_keeps_local_handoff_times_across_dst() -> None:
    s = sched(layer(["a", "b"], "hours:12", start="2026-03-27", handoff="08:00"))
    hs = handoffs(s, local(BERLIN, 2026, 3, 28, 7), local(BERLIN, 2026, 3, 30, 9))
    assert [h[0].astimezone(BERLIN).strftime("%d %H:%M") for h in hs] == [
        "28 08:00", "28 20:00", "29 08:00", "29 20:00", "30 08:00"]


def test_weekly_handoff_on_the_dst_sunday_in_new_york() -> None:
    s = sched(layer(["a", "b"], "weekly", start="2026-03-01", handoff="02:30", handoff_day="sun"),
              tz="America/New_York")
    # 02:30 does not exist on 8 March 2026 in New York: the handoff is the first instant after the gap
    (h,) = handoffs(s, local(NY, 2026, 3, 7), local(NY, 2026, 3, 9))
    assert h[0] == datetime(2026, 3, 8, 7, 30, tzinfo=timezone.utc) and h[1:] == ("a", "b")


def test_start_in_the_future_means_nobody_until_then() -> None:
    s = sched(layer(["a"], "daily", start="2027-06-01"))
    assert who_at(s, datetime(2026, 12, 3, tzinfo=timezone.utc)).contact is None
    (gap,) = gaps(s, datetime(2027, 5, 31, tzinfo=timezone.utc), datetime(2027, 6, 3, tzinfo=timezone.utc))
    assert gap.end == local(BERLIN, 2027, 6, 1, 9)


def test_timeline_is_contiguous_and_agrees_with_who_at() -> None:
    o = Override(1, "erin", local(BERLIN, 2026, 1, 14, 3), local(BERLIN, 2026, 1, 15, 3))
    s = sched(WEEKLY, BACKFILL)
    start, end = local(BERLIN, 2026, 1, 4), local(BERLIN, 2026, 1, 25)
    segs = timeline(s, start, end, [o])
    assert segs[0].start == start.astimezone(timezone.utc) and segs[-1].end == end.astimezone(timezone.utc)
    for a, b in zip(segs, segs[1:]):
        assert a.end == b.start and (a.contact, a.source) != (b.contact, b.source)
    t = start
    while t < end:
        seg = next(x for x in segs if x.start <= t < x.end)
        assert who_at(s, t, [o]).contact == seg.contact
        t += timedelta(minutes=97)
