"""Schedules in config.yaml: members, times, days, zones and targets checked at load with file:line;
`tocsin config check` warns about coverage gaps in the next 14 days."""
from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import coverage_warnings
from core.config import loads
from core.errors import ConfigError
from tests.core.test_config_check import errors_of

HEAD = """contacts:
  - name: alice
  - name: bob
contact_lists:
  - name: leads
    members: [alice]
"""

GOOD = HEAD + """schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - name: weekly
        members: [alice, bob]
        rotation: weekly
        handoff: "09:00"
        handoff_day: monday
        start: 2026-01-05
      - name: weekend
        members: [bob]
        rotation: daily
        start: "2026-01-05"
        restrict: {days: [sat, sunday], from: "10:00", to: "16:00"}
    fallback: {lists: [leads]}
routing:
  default_targets: {schedules: [primary]}
"""


def test_a_valid_schedule_loads() -> None:
    cfg = loads(GOOD, env={})
    sc = cfg.schedule("primary")
    assert sc is not None and sc.layers[1].restrict is not None
    assert sc.layers[1].restrict.days == ["sat", "sun"] and sc.layers[0].handoff_day == "mon"
    assert cfg.routing.default_targets.schedules == ["primary"]


@pytest.mark.parametrize("old, new, expected", [
    ("members: [alice, bob]", "members: [alice, zed]",
     "config.yaml:12 schedules[0].layers[0].members[1]: schedule 'primary' layer 'weekly' names unknown "
     "contact 'zed'"),
    ('handoff: "09:00"', 'handoff: "25:00"',
     "config.yaml:14 schedules[0].layers[0].handoff: must be a time from 00:00 to 23:59"),
    ("handoff_day: monday", "handoff_day: moonday",
     "config.yaml:15 schedules[0].layers[0].handoff_day: 'moonday' is not a day"),
    ("rotation: weekly", "rotation: hours:0",
     "config.yaml:13 schedules[0].layers[0].rotation: rotation 'hours:0': hours:<n> needs a whole number"),
    ("rotation: daily", "rotation: fortnightly",
     "config.yaml:19 schedules[0].layers[1].rotation: rotation 'fortnightly' must be daily, weekly or hours:<n>"),
    ("timezone: Europe/Berlin", "timezone: Mars/Olympus",
     "config.yaml:9 schedules[0].timezone: unknown timezone 'Mars/Olympus'"),
    ("[sat, sunday]", "[sat, funday]", "config.yaml:21 schedules[0].layers[1].restrict.days[1]: 'funday' is not"),
    ("start: 2026-01-05", "start: 2026-13-05", "config.yaml:16: invalid date: month must be in 1..12"),
    ("default_targets: {schedules: [primary]}", "default_targets: {schedules: [secondary]}",
     "config.yaml:24 routing.default_targets.schedules[0]: routing.default_targets names unknown schedule "
     "'secondary'"),
    ("fallback: {lists: [leads]}", "fallback: {schedules: [primary]}",
     "config.yaml:22 schedules[0].fallback.schedules: schedule 'primary': a fallback cannot name schedules"),
    ("rotation: daily", "rotation: daily\n        handoff_day: fri",
     "config.yaml:17 schedules[0].layers[1]: handoff_day applies to weekly rotations only"),
])
def test_bad_schedules_name_file_line_and_key(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    problems = errors_of(GOOD.replace(old, new, 1))
    assert any(p.startswith(expected) for p in problems), problems


def test_config_check_warns_about_gaps_in_the_next_14_days(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    path = tmp_path / "config.yaml"
    # only a weekend-daytime layer: every weekday and night is a gap
    path.write_text(GOOD.replace("      - name: weekly\n        members: [alice, bob]\n        rotation: weekly\n"
                                 '        handoff: "09:00"\n        handoff_day: monday\n        start: 2026-01-05\n',
                                 ""))
    cfg = loads(path.read_text(), env={})
    warnings = coverage_warnings(cfg, path, datetime(2026, 12, 3, 12, tzinfo=timezone.utc))
    assert warnings[0].startswith(f"{path}:8 schedules[0]: warning: nobody on call in schedule 'primary' from "
                                  "Thu 03 Dec 13:00 CET to Sat 05 Dec 10:00 CET (fallback: leads)")
    full = loads(GOOD, env={})
    path.write_text(GOOD)
    assert coverage_warnings(full, path, datetime(2026, 12, 3, 12, tzinfo=timezone.utc)) == []


def test_config_check_exit_code_stays_zero_with_a_gap_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    path = tmp_path / "config.yaml"
    path.write_text(GOOD.replace("start: 2026-01-05", "start: 2099-01-05"))
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr()
    assert "1 schedules" in out.out and "warning: nobody on call in schedule 'primary'" in out.err
    with pytest.raises(ConfigError):
        loads(GOOD.replace("[alice, bob]", "[]"), env={})
