"""POST /api/v1/events over HTTP against the real app, on SQLite and PostgreSQL: routing actions,
correlation, dedup of event_id, auth, validation and atomicity."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from bot.api import events as events_mod
from core.events import IncidentEvent
from core.metrics import EVENTS_RECEIVED
from tests.api.conftest import OPS, OPS_KEY, VIEW_KEY, VIEWER, counts, event

URL = "/api/v1/events"


async def post(client: Any, body: Any, *,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    resp = await client.post(URL, data=data, headers={"Content-Type": "application/json", **(headers or OPS)})
    return resp.status, await resp.json()


async def test_event_opens_an_incident(api: Any) -> None:
    client, ctx = api
    status, body = await post(client, event())
    assert status == 202, body
    assert body["status"] == "accepted" and body["event_id"] == "evt-1"
    res = body["result"]
    assert res["action"] == "opened" and res["incident"] == "INC-1" and res["severity"] == "sev1"
    assert res["queued"] > 0  # default_targets: the oncall list
    inc = await ctx.service.get(1)
    assert inc.title == "nginx image has critical CVEs"
    assert inc.source == "scanner" and inc.commander == "api:ci"
    assert inc.correlation_key == "evt:acme-corp:scan-7f3a"
    assert inc.labels["tenant_id"] == "acme-corp" and inc.payload["verdict"] == "FAIL"


async def test_same_correlation_updates_then_a_resolve_rule_resolves(make_client: Any) -> None:
    client, ctx = await make_client(routing={"rules": [
        {"name": "recovered", "event_types": ["scan.recovered"], "action": "resolve",
         "targets": {"lists": ["oncall"]}}]})
    assert (await post(client, event("e1")))[1]["result"]["action"] == "opened"
    status, body = await post(client, event("e2", payload={"message": "rescan: 2 CVEs left"}))
    assert status == 202 and body["result"]["action"] == "updated" and body["result"]["incident"] == "INC-1"
    status, body = await post(client, event("e3", event_type="scan.recovered",
                                            payload={"message": "clean now"}))
    assert body["result"]["action"] == "resolved" and body["result"]["rules"] == ["recovered"]
    detail = await ctx.service.detail(1)
    assert [m.kind for m in detail.thread] == ["INITIAL", "UPDATE", "RESOLVED"]
    assert detail.thread[1].body == "rescan: 2 CVEs left" and detail.incident.state == "resolved"
    # The correlation id is free again: the next event opens a new incident.
    assert (await post(client, event("e4")))[1]["result"]["incident"] == "INC-2"


async def test_replayed_event_id_is_a_duplicate_with_the_first_result(api: Any) -> None:
    client, ctx = api

    def received(outcome: str) -> float:
        return EVENTS_RECEIVED.labels(event_type="scan.complete", outcome=outcome)._value.get()

    accepted0, duplicate0 = received("accepted"), received("duplicate")
    first = await post(client, event("evt-9"))
    before = await counts(ctx)
    # The same id again, even with a different body, does nothing twice.
    status, body = await post(client, event("evt-9", payload={"message": "changed"}))
    assert status == 200 and body["status"] == "duplicate"
    assert body["result"] == first[1]["result"]
    assert await counts(ctx) == before
    # ...and is not counted as received again: it has its own outcome
    assert (received("accepted") - accepted0, received("duplicate") - duplicate0) == (1, 1)
    # Another tenant's evt-9 is a different event.
    status, body = await post(client, event("evt-9", tenant_id="globex"))
    assert status == 202 and body["result"]["action"] == "opened"


async def test_concurrent_replays_apply_once(api: Any) -> None:
    client, ctx = api
    results = await asyncio.gather(*[post(client, event("evt-race")) for _ in range(6)])
    statuses = sorted(r[0] for r in results)
    assert statuses == [200] * 5 + [202], results
    assert len({json.dumps(r[1]["result"], sort_keys=True) for r in results}) == 1
    assert (await counts(ctx))["incidents"] == 1


async def test_concurrent_events_of_one_correlation_open_one_incident(api: Any) -> None:
    client, ctx = api
    results = await asyncio.gather(*[post(client, event(f"evt-{i}")) for i in range(5)])
    actions = sorted(r[1]["result"]["action"] for r in results)
    assert actions == ["opened"] + ["updated"] * 4, results
    assert (await counts(ctx))["incidents"] == 1


async def test_notify_rule_pages_once_without_an_incident(make_client: Any) -> None:
    client, ctx = await make_client(routing={"rules": [
        {"name": "advisories", "event_types": ["advisory.new"], "action": "notify", "severity": "sev4",
         "targets": {"contacts": ["carol"]}}]})
    status, body = await post(client, event("a1", event_type="advisory.new"))
    res = body["result"]
    assert status == 202 and res["action"] == "notified" and res["incident"] is None
    assert res["severity"] == "sev4" and res["queued"] == 1 and res["rules"] == ["advisories"]
    c = await counts(ctx)
    assert c["incidents"] == 0 and c["messages"] == 1


async def test_notify_is_news_unless_the_event_says_urgent(make_client: Any) -> None:
    from sqlalchemy import select

    from core.models import Delivery

    client, ctx = await make_client(routing={"rules": [
        {"name": "advisories", "event_types": ["advisory.new"], "action": "notify", "severity": "sev1",
         "targets": {"contacts": ["alice"]}}]})
    assert (await post(client, event("n1", event_type="advisory.new")))[0] == 202
    assert (await post(client, {**event("n2", event_type="advisory.new"), "urgent": True}))[0] == 202
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery.message_id, Delivery.channel).order_by(Delivery.id))).all()
    by_msg: dict[int, list[str]] = {}
    for mid, ch in rows:
        by_msg.setdefault(mid, []).append(ch)
    # alice's sev1 list is [sms, email]: news skips the sms, the urgent one pages on both
    assert list(by_msg.values()) == [["email"], ["sms", "email"]]


async def test_the_api_caller_is_not_told_about_their_own_update(make_client: Any) -> None:
    from sqlalchemy import select

    from core.models import Delivery, IncidentMessage

    client, ctx = await make_client(
        api={"keys": [{"name": "ci", "key": OPS_KEY, "role": "operator", "contact": "alice"}]},
        routing={"rules": [
            {"name": "open", "event_types": ["scan.failed"], "action": "open", "targets": {"lists": ["oncall"]}},
            {"name": "progress", "event_types": ["scan.progress"], "action": "update",
             "targets": {"lists": ["oncall"]}}]})
    assert (await post(client, event("o1", event_type="scan.failed")))[0] == 202
    status, body = await post(client, event("u1", event_type="scan.progress"))
    assert status == 202 and body["result"]["action"] == "updated", body
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(IncidentMessage.kind, Delivery.recipient).join(
            Delivery, Delivery.message_id == IncidentMessage.id))).all()
    # the key belongs to alice: she is not told about the update she sent (nor about the incident she opened)
    assert {who for kind, who in rows if kind == "UPDATE"} == {"bob"}
    assert {who for kind, who in rows if kind == "INITIAL"} == {"bob"}


async def test_update_without_an_open_incident_is_ignored_and_remembered(make_client: Any) -> None:
    client, ctx = await make_client(routing={"rules": [
        {"name": "progress", "event_types": ["deploy.progress"], "action": "update"}]})
    status, body = await post(client, event("p1", event_type="deploy.progress"))
    assert status == 202 and body["result"]["action"] == "ignored"
    assert "no open incident" in body["result"]["note"]
    status, body = await post(client, event("p1", event_type="deploy.progress"))
    assert status == 200 and body["status"] == "duplicate" and body["result"]["action"] == "ignored"
    assert (await counts(ctx))["incidents"] == 0


async def test_open_rule_always_opens_and_rule_severity_wins(make_client: Any) -> None:
    client, ctx = await make_client(routing={"rules": [
        {"name": "each-failure", "event_types": ["scan.failed"], "action": "open", "severity": "sev2",
         "targets": {"lists": ["leads"]}}]})
    a = (await post(client, event("f1", event_type="scan.failed")))[1]["result"]
    b = (await post(client, event("f2", event_type="scan.failed")))[1]["result"]
    assert (a["action"], b["action"]) == ("opened", "opened") and a["incident"] != b["incident"]
    assert a["severity"] == "sev2"  # the rule's, not the payload's critical


async def test_correlation_path_and_severity_field_are_configurable(make_client: Any) -> None:
    client, ctx = await make_client(api={"correlation_key": "payload.scan_id",
                                         "severity_field": "payload.prio", "default_severity": "sev4"})
    body1 = event("c1", payload={"scan_id": 77, "prio": "high"}, metadata={"correlation_id": None})
    body2 = event("c2", payload={"scan_id": 77, "message": "again"})
    r1 = (await post(client, body1))[1]["result"]
    r2 = (await post(client, body2))[1]["result"]
    assert r1["severity"] == "sev2" and (r2["action"], r2["incident"]) == ("updated", r1["incident"])
    inc = await ctx.service.get(r1["incident_id"])
    assert inc.correlation_key == "evt:acme-corp:77"
    r3 = (await post(client, event("c3", payload={"scan_id": 78})))[1]["result"]
    assert r3["severity"] == "sev4"  # no prio field: api.default_severity


async def test_event_without_metadata_is_routed_from_source_api(api: Any) -> None:
    client, ctx = api
    body = event("m1")
    del body["metadata"]
    status, resp = await post(client, body)
    assert status == 202 and resp["result"]["action"] == "opened"
    assert (await ctx.service.get(1)).source == "api"


# --- auth --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {OPS_KEY}"},
    {"Authorization": "Bearer"}, {"Authorization": f"bearer {OPS_KEY}x"},
], ids=["none", "wrong", "basic", "empty", "near-miss"])
async def test_wrong_credentials_are_401(api: Any, headers: dict[str, str]) -> None:
    client, ctx = api
    resp = await client.post(URL, json=event(), headers=headers or {"X-Nothing": "1"})
    body = await resp.json()
    assert resp.status == 401 and body["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert OPS_KEY not in json.dumps(body)
    assert (await counts(ctx))["seen_keys"] == 0


async def test_viewer_key_is_403_and_nothing_is_stored(api: Any) -> None:
    client, ctx = api
    status, body = await post(client, event(), headers=VIEWER)
    assert status == 403 and body["error"] == "forbidden"
    assert "api:dashboard" in body["message"] and "VIEWER" in body["message"]
    assert await counts(ctx) == {"incidents": 0, "messages": 0, "deliveries": 0, "seen_keys": 0, "audit": 0}


# --- validation and size ------------------------------------------------------------------------------


def _without(path: str) -> dict[str, Any]:
    body = event()
    *parents, last = path.split(".")
    node = body
    for p in parents:
        node = node[p]
    del node[last]
    return body


@pytest.mark.parametrize(("body", "code", "field"), [
    (b'{"event_type": "x", ', "invalid_json", None),
    (b"", "invalid_json", None),
    (b"[1, 2]", "invalid_request", None),
    (_without("metadata.source_service"), "invalid_request", "metadata.source_service"),
    (_without("event_id"), "invalid_request", "event_id"),
    (_without("payload"), "invalid_request", "payload"),
    (event(event_id=12), "invalid_request", "event_id"),
    (event(payload="not an object"), "invalid_request", "payload"),
    (event(timestamp="2026-01-01T10:30:00"), "invalid_request", "timestamp"),
    (event(timestamp="yesterday"), "invalid_request", "timestamp"),
    (event(event_type="has spaces"), "invalid_request", "event_type"),
    (event(metadata={"source_service": "x" * 33}), "invalid_request", "metadata.source_service"),
    ({**event(), "evnt_type": "typo"}, "invalid_request", "evnt_type"),
    (event(payload={"severity": "urgent"}), "invalid_request", "payload.severity"),
    (event(metadata={"correlation_id": None}, payload={"severity": "high", "x": 1}) | {"tenant_id": ""},
     "invalid_request", "tenant_id"),
], ids=["truncated", "empty", "array", "no-source", "no-id", "no-payload", "id-int", "payload-str",
        "naive-ts", "bad-ts", "bad-type", "long-source", "unknown-field", "bad-severity", "empty-tenant"])
async def test_invalid_bodies_are_400_naming_the_field(api: Any, body: Any, code: str,
                                                       field: str | None) -> None:
    client, ctx = api
    status, resp = await post(client, body)
    assert status == 400, resp
    assert resp["error"] == code and resp["field"] == field
    if field:
        assert resp["message"].startswith(f"{field}: ") and resp["details"][0]["field"] == field
    assert await counts(ctx) == {"incidents": 0, "messages": 0, "deliveries": 0, "seen_keys": 0, "audit": 0}


@pytest.mark.parametrize(("raw", "field"), [
    (b'"payload": {"score": NaN}', "payload.score"),
    (b'"payload": {"deep": [1, {"x": Infinity}]}', "payload.deep[1].x"),
    (b'"payload": {"t": -Infinity}', "payload.t"),
    (b'"payload": {"big": 1e999}', "payload.big"),
], ids=["nan", "infinity-nested", "minus-infinity", "overflow"])
async def test_nan_and_infinity_are_400_naming_the_field(api: Any, raw: bytes, field: str) -> None:
    """Python's JSON parsers take these and the database stored them as null: the value was lost."""
    client, ctx = api
    body = json.dumps({k: v for k, v in event().items() if k != "payload"})[:-1].encode() + b", " + raw + b"}"
    status, resp = await post(client, body)
    assert status == 400, resp
    assert resp["field"] == field and "NaN and Infinity are not JSON numbers" in resp["message"]
    assert await counts(ctx) == {"incidents": 0, "messages": 0, "deliveries": 0, "seen_keys": 0, "audit": 0}


