"""Card HTML, keyboard and button payloads: pure functions, table-driven."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.appearance.card import IncidentCard
from core.appearance.telegram import (
    callback_data,
    card_html,
    keyboard,
    note_html,
    parse_callback,
    plain,
    utf16_len,
)
from core.delivery.message import Notification

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def card(**kw: object) -> IncidentCard:
    base: dict[str, object] = {
        "id": 12, "ref": "INC-12", "title": "Payment errors", "severity": "sev2", "state": "open",
        "commander": "telegram:4242", "description": "", "created_at": T0, "acknowledged_by": None,
        "acknowledged_at": None, "resolved_at": None, "link": "https://tocsin.example.com/incidents/12"}
    base.update(kw)
    return IncidentCard(**base)  # type: ignore[arg-type]


def actions(c: IncidentCard) -> list[str]:
    kb = keyboard(c)
    if kb is None:
        return []
    return [str(b["callback_data"]) for row in kb["inline_keyboard"] for b in row if "callback_data" in b]


def links(c: IncidentCard) -> list[tuple[str, str]]:
    kb = keyboard(c)
    return [(b["text"], b["url"]) for row in (kb or {}).get("inline_keyboard", []) for b in row if "url" in b]


@pytest.mark.parametrize("state,acked,expected", [
    ("open", False, ["tocsin:ack:12", "tocsin:monitor:12", "tocsin:resolve:12"]),
    ("open", True, ["tocsin:monitor:12", "tocsin:resolve:12"]),
    ("monitoring", True, ["tocsin:resolve:12"]),
    ("monitoring", False, ["tocsin:ack:12", "tocsin:resolve:12"]),
    ("resolved", True, []),
])
def test_keyboard_offers_only_meaningful_actions(state: str, acked: bool, expected: list[str]) -> None:
    c = card(state=state, acknowledged_by="telegram:1" if acked else None,
             acknowledged_at=T0 + timedelta(minutes=3) if acked else None,
             resolved_at=T0 + timedelta(hours=1) if state == "resolved" else None)
    assert actions(c) == expected


@pytest.mark.parametrize("link, expected", [
    ("https://tocsin.example.com/incidents/12", [("Open incident", "https://tocsin.example.com/incidents/12")]),
    ("http://127.0.0.1:8080/incidents/12", []),   # Telegram refuses loopback links: no button
    ("http://localhost:8080/incidents/12", []),
])
@pytest.mark.parametrize("state", ["open", "resolved"])
def test_open_incident_is_a_url_button_to_the_console_page(link: str, expected: list[tuple[str, str]],
                                                          state: str) -> None:
    c = card(link=link, state=state, resolved_at=T0 + timedelta(hours=1) if state == "resolved" else None)
    assert links(c) == expected
    kb = keyboard(c)
    if state == "open":  # the actions first, the link on its own row below
        assert kb is not None and kb["inline_keyboard"][0][0]["callback_data"] == "tocsin:ack:12"
    else:
        assert (kb is None) == (not expected)


def test_callback_data_fits_64_bytes_and_round_trips() -> None:
    data = callback_data("resolve", 10**18)
    assert len(data.encode()) <= 64
    assert parse_callback(data) == ("resolve", 10**18)


@pytest.mark.parametrize("data", [None, "", "tocsin:ack", "tocsin:drop:1", "other:ack:1", "tocsin:ack:x",
                                  "tocsin:ack:1:2", "tocsin:ack:-1"])
def test_foreign_or_broken_callback_data_is_rejected(data: str | None) -> None:
    assert parse_callback(data) is None


def test_card_escapes_html_and_shows_timings() -> None:
    c = card(title="<script>alert(1)</script> & co", description="db <b>down</b>", state="resolved",
             acknowledged_by="telegram:4242", acknowledged_at=T0 + timedelta(minutes=3),
             resolved_at=T0 + timedelta(hours=1, minutes=2))
    html = card_html(c)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "db &lt;b&gt;down&lt;/b&gt;" in html
    assert "<script>" not in html
    assert "INC-12 · SEV2 · RESOLVED" in html
    assert "Acknowledged by telegram:4242 after 3m00s" in html
    assert "Resolved after 1h02m" in html
    assert '<a href="https://tocsin.example.com/incidents/12">' in html


def test_card_leaves_out_loopback_links_telegram_would_reject() -> None:
    assert "<a " not in card_html(card(link="http://127.0.0.1:8080/incidents/12"))


def test_long_description_keeps_card_within_the_message_limit() -> None:
    html = card_html(card(title="x" * 500, description="<>" * 5000))
    assert utf16_len(html) <= 4096


def test_note_and_plain_text_limits() -> None:
    note = Notification(kind="UPDATE", title="INC-12: x", body="a < b\n" * 2000, incident="INC-12")
    out = note_html(note)
    assert out.startswith("<b>Update</b> · INC-12\na &lt; b")
    assert utf16_len(out) <= 4096
    assert utf16_len(plain("\U0001F534" * 5000)) <= 4096
