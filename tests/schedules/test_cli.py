"""`tocsin oncall show|override|overrides|cancel|take|export` build the same Commands the chat runs; the
export is iCalendar that parses back."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from icalendar import Calendar

from bot.cli import main
from tests.conftest import BASE_CONFIG, deep_merge
from tests.schedules.conftest import SCHEDULES


@pytest.fixture
def config(tmp_path: Path) -> str:
    data = deep_merge(BASE_CONFIG, SCHEDULES)
    data["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'tocsin.db'}"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["--config", str(path), "db", "upgrade"]) == 0
    return str(path)


def run(config: str, *args: str, who: str = "cli:admin") -> int:
    return main(["--config", config, "--as", who, "oncall", *args])


def test_override_list_show_cancel(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, "show", "primary") == 0
    assert "now:  " in capsys.readouterr().out
    assert run(config, "override", "primary", "dave", "--for", "2h") == 0
    out = capsys.readouterr().out
    assert out.startswith("override #1: dave covers primary from ")
    assert run(config, "override", "primary", "carol", "--for", "1h") == 1
    assert "overlaps override #1 (dave" in capsys.readouterr().err
    assert run(config, "override", "primary", "carol", "--for", "1h", who="cli:op") == 1
    assert "Not allowed: cli:op has role OPERATOR" in capsys.readouterr().err
    assert run(config, "override", "nightly", "carol", "--for", "1h") == 1
    assert "unknown schedule 'nightly'" in capsys.readouterr().err
    assert run(config, "override", "primary", "carol", "--from", "2020-01-01T10:00", "--for", "1h") == 1
    assert "in the past" in capsys.readouterr().err
    assert run(config, "overrides", "primary", who="cli:viewer") == 0
    assert "override #1: dave" in capsys.readouterr().out
    assert run(config, "show", "primary", who="cli:viewer") == 0
    assert "now:  dave - override #1" in capsys.readouterr().out
    assert run(config, "show", "primary", "--week") == 0
    week = capsys.readouterr().out
    assert "next 7 days" in week and "override #1" in week and "layer weekly" in week
    assert run(config, "cancel", "1", who="cli:viewer") == 1
    capsys.readouterr()
    assert run(config, "cancel", "1") == 0
    assert "Cancelled override #1" in capsys.readouterr().out
    assert run(config, "take", "primary", "--for", "1h", who="cli:alice") == 0  # cli:<contact name>
    assert "alice covers primary" in capsys.readouterr().out


def test_export_is_icalendar_that_parses_back(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, "override", "primary", "dave", "--for", "3h") == 0
    capsys.readouterr()
    assert run(config, "export", "primary", "--weeks", "3") == 0
    cal = Calendar.from_ical(capsys.readouterr().out)
    events = [c for c in cal.walk("VEVENT")]
    summaries = [str(e["SUMMARY"]) for e in events]
    assert summaries[0] == "On call: dave (override)"
    assert {"On call: alice", "On call: bob"} <= set(summaries)
    starts = [e.decoded("DTSTART") for e in events]
    assert starts == sorted(starts) and all(e.decoded("DTEND") > e.decoded("DTSTART") for e in events)
    assert len({str(e["UID"]) for e in events}) == len(events)
    assert run(config, "export", "primary", "--contact", "bob") == 0
    only_bob = Calendar.from_ical(capsys.readouterr().out)
    assert {str(e["SUMMARY"]) for e in only_bob.walk("VEVENT")} == {"On call: bob"}
