"""`make bench`: run every benchmark under bench/ against loopback stand-ins and print one table.

Each benchmark module exposes run() -> [{figure, value, target, passed}]. Set TOCSIN_BENCH_QUICK=1 for a
smaller, faster pass (fewer incidents/entries) when you only want to see that everything runs.
"""
from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table  # noqa: E402

BENCHMARKS = [
    ("fan-out vs Apprise", "bench.fanout"),
    ("Slack ack latency", "bench.slack_ack"),
    ("escalation lateness", "bench.escalation"),
    ("audit chain", "bench.audit_verify"),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    sqlite = subprocess.run([sys.executable, "-c", "import sqlite3; print(sqlite3.sqlite_version)"],
                            capture_output=True, text=True).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}, SQLite {sqlite}; "
            f"{platform.system()} {platform.release()}")


def main() -> int:
    quick = bool(os.environ.get("TOCSIN_BENCH_QUICK"))
    rows: list[dict[str, Any]] = []
    failed = False
    print(f"machine: {machine()}")
    for title, module in BENCHMARKS:
        print(f"running {title} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(module)
            kwargs: dict[str, Any] = {}
            if quick and module == "bench.audit_verify":
                kwargs["entries"] = 100_000
            got = mod.run(**kwargs)
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            rows.append({"figure": f"{title}: crashed", "value": "-", "target": None, "passed": False})
            failed = True
            continue
        for r in got:
            r["figure"] = f"{title}: {r['figure']}"
        rows += got
        print(f"  done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    print_table(rows, "Tocsin benchmarks")
    return 1 if failed or any(r.get("passed") is False for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
