"""Event-API storm: 2,000 events from 50 concurrent clients, each opening its own incident, on SQLite.

The real app (bot.server.build_app with the API, the delivery worker and the escalation timer, as in
`tocsin run`) listens on loopback in this process; the load client (50 tasks over one aiohttp session,
each POSTing /api/v1/events with an API key) runs in another process, so its CPU is not charged to the
server's event loop. We report incidents/s accepted (2xx) and then found stored exactly once, and the
answer time p50/p99 seen by the clients. Targets: >= 500 incidents/s, p99 answer < 500 ms.

    .venv/bin/python bench/events_storm.py [--n 2000] [--concurrency 50] [--quick]

`run()` returns rows of {figure, value, target, passed} for `make bench`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench.common import StallProbe, aprofiled, info, pct, print_table, quick, target  # noqa: E402
from bot.context import open_context  # noqa: E402
from bot.server import build_app  # noqa: E402
from core.config import Config  # noqa: E402
from core.models import Incident  # noqa: E402

KEY = "tk-bench-events-5e1f"
RATE_TARGET = 500.0
P99_TARGET_MS = 500.0

_CLIENT = """
import asyncio, json, sys, time
import aiohttp

url, key, n, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def body(i):
    return {"event_type": "bench.alert", "event_id": f"evt-{i}", "timestamp": "2026-01-01T10:30:00Z",
            "tenant_id": "bench", "payload": {"title": f"storm alert {i}", "severity": "critical"},
            "metadata": {"source_service": "bench", "correlation_id": f"storm-{i}"}}

async def main():
    headers = {"Authorization": f"Bearer {key}"}
    lat, statuses, actions = [], {}, {}
    todo = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as http:
        async def client():
            for i in todo:
                t0 = time.perf_counter()
                async with http.post(url, json=body(i), headers=headers) as r:
                    text = await r.text()
                lat.append((time.perf_counter() - t0) * 1000)
                statuses[r.status] = statuses.get(r.status, 0) + 1
                try:
                    data = json.loads(text)
                except ValueError:
                    data = {"error": f"HTTP {r.status}, not JSON"}
                a = (data.get("result") or {}).get("action", data.get("error", "?"))
                actions[a] = actions.get(a, 0) + 1
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(conc)))
        wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "lat": lat, "statuses": statuses, "actions": actions}))

asyncio.run(main())
"""


def bench_config(db_url: str) -> Config:
    return Config.model_validate({
        "database": {"url": db_url},
        "logging": {"level": "WARNING"},
        "audit": {"checkpoint_key": "bench-checkpoint-key"},
        "api": {"keys": [{"name": "bench", "key": KEY, "role": "operator"}]},
        "contacts": [{"name": "alice", "email": "alice@example.com"},
                     {"name": "bob", "email": "bob@example.com"}],
        "contact_lists": [{"name": "oncall", "members": ["alice", "bob"]}],
        "routing": {"default_targets": {"lists": ["oncall"]}},
        "channels": {"email": {"outbox": True}},
    })


async def _load(url: str, n: int, concurrency: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, url, KEY, str(n), str(concurrency),
        stdout=asyncio.subprocess.PIPE, cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=max(120.0, n / 10))
    if proc.returncode != 0:
        raise RuntimeError(f"load client exited {proc.returncode}")
    return dict(json.loads(out))


async def _run(n: int, concurrency: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-events-") as tmp:
        ctx = await open_context(cfg=bench_config(f"sqlite+aiosqlite:///{tmp}/tocsin.db"))
        app, _rt = await build_app(ctx)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with StallProbe() as probe, aprofiled("events"):
                got = await _load(f"http://127.0.0.1:{port}/api/v1/events", n, concurrency)
            async with ctx.db.sessions() as s:
                stored = int((await s.execute(select(func.count()).select_from(Incident))).scalar_one())
                distinct = int((await s.execute(
                    select(func.count(func.distinct(Incident.correlation_key))))).scalar_one())
        finally:
            await runner.cleanup()
            await ctx.close()
    ok = sum(v for k, v in got["statuses"].items() if 200 <= int(k) < 300)
    opened = int(got["actions"].get("opened", 0))
    once = stored == n and distinct == n and opened == n
    rate = min(opened, stored) / got["wall"]  # the ones both answered 'opened' and found in the database
    p99 = pct(got["lat"], 99)
    others = {k: v for k, v in got["actions"].items() if k != "opened"}
    return [
        target(f"incidents/s accepted and stored once ({n:,} events, {concurrency} clients)", round(rate, 1),
               f">= {RATE_TARGET:g}", rate >= RATE_TARGET),
        target("2xx answers / 'opened' / incidents stored (distinct)",
               f"{ok} / {opened} / {stored} ({distinct})", f"all {n:,}", once and ok == n),
        *([info("answers other than 'opened' (a 5xx is an event the sender must retry)", str(others))]
          if others else []),
        info("answer p50 (ms)", round(pct(got["lat"], 50), 1)),
        target("answer p99 (ms)", round(p99, 1), f"< {P99_TARGET_MS:g}", p99 < P99_TARGET_MS),
        probe.row("the event storm"),
    ]


def run(*, n: int | None = None, concurrency: int = 50) -> list[dict[str, Any]]:
    """Run the benchmark (2,000 events; quick: 300)."""
    logging.getLogger().setLevel(logging.WARNING)
    return asyncio.run(_run(n or (300 if quick() else 2000), concurrency))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        os.environ["TOCSIN_BENCH_QUICK"] = "1"
    rows = run(n=args.n, concurrency=args.concurrency)
    print_table(rows, "event-API storm")
    return 0 if all(r["passed"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
