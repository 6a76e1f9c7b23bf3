"""Block Kit rendering and form reading: pure functions, table-driven."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from bot.commands import Command
from bot.dispatch import Reply
from bot.slack.blocks import (
    DECLARE_VIEW,
    HEADER_MAX,
    action_id,
    answer_text,
    card_blocks,
    card_text,
    declare_modal,
    escape,
    parse_action_id,
    read_declare,
    read_metadata,
    read_update,
    thread_text,
    update_modal,
    who,
)
from bot.surface import IncidentCard
from core.delivery.message import Notification
from tests.conftest import make_config
from tests.slack.standin import select_value, text_value

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def card(**over: Any) -> IncidentCard:
    base: dict[str, Any] = dict(id=7, ref="INC-7", title="DB down", severity="sev1", state="open",
                                commander="slack:UOP", description="", created_at=T0, acknowledged_by=None,
                                acknowledged_at=None, resolved_at=None, link="http://tocsin/incidents/7")
    base.update(over)
    return IncidentCard(**base)


def buttons(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def fields(blocks: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", [])]


@pytest.mark.parametrize(("over", "expected_buttons", "expected_fields"), [
    ({}, ["incident.ack:7", "incident.update:7", "incident.monitor:7", "incident.resolve:7"],
     ["*Severity*\nSEV1 (critical)", "*State*\nOpen", "*Commander*\n<@UOP>", "*Open for*\n5m00s"]),
    ({"acknowledged_by": "cli:alice", "acknowledged_at": T0 + timedelta(minutes=2)},
     ["incident.update:7", "incident.monitor:7", "incident.resolve:7"],
     ["*Severity*\nSEV1 (critical)", "*State*\nOpen", "*Commander*\n<@UOP>", "*Acknowledged by*\ncli:alice",
      "*Open for*\n5m00s"]),
    ({"state": "monitoring"}, ["incident.ack:7", "incident.update:7", "incident.resolve:7"], None),
    ({"state": "resolved", "acknowledged_by": "slack:UADMIN", "acknowledged_at": T0 + timedelta(minutes=2),
      "resolved_at": T0 + timedelta(hours=1, minutes=5)}, [],
     ["*Severity*\nSEV1 (critical)", "*State*\nResolved", "*Commander*\n<@UOP>",
      "*Acknowledged by*\n<@UADMIN>", "*Time to ack*\n2m00s", "*Time to resolve*\n1h05m"]),
    ({"state": "resolved", "resolved_at": T0 + timedelta(seconds=30)}, [],
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
    assert "<http://tocsin/incidents/7|Open in Tocsin>" in context
    assert f"<!date^{int(T0.timestamp())}^" in context


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


# --- modals --------------------------------------------------------------------------------------------


def submitted(view: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    return dict(view, id="V1", state={"values": values})


def test_declare_modal_without_contact_lists() -> None:
    cfg = make_config(contact_lists=[], routing={"default_targets": {"lists": []}, "rules": []})
    view = declare_modal(cfg, channel="C1")
    assert view["callback_id"] == DECLARE_VIEW
    assert [b["block_id"] for b in view["blocks"]] == ["title", "severity", "description"]
    assert read_metadata(view) == {"channel": "C1"}


@pytest.mark.parametrize(("values", "expected"), [
    ({"title": text_value("  DB   down "), "severity": select_value("sev2"),
      "contact_list": select_value(None), "description": text_value(" slow ")},
     Command("declare", severity="sev2", title="DB down", text="slow", target=None)),
    ({"title": text_value("x"), "severity": select_value("sev4"), "contact_list": select_value("leads")},
     Command("declare", severity="sev4", title="x", text="", target="leads")),
    ({"title": text_value(""), "severity": select_value("sev2")}, {"title": "An incident needs a title."}),
    ({"title": text_value("y" * 501), "severity": select_value("sev2")},
     {"title": "The title is longer than 500 characters."}),
    ({"title": text_value("x"), "severity": select_value("sev9")}, {"severity": "Pick a severity."}),
    ({"title": text_value("x"), "severity": select_value("sev1"), "contact_list": select_value("gone")},
     {"contact_list": "There is no contact list 'gone' any more."}),
    ({}, {"title": "An incident needs a title.", "severity": "Pick a severity."}),
])
def test_read_declare(values: dict[str, Any], expected: Command | dict[str, str]) -> None:
    cfg = make_config()
    assert read_declare(submitted(declare_modal(cfg, channel=None), values), cfg) == expected


def test_read_update() -> None:
    view = update_modal(card(), channel="C1")
    assert read_metadata(view) == {"channel": "C1", "incident": 7}
    expected = Command("update", incident="INC-7", text="fixed")
    assert read_update(submitted(view, {"text": text_value(" fixed ")})) == expected
    assert read_update(submitted(view, {"text": text_value(" ")})) == {"text": "Write the update."}
    broken = dict(submitted(view, {"text": text_value("x")}), private_metadata="{not json")
    assert "lost track" in read_update(broken)["text"]  # type: ignore[index]


# --- answers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "cmd", "expected"), [
    (Reply("no incident INC-9", ok=False), Command("ack", incident="INC-9"),
     "no incident INC-9\nUsage: /incident ack &lt;INC-n&gt;"),
    (Reply("Unknown command 'x'.\nIncident commands:\n...", ok=False), None,
     "Unknown command 'x'.\nIncident commands:\n..."),
    (Reply("Declared INC-1 [sev1] <b>", ephemeral=False), Command("declare"),
     "Declared INC-1 [sev1] &lt;b&gt;"),
])
def test_answer_text(reply: Reply, cmd: Command | None, expected: str) -> None:
    assert answer_text(reply, cmd) == expected


def test_escape() -> None:
    assert escape("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
