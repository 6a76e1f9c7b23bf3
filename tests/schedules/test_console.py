"""The console: who is on call on the board, each schedule as a two-week inline-SVG timeline with overrides
marked (HTTP), and a screenshot of the schedule page in a headless browser (docs/console-schedules.png)."""
from __future__ import annotations

import asyncio
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bot.server import build_app
from core.clock import FrozenClock
from core.rbac import Actor
from core.users import UserService
from tests.schedules.conftest import SCHEDULES, berlin
from tests.web.test_console_http import login
from tests.web.test_console_browser import DOCS, _browser_or_skip


async def make(make_ctx: Any, clock: Any) -> Any:
    ctx = await make_ctx(clock=clock, worker={"enabled": False}, console={"session_secret": "console-test-secret"},
                         **SCHEDULES)
    await UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder).add(name="vera", role="viewer", password="vera-password",
                                                        actor=Actor("cli:admin", "cli"))
    await ctx.service.schedules.override("primary", "dave", actor=Actor("cli:admin", "cli"),
                                         start=berlin(2026, 1, 8, 18), length=timedelta(hours=14))
    return ctx


async def test_board_and_schedule_page(make_ctx: Any, clock: FrozenClock) -> None:
    clock.set(berlin(2026, 1, 7, 12))
    ctx = await make(make_ctx, clock)
    app, _ = await build_app(ctx)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await login(client, "vera")
        board = await (await client.get("/")).text()
        assert re.search(r'<a href="/schedules/primary">primary</a>: <strong>alice</strong>\s*'
                         r'<small class="muted">until Thu 08 Jan 18:00 CET</small>', board)
        page = await (await client.get("/schedules/primary")).text()
        assert '<svg class="chart timeline"' in page
        assert page.count('class="override"') == 1 and "dave (override)" in page
        assert "dave: Thu 08 Jan 18:00 - Fri 09 Jan 08:00 Europe/Berlin (override #1)" in page
        assert "override #1: dave covers primary" in page
        assert (await client.get("/schedules/nope")).status == 404
    finally:
        await client.close()


async def test_schedule_page_in_a_browser(make_ctx: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from core.clock import SystemClock

    ctx = await make_ctx(clock=SystemClock(), worker={"enabled": False},
                         console={"session_secret": "console-test-secret"}, **SCHEDULES)
    await UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder).add(name="vera", role="viewer", password="vera-password",
                                                        actor=Actor("cli:admin", "cli"))
    await ctx.service.schedules.override("primary", "dave", actor=Actor("cli:admin", "cli"),
                                         start=ctx.clock.now() + timedelta(days=2), length=timedelta(hours=30))
    app, _ = await build_app(ctx)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    driver = await asyncio.to_thread(_browser_or_skip)
    run = asyncio.to_thread
    try:
        wait = WebDriverWait(driver, 15)
        await run(driver.get, base + "/schedules")
        await run(wait.until, ec.presence_of_element_located((By.ID, "name")))
        await run(lambda: driver.find_element(By.ID, "name").send_keys("vera"))
        await run(lambda: driver.find_element(By.ID, "password").send_keys("vera-password"))
        await run(lambda: driver.find_element(By.ID, "signin").click())
        await run(wait.until, ec.presence_of_element_located((By.ID, "schedule-primary")))
        assert driver.find_elements(By.CSS_SELECTOR, "svg.timeline rect.override")
        shots = DOCS if os.environ.get("TOCSIN_SCREENSHOTS") else tmp_path
        await run(driver.save_screenshot, str(shots / "console-schedules.png"))
    finally:
        await run(driver.quit)
        await server.close()
