"""Shared by the benchmarks: one table format (figure, value, target, pass/fail), the anchors every target
is measured against (raw loopback POST rate, raw SQLite commit rate, both measured in the same run), an
event-loop stall probe, child-process peers and optional cProfile capture of a measured section."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STALL_TARGET_MS = 100.0


def quick() -> bool:
    """TOCSIN_BENCH_QUICK=1: smaller sizes, only to see that everything runs (figures are not comparable)."""
    return os.environ.get("TOCSIN_BENCH_QUICK", "") not in ("", "0")


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (nan for no values)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def info(figure: str, value: Any) -> dict[str, Any]:
    """A row that is information only (no target)."""
    return {"figure": figure, "value": value, "target": None, "passed": None}


def target(figure: str, value: Any, shown: str, passed: bool) -> dict[str, Any]:
    return {"figure": figure, "value": value, "target": shown, "passed": bool(passed)}


def print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    if title:
        print(f"\n== {title}")
    w = max([len(str(r["figure"])) for r in rows] + [6])
    tw = max([len(str(r.get("target") or "")) for r in rows] + [6])
    print(f"{'figure':<{w}}  {'value':>14}  {'target':<{tw}}  result")
    print("-" * (w + tw + 26))
    for r in rows:
        passed = r.get("passed")
        verdict = "-" if passed is None else ("PASS" if passed else "FAIL")
        value = r["value"]
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        print(f"{r['figure']:<{w}}  {shown:>14}  {str(r.get('target') or ''):<{tw}}  {verdict}", flush=True)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


class ChildPeer:
    """A loopback stand-in in its own process, so its work shares neither our event loop nor our CPU.
    `script` is Python that starts its server(s), prints their port(s) on one line (space-separated), and
    serves until stdin closes."""

    def __init__(self, script: str, *, what: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-c", script], cwd=str(ROOT), env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line or not all(p.isdigit() for p in line.split()):
            self.close()
            raise RuntimeError(f"{what} did not start (said {line!r})")
        self.ports = [int(p) for p in line.split()]
        self.url = f"http://127.0.0.1:{self.ports[0]}"

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_HTTP_PEER = """
import asyncio, socket, sys
from aiohttp import web

