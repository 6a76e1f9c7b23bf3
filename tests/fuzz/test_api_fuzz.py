"""Properties of the inbound API under arbitrary input: POST /api/v1/events and /api/v1/alertmanager answer
2xx or 4xx to any JSON value, any near-valid body and any bytes, never 5xx (a 5xx makes Alertmanager and
other senders retry the same bad body forever), and a 4xx stores nothing at all (no incident, message,
page, de-duplication key or audit entry).

Hypothesis runs in a worker thread and sends each example to the real app (bot.server.build_app, API
mounted) on the test's event loop; both databases (PostgreSQL refuses NUL characters SQLite accepts).
"""
from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot import server
from bot.context import Context
from core.models import AuditEntry, Delivery, Incident, IncidentMessage, SeenKey

OPS_KEY = "tk-fuzz-ops-0123456789"
AM_TOKEN = "am-fuzz-token-0123456789"
AM_USER, AM_PASSWORD = "alertmanager", "am-fuzz-password-0123"
EXAMPLES = {"sqlite": 200, "postgres": 100}
"""Modest, so the whole directory stays well under a minute on a small machine."""

T = TypeVar("T")

# --- strategies ---------------------------------------------------------------------------------------------

NASTY = ["", " ", "\x00", "a\x00b", "\ud800", "\u202e", "😀", "'; DROP TABLE incidents; --", "%s%n",
         "../../etc/passwd", "a" * 600, "x" * 5000, "sev1", "critical", "SEV2", "warning", "resolved",
         "firing", "0", "-1", "1e309", "null", "true", "{}", "[]", "${HOME}", "<script>", "INC-1"]
texts = st.one_of(st.text(st.characters(blacklist_categories=()), max_size=40), st.sampled_from(NASTY))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(texts, c, max_size=4),
                           max_leaves=15)


# Valid bodies with hostile content (any characters, NUL and lone surrogates included, huge numbers,
# nested junk in the free-form parts), the same with one field broken or missing, and JSON of any shape:
# most examples get past validation, so the storing path is what is fuzzed.
any_text = st.text(st.characters(blacklist_categories=()), max_size=30)
names = st.one_of(any_text.filter(bool), st.sampled_from([n for n in NASTY if n]))
iso = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
timestamps = st.one_of(iso, st.datetimes().map(lambda d: d.isoformat()), st.just("2026-01-01T10:30:00Z"),
                       texts)
payload_keys = st.sampled_from(["title", "summary", "description", "message", "severity", "verdict"]) | texts
payloads = st.dictionaries(payload_keys, json_values, max_size=5)
valid_events = st.fixed_dictionaries(
    {"event_type": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,30}", fullmatch=True),
     "event_id": names.map(lambda t: t[:200]),
     "timestamp": iso,
     "tenant_id": names.map(lambda t: t[:64]),
     "payload": payloads},
    optional={"metadata": st.fixed_dictionaries(
        {"source_service": names.map(lambda t: t[:32])},
        optional={"correlation_id": st.none() | names.map(lambda t: t[:400]), "extra": json_values})})
label_keys = st.sampled_from(["alertname", "severity", "instance"]) | any_text
str_maps = st.dictionaries(label_keys, texts, max_size=4)
valid_alerts = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]), "labels": str_maps, "startsAt": iso,
     "endsAt": iso | st.just("0001-01-01T00:00:00Z"), "fingerprint": names.map(lambda t: t[:64])},
    optional={"annotations": str_maps, "generatorURL": texts})
valid_hooks = st.fixed_dictionaries(
    {"version": st.just("4"), "groupKey": names, "status": st.sampled_from(["firing", "resolved"]),
     "alerts": st.lists(valid_alerts, max_size=3)},
    optional={"truncatedAlerts": st.integers(0, 2**40), "receiver": texts, "groupLabels": str_maps,
              "commonLabels": str_maps, "commonAnnotations": str_maps, "externalURL": texts})


