"""Faults the issue lists that the worker's own tests show for a single delivery, here for a whole fan-out:
a receiver that refuses everything for a while and then recovers, and a receiver that throttles every
page with Retry-After (in seconds and as an HTTP date)."""
from __future__ import annotations

import email.utils
import time
from collections import defaultdict
from typing import Any

import aiohttp
import pytest

from core.delivery.policy import backoff_seconds
from tests.delivery.test_worker_kit import (
    declare,
    deliveries,
    fanout_overrides,
    open_ctx,
    start_worker,
    wait_statuses,
)
from tests.stand_ins.http import HttpStandIn, Recorded, Reply

OUTAGE_S = 1.5
RETRY = {"max_retries": 8, "base_seconds": 0.1, "factor": 2.0, "max_seconds": 0.8, "jitter": 0.0,
         "timeout_seconds": 3.0}


def retry_window(ctx: Any) -> float:
    """The longest a delivery may spend between its first and last attempt under the channel policy."""
    policy = ctx.cfg.channels.webhook.retry
    return sum(backoff_seconds(policy, attempt) for attempt in range(1, policy.max_retries + 1))


async def test_receiver_down_then_up_every_page_delivered_once_within_its_window(
        sqlite_url: str, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    n = 40
    started: list[float] = []
    answers: dict[str, list[tuple[float, int]]] = defaultdict(list)

    def outage(req: Recorded) -> tuple[int, str]:
        now = time.monotonic()
        started[:] = started or [now]
        status = 500 if now < started[0] + OUTAGE_S else 200
        answers[req.headers["Idempotency-Key"]].append((now, status))
        return status, "down" if status == 500 else "ok"

    peer.on("/hook/*", outage)
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, n, retry=RETRY, worker={"poll_seconds": 5}))
    comp = await start_worker(ctx, http)
    try:
        await declare(ctx)
        await wait_statuses(ctx, {"delivered": n}, timeout=30)
        rows = await deliveries(ctx)
    finally:
        await comp.close()
        await ctx.close()

    recovered = started[0] + OUTAGE_S
    window = retry_window(ctx)
    assert len(answers) == n
    hit = [k for k, a in answers.items() if a[0][1] == 500]
    assert len(hit) >= n // 2, "the outage did not catch the fan-out"
    for key, seen in answers.items():
        statuses = [s for _, s in seen]
        # Exactly one success, and it ended the retries: nothing was sent again after a 200.
        assert statuses.count(200) == 1 and statuses[-1] == 200, (key, statuses)
        assert len(statuses) <= RETRY["max_retries"] + 1, (key, statuses)
        first, last = seen[0][0], seen[-1][0]
        assert last - first <= window + 1.0, (key, last - first, window)
        if statuses[0] == 500:
            # Once the receiver is back, a waiting page is retried within one capped backoff (plus slack for
            # a loaded machine), not at the next fallback poll (5 s).
            after = next(t for t, s in seen if t >= recovered)
            assert after - recovered <= RETRY["max_seconds"] + 1.5, (key, after - recovered)
    assert all(r.status == "delivered" and 1 <= r.attempts <= RETRY["max_retries"] + 1 for r in rows)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_on_every_page_no_request_arrives_early(
        sqlite_url: str, peer: HttpStandIn, http: aiohttp.ClientSession, form: str) -> None:
    """Backoff alone would retry after 0.1 s; each page's first answer is a 429 (or 503) asking for more."""
    n = 12
    first: dict[str, tuple[float, float]] = {}
    """key -> (wall time of the first request, the earliest wall time the receiver allowed a retry)."""

    def throttle(req: Recorded) -> Reply:
        key = req.headers["Idempotency-Key"]
        if key in first:
            return Reply(200, "ok")
        if form == "seconds":
            wait = 1.2
            first[key] = (req.wall, req.wall + wait)
            return Reply(429, None, {"Retry-After": f"{wait}"})
        allowed = int(req.wall) + 2  # an HTTP date has whole seconds: retry no earlier than that second
        first[key] = (req.wall, float(allowed))
        return Reply(503, None, {"Retry-After": email.utils.formatdate(allowed, usegmt=True)})

    peer.on("/hook/*", throttle)
    # A minute between fallback polls and housekeeping passes: only the retry timer can bring a page back
    # within the bound below (a lost timer would show as ~20 s late, a poll as ~60 s).
    over = fanout_overrides(peer.url, n, retry={"base_seconds": 0.1, "jitter": 0.0},
                            worker={"poll_seconds": 60, "lease_seconds": 60})
    ctx = await open_ctx(sqlite_url, **over)
    comp = await start_worker(ctx, http)
    try:
        await declare(ctx)
        await wait_statuses(ctx, {"delivered": n}, timeout=20)
    finally:
        await comp.close()
        await ctx.close()
    by_key: dict[str, list[Recorded]] = defaultdict(list)
    for r in peer.requests:
        by_key[r.headers["Idempotency-Key"]].append(r)
    assert len(by_key) == n
    for key, reqs in by_key.items():
        assert len(reqs) == 2, (key, len(reqs))
        _, allowed = first[key]
        early = allowed - reqs[1].wall
        assert early <= 0.01, f"{key}: the retry came {early:.3f}s before Retry-After allowed it"
        assert reqs[1].wall - allowed < 10, "woken by the retry timer, not by a later poll"
