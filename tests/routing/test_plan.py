"""Rules -> plan: event types, severity threshold, sources, first match vs continue, default targets,
dedupe, per-severity preferences and quiet hours (frozen times), destinations, and the explanation."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from core.config import Config, Targets
from core.errors import Forbidden
from core.rbac import Actor
from core.explain import explain_event
from core.routing import RouteEvent, contact_channels, in_quiet_hours, plan
from tests.conftest import make_config

ADMIN = Actor("cli:admin", "cli")
MANAGER = Actor("cli:manager", "cli")
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)

CONTACTS = [
    {"name": "alice", "email": "alice@example.com", "phone": "+15550100001", "chat": {"telegram": "4242"},
     "preferences": {"sev1": ["voice", "sms", "email"], "sev2": ["sms", "email"], "default": ["email"]},
     "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}},
    {"name": "bob", "email": "bob@example.com", "phone": "+15550100002", "chat": {"telegram": "777"},
     "preferences": {"critical": ["sms", "telegram", "email"], "default": ["email"]}},
    {"name": "carol", "email": "carol@example.com", "phone": "+15550100003",
     "preferences": {"default": ["email", "sms"]}},
    {"name": "erin", "email": "erin@example.com", "preferences": {"default": ["email", "voice"]}},
    {"name": "dave", "phone": "+15550100004", "preferences": {"default": ["sms"]},
     "quiet_hours": {"start": "09:00", "end": "17:00", "timezone": "America/New_York",
                     "allow_severities": ["sev1", "sev2"]}},
]
LISTS = [{"name": "oncall", "members": ["alice", "bob"]}, {"name": "leads", "members": ["carol"]},
         {"name": "everyone", "members": ["dave"], "lists": ["oncall", "leads"]}]
DESTS = [{"name": "ops-hook", "channel": "webhook", "url": "https://hooks.example/ops"},
         {"name": "war-room", "channel": "telegram", "chat_id": "-100123"}]


def cfg_with(rules: list[dict[str, Any]], **over: Any) -> Config:
    return make_config(contacts=CONTACTS, contact_lists=LISTS, destinations=DESTS,
                       routing={"default_targets": {"lists": ["leads"]}, "rules": rules}, **over)


def pairs(p: Any) -> list[tuple[str, str]]:
    return [(d.recipient, d.channel) for d in p.deliveries]


RULES = [
    {"name": "security", "event_types": ["declare", "update"], "sources": ["api"],
     "conditions": [{"field": "payload.verdict", "operator": "eq", "value": "malicious"}],
     "targets": {"lists": ["leads"], "destinations": ["ops-hook"]}, "continue": True},
    {"name": "major", "min_severity": "sev2", "targets": {"lists": ["oncall"]}, "escalation_policy": "p"},
    {"name": "payments", "conditions": [{"field": "labels.team", "operator": "eq", "value": "payments"}],
     "targets": {"contacts": ["carol"], "destinations": ["war-room"]}},
]
POLICY = {"escalation_policies": [
    {"name": "p", "levels": [{"wait_minutes": 5, "targets": {"lists": ["leads"]}}]}]}


@pytest.mark.parametrize(("event", "matched", "expected"), [
    # severity threshold: sev3 is below sev2, so `major` skips; payments label matches
    # (an update is news: carol's sms stays out, the destination still gets it)
    (RouteEvent("update", "sev3", "cli", labels={"team": "payments"}), ["payments"],
     [("carol", "email"), ("war-room", "telegram")]),
    # first match wins: major stops evaluation, payments is never reached (news: no voice, no sms)
    (RouteEvent("update", "sev1", "cli", labels={"team": "payments"}), ["major"],
     [("alice", "email"), ("bob", "telegram"), ("bob", "email")]),
    # continue: security matches and continues into major; carol gets one email and one sms only
    (RouteEvent("declare", "sev2", "api", payload={"verdict": "malicious"}), ["security", "major"],
     [("carol", "email"), ("carol", "sms"), ("ops-hook", "webhook"), ("alice", "sms"), ("alice", "email"),
      ("bob", "email")]),
    # source mismatch: security needs api
    (RouteEvent("declare", "sev4", "slack", payload={"verdict": "malicious"}), [],
     [("carol", "email"), ("carol", "sms")]),
    # event type mismatch: security is declare/update only; nothing matches -> default (leads), as news
    (RouteEvent("resolve", "sev4", "api", payload={"verdict": "malicious"}), [],
     [("carol", "email")]),
    # no severity at all (an inbound event without one) never meets a min_severity
    (RouteEvent("alert", None, "api"), [], [("carol", "email"), ("carol", "sms")]),
])
def test_rule_matching(event: RouteEvent, matched: list[str], expected: list[tuple[str, str]]) -> None:
    p = plan(cfg_with(RULES, **POLICY), event, now=NOON)
    assert [r.name for r in p.matched_rules] == matched
    assert pairs(p) == expected
    assert p.used_default is (not matched)


def test_unrouted_events_go_to_default_targets_never_nowhere() -> None:
    p = plan(cfg_with([]), RouteEvent("whatever", "sev4"), now=NOON)
    assert p.used_default and pairs(p) == [("carol", "email"), ("carol", "sms")]
    assert "routed to routing.default_targets" in p.explain()


def test_event_type_aliases() -> None:
    rules = [{"name": "esc", "event_types": ["escalation", "acknowledge"], "targets": {"lists": ["oncall"]}}]
    cfg = cfg_with(rules)
    assert plan(cfg, RouteEvent("escalate", "sev4"), now=NOON).matched_rules
    assert plan(cfg, RouteEvent("ack", "sev4"), now=NOON).matched_rules
    assert not plan(cfg, RouteEvent("update", "sev4"), now=NOON).matched_rules


def test_nested_lists_and_dedupe_one_page_per_person_per_channel() -> None:
    rules = [{"name": "all", "targets": {"lists": ["everyone", "oncall"], "contacts": ["alice", "carol"]},
              "continue": True},
             {"name": "again", "targets": {"lists": ["oncall"]}}]
    p = plan(cfg_with(rules), RouteEvent("declare", "sev4"), now=NOON,
             extra=Targets(lists=["leads"], contacts=["bob"]))
    got = pairs(p)
    assert len(got) == len(set(got))
    assert sorted(got) == sorted([("dave", "sms"), ("alice", "email"), ("bob", "email"), ("carol", "email"),
                                  ("carol", "sms")])


@pytest.mark.parametrize(("severity", "channels"), [
    ("sev1", ["voice", "sms", "email"]),
    ("sev2", ["sms", "email"]),
    ("sev3", ["email"]),     # default
    ("sev4", ["email"]),
])
def test_preferences_per_severity_in_order(severity: str, channels: list[str]) -> None:
    cfg = cfg_with([])
    alice = cfg.contact("alice")
    assert contact_channels(alice, severity, NOON)[0] == channels


def test_preference_keys_accept_aliases() -> None:
    bob = cfg_with([]).contact("bob")
    assert contact_channels(bob, "sev1", NOON)[0] == ["sms", "telegram", "email"]


@pytest.mark.parametrize(("utc_time", "quiet"), [
    ("2026-03-02T20:59", False),   # 21:59 Berlin (UTC+1 in March before DST)
    ("2026-03-02T21:00", True),    # 22:00 Berlin
    ("2026-03-03T02:00", True),    # 03:00 Berlin: spans midnight
    ("2026-03-03T05:59", True),    # 06:59
    ("2026-03-03T06:00", False),   # 07:00 Berlin
    ("2026-07-01T20:30", True),    # 22:30 Berlin in summer time (UTC+2)
    ("2026-07-01T05:30", False),   # 07:30 Berlin in summer
])
def test_quiet_hours_use_the_contacts_timezone(utc_time: str, quiet: bool) -> None:
    alice = cfg_with([]).contact("alice")
    now = datetime.fromisoformat(utc_time).replace(tzinfo=timezone.utc)
    assert in_quiet_hours(alice, now) is quiet


def test_quiet_hours_suppress_non_critical_channels_only() -> None:
    cfg = cfg_with([{"name": "all", "targets": {"lists": ["oncall", "everyone"]}}])
    night = datetime(2026, 3, 2, 23, 30, tzinfo=timezone.utc)  # 00:30 Berlin; 18:30 New York
    # sev2 at night: alice's sms is suppressed, email stays
    p = plan(cfg, RouteEvent("declare", "sev2"), now=night)
    assert ("alice", "sms") not in pairs(p) and ("alice", "email") in pairs(p)
    assert any(s.startswith("alice/sms: quiet hours (22:00-07:00 Europe/Berlin)") for s in p.skipped)
    # sev1 at night: allowed severities reach every preferred channel
    p1 = plan(cfg, RouteEvent("declare", "sev1"), now=night)
    assert [c for r, c in pairs(p1) if r == "alice"] == ["voice", "sms", "email"]
    # dave is quiet during New York office hours but lets sev1 and sev2 through
    office = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)  # 10:00 New York
    assert ("dave", "sms") in pairs(plan(cfg, RouteEvent("declare", "sev2"), now=office))
    p3 = plan(cfg, RouteEvent("declare", "sev3"), now=office)
    assert ("dave", "sms") not in pairs(p3) and any(s.startswith("dave/sms: quiet hours") for s in p3.skipped)
    # outside quiet hours nothing is suppressed
    assert ("alice", "sms") in pairs(plan(cfg, RouteEvent("declare", "sev2"), now=NOON))


def test_missing_address_is_reported_not_silently_dropped() -> None:
    cfg = cfg_with([{"name": "x", "targets": {"contacts": ["erin"]}}])
    p = plan(cfg, RouteEvent("declare", "sev4"), now=NOON)
    assert pairs(p) == [("erin", "email")]
    assert "erin/voice: contact has no address for voice" in p.skipped
    assert "erin/voice: contact has no address for voice" in p.explain()


def test_explain_says_which_rule_matched_why_others_did_not_and_exact_list() -> None:
    cfg = cfg_with(RULES, **POLICY)
    text = plan(cfg, RouteEvent("update", "sev3", "cli", labels={"team": "payments"}), now=NOON).explain()
    assert "Event: update, severity sev3, source cli" in text
    assert "skip  security: event type 'update' not in" not in text  # update IS in security's types
    assert "skip  security: source 'cli' not in ['api']" in text
    assert "skip  major: severity sev3 is below sev2" in text
    assert "MATCH payments: all conditions hold (labels.team='payments' eq 'payments')" in text
    assert "2 deliveries would be queued" in text
    assert "war-room             telegram       -100123" in text
    first = plan(cfg, RouteEvent("update", "sev1"), now=NOON).explain()
    assert "-     payments: not evaluated: an earlier rule matched without continue" in first
    assert "Escalation policy: p" in first


def test_explain_event_is_for_admins_only() -> None:
    cfg = cfg_with(RULES, **POLICY)
    assert "Rules:" in explain_event(cfg, RouteEvent("update", "sev1"), now=NOON, actor=ADMIN)
    with pytest.raises(Forbidden, match="may not manage settings"):
        explain_event(cfg, RouteEvent("update", "sev1"), now=NOON, actor=MANAGER)


def test_route_event_from_dict() -> None:
    ev = RouteEvent.from_dict({"type": "alert", "severity": "critical", "payload": {"a": 1}})
    assert ev.event_type == "alert" and ev.severity == "sev1" and ev.payload == {"a": 1}
    for bad in ({"severity": "sev1"}, {"type": "x", "severity": "sev9"}, {"type": "x", "payload": []},
                {"type": "x", "colour": "red"}):
        with pytest.raises(ValueError):
            RouteEvent.from_dict(bad)