async def test_a_refused_event_id_can_be_sent_again_fixed(api: Any) -> None:
    client, _ctx = api
    assert (await post(client, event("fix-me", payload={"severity": "urgent"})))[0] == 400
    status, body = await post(client, event("fix-me"))
    assert status == 202 and body["status"] == "accepted"


async def test_oversize_body_is_413(make_client: Any) -> None:
    client, ctx = await make_client(server={"max_body_bytes": 2048})
    big = event(payload={"blob": "x" * 4096})
    status, body = await post(client, big)
    assert status == 413 and body["error"] == "body_too_large" and "2048" in body["message"]

    async def chunks() -> Any:  # no Content-Length: the limit holds while streaming too
        data = json.dumps(big).encode()
        for i in range(0, len(data), 512):
            yield data[i:i + 512]

    resp = await client.post(URL, data=chunks(), headers={**OPS, "Content-Type": "application/json"})
    assert resp.status == 413 and (await resp.json())["error"] == "body_too_large"
    assert (await counts(ctx))["seen_keys"] == 0
    assert (await post(client, event()))[0] == 202  # the connection and the app are fine afterwards


async def test_default_body_limit_is_one_mebibyte(api: Any) -> None:
    client, _ctx = api
    assert (await post(client, event(payload={"blob": "x" * (1024 * 1024)})))[0] == 413
    assert (await post(client, event(payload={"blob": "x" * (900 * 1024)})))[0] == 202