async def main():
    count = 0

    async def hook(request):
        nonlocal count
        await request.read()
        count += 1
        return web.json_response({"ok": True})

    async def stats(_request):
        return web.json_response({"requests": count})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    print(sock.getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()

asyncio.run(main())
"""


class HttpPeer(ChildPeer):
    """The loopback webhook receiver: a plain aiohttp server in its own process that reads each request,
    counts it and answers 200 {"ok": true}; the fan-out target and the raw-POST anchor's server, so both
    figures hit the same server. Not the tests' HttpStandIn: that one keeps every request (headers, body,
    parsed JSON), and after the 30,000 requests of a full run its collector's passes over them slowed the
    runs that came last (the 20,000-recipient and PostgreSQL fan-outs) by a third."""

    def __init__(self) -> None:
        super().__init__(_HTTP_PEER, what="the stand-in HTTP peer")

    async def count(self, http: Any) -> int:
        async with http.get(self.url + "/_stats") as r:
            return int((await r.json())["requests"])


# --- anchors --------------------------------------------------------------------------------------------

ANCHOR_POSTS = 2000
ANCHOR_CONCURRENCY = 64
_anchors: dict[str, float] = {}


async def loopback_post_rate(peer: HttpPeer | None = None, *, n: int = ANCHOR_POSTS,
                             concurrency: int = ANCHOR_CONCURRENCY) -> float:
    """POSTs/s of a bare aiohttp client (one session, `concurrency` in flight) to the stand-in HTTP server
    in another process: the most any webhook fan-out from this process can reach on this machine."""
    import aiohttp

    own = peer is None
    peer = peer or HttpPeer()
    try:
        body = {"text": "anchor", "incident": "INC-0"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
            for _ in range(50):  # warm the connection pool
                async with http.post(peer.url + "/hook", json=body) as r:
                    await r.read()
            todo = iter(range(n))

            async def client() -> None:
                for _ in todo:
                    async with http.post(peer.url + "/hook", json=body) as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"anchor peer answered {r.status}")

            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            return n / (time.perf_counter() - t0)
    finally:
        if own:
            peer.close()


def sqlite_commit_rate(n: int = 5000) -> float:
    """Small write transactions/s of the stdlib sqlite3 driver on a file in the temp directory, with
    core/db.py's pragmas (WAL, synchronous=NORMAL, foreign_keys, busy_timeout) and BEGIN IMMEDIATE: one
    INSERT of an audit-sized row per transaction. The floor under every one-transaction-per-operation path."""
    with tempfile.TemporaryDirectory(prefix="tocsin-anchor-") as tmp:
        con = sqlite3.connect(os.path.join(tmp, "anchor.db"), isolation_level=None)
        try:
            for p in ("journal_mode=WAL", "busy_timeout=5000", "foreign_keys=ON", "synchronous=NORMAL"):
                con.execute(f"PRAGMA {p}")
            con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, "
                        "details TEXT NOT NULL, hash TEXT NOT NULL UNIQUE)")
            row = "x" * 64
            t0 = time.perf_counter()
            for i in range(n):
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT INTO t (ts, actor, details, hash) VALUES (?, ?, ?, ?)",
                            ("2026-01-01T00:00:00.000000Z", "cli:anchor", row, f"{i:064d}"))
                con.execute("COMMIT")
            return n / (time.perf_counter() - t0)
        finally:
            con.close()


async def anchors(peer: HttpPeer | None = None) -> dict[str, float]:
    """Both anchors, measured once per process (so `make bench` measures them once, in the same run as
    every bench, and a bench run on its own measures its own)."""
    if not _anchors:
        _anchors["post_rate"] = await loopback_post_rate(peer)
        _anchors["sqlite_commit_rate"] = sqlite_commit_rate()
        _anchors["load_average"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return dict(_anchors)


def anchor_rows(a: dict[str, float]) -> list[dict[str, Any]]:
    return [info(f"anchor: raw loopback POST/s (aiohttp, {ANCHOR_POSTS:,} at concurrency "
                 f"{ANCHOR_CONCURRENCY}, server in another process)", round(a["post_rate"])),
            info("anchor: raw SQLite commits/s (sqlite3, WAL, one small INSERT per transaction)",
                 round(a["sqlite_commit_rate"]))]


# --- event-loop stalls ----------------------------------------------------------------------------------


class StallProbe:
    """Longest event-loop stall while active: a task that asks to wake every `tick` seconds and records how
    late each wake-up is. A late wake-up means something held the loop (CPU work, a blocking call)."""

    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self.max_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.tick)
            self.max_ms = max(self.max_ms, (loop.time() - t0 - self.tick) * 1000)

    async def __aenter__(self) -> StallProbe:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def row(self, what: str) -> dict[str, Any]:
        v = round(self.max_ms, 1)
        return target(f"longest event-loop stall during {what} (ms)", v, f"< {STALL_TARGET_MS:.0f}",
                      v < STALL_TARGET_MS)


# --- profiling ------------------------------------------------------------------------------------------


@contextmanager
def profiled(name: str) -> Iterator[None]:
    """With TOCSIN_BENCH_PROFILE=DIR, cProfile the enclosed (measured) section into DIR/NAME.prof."""
    out = os.environ.get("TOCSIN_BENCH_PROFILE")
    if not out:
        yield
        return
    import cProfile

    Path(out).mkdir(parents=True, exist_ok=True)
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(str(Path(out) / f"{name}.prof"))


@asynccontextmanager
async def aprofiled(name: str) -> AsyncIterator[None]:
    with profiled(name):
        yield
