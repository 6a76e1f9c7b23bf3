"""Unit tests, table-driven: how events and Alertmanager groups map to actions and severities, the
constant-time credential checks, error field paths, and dedup through ingest() without HTTP."""
from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bot.api import alertmanager as am
from bot.api import events as ev
from bot.api.auth import match_api_key, same_secret
from core.seen import bounded_key
from bot.api.http import ApiError, field_path, validation_error
from bot.api.schemas import AlertmanagerWebhook, InboundEvent
from core.rbac import Actor, Role, role_of
from tests.api.conftest import API_CONFIG, OPS_KEY, VIEW_KEY, am_alert, am_hook, counts, event
from tests.conftest import deep_merge, make_config


def cfg(**over: Any) -> Any:
    return make_config(**deep_merge(API_CONFIG, over))


# --- Alertmanager groups -------------------------------------------------------------------------------


@pytest.mark.parametrize(("firing", "known", "incident_open", "want"), [
    ({"a"}, None, False, "open"),            # a new group
    ({"a"}, {"a"}, True, "unchanged"),       # a repeat
    ({"a", "b"}, {"a"}, True, "update"),     # one more alert
    ({"b"}, {"a", "b"}, True, "update"),     # one alert stopped
    ({"b"}, {"a"}, True, "update"),          # same size, other alert
    (set(), {"a"}, True, "resolve"),         # group resolved
    (set(), {"a"}, False, "ignore"),         # resolved again / already resolved by hand
    (set(), None, False, "ignore"),          # resolved for a group we never saw
    ({"a"}, {"a"}, False, "unchanged"),      # resolved by hand, same alerts: stay resolved
    ({"a", "c"}, {"a"}, False, "open"),      # resolved by hand, then news: a new incident
    ({"a"}, set(), False, "open"),           # fires again after Alertmanager resolved it
])
def test_decide(firing: set[str], known: set[str] | None, incident_open: bool, want: str) -> None:
    assert am.decide(firing=firing, known=known, incident_open=incident_open) == want


def test_resolved_status_means_nothing_fires() -> None:
    hook = AlertmanagerWebhook.model_validate(am_hook([am_alert()], status="resolved"))
    assert am.firing_alerts(hook) == []


@pytest.mark.parametrize(("value", "want"), [
    ("critical", "sev1"), ("Critical ", "sev1"), ("error", "sev2"), ("warning", "sev3"), ("info", "sev4"),
    ("sev2", "sev2"), ("high", "sev2"), ("page-me", None), ("", None), (None, None)])
def test_map_severity(value: str | None, want: str | None) -> None:
    assert am.map_severity(cfg(), value) == want


def test_severity_prefers_firing_alerts_and_falls_back_to_default() -> None:
    c = cfg(alertmanager={"default_severity": "sev4"})
    alerts = [am_alert(instance="a", severity="critical", status="resolved"),
              am_alert(instance="b", severity="info")]
    hook = AlertmanagerWebhook.model_validate(am_hook(alerts))
    assert am.severity_of(c, hook) == "sev4"  # the resolved critical one no longer counts
    hook = AlertmanagerWebhook.model_validate(am_hook([am_alert(severity="nonsense")]))
    assert am.severity_of(c, hook) == "sev4"


def test_texts_list_alerts_and_cap_long_groups() -> None:
    alerts = [am_alert(instance=f"h{i}") for i in range(am.LISTED_ALERTS + 5)]
    group = {"alertname": "HighLatency", "env": "prod"}
    hook = AlertmanagerWebhook.model_validate(am_hook(alerts, truncatedAlerts=7, groupLabels=group))
    assert am.title_of(hook) == "HighLatency (env=prod)"
    text = am.description_of(hook, am.firing_alerts(hook))
    assert "... and 5 more" in text and "7 more alerts were left out" in text
    line = ("- HighLatency [fp-HighLatency-h0] {alertname=HighLatency, instance=h0, severity=critical}: "
            "HighLatency on h0 <http://prometheus.local/graph>")
    assert line in text
    change = am.change_text(hook, am.firing_alerts(hook)[:2], {"fp-HighLatency-h0", "fp-gone"})
    assert change.startswith("Firing alerts changed: 1 new, 1 no longer firing, 2 firing now.")


# --- events -----------------------------------------------------------------------------------------------


def _view(body: dict[str, Any]) -> dict[str, Any]:
    return InboundEvent.model_validate(body).model_dump(mode="json")


def only(payload: dict[str, Any]) -> dict[str, Any]:
    """An event whose payload is exactly `payload` (event() merges into the default one)."""
    return {**event(), "payload": payload}


@pytest.mark.parametrize(("over", "want"), [
    ({}, "evt:acme-corp:scan-7f3a"),
    ({"metadata": {"correlation_id": None}}, None),
    ({"tenant_id": "globex"}, "evt:globex:scan-7f3a"),
])
def test_correlation_of(over: dict[str, Any], want: str | None) -> None:
    body = event(**over)
    assert ev.correlation_of(cfg(), _view(body), tenant=body["tenant_id"]) == want


@pytest.mark.parametrize(("value", "ok"), [(42, True), (4.5, True), ("", True), ({"a": 1}, False),
                                           ([1], False), (True, False), ("x" * 600, False)])
