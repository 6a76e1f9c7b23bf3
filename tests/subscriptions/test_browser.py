"""In a real headless Chromium: follow an incident from its page, and its next update raises the bell's unread
count live (server-sent events) and shows as a followed entry. Skips with the reason without chromium."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from core.rbac import Actor
from core.users import UserService
from tests.web.browser import browse, shots_dir, sign_in


async def test_follow_and_the_bell_counts_its_news_live(make_ctx: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ctx = await make_ctx(worker={"enabled": False}, console={"session_secret": "browser-test-secret"},
                         contacts=[{"name": "alice", "email": "alice@example.com"},
                                   {"name": "bob", "email": "bob@example.com"},
                                   {"name": "carol", "email": "carol@example.com", "console_user": "vera"}])
    await UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder).add(
        name="vera", role="viewer", password="vera-password", actor=Actor("cli:admin", "cli"))
    await ctx.service.declare(actor=Actor("cli:op"), title="Payments failing", severity="sev1")
    run = asyncio.to_thread
    async with browse(ctx) as (driver, base):
        wait = WebDriverWait(driver, 15)
        await sign_in(driver, base, "vera", "vera-password", path="/incidents/1")
        await run(wait.until, ec.element_to_be_clickable((By.ID, "follow")))
        assert not (await run(driver.find_element, By.ID, "bell-count")).is_displayed()  # carol was not paged
        await run(lambda: driver.find_element(By.ID, "follow").click())
        notice = await run(wait.until, ec.presence_of_element_located((By.ID, "notice")))
        assert notice.text.startswith("Following:")
        assert await run(driver.find_element, By.ID, "unfollow")
        await run(wait.until, ec.text_to_be_present_in_element((By.ID, "bell-count"), "1"))  # the declaration
        await asyncio.sleep(1.0)  # let the EventSource connect

        ctx.clock.advance(seconds=30)
        await ctx.service.update("INC-1", actor=Actor("cli:op"), text="Failover to the standby provider")
        await run(wait.until, ec.text_to_be_present_in_element((By.ID, "bell-count"), "2"))
        await run(lambda: driver.find_element(By.ID, "bell-button").click())
        first = await run(wait.until, ec.visibility_of_element_located(
            (By.CSS_SELECTOR, "#bell-list li.unread.followed")))
        assert "INC-1: Payments failing" in first.text and "UPDATE" in first.text and "following" in first.text
        assert "Failover to the standby provider" in first.text
        await run(driver.save_screenshot, str(shots_dir(tmp_path) / "console-bell-following.png"))
        await run(wait.until, ec.invisibility_of_element_located((By.ID, "bell-count")))  # opened: read
    from core.bell import bell

    assert (await bell(ctx.db, ctx.cfg, "vera")).unread == 0
