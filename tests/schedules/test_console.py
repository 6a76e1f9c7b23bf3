"""The console: who is on call on the board, each schedule as a two-week inline-SVG timeline with overrides
marked (HTTP), and a screenshot of the schedule page in a headless browser (docs/console-schedules.png)."""
from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from core.clock import FrozenClock
from core.rbac import Actor
from core.users import UserService
from tests.schedules.conftest import SCHEDULES, berlin
from tests.web.browser import browse, shots_dir, sign_in
from tests.web.console import console_client
from tests.web.test_console_http import login


async def make(make_ctx: Any, clock: Any, start: datetime, length: timedelta) -> Any:
    """The schedules config, the console user vera, and dave covering primary from `start` for `length`."""
    ctx = await make_ctx(clock=clock, worker={"enabled": False}, console={"session_secret": "console-test-secret"},
                         **SCHEDULES)
    await UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder).add(name="vera", role="viewer", password="vera-password",
                                                        actor=Actor("cli:admin", "cli"))
    await ctx.service.schedules.override("primary", "dave", actor=Actor("cli:admin", "cli"),
                                         start=start, length=length)
    return ctx


async def test_board_and_schedule_page(make_ctx: Any, clock: FrozenClock) -> None:
    clock.set(berlin(2026, 1, 7, 12))
    ctx = await make(make_ctx, clock, berlin(2026, 1, 8, 18), timedelta(hours=14))
    async with console_client(ctx) as client:
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


async def test_schedule_page_in_a_browser(make_ctx: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from core.clock import SystemClock

    clock = SystemClock()
    ctx = await make(make_ctx, clock, clock.now() + timedelta(days=2), timedelta(hours=30))
    run = asyncio.to_thread
    async with browse(ctx) as (driver, base):
        wait = WebDriverWait(driver, 15)
        await sign_in(driver, base, "vera", "vera-password", path="/schedules")
        await run(wait.until, ec.presence_of_element_located((By.ID, "schedule-primary")))
        assert driver.find_elements(By.CSS_SELECTOR, "svg.timeline rect.override")
        await run(driver.save_screenshot, str(shots_dir(tmp_path) / "console-schedules.png"))
