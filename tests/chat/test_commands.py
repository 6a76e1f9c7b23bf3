"""The one /incident parser, table-driven, plus a fuzz property: any text -> Command or UsageError."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.commands import Command, UsageError, parse

OK = [
    ("", Command("form")),
    ("help", Command("help")),
    ("declare sev1 Database down", Command("declare", severity="sev1", title="Database down")),
    ("new critical Payments failing", Command("declare", severity="sev1", title="Payments failing")),
    ("/incident@TocsinBot declare low Slow page", Command("declare", severity="sev4", title="Slow page")),
    ("declare sev1 DB down --commander @bob", Command("declare", severity="sev1", title="DB down", contact="@bob")),
    ("declare sev2 DB down \u2014commander Mary Ann", Command("declare", severity="sev2", title="DB down",
                                                             contact="Mary Ann")),
    ("role INC-3 Comms <@U1|al>", Command("role", incident="INC-3", target="comms", contact="<@U1|al>")),
    ("role 3 scribe me", Command("role", incident="INC-3", target="scribe", contact="me")),
    ("note 4 found it | really", Command("note", incident="INC-4", text="found it | really")),
    ("<at>Tocsin</at> incident ack INC-3", Command("ack", incident="INC-3")),
    ("@Tocsin incident resolve 4 fixed it", Command("resolve", incident="INC-4", text="fixed it")),
    ("incident monitor inc-7", Command("monitor", incident="INC-7")),
    ("update INC-2 it's \"mostly\"\nfine", Command("update", incident="INC-2", text="it's \"mostly\"\nfine")),
    ("bridge INC-2 https://meet.example/x join now",
     Command("bridge", incident="INC-2", target="https://meet.example/x", text="join now")),
    ("escalate INC-5", Command("escalate", incident="INC-5")),
    ("notify oncall Maintenance tonight", Command("notify", target="oncall", text="Maintenance tonight")),
    ("notify --urgent oncall Call in now", Command("notify", target="oncall", text="Call in now", urgent=True)),
    ("notify \u2014urgent oncall Call in now", Command("notify", target="oncall", text="Call in now", urgent=True)),
    ("status INC-1", Command("status", incident="INC-1")),
    ("list", Command("list", filter="open")),
    ("list all", Command("list", filter="all")),
    ("route INC-1 ack", Command("route", incident="INC-1", target="ack")),
]

BAD = [
    ("frobnicate", "Unknown command 'frobnicate'", None),
    ("declare", "needs a severity and a title", "declare <sev1..sev4> <title>"),
    ("declare sev9 x", "'sev9' is not a severity", "declare <sev1..sev4> <title>"),
    ("declare sev1", "needs a title", "declare"),
    ("declare sev1 x --commander", "`--commander` needs a person", "declare"),
    ("role INC-1 comms", "needs a role (commander, comms or scribe) and a person", "role"),
    ("note INC-1", "needs the text", "note <INC-n> <text>"),
    ("update INC-2", "needs the text", "update <INC-n> <text>"),
    ("update banana text", "'banana' is not an incident id", "update"),
    ("ack", "needs an incident id", "ack <INC-n>"),
    ("ack INC-1 now", "takes only the incident id", "ack"),
    ("bridge INC-1", "needs a URL or dial-in", "bridge"),
    ("notify oncall", "needs a contact list and the text", "notify"),
    ("notify --urgent oncall", "needs a contact list and the text", "notify"),
    ("list closed", "takes `open` or `all`", "list"),
]


@pytest.mark.parametrize("text, expected", OK)
def test_parse_ok(text: str, expected: Command) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize("text, problem, usage", BAD)
def test_parse_errors_explain_and_show_usage(text: str, problem: str, usage: str | None) -> None:
    with pytest.raises(UsageError) as exc:
        parse(text)
    assert problem in exc.value.text
    assert ("Usage: /incident " + usage if usage else "Incident commands:") .split(" <")[0] in exc.value.text


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_command_or_a_usage_error(text: str) -> None:
    try:
        cmd = parse(text)
    except UsageError as exc:
        assert exc.text
    else:
        assert isinstance(cmd, Command)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["declare sev2 ", "update INC-1 ", "resolve 3 ", "notify oncall "]), st.text(min_size=1))
def test_free_text_survives_verbatim(prefix: str, tail: str) -> None:
    try:
        cmd = parse(prefix + tail)
    except UsageError:
        assert not tail.strip()
        return
    got = cmd.title if cmd.verb == "declare" else cmd.text
    want = " ".join(tail.split()) if cmd.verb == "declare" else tail.strip()
    assert got == want
