"""The shared vocabulary: one wording everywhere, the escapes, durations on the incident model."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.appearance import slack, teams, telegram
from core.appearance.email import render_email
from core.appearance.sms import render_sms
from core.appearance.vocabulary import (
    KIND_LABELS,
    escape_slack,
    escape_terminal,
    fmt_duration,
    truncate,
)
from core.delivery.message import Notification
from core.models import Incident

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("kind", sorted(KIND_LABELS))
def test_every_channel_and_card_words_a_kind_the_same(kind: str) -> None:
    n = Notification(kind=kind, title="DB down", body="details", incident="INC-1", severity="sev2")
    label = KIND_LABELS[kind]
    assert f"{label}: DB down" in render_email(n).subject
    assert f"{label}: DB down" in render_sms(n)
    assert f"*{label}*" in slack.render_slack(n)["blocks"][1]["elements"][0]["text"]
    assert label in teams.render_teams(n)["attachments"][0]["content"]["body"][0]["text"]
    assert f"{label}" in telegram.render_telegram(n)
    assert f"*{label}*: details" in slack.thread_text(n)
    assert teams.note_text(n) == f"{label}: details"
    assert telegram.note_html(n).startswith(f"<b>{label}</b>")


def test_initial_is_declared() -> None:
    assert KIND_LABELS["INITIAL"] == "Declared"


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain title", "plain title"),
    ("red \x1b[31malert\x1b[0m", "red alert"),                       # SGR colour
    ("clear\x1b[2J\x1b[Hscreen", "clearscreen"),                      # erase + cursor home
    ("title \x1b]0;pwned\x07set", "title set"),                       # OSC window title (BEL)
    ("link \x1b]8;;http://x\x1b\\text", "link text"),                 # OSC 8 hyperlink (ST)
    ("bell\x07 nul\x00 bs\x08", "bell nul bs"),                       # C0 controls
    ("c1 \x9b31mcsi", "c1 csi"),                                      # 8-bit CSI
    ("abc\u202edcba\u2066x\u2069", "abcdcbax"),                       # bidi overrides and isolates
    ("two\nlines\ttab\r", "two lines tab "),                         # one field stays one line
])
def test_escape_terminal_strips_controls(raw: str, shown: str) -> None:
    out = escape_terminal(raw)
    assert out == shown
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in out)


def test_escape_terminal_can_keep_lines() -> None:
    assert escape_terminal("a\nb\tc\x1b[1m\r", lines=True) == "a\nb\tc"


def test_escape_slack_and_truncate() -> None:
    assert escape_slack("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
    assert truncate("abcdef", 4) == "abc\u2026" and truncate("abc", 4) == "abc"


@pytest.mark.parametrize(("value", "shown"), [
    (None, "-"), (0, "0s"), (42.9, "42s"), (300, "5m00s"), (timedelta(hours=2, minutes=5), "2h05m"),
])
def test_fmt_duration(value: float | timedelta | None, shown: str) -> None:
    assert fmt_duration(value) == shown


def test_durations_are_properties_of_the_incident() -> None:
    naive = T0.replace(tzinfo=None)  # SQLite hands timestamps back without a zone
    inc = Incident(id=1, created_at=naive, state_since=naive + timedelta(minutes=3),
                   acknowledged_at=naive + timedelta(minutes=2), resolved_at=None)
    assert inc.time_to_ack == timedelta(minutes=2) and inc.time_to_resolve is None
    assert inc.time_open(T0 + timedelta(hours=1)) == timedelta(hours=1)
    assert inc.time_in_state(T0 + timedelta(minutes=10)) == timedelta(minutes=7)
    inc.resolved_at = T0 + timedelta(minutes=30)
    assert inc.time_to_resolve == timedelta(minutes=30)
    assert inc.time_open(T0 + timedelta(days=1)) == timedelta(minutes=30)  # stops at resolve


def test_cli_text_never_prints_raw_control_characters() -> None:
    from core.appearance.terminal import TERMINAL, incident_line
    from core.incident_store import IncidentPage

    inc = Incident(id=3, title="evil \x1b[2J\u202etitle", severity="sev2", state="open", commander="cli:x",
                   created_at=T0, acknowledged_by="cli:\x1b[31mbob", acknowledged_at=T0)
    for line in (incident_line(inc, T0), TERMINAL.incident_list(IncidentPage([inc], 0), T0, state="open")):
        assert "\x1b" not in line and "\u202e" not in line and "evil title" in line and "cli:bob" in line
