"""POST /api/v1/alertmanager over HTTP against the real app, on SQLite and PostgreSQL: one incident per
group, UPDATE only when the firing set changes, resolve on `resolved`, auth as Alertmanager sends it."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.api.conftest import (
    AM_PASSWORD,
    AM_TOKEN,
    AM_USER,
    OPS,
    VIEWER,
    am_alert,
    am_hook,
    basic,
    bearer,
    counts,
)

URL = "/api/v1/alertmanager"
AM = bearer(AM_TOKEN)


async def post(client: Any, body: Any, *,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    resp = await client.post(URL, data=data, headers={"Content-Type": "application/json",
                                                      **(AM if headers is None else headers)})
    return resp.status, await resp.json()


async def thread(ctx: Any, iid: int) -> list[str]:
    return [m.kind for m in (await ctx.service.detail(iid)).thread]


async def test_group_lifecycle_open_unchanged_update_resolve(api: Any) -> None:
    client, ctx = api
    a1, a2 = am_alert(instance="db1"), am_alert(instance="db2", severity="warning")

    status, body = await post(client, am_hook([a1]))
    res = body["result"]
    assert status == 200 and body["group_key"] == '{}:{alertname="HighLatency"}'
    assert (res["action"], res["incident"], res["severity"], res["firing"]) == ("opened", "INC-1", "sev1", 1)
    inc = await ctx.service.get(1)
    assert inc.source == "alertmanager" and inc.commander == "api:alertmanager"
    assert inc.title.startswith("HighLatency") and "db1" in inc.description
    assert inc.labels == {"alertname": "HighLatency"}

    # Alertmanager repeats the group (group_interval / repeat_interval): nothing new, nothing paged.
    status, body = await post(client, am_hook([a1]))
    assert body["result"]["action"] == "unchanged" and body["result"]["incident"] == "INC-1"
    assert await thread(ctx, 1) == ["INITIAL"]

    status, body = await post(client, am_hook([a1, a2]))
    assert body["result"]["action"] == "updated" and body["result"]["firing"] == 2
    detail = await ctx.service.detail(1)
    assert [m.kind for m in detail.thread] == ["INITIAL", "UPDATE"]
    assert "1 new" in detail.thread[1].body and "db2" in detail.thread[1].body

    # One alert stops firing (send_resolved lists it as resolved): the set changed again.
    status, body = await post(client, am_hook([am_alert(instance="db1", status="resolved"), a2]))
    assert body["result"]["action"] == "updated" and body["result"]["firing"] == 1
    assert "1 no longer firing" in (await ctx.service.detail(1)).thread[2].body

    status, body = await post(client, am_hook([am_alert(instance="db1", status="resolved"),
                                               am_alert(instance="db2", status="resolved")]))
    assert body["result"]["action"] == "resolved" and body["result"]["incident"] == "INC-1"
    assert (await ctx.service.get(1)).state == "resolved"
    assert await thread(ctx, 1) == ["INITIAL", "UPDATE", "UPDATE", "RESOLVED"]

    # A resolved repeat is ignored; the group firing again opens a new incident.
    assert (await post(client, am_hook([am_alert(status="resolved")])))[1]["result"]["action"] == "ignored"
    status, body = await post(client, am_hook([a1]))
    assert body["result"]["action"] == "opened" and body["result"]["incident"] == "INC-2"
    reopened = await ctx.service.get(2)
    assert reopened.description.startswith("Reopens INC-1 ") and reopened.payload["previous_incident"] == "INC-1"


async def test_every_alert_fingerprint_and_labels_are_in_the_texts(api: Any) -> None:
    client, ctx = api
    a1, a2 = am_alert(instance="db1"), am_alert(instance="db2", severity="warning")
    await post(client, am_hook([a1]))
    await post(client, am_hook([a1, a2]))
    await post(client, am_hook([am_alert(instance="db1", status="resolved"), a2]))
    detail = await ctx.service.detail(1)
    assert "[fp-HighLatency-db1] {alertname=HighLatency, instance=db1, severity=critical}" in detail.incident.description
    assert "New:\n- HighLatency [fp-HighLatency-db2] {alertname=HighLatency, instance=db2, severity=warning}" \
        in detail.thread[1].body
    assert "Resolved:\n- HighLatency [fp-HighLatency-db1] {alertname=HighLatency, instance=db1" in detail.thread[2].body


async def test_groups_are_independent(api: Any) -> None:
    client, _ctx = api
    r1 = (await post(client, am_hook([am_alert("DiskFull")], group_key='{}:{alertname="DiskFull"}')))[1]
    r2 = (await post(client, am_hook([am_alert("HighLatency")])))[1]
    assert r1["result"]["incident"] != r2["result"]["incident"]


async def test_a_manual_resolve_is_not_undone_by_repeats(api: Any) -> None:
    client, ctx = api
    from core.rbac import Actor

    await post(client, am_hook([am_alert(instance="db1")]))
    await ctx.service.resolve(1, actor=Actor("cli:op"), text="fixed by hand")
    assert (await post(client, am_hook([am_alert(instance="db1")])))[1]["result"]["action"] == "unchanged"
    assert (await ctx.service.get(1)).state == "resolved"
    # A new alert in the group is news: a new incident, not a reopened one.
    status, body = await post(client, am_hook([am_alert(instance="db1"), am_alert(instance="db3")]))
    assert body["result"]["action"] == "opened" and body["result"]["incident"] == "INC-2"


async def test_concurrent_copies_of_a_notification_open_one_incident(api: Any) -> None:
    client, ctx = api  # an HA pair of Alertmanagers sends the same group twice, at the same time
    results = await asyncio.gather(*[post(client, am_hook([am_alert()])) for _ in range(4)])
    assert sorted(r[1]["result"]["action"] for r in results) == ["opened"] + ["unchanged"] * 3
    assert (await counts(ctx))["incidents"] == 1


@pytest.mark.parametrize(("labels", "config", "want"), [
    ({"severity": "warning"}, {}, "sev3"),
    ({"severity": "INFO"}, {}, "sev4"),
    ({"severity": "sev2"}, {}, "sev2"),
    ({"severity": "bogus"}, {}, "sev3"),
    ({}, {"default_severity": "sev4"}, "sev4"),
    ({"priority": "P1"}, {"severity_label": "priority", "severity_map": {"P1": "sev1", "P2": "sev2"}},
     "sev1"),
])
async def test_severity_comes_from_the_mapped_label(make_client: Any, labels: dict[str, str],
                                                    config: dict[str, Any], want: str) -> None:
    client, _ctx = await make_client(alertmanager=config)
    alert = am_alert()
    alert["labels"] = {"alertname": "HighLatency", "instance": "db1", **labels}
    assert (await post(client, am_hook([alert])))[1]["result"]["severity"] == want


async def test_the_most_severe_firing_alert_wins(api: Any) -> None:
    client, _ctx = api
    hook = am_hook([am_alert(instance="a", severity="warning"), am_alert(instance="b", severity="critical")])
    assert (await post(client, hook))[1]["result"]["severity"] == "sev1"


async def test_a_notify_rule_pages_once_per_change(make_client: Any) -> None:
    client, ctx = await make_client(routing={"rules": [
        {"name": "info-alerts", "event_types": ["alertmanager"], "action": "notify",
         "conditions": [{"field": "labels.alertname", "value": "Watchdog"}],
         "targets": {"contacts": ["carol"]}}]})
    hook = am_hook([am_alert("Watchdog")], group_key='{}:{alertname="Watchdog"}')
    r = (await post(client, hook))[1]["result"]
    assert r["action"] == "notified" and r["rules"] == ["info-alerts"] and r["queued"] == 1
    assert (await post(client, hook))[1]["result"]["action"] == "unchanged"
    assert (await counts(ctx))["incidents"] == 0


# --- auth and validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [AM, basic(AM_USER, AM_PASSWORD), OPS],
                         ids=["bearer", "basic", "api-key"])
async def test_accepted_credentials(api: Any, headers: dict[str, str]) -> None:
    client, _ctx = api
    status, body = await post(client, am_hook([am_alert()]), headers=headers)
    assert status == 200 and body["result"]["action"] == "opened"


@pytest.mark.parametrize("headers", [
    {}, bearer("wrong"), basic(AM_USER, "wrong"), basic("someone", AM_PASSWORD),
    {"Authorization": "Basic !!"}, {"Authorization": "Basic " + "bm9jb2xvbg=="},  # "nocolon"
], ids=["none", "bad-bearer", "bad-password", "bad-user", "bad-base64", "no-colon"])
async def test_wrong_credentials_are_401(api: Any, headers: dict[str, str]) -> None:
    client, ctx = api
    status, body = await post(client, am_hook([am_alert()]), headers=headers)
    assert status == 401 and body["error"] == "unauthorized"
    assert AM_PASSWORD not in json.dumps(body) and AM_TOKEN not in json.dumps(body)
    assert (await counts(ctx))["incidents"] == 0


async def test_without_configured_credentials_nothing_gets_in(make_client: Any) -> None:
    client, _ctx = await make_client(api={"keys": []}, alertmanager={
        "bearer_token": None, "username": None, "password": None})
    for headers in ({}, {"Authorization": "Bearer "}, basic("", ""), bearer("anything")):
        assert (await post(client, am_hook([am_alert()]), headers=headers))[0] == 401


async def test_viewer_key_is_403(api: Any) -> None:
    client, ctx = api
    status, body = await post(client, am_hook([am_alert()]), headers=VIEWER)
    assert status == 403 and body["error"] == "forbidden"
    assert await counts(ctx) == {"incidents": 0, "messages": 0, "deliveries": 0, "seen_keys": 0, "audit": 0}


async def test_disabled_receiver_is_404(make_client: Any) -> None:
    client, _ctx = await make_client(alertmanager={"enabled": False})
    assert (await post(client, am_hook([am_alert()])))[0] == 404


def _hook_without_fingerprint() -> dict[str, Any]:
    alert = am_alert()
    del alert["fingerprint"]
    return am_hook([alert])


@pytest.mark.parametrize(("body", "field"), [
    (am_hook([am_alert()], version="3"), "version"),
    ({k: v for k, v in am_hook([am_alert()]).items() if k != "groupKey"}, "groupKey"),
    (_hook_without_fingerprint(), "alerts[0].fingerprint"),
    (am_hook([am_alert()], status="pending"), "status"),
    ({**am_hook([am_alert()]), "alerts": "none"}, "alerts"),
    (am_hook([am_alert()], truncatedAlerts=-1), "truncatedAlerts"),
])
async def test_invalid_payloads_are_400_naming_the_field(api: Any, body: dict[str, Any], field: str) -> None:
    client, ctx = api
    status, resp = await post(client, body)
    assert status == 400 and resp["field"] == field, resp
    assert await counts(ctx) == {"incidents": 0, "messages": 0, "deliveries": 0, "seen_keys": 0, "audit": 0}


async def test_oversize_is_413(make_client: Any) -> None:
    client, _ctx = await make_client(server={"max_body_bytes": 4096})
    alerts = [am_alert(instance=f"host{i}") for i in range(40)]
    assert (await post(client, am_hook(alerts)))[0] == 413


async def test_nan_and_infinity_are_400_also_in_fields_alertmanager_ignores(api: Any) -> None:
    client, ctx = api
    hook = json.dumps(am_hook([am_alert()]))
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        status, resp = await post(client, hook[:-1].encode() + b', "score": ' + token + b"}")
        assert status == 400 and "NaN and Infinity are not JSON numbers" in resp["message"], resp
    assert (await counts(ctx))["incidents"] == 0
    status, _ = await post(client, json.dumps(am_hook([am_alert(name="NaN-Infinity")])))
    assert status == 200  # the words inside strings are fine
