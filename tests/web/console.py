"""The console over real HTTP for tests: its users and the app under an aiohttp test client, in ONE place so
each test module's fixture says only its config."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp.test_utils import TestClient, TestServer

from bot.context import Context
from bot.server import build_app
from core.rbac import Actor
from core.users import UserService


@asynccontextmanager
async def console_client(ctx: Context, users: dict[str, str] | None = None) -> AsyncIterator[TestClient]:
    """Add the console `users` (name -> role; each one's password is "<name>-password"), then serve the app
    of `ctx` to a started test client, closed on the way out."""
    accounts = UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder)
    for name, role in (users or {}).items():
        await accounts.add(name=name, role=role, password=f"{name}-password", actor=Actor("cli:admin", "cli"))
    app, _rt = await build_app(ctx)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
