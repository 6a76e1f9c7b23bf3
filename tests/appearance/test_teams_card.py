"""Adaptive Card 1.4 rendering: what each state shows and offers, both action kinds, the size limit."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.appearance.card import IncidentCard
from core.appearance.teams import declare_form, incident_card, message_html, note_text
from core.delivery.message import Notification
from tests.teams.helpers import action_titles, card_text

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def card(**over: Any) -> IncidentCard:
    base: dict[str, Any] = {"id": 7, "ref": "INC-7", "title": "Payments failing", "severity": "sev1",
                            "state": "open", "commander": "teams:aad-1", "description": "5xx on /pay",
                            "created_at": T0, "acknowledged_by": None, "acknowledged_at": None, "resolved_at": None,
                            "link": "https://tocsin.example/incidents/7"}
    base.update(over)
    return IncidentCard(**base)


def facts(c: dict[str, Any]) -> dict[str, str]:
    (fs,) = [b for b in c["body"] if b["type"] == "FactSet"]
    return {f["title"]: f["value"] for f in fs["facts"]}


def test_open_card() -> None:
    c = incident_card(card())
    assert (c["type"], c["version"], c["$schema"]) == (
        "AdaptiveCard", "1.4", "http://adaptivecards.io/schemas/adaptive-card.json")
    assert c["body"][0]["text"] == "INC-7 · SEV1 · OPEN" and c["body"][0]["color"] == "Attention"
    assert c["body"][1]["text"] == "Payments failing" and c["body"][2]["text"] == "5xx on /pay"
    assert facts(c) == {"Severity": "SEV1 (critical)", "State": "Open", "Commander": "teams:aad-1",
                        "Declared": "{{DATE(2026-01-01T09:00:00Z,SHORT)}} {{TIME(2026-01-01T09:00:00Z)}}"}
    assert action_titles(c) == ["Acknowledge", "Add update", "Monitoring", "Resolve", "Open incident"]
    ack = c["actions"][0]
    # Action.Execute (an adaptiveCard/action invoke) with an Action.Submit fallback carrying the same data
    assert ack["type"] == "Action.Execute" and ack["verb"] == "ack"
    assert ack["data"] == {"tocsin": "ack", "incident": "INC-7"}
    assert ack["fallback"] == {"type": "Action.Submit", "title": "Acknowledge", "data": ack["data"]}
    update = c["actions"][1]["card"]
    assert update["body"][0]["id"] == "text" and update["actions"][0]["data"]["tocsin"] == "update"
    assert c["actions"][-1] == {"type": "Action.OpenUrl", "title": "Open incident",
                                "url": "https://tocsin.example/incidents/7"}


@pytest.mark.parametrize("over, titles, state_fact, extra", [
    ({"acknowledged_by": "teams:aad-2", "acknowledged_at": T0 + timedelta(minutes=4)},
     ["Add update", "Monitoring", "Resolve", "Open incident"], "Open", {"Acknowledged by": "teams:aad-2 after 4m00s"}),
    ({"state": "monitoring"}, ["Acknowledge", "Add update", "Resolve", "Open incident"], "Monitoring", {}),
    ({"state": "resolved", "acknowledged_by": "x", "acknowledged_at": T0 + timedelta(minutes=1),
      "resolved_at": T0 + timedelta(hours=2)}, ["Open incident"], "Resolved", {"Resolved after": "2h00m"}),
])
def test_buttons_follow_the_state(over: dict[str, Any], titles: list[str], state_fact: str,
                                  extra: dict[str, str]) -> None:
    c = incident_card(card(**over))
    assert action_titles(c) == titles
    f = facts(c)
    assert f["State"] == state_fact
    for k, v in extra.items():
        assert f[k] == v
    if over.get("state") == "resolved":
        assert c["body"][0]["color"] == "Good"


def test_hostile_text_stays_text_and_size_is_bounded() -> None:
    c = incident_card(card(title="<at>x</at> ${evil} " + "t" * 600, description="d" * 50_000,
                           link="javascript:alert(1)"))
    assert "Open incident" not in action_titles(c)  # only http(s) links become buttons
    assert len(c["body"][1]["text"]) == 500 and len(c["body"][2]["text"]) == 2000
    assert len(json.dumps(c).encode()) < 28_000


def test_declare_form() -> None:
    f = declare_form()
    ids = [b.get("id") for b in f["body"]]
    assert ids == [None, "severity", "title"]
    assert [ch["value"] for ch in f["body"][1]["choices"]] == ["sev1", "sev2", "sev3", "sev4"]
    assert f["actions"] == [{"type": "Action.Submit", "title": "Declare", "data": {"tocsin": "declare"}}]


def test_thread_notes_and_message_markup() -> None:
    assert note_text(Notification(kind="RESOLVED", title="t", body="freed disk")) == "Resolved: freed disk"
    assert note_text(Notification(kind="ACK", title="t")) == "Acknowledged"
    assert message_html("Usage: /incident ack <INC-n>\nA & B") == "Usage: /incident ack &lt;INC-n&gt;<br>A &amp; B"
    assert "Payments failing" in card_text(incident_card(card()))
