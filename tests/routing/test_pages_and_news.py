"""Pages vs news (issue 23), pure: message kind x preference lists x quiet hours -> channels; the actor is
never told about their own action; after an ack, news reaches only the acknowledger's team."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from core.config import ConfigError, loads
from core.rbac import acting_contacts
from core.routing import RouteEvent, ack_team, is_news, plan
from tests.conftest import make_config

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
NIGHT = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)  # inside 22:00-07:00 UTC quiet hours
QH = {"start": "22:00", "end": "07:00", "timezone": "UTC"}

# the person's preferences, by name
PREFS: dict[str, dict[str, Any]] = {
    "legacy": {"sev1": ["voice", "sms", "email"], "default": ["email"]},          # no updates: derived
    "voice_only": {"sev1": ["voice"], "default": ["voice"]},                      # news falls back to email
    "chatty": {"sev1": ["voice", "telegram", "email"], "default": ["telegram"]},  # chat DMs carry news
    "plain_list": {"sev1": ["voice", "email"], "updates": ["email", "sms"]},      # sms opted in for news
    "per_sev": {"sev1": ["voice", "email"], "default": ["email"],
                "updates": {"default": ["email"], "sev1": ["email", "sms"]}},
    "voice_news": {"sev1": ["voice"], "updates": ["voice"]},                      # explicit: allowed
}

KINDS: dict[str, tuple[str, bool | None]] = {  # message kind -> (event type, urgent: set for ONE-TIME only)
    "INITIAL": ("declare", None), "ESCALATION": ("escalate", None), "ONE_TIME urgent": ("notify", True),
    "UPDATE": ("update", None), "BRIDGE": ("bridge", None), "MONITORING": ("monitor", None),
    "ACK": ("ack", None), "RESOLVED": ("resolve", None), "ONE_TIME": ("notify", False),
}
PAGES = ("INITIAL", "ESCALATION", "ONE_TIME urgent")
NEWS = ("UPDATE", "BRIDGE", "MONITORING", "ACK", "RESOLVED", "ONE_TIME")

TABLE = [
    # (kind, prefs, severity, quiet hours?, time, channels, chosen_by)
    *[(k, "legacy", "sev1", False, NOON, ["voice", "sms", "email"], "preferences.sev1") for k in PAGES],
    *[(k, "legacy", "sev1", False, NOON, ["email"], "preferences.sev1 without voice/sms") for k in NEWS],
    ("UPDATE", "legacy", "sev3", False, NOON, ["email"], "preferences.default without voice/sms"),
    ("INITIAL", "voice_only", "sev1", False, NOON, ["voice"], "preferences.sev1"),
    ("RESOLVED", "voice_only", "sev1", False, NOON, ["email"], "preferences.sev1 has only voice/sms: email for news"),
    ("ACK", "chatty", "sev1", False, NOON, ["telegram", "email"], "preferences.sev1 without voice/sms"),
    ("UPDATE", "chatty", "sev2", False, NOON, ["telegram"], "preferences.default without voice/sms"),
    ("INITIAL", "plain_list", "sev1", False, NOON, ["voice", "email"], "preferences.sev1"),
    ("UPDATE", "plain_list", "sev1", False, NOON, ["email", "sms"], "preferences.updates.default"),
    ("UPDATE", "plain_list", "sev4", False, NOON, ["email", "sms"], "preferences.updates.default"),
    ("UPDATE", "per_sev", "sev1", False, NOON, ["email", "sms"], "preferences.updates.sev1"),
    ("BRIDGE", "per_sev", "sev2", False, NOON, ["email"], "preferences.updates.default"),
    ("ESCALATION", "per_sev", "sev2", False, NOON, ["email"], "preferences.default"),
    ("RESOLVED", "voice_news", "sev1", False, NOON, ["voice"], "preferences.updates.default"),
    # quiet hours: sev1 is allowed through by default (pages and opted-in news alike); sev2 is not
    ("INITIAL", "legacy", "sev1", True, NIGHT, ["voice", "sms", "email"], "preferences.sev1"),
    ("UPDATE", "per_sev", "sev1", True, NIGHT, ["email", "sms"], "preferences.updates.sev1"),
    ("INITIAL", "plain_list", "sev2", True, NIGHT, ["email"], "built-in default [email]"),
    ("UPDATE", "plain_list", "sev2", True, NIGHT, ["email"], "preferences.updates.default"),
    ("UPDATE", "plain_list", "sev2", True, NOON, ["email", "sms"], "preferences.updates.default"),
    ("RESOLVED", "voice_news", "sev3", True, NIGHT, [], "preferences.updates.default"),
]


def _cfg(prefs: dict[str, Any], quiet: bool) -> Any:
    person = {"name": "p", "email": "p@example.com", "phone": "+15550100009", "chat": {"telegram": "99"},
              "preferences": prefs}
    if quiet:
        person["quiet_hours"] = QH
    return make_config(contacts=[person], contact_lists=[{"name": "l", "members": ["p"]}],
                       routing={"default_targets": {"lists": ["l"]}, "rules": []})


@pytest.mark.parametrize(("kind", "prefs", "severity", "quiet", "now", "channels", "chosen_by"), TABLE,
                         ids=[f"{t[0]}-{t[1]}-{t[2]}{'-quiet' if t[3] else ''}-{t[4].hour}h" for t in TABLE])
def test_kind_x_preferences_x_quiet_hours(kind: str, prefs: str, severity: str, quiet: bool, now: datetime,
                                          channels: list[str], chosen_by: str) -> None:
    etype, urgent = KINDS[kind]
    ev = RouteEvent(etype, severity, "cli", urgent=urgent)
    assert ev.news is (kind in NEWS)
    p = plan(_cfg(PREFS[prefs], quiet), ev, now=now)
    assert [d.channel for d in p.deliveries] == channels
    assert all(d.chosen_by == chosen_by for d in p.deliveries)
    text = p.explain()
    assert ("Message: NEWS" if ev.news else "Message: PAGE") in text
    if channels:
        assert f"{'news' if ev.news else 'page'} via {chosen_by}" in text


def test_kinds() -> None:
    assert [is_news(e, urgent=u) for e, u in KINDS.values()] == [False] * 3 + [True] * 6
    assert not is_news("alert") and not is_news("escalation") and is_news("acknowledged")
    # a one-time message from the events API keeps its own event type; urgent decides
    assert is_news("alert", urgent=False) and not is_news("alert", urgent=True)


def test_updates_is_validated_at_load_with_file_and_line() -> None:
    cases = {
        "preferences: {updates: {sev9: [email]}}": "config.yaml:4 contacts[0].preferences.updates.sev9: unknown key",
        "preferences: {updates: email}": "config.yaml:4 contacts[0].preferences.updates: must be a list of channels",
        "preferences: {updates: [pager]}": "config.yaml:4 contacts[0].preferences.updates.default[0]: must be",
    }
    for line, want in cases.items():
        with pytest.raises(ConfigError) as err:
            loads(f"contacts:\n  - name: a\n    email: a@example.com\n    {line}\n", env={})
        assert want in str(err.value)
    with pytest.raises(ConfigError) as err:
        loads("contacts:\n  - name: a\napi:\n  keys:\n    - name: k\n      key: " + "k" * 40 + "\n"
              "      contact: zed\n", env={})
    assert "config.yaml:7 api.keys[0].contact: API key 'k' names unknown contact 'zed'" in str(err.value)
    cfg = loads("contacts:\n  - name: a\n    preferences:\n      critical: [voice]\n"
                "      updates: {CRITICAL: [email, sms]}\n", env={})
    assert cfg.contacts[0].preferences.news("sev1") == (["email", "sms"], "preferences.updates.sev1")


# --- who is told ------------------------------------------------------------------------------------

PEOPLE = [
    {"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
     "chat": {"slack": "UALICE", "teams": "29:alice", "telegram": "4242"}},
    {"name": "bob", "email": "bob@example.com", "phone": "+15550100002", "chat": {"cli": "robert", "web": "bobby"}},
    {"name": "carol", "email": "carol@example.com"},
    {"name": "dan", "email": "dan@example.com"},
]
TEAMS = [{"name": "db", "members": ["alice", "bob"]}, {"name": "web", "members": ["carol"]},
         {"name": "all", "lists": ["db", "web"], "members": ["dan"]}]


def _people_cfg() -> Any:
    return make_config(contacts=PEOPLE, contact_lists=TEAMS,
                       routing={"default_targets": {"lists": ["all"]}, "rules": []},
                       api={"keys": [{"name": "carol-laptop", "key": "k" * 32, "contact": "carol"},
                                     {"name": "ci", "key": "c" * 32}]})


@pytest.mark.parametrize(("identity", "contacts"), [
    ("slack:UALICE", {"alice"}), ("teams:29:alice", {"alice"}), ("telegram:4242", {"alice"}),
    ("contact:alice", {"alice"}), ("sms:+15550100001", {"alice"}), ("voice:+15550100002", {"bob"}),
    ("cli:alice", {"alice"}), ("cli:robert", {"bob"}), ("web:bobby", {"bob"}), ("web:bob", {"bob"}),
    ("api:carol-laptop", {"carol"}), ("api:ci", set()),
    ("cli:admin", set()), ("api:alertmanager", set()), ("slack:UNKNOWN", set()), ("system:escalation", set()),
])
def test_identity_to_contact(identity: str, contacts: set[str]) -> None:
    assert acting_contacts(_people_cfg(), identity) == contacts


@pytest.mark.parametrize("etype", ["declare", "update", "ack", "resolve", "escalate", "notify"])
def test_the_actor_is_never_told(etype: str) -> None:
    p = plan(_people_cfg(), RouteEvent(etype, "sev2"), now=NOON, actor_contacts={"alice"})
    assert sorted(d.recipient for d in p.deliveries) == ["bob", "carol", "dan"]
    assert "alice: did this, so is not told about it" in p.skipped


def test_after_ack_news_reaches_only_the_acknowledgers_team() -> None:
    cfg = _people_cfg()
    # the team: every list among the incident's targets that has the acknowledger (db, and all, which nests db)
    assert ack_team(cfg, {"carol"}, ["db", "web"]) == {"carol"}
    assert ack_team(cfg, {"alice"}, ["db", "web"]) == {"alice", "bob"}
    assert ack_team(cfg, {"alice"}, ["all"]) == {"alice", "bob", "carol", "dan"}
    assert ack_team(cfg, {"nobody"}, ["db"]) == set()
    p = plan(cfg, RouteEvent("update", "sev2"), now=NOON, acked_by={"alice"}, team_lists=["db", "web"],
             actor_contacts={"bob"})
    assert [d.recipient for d in p.deliveries] == ["alice"]  # bob wrote the update, carol/dan are not the team
    assert "carol: not on the acknowledger's team (news after ack)" in p.skipped
    # pages are not narrowed (an escalation still pages its level), and an unknown acknowledger narrows nothing
    page = plan(cfg, RouteEvent("escalate", "sev2"), now=NOON, acked_by={"alice"}, team_lists=["db"])
    assert len(page.deliveries) == 4
    open_news = plan(cfg, RouteEvent("update", "sev2"), now=NOON, acked_by={"zed"}, team_lists=["db"])
    assert len(open_news.deliveries) == 4
