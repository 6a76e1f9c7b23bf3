"""Socket Mode is a consumer: with several processes on PostgreSQL exactly one holds the connection, and
another takes over when it goes away."""
from __future__ import annotations

import asyncio

from bot.context import open_context
from bot.server import build_app
from tests.conftest import make_config


async def test_one_socket_mode_consumer_with_takeover(pg_url: str) -> None:
    cfg = make_config(pg_url, worker={"enabled": False}, console={"enabled": False},
                      slack={"enabled": True, "bot_token": "xoxb-test", "app_token": "xapp-test",
                             "api_url": "http://127.0.0.1:9/api/"})
    runtimes = []
    for _ in range(2):
        ctx = await open_context(cfg=cfg)
        app, rt = await build_app(ctx)
        runtimes.append((ctx, rt))
    adapters = [next(c for c in rt.components if c.name == "slack") for _, rt in runtimes]
    leaders = [next(c for c in rt.components if getattr(c, "name", "") == "leader:slack-socket-mode")
               for _, rt in runtimes]
    try:
        for lead in leaders:
            await lead.start()
        await asyncio.wait_for(_until(lambda: any(x.is_leader for x in leaders)), 10)
        assert sum(x.is_leader for x in leaders) == 1
        holder = 0 if leaders[0].is_leader else 1
        assert adapters[holder]._connector is not None and adapters[1 - holder]._connector is None
        await leaders[holder].close()  # the holder goes away
        await asyncio.wait_for(_until(lambda: leaders[1 - holder].is_leader), 20)
        assert adapters[1 - holder]._connector is not None
        assert adapters[holder]._connector is None
    finally:
        for lead in leaders:
            await lead.close()
        for adapter in adapters:
            await adapter.close()
        for ctx, rt in runtimes:
            await rt.http.close()
            await ctx.close()


async def _until(pred: object) -> None:
    while not pred():  # type: ignore[operator]
        await asyncio.sleep(0.05)
