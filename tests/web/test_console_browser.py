"""The console in a real headless Chromium: sign in, watch an incident appear live, acknowledge it; the bell
counts new pages live. The browser set-up and sign-in are tests/web/browser.py's."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from core.rbac import Actor
from core.users import UserService
from tests.slack.standin import BOT_TOKEN, INCIDENT_CHANNEL, SIGNING_SECRET, SlackApi
from tests.web.browser import browse, shots_dir, sign_in


async def test_live_board_and_acknowledge_in_a_browser(make_ctx: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    slack = SlackApi()
    await slack.start()
    # The whole path: the worker runs, and Slack is on (against its Web API stand-in), so the console's
    # acknowledge must show up as an edit of the incident's Slack card.
    ctx = await make_ctx(console={"session_secret": "browser-test-secret"},
                         slack={"enabled": True, "bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET,
                                "incident_channel": INCIDENT_CHANNEL, "api_url": slack.base_url})
    await UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder).add(
        name="otto", role="operator", password="otto-password", actor=Actor("cli:admin", "cli"))
    await ctx.service.declare(actor=Actor("cli:op"), title="Search is slow", severity="sev3")
    run = asyncio.to_thread
    try:
        async with browse(ctx) as (driver, base):
            wait = WebDriverWait(driver, 15)
            await sign_in(driver, base, "otto", "otto-password")
            await run(wait.until, ec.presence_of_element_located((By.ID, "row-1")))
            await asyncio.sleep(1.0)  # let the EventSource connect

            # Declared elsewhere while the page is open: the row appears without a reload.
            await ctx.service.declare(actor=Actor("cli:op"), title="Payments failing", severity="sev1")
            row = await run(wait.until, ec.presence_of_element_located((By.ID, "row-2")))
            assert "Payments failing" in row.text
            await slack.wait_for(2, "/api/chat.postMessage", timeout=15)  # both incidents' cards are up
            shots = shots_dir(tmp_path)
            await run(driver.save_screenshot, str(shots / "console-board.png"))

            # Roles and a timeline note show on the incident page, with the postmortem export links.
            from bot.dispatch import run_text
            assert (await run_text(ctx.service, Actor("cli:op"), "role INC-2 comms bob"))[1].ok
            note = "note INC-2 Card processor answers 502"
            assert (await run_text(ctx.service, Actor("cli:op"), note))[1].ok
            # The board re-draws the row on each of those changes (a found element can go stale before it is
            # read), so read the link's address inside the page in one step and open it.
            href = await run(driver.execute_script, "return document.querySelector('#row-2 a').href")
            assert href.endswith("/incidents/2"), href
            await run(driver.get, href)
            await run(wait.until, ec.element_to_be_clickable((By.ID, "ack")))
            await run(lambda: driver.find_element(By.ID, "ack").click())
            notice = await run(wait.until, ec.presence_of_element_located((By.ID, "notice")))
            assert notice.text == "Acknowledged."
            assert "web:otto" in driver.find_element(By.ID, "acked").text
            assert driver.find_element(By.ID, "role-comms").text == "bob"
            export = driver.find_element(By.ID, "export-md").get_attribute("href")
            assert export.endswith("/incidents/2/export.md")
            await run(driver.save_screenshot, str(shots / "console-incident.png"))
            # The Slack card of INC-2 is edited to show who acknowledged (through the delivery queue).
            card = await ctx.cards.get(2, "slack")
            assert card is not None and card.channel == INCIDENT_CHANNEL
            updates: list[dict[str, Any]] = []
            for _ in range(150):
                updates = [u for u in slack.calls("chat.update")
                           if u.get("ts") == card.message_ref and "web:otto" in json.dumps(u, default=str)]
                if updates:
                    break
                await asyncio.sleep(0.1)
            assert updates, f"no chat.update of INC-2's card naming web:otto: {slack.calls('chat.update')}"
    finally:
        await slack.close()
    inc = await ctx.service.get("INC-2")
    assert inc.acknowledged_by == "web:otto"


async def test_bell_counts_new_pages_live_in_a_browser(make_ctx: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ctx = await make_ctx(worker={"enabled": False}, console={"session_secret": "browser-test-secret"},
                         contacts=[{"name": "alice", "email": "alice@example.com", "console_user": "otto"},
                                   {"name": "bob", "email": "bob@example.com"},
                                   {"name": "carol", "email": "carol@example.com"}])
    await UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder).add(name="otto", role="operator", password="otto-password",
                                                        actor=Actor("cli:admin", "cli"))
    run = asyncio.to_thread
    async with browse(ctx) as (driver, base):
        wait = WebDriverWait(driver, 15)
        await sign_in(driver, base, "otto", "otto-password")
        await run(wait.until, ec.presence_of_element_located((By.ID, "bell-button")))
        assert not (await run(driver.find_element, By.ID, "bell-count")).is_displayed()
        await asyncio.sleep(1.0)  # let the EventSource connect

        # Paged while the page is open: the unread count appears without a reload (server-sent events).
        await ctx.service.declare(actor=Actor("cli:op"), title="Payments failing", severity="sev1")
        await run(wait.until, ec.text_to_be_present_in_element((By.ID, "bell-count"), "1"))
        assert (await run(driver.find_element, By.ID, "bell-count")).is_displayed()
        await run(lambda: driver.find_element(By.ID, "bell-button").click())
        item = await run(wait.until, ec.visibility_of_element_located((By.CSS_SELECTOR, "#bell-list li.unread a")))
        assert item.text == "INC-1: Payments failing" and item.get_attribute("href").endswith("/incidents/1")
        await run(driver.save_screenshot, str(shots_dir(tmp_path) / "console-bell.png"))
        await run(wait.until, ec.invisibility_of_element_located((By.ID, "bell-count")))  # opened: read
    from core.bell import bell

    assert (await bell(ctx.db, ctx.cfg, "otto")).unread == 0
