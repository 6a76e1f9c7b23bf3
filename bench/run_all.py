"""`make bench`: run every benchmark under bench/ against loopback stand-ins and print one table.

First the anchors are measured (raw loopback POST rate, raw SQLite commit rate; bench/common.py), once, in
this run: targets are ratios of them or needs measured in the same run, so they hold on a slower machine.
Each benchmark module exposes run() -> [{figure, value, target, passed}]. Exit status: 0 all targets
pass, 1 a target fails, 2 a benchmark crashed. TOCSIN_BENCH_QUICK=1 is a smaller, faster pass that only
shows everything runs (its figures are not the targets' sizes). TOCSIN_BENCH_PROFILE=DIR writes a
cProfile of each measured section to DIR (bench/hotspots.py prints them).
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

from bench.common import anchor_rows, anchors, load_average, print_table, quick  # noqa: E402

BENCHMARKS = [
    ("fan-out", "bench.fanout"),
    ("event API", "bench.events_storm"),
    ("Slack", "bench.slack_ack"),
    ("escalation", "bench.escalation"),
    ("audit", "bench.audit_verify"),
    ("memory", "bench.memory"),
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


def markdown(rows: list[dict[str, Any]], header: list[str]) -> str:
    """The table as Markdown, for recording in docs/benchmarks.md."""
    out = [*header, "", "| Figure | Value | Target | Result |", "|---|---|---|---|"]
    for r in rows:
        v = r["value"]
        shown = f"{v:,}" if isinstance(v, int) else str(v)
        verdict = "" if r.get("passed") is None else ("PASS" if r["passed"] else "**FAIL**")
        out.append("| " + " | ".join([r["figure"], shown, str(r.get("target") or ""), verdict]) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import asyncio

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="same as TOCSIN_BENCH_QUICK=1")
    ap.add_argument("--only", action="append", metavar="MODULE", help="e.g. --only bench.fanout (repeatable)")
    ap.add_argument("--markdown", metavar="FILE",
                    help="also write the table as Markdown (for docs/benchmarks.md)")
    args = ap.parse_args(argv)
    if args.quick:
        os.environ["TOCSIN_BENCH_QUICK"] = "1"
    rows: list[dict[str, Any]] = []
    crashed = False
    started = time.perf_counter()
    print(f"machine: {machine()}")
    load = load_average()
    print(f"load average at start: {load}{'  (QUICK pass: sizes reduced)' if quick() else ''}", flush=True)
    a = asyncio.run(anchors())
    rows += anchor_rows(a)
    for r in rows:
        print(f"{r['figure']}: {r['value']:,}", flush=True)
    for title, module in BENCHMARKS:
        if args.only and module not in args.only:
            continue
        print(f"running {title} ({module}) ... load average {load_average()}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            got = importlib.import_module(module).run()
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            rows.append({"figure": f"{title}: crashed", "value": "-", "target": None, "passed": False})
            crashed = True
            continue
        for r in got:
            if r["figure"].startswith("anchor:"):
                continue  # measured once above
            r["figure"] = f"{title}: {r['figure']}"
            rows.append(r)
        print(f"  done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    print_table(rows, "Tocsin benchmarks")
    failed = [r["figure"] for r in rows if r.get("passed") is False]
    summary = (f"{len(failed)} of {sum(1 for r in rows if r.get('passed') is not None)} targets failed; "
               f"load average at end: {load_average()}; {time.perf_counter() - started:.0f} s in all")
    print("\n" + summary)
    if args.markdown:
        header = [f"Machine: {machine()}.", f"Load average at start: {load}, {summary}."]
        Path(args.markdown).write_text(markdown(rows, header))
    return 2 if crashed else (1 if failed else 0)


if __name__ == "__main__":
    raise SystemExit(main())