@st.composite
def broken(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid body with one field replaced by anything, or dropped."""
    body = dict(draw(valid))
    key = draw(st.sampled_from(sorted(body)))
    if draw(st.booleans()):
        del body[key]
    else:
        body[key] = draw(json_values)
    return body


events = st.one_of(valid_events, valid_events, broken(valid_events))
hooks = st.one_of(valid_hooks, valid_hooks, broken(valid_hooks))


def dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


bodies_json = st.one_of(json_values, events, hooks).map(dump)
event_bodies = st.one_of(events, events, events, json_values).map(dump)
hook_bodies = st.one_of(hooks, hooks, hooks, json_values).map(dump)
bodies_bytes = st.one_of(st.binary(max_size=300), bodies_json.map(lambda b: b[: len(b) // 2]),
                         bodies_json.map(lambda b: b.replace(b"{", b"[", 1)))
content_types = st.sampled_from(["application/json", "application/json; charset=latin-1", "text/plain", "",
                                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
auth_headers = st.one_of(st.just(f"Bearer {OPS_KEY}"), st.just(f"Bearer {AM_TOKEN}"),
                         st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
                         st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode()))


# --- the app and the property -------------------------------------------------------------------------------

async def counts(ctx: Context) -> dict[str, int]:
    """Rows a request may write (the worker is off, so nothing else writes)."""
    out = {}
    async with ctx.db.sessions() as s:
        for name, model in (("incidents", Incident), ("messages", IncidentMessage), ("deliveries", Delivery),
                            ("seen_keys", SeenKey), ("audit", AuditEntry)):
            out[name] = int((await s.execute(select(func.count()).select_from(model))).scalar_one())
    return out


class Target:
    """The running app, driven from Hypothesis's thread through the loop that serves it."""

    def __init__(self, ctx: Context, client: TestClient, loop: asyncio.AbstractEventLoop) -> None:
        self.ctx, self.client, self.loop = ctx, client, loop
        self.statuses: Counter[int] = Counter()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        resp = await self.client.post(path, data=body, headers=headers)
        return resp.status, await resp.text()

    def check(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        before = self.run(counts(self.ctx))
        status, text = self.run(self._post(path, body, headers))
        self.statuses[status] += 1
        assert status < 500, f"{status} for {body[:300]!r}: {text[:300]}"
        if status >= 400:
            assert self.run(counts(self.ctx)) == before, f"{status} stored something for {body[:300]!r}"
            assert "error" in json.loads(text), text  # a 4xx says what was wrong, as JSON


@pytest.fixture
async def target(make_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    from bot.api import mount as mount_api

    ctx = await make_ctx(worker={"enabled": False}, console={"enabled": False},
                         api={"keys": [{"name": "ops", "key": OPS_KEY, "role": "operator"}]},
                         alertmanager={"bearer_token": AM_TOKEN, "username": AM_USER,
                                       "password": AM_PASSWORD})
    monkeypatch.setattr(server, "_mounts", lambda: [mount_api])
    app, _rt = await server.build_app(ctx)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Target(ctx, client, asyncio.get_running_loop())
    finally:
        await client.close()


def examples(db_url: str) -> int:
    return EXAMPLES["postgres" if db_url.startswith("postgresql") else "sqlite"]


def fuzz(n: int, strategy: st.SearchStrategy[Any], prop: Callable[[Any], None]) -> Callable[[], None]:
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(
        given(strategy)(prop))


ROUTES = {"events": ("/api/v1/events", {"Authorization": f"Bearer {OPS_KEY}"}),
          "alertmanager": ("/api/v1/alertmanager", {"Authorization": f"Bearer {AM_TOKEN}"})}
BODIES = {"events": event_bodies, "alertmanager": hook_bodies}


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_any_json_gets_2xx_or_4xx_and_a_4xx_stores_nothing(target: Target, db_url: str,
                                                                 route: str) -> None:
    path, auth = ROUTES[route]

    def prop(body: bytes) -> None:
        target.check(path, body, {**auth, "Content-Type": "application/json"})

    await asyncio.to_thread(fuzz(examples(db_url), BODIES[route], prop))
    accepted = sum(n for status, n in target.statuses.items() if status < 300)
    assert accepted >= examples(db_url) // 10, f"too few bodies got past validation: {dict(target.statuses)}"


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_any_bytes_and_headers_get_2xx_or_4xx_and_a_4xx_stores_nothing(target: Target, db_url: str,
                                                                             route: str) -> None:
    path, auth = ROUTES[route]

    def prop(case: tuple[bytes, str, str | None]) -> None:
        body, ctype, authorization = case
        headers = {"Content-Type": ctype, "Authorization": authorization or auth["Authorization"]}
        target.check(path, body, headers)

    cases = st.tuples(bodies_bytes | bodies_json, content_types, st.none() | auth_headers)
    await asyncio.to_thread(fuzz(examples(db_url) // 2, cases, prop))


NUL_BODIES = {
    "events": [{"event_type": "x", "event_id": "e1", "timestamp": "2026-01-01T00:00:00Z", "tenant_id": "\x00",
                "payload": {}},
               {"event_type": "x", "event_id": "e\x00", "timestamp": "2026-01-01T00:00:00Z", "tenant_id": "t",
                "payload": {}},
               {"event_type": "x", "event_id": "e2", "timestamp": "2026-01-01T00:00:00Z", "tenant_id": "t",
                "payload": {"title": "db\x00down", "nested": [{"k\x00": 1}]}}],
    "alertmanager": [{"version": "4", "groupKey": "{}:{a\x00}", "status": "firing", "alerts": []},
                     {"version": "4", "groupKey": "g", "status": "firing", "alerts": [
                         {"status": "firing", "labels": {"alertname": "A\x00"},
                          "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                          "fingerprint": "fp"}]}],
}


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_nul_characters_are_a_400_on_every_database(target: Target, route: str) -> None:
    """What the fuzzer found first: PostgreSQL cannot store U+0000, so it is refused up front, by name."""
    path, auth = ROUTES[route]
    for body in NUL_BODIES[route]:
        await asyncio.to_thread(target.check, path, dump(body), {**auth, "Content-Type": "application/json"})
        headers = {**auth, "Content-Type": "application/json"}
        resp = await target.client.post(path, data=dump(body), headers=headers)
        answer = await resp.json()
        assert resp.status == 400 and "NUL character" in answer["message"] and answer["field"], answer
