"""No single request under the body limit stalls the event loop: the worst bodies we could build (one huge
string, a long list, a wide object, deep nesting) against many routing conditions answer quickly, and
/healthz stays fast while they are processed."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.api.conftest import OPS, event

URL = "/api/v1/events"
LIMIT = 1024 * 1024  # the default server.max_body_bytes

# Every operator on every big field, in rules that do not match (so all of them are evaluated).
_FIELDS = ("payload.blob", "payload.items", "payload.wide", "payload.deep")
RULES: list[dict[str, Any]] = [
    {"name": f"r{i}", "event_types": ["scan.complete"],
     "conditions": [{"field": f, "operator": op, "value": v} for f in _FIELDS
                    for op, v in (("eq", "zz"), ("ne", "zz"), ("contains", "zz"), ("in", ["zz", 1]),
                                  ("gt", 5), ("exists", True))] + [{"field": "payload.never", "operator": "exists"}],
     "targets": {"lists": ["oncall"]}}
    for i in range(20)]


def _fill(payload: dict[str, Any], key: str, unit: Any, *, listed: bool = False) -> dict[str, Any]:
    """`payload[key]` grown from `unit` (a string, or a list of `unit`) until the body is just under the limit."""
    listed = listed or not isinstance(unit, str)
    base = len(json.dumps(event(payload={**payload, key: [unit] if listed else unit})))
    per = len(json.dumps(unit)) + 2 if listed else len(unit)
    n = (LIMIT - base - 64) // per
    payload[key] = [unit] * n if listed else unit * n
    return payload


def worst_bodies() -> dict[str, bytes]:
    bodies = {
        "huge-string": event(payload=_fill({"title": "t"}, "blob", "x")),
        "huge-description": event(payload=_fill({"title": "t"}, "description", "word ")),
        "long-list": event(payload=_fill({"title": "t"}, "items", 1)),
        "wide-object": event(payload={"title": "t", "wide": {f"k{i}": i for i in range(60_000)}}),
        "many-strings": event(payload=_fill({"title": "t"}, "items", "ab", listed=True)),
        "deep": event(payload={"title": "t", "deep": json.loads("[" * 150 + "1" + "]" * 150)}),
    }
    out = {name: json.dumps(b).encode() for name, b in bodies.items()}
    for name, raw in out.items():
        assert len(raw) < LIMIT, (name, len(raw))
    return out


async def timed_post(client: Any, body: bytes) -> tuple[int, float, float, float]:
    """(status, seconds the request took, the longest event-loop block while it ran, the slowest /healthz).

    The test client shares the server's process and event loop. A block is how late a 2 ms sleep on the loop
    woke, counted only as far as the process was busy meanwhile: min(wall-clock lateness, CPU time of the
    whole process in that interval). Work that holds the loop (on the loop, or a thread holding the GIL)
    is both late and busy on any machine; time the OS gave to other processes (a loaded test machine) is
    late but not busy, and a thread working beside a free loop (SQLite, without the GIL) is busy but not
    late. /healthz is requested all along and its wall-clock time reported."""
    lags: list[float] = [0.0]
    pings: list[float] = [0.0]
    done = asyncio.Event()

    async def lag() -> None:
        while not done.is_set():
            t, c = time.perf_counter(), time.process_time()
            await asyncio.sleep(0.002)
            lags.append(min(time.perf_counter() - t - 0.002, time.process_time() - c))

    async def ping() -> None:
        while not done.is_set():
            t = time.perf_counter()
            assert (await client.get("/healthz")).status == 200
            pings.append(time.perf_counter() - t)
            await asyncio.sleep(0.005)

    pinger = asyncio.create_task(ping())
    prober = asyncio.create_task(lag())
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    resp = await client.post(URL, data=body, headers={**OPS, "Content-Type": "application/json"})
    took = time.perf_counter() - t0
    done.set()
    await pinger
    await prober
    return resp.status, took, max(lags), max(pings)


@pytest.mark.parametrize("name", sorted(worst_bodies()))
async def test_worst_case_bodies_answer_quickly_and_healthz_stays_fast(make_client: Any, name: str) -> None:
    """No worst-case body holds the event loop for 100 ms (so /healthz and every other request keep being
    answered), and each is answered within 5 s."""
    client, _ctx = await make_client(routing={"rules": RULES}, worker={"enabled": False})
    body = worst_bodies()[name]
    runs = []
    # A block of the loop is CPU work and shows in every run. The wall-clock bound on the answer is generous
    # for a shared test machine (most of it is storing the payload on PostgreSQL); the body is sent up to
    # three times (new event ids) and one run within it passes.
    for attempt in range(3):
        status, took, block, slowest = await timed_post(
            client, body.replace(b'"evt-1"', f'"evt-{attempt}"'.encode()))
        print(f"{name}: {status} in {took * 1000:.0f} ms; longest loop block {block * 1000:.0f} ms; "
              f"slowest /healthz {slowest * 1000:.0f} ms")
        assert status == 202, status
        assert block < 0.1, f"{name}: the event loop was held for {block * 1000:.0f} ms"
        runs.append(took)
        if took < 5.0:
            break
    assert min(runs) < 5.0, f"{name}: seconds taken per run: {runs}"


async def test_a_big_event_paged_to_many_is_not_stored_again_per_recipient(make_client: Any) -> None:
    """40 recipients of a near-limit event used to store (and serialize) the event 40 times: 9-13 s of
    SQLite writes for one request, the write lock held meanwhile. Only the generic webhook carries it."""
    people = [{"name": f"p{i}", "email": f"p{i}@example.com", "preferences": {"default": ["email"]}}
              for i in range(40)]
    client, ctx = await make_client(contacts=people, worker={"enabled": False},
                                    contact_lists=[{"name": "oncall", "members": [p["name"] for p in people]}])
    for name in ("wide-object", "long-list"):
        body = worst_bodies()[name].replace(b'"evt-1"', f'"{name}"'.encode())
        t0 = time.perf_counter()
        resp = await client.post(URL, data=body, headers={**OPS, "Content-Type": "application/json"})
        took = time.perf_counter() - t0
        assert resp.status == 202 and took < 5.0, (name, resp.status, took)
    from sqlalchemy import select

    from core.models import Delivery
    async with ctx.db.sessions() as s:
        rows = [(d.channel, d.notification_json) for d in (await s.execute(select(Delivery))).scalars()]
    assert len(rows) >= 80 and all(p["event"] == {} for ch, p in rows if ch != "webhook")
