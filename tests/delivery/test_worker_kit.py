"""Shared builders for the queue/worker/fault tests: a context on the real clock, fan-out configs that page
webhook destinations on a loopback stand-in, a started worker, and polling helpers. (No tests here.)"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from sqlalchemy import func, select

from bot.context import Context, open_context
from bot.delivery_mount import WorkerComponent, build_worker
from core.clock import SystemClock
from core.models import AuditEntry, Delivery, DeliveryAttempt
from core.rbac import Actor
from tests.conftest import make_config

ADMIN = Actor("cli:admin", source="test")
FAST = {"max_retries": 2, "base_seconds": 0.05, "factor": 2.0, "max_seconds": 1.0, "jitter": 0.0,
        "timeout_seconds": 2.0}


def fanout_overrides(base_url: str, n: int, *, retry: dict[str, Any] | None = None, concurrency: int = 8,
                     worker: dict[str, Any] | None = None, path: str = "/hook") -> dict[str, Any]:
    """Config sections that make every incident page `n` webhook destinations at `{base_url}{path}/<i>`."""
    names = [f"hook-{i}" for i in range(n)]
    return {
        "destinations": [{"name": nm, "channel": "webhook", "url": f"{base_url}{path}/{i}"}
                         for i, nm in enumerate(names)],
        "routing": {"default_targets": {"lists": [], "destinations": names}, "rules": []},
        "channels": {"webhook": {"outbox": False, "concurrency": concurrency,
                                 "retry": {**FAST, **(retry or {})}}},
        "worker": {"lease_seconds": 30, "poll_seconds": 0.5, "batch_size": 100, **(worker or {})},
    }


async def open_ctx(db_url: str, **overrides: Any) -> Context:
    """A migrated context on the wall clock (retries and leases must really come due)."""
    return await open_context(cfg=make_config(db_url, **overrides), clock=SystemClock())


async def start_worker(ctx: Context, http: aiohttp.ClientSession, **kw: Any) -> WorkerComponent:
    comp = build_worker(ctx, http=http, **kw)
    await comp.start()
    return comp


async def declare(ctx: Context, title: str = "db down", severity: str = "sev2") -> Any:
    return await ctx.service.declare(actor=ADMIN, title=title, severity=severity)


async def statuses(ctx: Context) -> dict[str, int]:
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery.status, func.count()).group_by(Delivery.status))).all()
    return {st: int(n) for st, n in rows}


async def deliveries(ctx: Context) -> list[Delivery]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(Delivery).order_by(Delivery.id))).scalars().all())


async def attempts(ctx: Context, delivery_id: int | None = None) -> list[DeliveryAttempt]:
    q = select(DeliveryAttempt).order_by(DeliveryAttempt.id)
    if delivery_id is not None:
        q = q.where(DeliveryAttempt.delivery_id == delivery_id)
    async with ctx.db.sessions() as s:
        return list((await s.execute(q)).scalars().all())


async def audit_actions(ctx: Context, prefix: str = "delivery.") -> list[AuditEntry]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(AuditEntry).where(AuditEntry.action.like(prefix + "%"))
                                     .order_by(AuditEntry.seq))).scalars().all())


async def wait_until(check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, every: float = 0.05,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


async def wait_statuses(ctx: Context, expected: dict[str, int], *, timeout: float = 10.0) -> None:
    last: dict[str, int] = {}

    async def check() -> bool:
        nonlocal last
        last = await statuses(ctx)
        return last == expected

    try:
        await wait_until(check, timeout=timeout, what=f"statuses {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {last}") from None