def test_correlation_value_types(value: Any, ok: bool) -> None:
    c = cfg(api={"correlation_key": "payload.ref"})
    view = _view(event(payload={"ref": value}))
    if ok:
        ev.correlation_of(c, view, tenant="t")
    else:
        with pytest.raises(ApiError) as exc:
            ev.correlation_of(c, view, tenant="t")
        assert exc.value.status == 400 and exc.value.body.field == "payload.ref"


@pytest.mark.parametrize(("rule", "payload", "want"), [
    ("sev2", {"severity": "critical"}, "sev2"),   # a rule's severity wins
    (None, {"severity": "critical"}, "sev1"),
    (None, {"severity": "LOW"}, "sev4"),
    (None, {}, "sev3"),                           # api.default_severity
    ("sev1", {"severity": "urgent"}, "sev1"),     # a bad field does not matter when a rule decides
])
def test_pick_severity(rule: str | None, payload: dict[str, Any], want: str) -> None:
    c = cfg()
    sev, invalid = ev.payload_severity(c, _view(only(payload)))
    assert ev.pick_severity(c, rule=rule, payload=sev, invalid=invalid) == want


def test_bad_payload_severity_names_the_field() -> None:
    c = cfg()
    sev, invalid = ev.payload_severity(c, _view(event(payload={"severity": 5})))
    with pytest.raises(ApiError) as exc:
        ev.pick_severity(c, rule=None, payload=sev, invalid=invalid)
    assert exc.value.body.field == "payload.severity"


def test_titles_fall_back_and_are_passed_whole() -> None:
    """No silent cut: an over-long title reaches the service, which refuses it like everywhere else."""
    e = InboundEvent.model_validate(only({"verdict": "FAIL"}))
    assert ev.texts(e, source="scanner") == ("scan.complete from scanner", "", "scan.complete (evt-1)")
    e = InboundEvent.model_validate(only({"summary": "s" * 900, "message": "m"}))
    title, description, update = ev.texts(e, source="scanner")
    assert title == "s" * 900 and description == "m" and update == "m"


# --- boundary helpers ---------------------------------------------------------------------------------


def test_field_paths_and_first_field_leads() -> None:
    assert field_path(("alerts", 0, "labels", "x")) == "alerts[0].labels.x"
    with pytest.raises(ValidationError) as exc:
        InboundEvent.model_validate({"event_type": 1})
    err = validation_error(exc.value)
    assert err.status == 400 and err.body.field == "event_type"
    fields = {d.field for d in err.body.details}
    assert fields >= {"event_type", "event_id", "timestamp", "tenant_id", "payload"}
    assert "more)" in err.body.message


def test_secrets_compare_in_constant_time_and_never_empty() -> None:
    assert same_secret("abc", "abc") and not same_secret("abc", "abd") and not same_secret("abc", "abcd")
    assert not same_secret("", "") and not same_secret("x", "")
    c = cfg()
    assert match_api_key(c, OPS_KEY).name == "ci" and match_api_key(c, VIEW_KEY).name == "dashboard"
    assert match_api_key(c, OPS_KEY[:-1]) is None and match_api_key(c, "") is None


def test_api_keys_carry_their_role() -> None:
    c = cfg()
    assert role_of(c, "api:ci") is Role.OPERATOR and role_of(c, "api:dashboard") is Role.VIEWER
    assert role_of(c, "api:alertmanager") is Role.OPERATOR
    assert role_of(c, "api:unknown") is Role.VIEWER  # default_role


def test_duplicate_key_names_are_a_config_error() -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="api.keys"):
        cfg(api={"keys": [{"name": "a", "key": "k1"}, {"name": "a", "key": "k2"}]})


def test_bounded_keys_fit_their_column() -> None:
    assert bounded_key("event", "t:e1") == "event:t:e1"
    long = bounded_key("am", "x" * 400)
    assert long.startswith("am:sha256:") and len(long) <= 300
    assert bounded_key("am", "x" * 400) == long and bounded_key("am", "y" * 400) != long


# --- dedup through ingest(), without HTTP -------------------------------------------------------------------


async def test_ingest_applies_an_event_once(make_ctx: Any) -> None:
    ctx = await make_ctx(**API_CONFIG)
    actor = Actor("api:ci", "test")
    e = InboundEvent.model_validate(event("u1"))
    first = await ev.ingest(ctx, e, actor=actor)
    again = await ev.ingest(ctx, e, actor=actor)
    assert (first.status, again.status) == ("accepted", "duplicate") and first.result == again.result
    assert (await counts(ctx))["incidents"] == 1 and (await counts(ctx))["seen_keys"] == 1


async def test_alertmanager_state_is_one_row_per_group(make_ctx: Any) -> None:
    ctx = await make_ctx(**API_CONFIG)
    actor = Actor("api:alertmanager", "test")
    for alerts in ([am_alert(instance="a")], [am_alert(instance="a"), am_alert(instance="b")],
                   [am_alert(instance="a", status="resolved"), am_alert(instance="b", status="resolved")]):
        await am.receive(ctx, AlertmanagerWebhook.model_validate(am_hook(alerts)), actor=actor)
    c = await counts(ctx)
    assert c["seen_keys"] == 1 and c["incidents"] == 1
