"""Faults: a worker that died holding leases, two workers racing, a locked SQLite database, work queued by
another process, and a real `tocsin run` killed with SIGKILL mid-fan-out and restarted."""
from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from sqlalchemy import func, select

from core.delivery import queue
from core.metrics import REGISTRY
from core.models import Delivery
from tests.procs import die_with_parent
from tests.conftest import BASE_CONFIG, deep_merge, free_port
from tests.delivery.test_worker_kit import (
    declare,
    deliveries,
    fanout_overrides,
    open_ctx,
    start_worker,
    statuses,
    wait_statuses,
)
from tests.stand_ins.http import HttpStandIn

ROOT = Path(__file__).resolve().parents[2]


def keys_sent(peer: HttpStandIn) -> Counter[str]:
    return Counter(r.headers["Idempotency-Key"] for r in peer.requests)


async def test_leases_of_a_dead_worker_expire_and_are_picked_up(sqlite_url: str, peer: HttpStandIn,
                                                                 http: aiohttp.ClientSession) -> None:
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 4, worker={"lease_seconds": 0.6,
                                                                              "poll_seconds": 0.1}))
    labels = {"channel": "webhook", "reason": "lease_expired"}
    before = REGISTRY.get_sample_value("tocsin_retries_total", labels) or 0
    await declare(ctx)
    # A previous process claimed everything, then was killed: its leases run out, nobody renews them.
    async with ctx.db.transaction() as s:
        crashed = await queue.claim(s, owner="crashed-host:1", now=ctx.clock.now(), lease_seconds=0.6,
                                    limit=10)
    assert len(crashed) == 4
    comp = await start_worker(ctx, http)
    try:
        await wait_statuses(ctx, {"delivered": 4}, timeout=5)
        rows = await deliveries(ctx)
        assert {r.attempts for r in rows} == {2}  # the lost attempt stays counted
        assert sorted(keys_sent(peer).values()) == [1, 1, 1, 1]
    finally:
        await comp.close()
        await ctx.close()
    after = REGISTRY.get_sample_value("tocsin_retries_total", labels)
    assert (after or 0) - before == 4


async def test_two_workers_never_send_the_same_delivery(db_url: str, peer: HttpStandIn) -> None:
    """Two workers with their own engines and sessions (as two processes on one database would be)."""
    async def slowish(_req: Any) -> Any:
        await asyncio.sleep(0.002)
        return (200, "ok")

    peer.on("/hook/*", slowish)
    over = fanout_overrides(peer.url, 300, concurrency=16, worker={"batch_size": 20})
    a = await open_ctx(db_url, **over)
    b = await open_ctx(db_url, **over)
    async with aiohttp.ClientSession() as h1, aiohttp.ClientSession() as h2:
        wa = await start_worker(a, h1)
        wb = await start_worker(b, h2)
        try:
            await declare(a)
            wb.worker.notify()  # b hears about it like a NOTIFY/poll would tell it
            await wait_statuses(a, {"delivered": 300}, timeout=30)
        finally:
            await wa.close()
            await wb.close()
    try:
        sent = keys_sent(peer)
        assert len(sent) == 300 and set(sent.values()) == {1}
        # Both really worked.
        assert wa.worker.stats["delivered"] > 0 and wb.worker.stats["delivered"] > 0
        assert wa.worker.stats["delivered"] + wb.worker.stats["delivered"] == 300
    finally:
        await a.close()
        await b.close()


