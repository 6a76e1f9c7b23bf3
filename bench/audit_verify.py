"""Audit chain at scale: append N entries (default 1,000,000) on SQLite, then time `audit verify`.

Prints the append rate (batched, as the worker appends delivery outcomes, and one-per-transaction, as
incident actions do) and the verify rate. Targets: one append per transaction >= 2,000/s (the raw SQLite
commit rate anchor is shown beside it), verify >= 100,000 entries/s on SQLite.
Usage: .venv/bin/python bench/audit_verify.py [--entries N]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import StallProbe, aprofiled, print_table, quick, sqlite_commit_rate  # noqa: E402
from core import migrate  # noqa: E402
from core.audit.log import AuditLog, verify  # noqa: E402
from core.db import Database  # noqa: E402

KEY = b"bench-checkpoint-key"
SINGLE_TARGET = 2000


async def measure(entries: int, single: int = 2000) -> list[dict[str, Any]]:
    raw = sqlite_commit_rate()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{os.path.join(tmp, 'audit.db')}")
        await migrate.upgrade(db.engine)
        audit = AuditLog(checkpoint_key=KEY, checkpoint_every=1000)
        tty = sys.stderr.isatty()

        async with StallProbe() as probe, aprofiled("audit-append"):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(single):
                async with db.transaction() as s:
                    await audit.append(s, actor="cli:bench", action="incident.update", resource=f"INC-{i}",
                                       details={"message": i, "queued": 3})
            single_rate = single / (time.perf_counter() - t0)
            single_cpu_ms = (time.process_time() - c0) / single * 1000

        batch = 10_000
        done = single
        t0 = time.perf_counter()
        while done < entries:
            n = min(batch, entries - done)
            async with db.transaction() as s:
                await audit.append_many(s, [{"actor": "system:worker", "action": "delivery.delivered",
                                             "resource": f"delivery:{done + j}",
                                             "details": {"channel": "email", "attempt": 1}} for j in range(n)])
            done += n
            if tty:
                sys.stderr.write(f"\rappending: {done:,}/{entries:,}")
        batch_rate = (entries - single) / max(1e-9, time.perf_counter() - t0)
        if tty:
            sys.stderr.write("\r\033[K")

        def progress(d: int, total: int) -> None:
            if tty:
                sys.stderr.write(f"\rverifying: {d:,}/{total:,}")

        async with StallProbe() as verify_probe:
            t0 = time.perf_counter()
            res = await verify(db.engine, checkpoint_key=KEY, progress=progress)
            verify_s = time.perf_counter() - t0
        if tty:
            sys.stderr.write("\r\033[K")
        await db.close()
    if not res.ok or res.count != entries:
        raise SystemExit(f"verify failed: {res.describe()}")
    return [
        {"figure": "audit append, one per transaction (entries/s)", "value": round(single_rate),
         "target": f">= {SINGLE_TARGET:,}", "passed": single_rate >= SINGLE_TARGET},
        {"figure": "audit append, one per transaction: process CPU per transaction (ms)",
         "value": round(single_cpu_ms, 3),
         "target": None, "passed": None},
        {"figure": "audit append per transaction / raw SQLite commits/s measured now",
         "value": f"{single_rate / raw:.1%} of {raw:,.0f}",
         "target": None, "passed": None},
        {"figure": "audit append, batched (entries/s)", "value": round(batch_rate), "target": None, "passed": None},
        {"figure": f"audit verify {entries:,} entries (s)", "value": round(verify_s, 2), "target": None,
         "passed": None},
        {"figure": "audit verify rate (entries/s)", "value": round(entries / verify_s), "target": ">= 100000",
         "passed": entries / verify_s >= 100_000},
        probe.row("single appends"),
        verify_probe.row(f"verify of {entries:,} entries"),
    ]


def run(entries: int | None = None) -> list[dict[str, Any]]:
    """1,000,000 entries (quick: 100,000; or TOCSIN_BENCH_AUDIT_ENTRIES)."""
    n = entries or int(os.environ.get("TOCSIN_BENCH_AUDIT_ENTRIES", "100000" if quick() else "1000000"))
    return asyncio.run(measure(n))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000)
    print_table(run(ap.parse_args().entries))
