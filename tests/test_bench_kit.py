"""The measuring kit of `make bench` (bench/common.py): the stall probe sees a blocked event loop, and the
anchors measure real work (a server in another process, SQLite commits). The whole `make bench` quick pass
takes about 1.5 minutes, too long for the suite; run it with `TOCSIN_BENCH_QUICK=1 make bench`."""
from __future__ import annotations

import asyncio
import os
import time

import aiohttp

from bench.common import HttpPeer, StallProbe, loopback_post_rate, sqlite_commit_rate


async def test_stall_probe_reports_a_blocking_call() -> None:
    async with StallProbe() as free:
        await asyncio.sleep(0.1)
    async with StallProbe() as blocked:
        await asyncio.sleep(0.02)
        time.sleep(0.25)  # what a CPU-bound render or a blocking call does to every other task
        await asyncio.sleep(0.02)
    assert blocked.max_ms >= 200
    assert free.max_ms < blocked.max_ms
    assert blocked.row("x")["passed"] is False


async def test_anchors_measure_a_server_in_another_process_and_sqlite_commits() -> None:
    peer = HttpPeer()
    try:
        assert peer.proc.pid != os.getpid()
        async with aiohttp.ClientSession() as http:
            before = await peer.count(http)
            rate = await loopback_post_rate(peer, n=200, concurrency=8)
            received = await peer.count(http) - before
    finally:
        peer.close()
    assert rate > 0
    assert received == 200 + 50  # the measured POSTs and the warm-up ones all reached the server
    assert sqlite_commit_rate(n=200) > 0
