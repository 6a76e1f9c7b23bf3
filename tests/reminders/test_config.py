"""`reminders:` is validated at load time, with the file and line of the bad value."""
from __future__ import annotations

from datetime import timedelta

import pytest

from core.config import load, loads
from core.errors import ConfigError

GOOD = """\
reminders:
  unacknowledged: {sev1: 10m, high: 15m}
  update_every:
    sev1: 30m
  monitoring:
    sev1: 2h
  snooze: 30m
"""


def test_a_good_section_loads_with_aliases_normalized() -> None:
    r = loads(GOOD, filename="c.yaml", env={}).reminders
    assert [r.unacknowledged.get(s) for s in ("sev1", "sev2", "sev3")] == [timedelta(minutes=10),
                                                                          timedelta(minutes=15), None]
    assert r.interval("update", "sev1") == timedelta(minutes=30) and r.interval("update", "sev2") is None
    assert r.max_snooze == timedelta(days=1)


@pytest.mark.parametrize(("text", "where", "what"), [
    ("reminders:\n  update_every:\n    sev9: 30m\n", "c.yaml:3", "unknown key"),
    ("reminders:\n  monitoring:\n    sev1: soon\n", "c.yaml:3", "must be a duration like"),
    ("reminders:\n  unacknowledged:\n    sev1: 20s\n", "c.yaml:3", "must be at least 1m"),
    ("reminders:\n  snooze: 2d\n", "c.yaml:2", "must be between 1m and reminders.max_snooze (1d), not 2d"),
    ("reminders:\n  snooze: 10s\n", "c.yaml:2", "must be between 1m"),
    ("reminders:\n  remind_every: 5m\n", "c.yaml:2", "remind_every"),
])
def test_bad_values_fail_at_load_with_file_and_line(text: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(text, filename="c.yaml", env={})
    msg = str(err.value)
    assert where in msg and what in msg, msg


def test_the_shipped_example_config_still_loads() -> None:
    assert load("config.yaml").reminders is not None
