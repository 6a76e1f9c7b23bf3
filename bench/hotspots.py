"""cProfile the measured sections of the fan-out, the escalation storm and burst, the event-API storm and
single audit appends, and print each one's top cumulative and own-time costs (the map for optimising).

    .venv/bin/python bench/hotspots.py [--out DIR] [--top 30] [--only fanout,escalation,events,audit]

cProfile sees the event loop's thread only: time the driver threads (aiosqlite) spend in SQLite shows as
the loop waiting in select/epoll, and the profiler itself slows Python code roughly 1.5-2x, so read the
shares, not the absolute times (those are in `make bench`).
"""
from __future__ import annotations

import argparse
import os
import pstats
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _strip(path: str) -> str:
    for prefix in (str(ROOT) + "/", "/site-packages/"):
        if prefix in path:
            return path.split(prefix, 1)[1]
    return path


def report(path: Path, top: int) -> None:
    st = pstats.Stats(str(path))
    total = st.total_tt  # type: ignore[attr-defined]
    print(f"\n===== {path.stem}: {total:.2f} s profiled on the loop thread")
    for key, title in (("cumulative", "cumulative"), ("tottime", "own time")):
        st.sort_stats(key)
        print(f"--- top {top} by {title}: ncalls, own s, cumulative s (share of total), function")
        for func in st.fcn_list[:top]:  # type: ignore[attr-defined]
            cc, nc, tt, ct, _callers = st.stats[func]  # type: ignore[attr-defined]
            file, line, name = func
            where = f"{_strip(file)}:{line}({name})" if line else name
            print(f"{nc:>9} {tt:8.3f} {ct:8.3f} ({ct / total:6.1%})  {where}")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", help="directory for the .prof files (default: a temporary one)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--only", default="fanout,escalation,events,audit")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="tocsin-profile-"))
    os.environ["TOCSIN_BENCH_PROFILE"] = str(out)
    only = set(args.only.split(","))
    if "fanout" in only:
        from bench import fanout

        fanout.run(n=2000, runs=1, sizes=[2000], pg=False)
    if "escalation" in only:
        from bench import escalation

        escalation.run(incidents=2000, spread_seconds=10.0, quick=True)
    if "events" in only:
        from bench import events_storm

        events_storm.run(n=2000)
    if "audit" in only:
        from bench import audit_verify

        audit_verify.run(entries=20_000)
    for prof in sorted(out.glob("*.prof")):
        report(prof, args.top)
    print(f"\n(profiles kept in {out}; open one with `python -m pstats FILE`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