async def test_sqlite_locked_for_a_moment_does_not_crash_the_worker(tmp_path: Path, peer: HttpStandIn,
                                                                    http: aiohttp.ClientSession,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite+aiosqlite:///{path}"

    gate = asyncio.Event()
    answered = 0

    async def gated(_req: Any) -> Any:
        """The first 20 pages go through; the rest wait until the database is locked (so outcomes must be
        recorded while another program holds the lock, however fast or slow this machine is)."""
        nonlocal answered
        answered += 1
        if answered > 20:
            await gate.wait()
        return (200, "ok")

    peer.on("/hook/*", gated)
    ctx = await open_ctx(url, database={"busy_timeout_ms": 50},
                         **fanout_overrides(peer.url, 200, concurrency=4))
    comp = await start_worker(ctx, http)
    try:
        await declare(ctx)
        await peer.wait_for(21, "/hook/*")
        # Another program holds the write lock for a while (a backup, a long migration, an admin's shell).
        # (In a thread: waiting for the lock must not block the loop the worker runs on.)
        other = sqlite3.connect(str(path), timeout=5, isolation_level=None, check_same_thread=False)
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
        held_at = len(peer.requests)
        gate.set()  # answers flow now, while the lock is held
        await asyncio.sleep(1.0)
        assert comp.worker.alive
        await asyncio.to_thread(other.execute, "COMMIT")
        other.close()
        await wait_statuses(ctx, {"delivered": 200}, timeout=20)
        assert comp.worker.alive
        sent = keys_sent(peer)
        assert len(sent) == 200 and set(sent.values()) == {1}
        assert held_at < 200
    finally:
        await comp.close()
        await ctx.close()
    events = {r.getMessage() for r in caplog.records}
    assert events & {"notify.worker.db_error", "notify.worker.record_failed"}, "the lock never bit"


async def test_work_queued_by_another_process_wakes_the_worker_on_postgresql(
        pg_url: str, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    """LISTEN/NOTIFY: the fallback poll is a minute here, yet another process's declare is sent at once."""
    over = fanout_overrides(peer.url, 3, worker={"poll_seconds": 60})
    mine = await open_ctx(pg_url, **over)
    other = await open_ctx(pg_url, **over)  # its service has no listener: only the NOTIFY can wake us
    comp = await start_worker(mine, http)
    try:
        await asyncio.sleep(0.3)
        await declare(other)
        t0 = time.monotonic()
        await wait_statuses(mine, {"delivered": 3}, timeout=20)
        # Far below the 60 s poll and below the 10 s housekeeping pass (which used to find the work when the
        # NOTIFY woke the dispatcher without making it claim), with room for a loaded machine.
        assert time.monotonic() - t0 < 5
    finally:
        await comp.close()
        await mine.close()
        await other.close()


# --- a real process, killed mid-fan-out ----------------------------------------------------------------


def _write_config(tmp_path: Path, *, db: Path, peer_url: str, n: int) -> Path:
    over = fanout_overrides(peer_url, n, concurrency=16, worker={"lease_seconds": 2, "poll_seconds": 0.2,
                                                                   "batch_size": 50})
    over["channels"]["webhook"]["retry"]["timeout_seconds"] = 1.5
    data = deep_merge(deep_merge(BASE_CONFIG, over), {"database": {"url": f"sqlite+aiosqlite:///{db}"},
                                                      "logging": {"level": "WARNING", "format": "json"}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _start(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "bot", "--config", str(config), "run", "--port", str(port)]
    return subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)


async def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"tocsin run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass  # not listening yet
            await asyncio.sleep(0.1)
    raise AssertionError(f"tocsin run not ready after {timeout}s:\n{log.read_text()[-3000:]}")


async def test_sigkill_mid_fanout_then_restart_delivers_everything(tmp_path: Path, peer: HttpStandIn) -> None:
    n = 1000

    async def slowish(_req: Any) -> Any:
        await asyncio.sleep(0.01)
        return (200, "ok")

    peer.on("/hook/*", slowish)
    db_path = tmp_path / "tocsin.db"
    config = _write_config(tmp_path, db=db_path, peer_url=peer.url, n=n)
    log = tmp_path / "server.log"
    port = free_port()
    proc = _start(config, port, log)
    try:
        await _wait_ready(port, proc, log)
        ctx = await open_ctx(f"sqlite+aiosqlite:///{db_path}", **fanout_overrides(peer.url, n))
        try:
            out = await declare(ctx, title="fan-out under fire", severity="sev1")
            assert out.queued == n
            await peer.wait_for(250, "/hook/*", timeout=30)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            st = await statuses(ctx)
            in_flight = st.get("sending", 0)
            delivered_before = st.get("delivered", 0)
            assert 0 < delivered_before < n, st  # really mid-fan-out
            arrived_before = len(peer.requests)

            proc = _start(config, port, log)
            await _wait_ready(port, proc, log)
            await wait_statuses(ctx, {"delivered": n}, timeout=60)
            async with ctx.db.sessions() as s:
                attempts_total = (await s.execute(select(func.sum(Delivery.attempts)))).scalar_one()
        finally:
            await ctx.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    sent = keys_sent(peer)
    duplicates = sum(sent.values()) - len(sent)
    print(f"\nSIGKILL: delivered before={delivered_before} in flight={in_flight} duplicates={duplicates}")
    assert len(sent) == n, f"{n - len(sent)} deliveries never reached the peer"
    assert duplicates <= in_flight, (duplicates, in_flight, arrived_before)
    assert attempts_total >= n
    assert proc.returncode == 0, log.read_text()[-3000:]
