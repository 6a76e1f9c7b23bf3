"""Slack incident card (Block Kit): what each state shows and offers, escaping, limits, thread replies."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from core.appearance.slack import (
    HEADER_MAX,
    OPEN_RE,
    action_id,
    card_blocks,
    card_text,
    parse_action_id,
    thread_text,
    who,
)
from core.delivery.message import Notification
from tests.appearance.helpers import T0, card


def buttons(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def fields(blocks: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", [])]


@pytest.mark.parametrize(("over", "expected_buttons", "expected_fields"), [
    ({}, ["incident.ack:7", "incident.update:7", "incident.monitor:7", "incident.resolve:7", "incident.open:7"],
     ["*Severity*\nSEV1 (critical)", "*State*\nOpen", "*Commander*\n<@UOP>", "*Open for*\n5m00s"]),
    ({"acknowledged_by": "cli:alice", "acknowledged_at": T0 + timedelta(minutes=2)},
     ["incident.update:7", "incident.monitor:7", "incident.resolve:7", "incident.open:7"],
     ["*Severity*\nSEV1 (critical)", "*State*\nOpen", "*Commander*\n<@UOP>", "*Acknowledged by*\ncli:alice",
      "*Open for*\n5m00s"]),
    ({"state": "monitoring"}, ["incident.ack:7", "incident.update:7", "incident.resolve:7", "incident.open:7"],
     None),
    ({"state": "resolved", "acknowledged_by": "slack:UADMIN", "acknowledged_at": T0 + timedelta(minutes=2),
      "resolved_at": T0 + timedelta(hours=1, minutes=5)}, ["incident.open:7"],
     ["*Severity*\nSEV1 (critical)", "*State*\nResolved", "*Commander*\n<@UOP>",
      "*Acknowledged by*\n<@UADMIN>", "*Time to ack*\n2m00s", "*Time to resolve*\n1h05m"]),
    ({"state": "resolved", "resolved_at": T0 + timedelta(seconds=30)}, ["incident.open:7"],
     ["*Severity*\nSEV1 (critical)", "*State*\nResolved", "*Commander*\n<@UOP>",
      "*Time to ack*\nnot acknowledged", "*Time to resolve*\n30s"]),
])
def test_card_by_state(over: dict[str, Any], expected_buttons: list[str],
                       expected_fields: list[str] | None) -> None:
    blocks = card_blocks(card(**over), now=T0 + timedelta(minutes=5))
    header = {"type": "plain_text", "text": "INC-7: DB down", "emoji": True}
    assert blocks[0] == {"type": "header", "text": header}
    assert buttons(blocks) == expected_buttons
    if expected_fields is not None:
        assert fields(blocks) == expected_fields
    context = next(b for b in blocks if b["type"] == "context")["elements"][0]["text"]
    assert "incidents/7" not in context  # the link is the Open incident button, not a context link
    assert f"<!date^{int(T0.timestamp())}^" in context
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert actions["elements"][-1] == {"type": "button", "action_id": "incident.open:7",
                                       "url": "http://tocsin/incidents/7",
                                       "text": {"type": "plain_text", "text": "Open incident", "emoji": True}}


def test_labels_come_from_the_vocabulary() -> None:
    from core.appearance.vocabulary import BUTTON_LABELS

    elements = next(b for b in card_blocks(card(), now=T0) if b["type"] == "actions")["elements"]
    assert [e["text"]["text"] for e in elements] == [BUTTON_LABELS[v] for v in
                                                    ("ack", "update", "monitor", "resolve", "open")]
    assert elements[0]["text"]["text"] == "Acknowledge" and elements[-1]["text"]["text"] == "Open incident"


@pytest.mark.parametrize("link", ["javascript:alert(1)", "ftp://tocsin/incidents/7",
                                  "https://tocsin.example/" + "x" * 3000])
def test_no_open_button_for_a_link_block_kit_refuses(link: str) -> None:
    blocks = card_blocks(card(link=link), now=T0)
    assert "incident.open:7" not in buttons(blocks) and buttons(blocks)[0] == "incident.ack:7"
    resolved = card_blocks(card(link=link, state="resolved", resolved_at=T0), now=T0)
    assert not [b for b in resolved if b["type"] == "actions"]  # nothing left to press: no actions block


def test_open_action_id_is_not_a_command() -> None:
    assert parse_action_id("incident.open:7") is None  # the adapter only acknowledges it
    assert OPEN_RE.match("incident.open:7") and not OPEN_RE.match("incident.open:x")


def test_resolve_button_asks_for_confirmation() -> None:
    blocks = card_blocks(card(), now=T0)
    resolve = next(e for b in blocks if b["type"] == "actions" for e in b["elements"]
                   if e["action_id"] == "incident.resolve:7")
    assert resolve["style"] == "danger" and resolve["confirm"]["confirm"]["text"] == "Resolve"


def test_user_text_cannot_ping_or_break_markup() -> None:
    c = card(title="<!channel> & <http://evil|click>", description="<@UALL> hi", commander="api:<grafana>")
    blocks = card_blocks(c, now=T0)
    desc = next(b for b in blocks if b.get("block_id") == "description")["text"]["text"]
    assert desc == "&lt;@UALL&gt; hi"
    assert "*Commander*\napi:&lt;grafana&gt;" in fields(blocks)
    assert "<!channel>" not in card_text(c) and "&lt;!channel&gt; &amp;" in card_text(c)
    note = Notification(kind="UPDATE", title="t", body="<!here> rollback")
    assert thread_text(note) == ":memo: *Update*: &lt;!here&gt; rollback"


def test_long_titles_are_cut_to_slack_limits() -> None:
    header = card_blocks(card(title="x" * 600), now=T0)[0]["text"]["text"]
    assert len(header) == HEADER_MAX and header.endswith("…")


@pytest.mark.parametrize(("identity", "shown"), [
    ("slack:U0123ABC", "<@U0123ABC>"), ("slack:WABC", "<@WABC>"),
    ("cli:alice", "cli:alice"), ("slack:not-an-id", "slack:not-an-id"), (None, "-"),
])
def test_who(identity: str | None, shown: str) -> None:
    assert who(identity) == shown


@pytest.mark.parametrize(("value", "parsed"), [
    ("incident.ack:12", ("ack", 12)), ("incident.update:1", ("update", 1)),
    ("incident.monitor:3", ("monitor", 3)), ("incident.resolve:999", ("resolve", 999)),
    ("incident.explode:1", None), ("incident.ack:", None), ("incident.ack:1x", None), ("ack:1", None),
    ("", None),
])
def test_action_ids(value: str, parsed: tuple[str, int] | None) -> None:
    assert parse_action_id(value) == parsed
    if parsed:
        assert action_id(*parsed) == value


@pytest.mark.parametrize(("kind", "label"), [
    ("UPDATE", "Update"), ("BRIDGE", "Bridge"), ("ACK", "Acknowledged"), ("MONITORING", "Monitoring"),
    ("RESOLVED", "Resolved"), ("ESCALATION", "Escalation")])
def test_thread_reply_per_kind(kind: str, label: str) -> None:
    assert f"*{label}*: body" in thread_text(Notification(kind=kind, title="INC-1: x", body="body"))
