"""Escalation timer benchmark: 10,000 open incidents whose escalations fall due within one minute, fired by
the real Escalator (APScheduler + IncidentService.escalate, one transaction each) on SQLite.

Prints lateness (commit of the escalation - its due time) p50/p99/max, throughput, the time to rebuild the
schedule from the database, and the process's peak memory. Target: p99 lateness < 1 s.

    .venv/bin/python bench/escalation.py [--quick] [--incidents N] [--spread SECONDS]
    TOCSIN_BENCH_QUICK=1 .venv/bin/python bench/escalation.py

Importable: `run() -> list[dict(figure, value, target, passed)]`.
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Table, insert  # noqa: E402

from bench.common import StallProbe, aprofiled, print_table  # noqa: E402
from bench.common import quick as _quick  # noqa: E402
from bot.context import open_context  # noqa: E402
from core import heap  # noqa: E402
from core.config import Config  # noqa: E402
from core.escalation import Escalator  # noqa: E402
from core.events import IncidentEvent  # noqa: E402
from core.models import Incident  # noqa: E402

FULL = {"incidents": 10_000, "spread": 60.0, "burst": 3_000}
QUICK = {"incidents": 1_000, "spread": 10.0, "burst": 500}
CAPACITY_FACTOR = 6.0
"""Target: escalations/s with a backlog (a burst all due at once) >= 6x what the storm needs."""
LEAD_SECONDS = 5.0
"""The first escalation is due this long after the timer is asked to start (the rebuild is included)."""
P99_TARGET = 1.0


def bench_config(db_url: str) -> Config:
    policy = {"name": "bench", "levels": [{"wait_minutes": 1, "targets": {"lists": ["oncall"]}}], "repeat": 0}
    return Config.model_validate({
        "database": {"url": db_url},
        "audit": {"checkpoint_key": "bench-key", "checkpoint_every": 1000},
        "contacts": [{"name": "alice", "email": "alice@example.com"}],
        "contact_lists": [{"name": "oncall", "members": ["alice"]}],
        "routing": {"default_targets": {"lists": ["oncall"]},
                    "rules": [{"name": "all", "event_types": ["declare"], "targets": {"lists": ["oncall"]},
                               "escalation_policy": "bench"}]},
        "escalation_policies": [policy],
        "channels": {"email": {"outbox": True}},
        "worker": {"enabled": False},
    })


def _pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(p / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[k]


async def _run(incidents: int, spread: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-") as tmp:
        cfg = bench_config(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        ctx = await open_context(cfg=cfg)
        try:
            return await _measure(ctx, incidents, spread)
        finally:
            await ctx.close()


async def _measure(ctx: Any, incidents: int, spread: float) -> list[dict[str, Any]]:
    snapshot = ctx.cfg.policy("bench").model_dump(mode="json")
    t0 = datetime.now(timezone.utc)
    first_due = t0 + timedelta(seconds=LEAD_SECONDS)
    due: dict[int, datetime] = {}
    rows = []
    for i in range(incidents):
        at = first_due + timedelta(seconds=spread * i / max(1, incidents - 1))
        rows.append({"id": i + 1, "title": f"bench {i}", "description": "", "severity": "sev1",
                     "state": "open", "source": "bench", "commander": "bench", "created_at": t0,
                     "updated_at": t0, "state_since": t0, "version": 1, "escalation_policy": "bench",
                     "escalation_snapshot": snapshot, "escalation_level": 0, "escalation_round": 0,
                     "next_escalation_at": at, "labels": {}, "payload": {}})
        due[i + 1] = at
    table = cast(Table, Incident.__table__)
    async with ctx.db.transaction() as s:
        for k in range(0, len(rows), 2000):  # bulk insert: setup speed, not part of the measurement
            await s.execute(insert(table), rows[k:k + 2000])
    setup_s = (datetime.now(timezone.utc) - t0).total_seconds()

    fired: dict[int, float] = {}
    duplicates = 0
    done = asyncio.Event()

    def on_event(ev: IncidentEvent) -> None:
        nonlocal duplicates
        if ev.kind != "escalate" or ev.incident_id is None:
            return
        if ev.incident_id in fired:
            duplicates += 1
        fired[ev.incident_id] = time.time()
        if len(fired) >= incidents:
            done.set()

    ctx.service.events.subscribe(on_event)
    esc = Escalator(ctx.service)
    heap.settle()  # as bot.server.build_app does once everything is loaded, before the timers start
    started = time.perf_counter()
    async with StallProbe() as start_probe:
        await esc.start()  # the rebuild adds every job in one go: its stall is reported on its own row
        rebuild_s = time.perf_counter() - started
    async with StallProbe() as probe, aprofiled("escalation" if spread else "escalation-burst"):
        deadline = LEAD_SECONDS + spread + 120
        try:
            await asyncio.wait_for(done.wait(), timeout=deadline)
        except asyncio.TimeoutError:
            pass  # reported below as missing escalations
        await asyncio.sleep(0.5)  # a duplicate would show up here
    await esc.close()

    late = sorted(fired[i] - due[i].timestamp() for i in fired)
    first = min(fired.values()) if fired else 0.0
    last = max(fired.values()) if fired else 0.0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    p50, p99, mx = _pct(late, 50), _pct(late, 99), (late[-1] if late else float("nan"))
    return [
        {"figure": "incidents", "value": incidents, "target": None, "passed": None},
        {"figure": "setup (bulk insert) s", "value": round(setup_s, 2), "target": None, "passed": None},
        {"figure": "schedule rebuild on start s", "value": round(rebuild_s, 3), "target": None,
         "passed": None},
        {"figure": "escalations fired", "value": len(fired), "target": f"== {incidents}",
         "passed": len(fired) == incidents},
        {"figure": "duplicate escalations", "value": duplicates, "target": "== 0", "passed": duplicates == 0},
        {"figure": "lateness p50 s", "value": round(p50, 4), "target": None, "passed": None},
        {"figure": "lateness p99 s", "value": round(p99, 4), "target": f"< {P99_TARGET}",
         "passed": p99 < P99_TARGET},
        {"figure": "lateness max s", "value": round(mx, 4), "target": None, "passed": None},
        {"figure": "throughput escalations/s", "value": round(len(fired) / max(1e-9, last - first), 1),
         "target": None, "passed": None},
        {"figure": "peak RSS MiB (whole bench process so far)", "value": round(peak_mb, 1), "target": None,
         "passed": None},
        {"figure": "longest event-loop stall while the schedule is rebuilt on start (ms)",
         "value": round(start_probe.max_ms, 1), "target": None, "passed": None},
        probe.row("the storm"),
    ]


def run(*, incidents: int | None = None, spread_seconds: float | None = None,
        quick: bool | None = None) -> list[dict[str, Any]]:
    """The storm (10,000 due within 60 s; quick: 1,000 within 10 s), then the capacity: a burst of 3,000
    (quick 500) all due at the same instant, escalations/s against the rate the storm needs."""
    if quick is None:
        quick = _quick()
    preset = QUICK if quick else FULL
    n, spread = int(incidents or preset["incidents"]), float(spread_seconds or preset["spread"])
    rows = asyncio.run(_run(n, spread))
    burst = int(preset["burst"])
    burst_rows = asyncio.run(_run(burst, 0.0))
    got = {r["figure"]: r["value"] for r in burst_rows}
    need = n / spread
    cap = float(got["throughput escalations/s"]) if got["escalations fired"] == burst else 0.0
    rows += [
        {"figure": f"capacity: {burst:,} due at once, escalations/s (the storm needs {need:.0f}/s)",
         "value": f"{cap:.0f} = {cap / need:.1f}x", "target": f">= {CAPACITY_FACTOR:g}x",
         "passed": cap >= CAPACITY_FACTOR * need},
        {"figure": "capacity: burst lateness p99 s", "value": got["lateness p99 s"], "target": None,
         "passed": None},
        next(r for r in burst_rows if r["figure"].startswith("duplicate"))
        | {"figure": "capacity: duplicates"},
        next(r for r in burst_rows if r["figure"].startswith("longest event-loop stall during")) | {
            "figure": "longest event-loop stall during the burst (ms)"},
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 incidents over 10 s")
    ap.add_argument("--incidents", type=int)
    ap.add_argument("--spread", type=float, help="seconds over which the escalations fall due")
    args = ap.parse_args(argv)
    results = run(incidents=args.incidents, spread_seconds=args.spread, quick=args.quick or None)
    print_table(results, "escalation storm")
    return 0 if all(r["passed"] is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