# --- atomicity, listeners, logs and metrics -------------------------------------------------------


async def test_a_failure_after_the_change_stores_nothing(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client, ctx = api
    heard: list[IncidentEvent] = []
    ctx.service.events.subscribe(heard.append)

    async def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(events_mod, "remember", broken)
    resp = await client.post(URL, json=event(), headers=OPS)
    assert resp.status == 500
    assert await counts(ctx) == {"incidents": 0, "messages": 0, "deliveries": 0, "seen_keys": 0, "audit": 0}
    assert heard == []  # listeners never hear of a change that rolled back
    monkeypatch.undo()
    assert (await post(client, event()))[0] == 202
    assert [e.kind for e in heard] == ["declare"]


async def test_logs_and_metrics_never_show_the_key(api: Any, caplog: pytest.LogCaptureFixture) -> None:
    client, _ctx = api
    before = EVENTS_RECEIVED.labels(event_type="scan.complete", outcome="accepted")._value.get()
    with caplog.at_level(logging.DEBUG):
        await post(client, event("log-1"))
        await post(client, event("log-2"), headers={"Authorization": f"Bearer {VIEW_KEY}"})
        await post(client, event("log-3"), headers={"Authorization": "Bearer not-a-key"})
    assert EVENTS_RECEIVED.labels(event_type="scan.complete", outcome="accepted")._value.get() == before + 1
    received = [r for r in caplog.records if r.getMessage() == "notify.event.received"
                and getattr(r, "event_id", None) == "log-1"]
    assert received and received[0].event_type == "scan.complete" and received[0].source == "scanner"
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert OPS_KEY not in text and VIEW_KEY not in text and "not-a-key" not in text


async def test_regex_on_a_240kb_field_answers_quickly_and_healthz_stays_fast(make_client: Any) -> None:
    """Issue 14.4: a `regex` condition runs on RE2 (linear time). With Python's `re` this pattern on this
    field backtracks for many seconds and stalls the event loop; here the event answers in well under a
    second and /healthz, polled all the while, answers each time within 100 ms."""
    import time

    client, ctx = await make_client(routing={"rules": [
        {"name": "deadline", "conditions": [{"field": "payload.log", "operator": "regex",
                                             "value": r"(\w+\s?)*deadline$"}],
         "action": "open", "targets": {"lists": ["oncall"]}}]})
    big = "fail " * 48_000  # 240 KB, no "deadline": the worst case for a backtracking engine
    latencies: list[float] = []
    done = asyncio.Event()

    async def poll_health() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            r = await client.get("/healthz")
            assert r.status == 200
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll_health())
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    status, body = await post(client, event("evt-big", payload={"log": big}))
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.05)
    done.set()
    await poller
    assert status == 202, body
    assert "deadline" not in body["result"]["rules"]
    assert elapsed < 2.0, elapsed
    assert latencies and max(latencies) < 0.1, sorted(latencies)[-3:]
    status, body = await post(client, event("evt-big-2", payload={"log": big + "deadline"}))
    assert status == 202 and body["result"]["rules"] == ["deadline"], body


async def test_overlong_title_is_400_like_everywhere_and_control_characters_are_stripped(api: Any) -> None:
    """Issue 14.6: a 10,000-character title was cut to 500 silently; now the API answers what chat and the
    CLI answer (the service's rule), and stores nothing. Escapes and bidi overrides never get stored."""
    client, ctx = api
    before = await counts(ctx)
    status, body = await post(client, event("evt-long", payload={"title": "t" * 10_000}))
    assert status == 400 and "the title is longer than 500 characters" in json.dumps(body), body
    assert await counts(ctx) == before
    status, body = await post(client, event("evt-esc", payload={
        "title": "\x1b[2JDisk \u202efull\x07", "message": "at 99%\x1b[0m\nsee graph"}))
    assert status == 202, body
    inc = await ctx.service.get(1)
    assert inc.title == "Disk full" and inc.description == "at 99%\nsee graph"
