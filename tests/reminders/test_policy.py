"""The reminder policy as a table: (config, what the database says, now) -> which reminders are due when."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.config import RemindersConfig
from core.reminder_policy import Facts, due

T0 = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
CFG = RemindersConfig.model_validate({"unacknowledged": {"sev1": "10m"}, "update_every": {"sev1": "30m"},
                                      "monitoring": {"sev1": "2h"}})


def m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {"state": "open", "severity": "sev1", "created_at": T0, "state_since": T0,
                               "acknowledged": False}
    return Facts(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("f", "want"), [
    (facts(), [("unacknowledged", m(10)), ("update", m(30))]),
    (facts(severity="sev3"), []),  # nothing configured for sev3
    (facts(acknowledged=True), [("update", m(30))]),
    (facts(acknowledged=True, last_update_at=m(20)), [("update", m(50))]),
    (facts(last_sent={"unacknowledged": m(11)}), [("unacknowledged", m(21)), ("update", m(30))]),
    (facts(acknowledged=True, last_update_at=m(20), last_sent={"update": m(55)}), [("update", m(85))]),
    (facts(acknowledged=True, last_update_at=m(60), last_sent={"update": m(55)}), [("update", m(90))]),
    (facts(state="monitoring", state_since=m(40), acknowledged=True), [("monitoring", m(160))]),
    (facts(state="monitoring", state_since=m(40), last_sent={"monitoring": m(170)}), [("monitoring", m(290))]),
    (facts(state="resolved"), []),
    (facts(snoozed_until=m(45)), [("unacknowledged", m(45)), ("update", m(45))]),
    (facts(snoozed_until=m(5)), [("unacknowledged", m(10)), ("update", m(30))]),  # a snooze that ended
    # a timer that was down for hours sends one reminder, then counts from then (no burst)
    (facts(acknowledged=True, last_sent={"update": m(300)}), [("update", m(330))]),
])
def test_due(f: Facts, want: list[tuple[str, datetime]]) -> None:
    assert [(d.kind, d.at) for d in due(CFG, f)] == want


def test_what_a_reminder_counts_from() -> None:
    got = {d.kind: d.since for d in due(CFG, facts(last_update_at=m(20), last_sent={"update": m(55)}))}
    assert got == {"unacknowledged": T0, "update": m(20)}
