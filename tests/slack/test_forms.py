"""Slack modals and answers: drawing the forms, reading their submissions as Commands, table-driven."""
from __future__ import annotations

from typing import Any

import pytest

from bot.commands import Command
from bot.dispatch import Reply
from bot.slack.forms import answer_text, read_declare, read_update
from core.appearance.slack import DECLARE_VIEW, declare_modal, read_metadata, update_modal
from tests.appearance.helpers import card
from tests.conftest import make_config
from tests.slack.standin import select_value, text_value

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
