"""The console in a real headless Chromium, for the browser tests: ONE place for the driver's set-up, the
server it browses, the sign-in form and where screenshots go, so each test says only what it checks.

Needs Debian's chromium + chromium-driver (tests/setup_peers.py installs them in `make test`); skips with
the reason when they are missing, fails under CI.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot.context import Context
from bot.server import build_app

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_SECONDS = 15


def browser_or_skip() -> Any:
    """A headless Chrome driver, or skip (fail under CI) saying what is missing."""
    missing = [p for p in (CHROMIUM, DRIVER) if not os.path.exists(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # pragma: no cover - selenium is a test extra
        missing.append(f"selenium ({exc})")
    if missing:
        reason = f"headless browser test needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (required in CI)")
        pytest.skip(reason)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


@asynccontextmanager
async def browse(ctx: Context) -> AsyncIterator[tuple[Any, str]]:
    """The console app of `ctx` on a real port and a browser to open it: (driver, base URL); both are closed
    on the way out (the server too when the browser is missing and the test skips)."""
    app, _rt = await build_app(ctx)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        driver = await asyncio.to_thread(browser_or_skip)
        try:
            yield driver, str(server.make_url("")).rstrip("/")
        finally:
            await asyncio.to_thread(driver.quit)
    finally:
        await server.close()


async def sign_in(driver: Any, base: str, name: str, password: str, path: str = "/") -> None:
    """Open `path`, which sends the browser to the sign-in form, and sign in there as a person would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    run = asyncio.to_thread
    await run(driver.get, base + path)
    await run(WebDriverWait(driver, WAIT_SECONDS).until, ec.presence_of_element_located((By.ID, "name")))
    await run(lambda: driver.find_element(By.ID, "name").send_keys(name))
    await run(lambda: driver.find_element(By.ID, "password").send_keys(password))
    await run(lambda: driver.find_element(By.ID, "signin").click())


def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: TOCSIN_SCREENSHOTS=1 refreshes the pictures in docs/, else a temp dir."""
    return DOCS if os.environ.get("TOCSIN_SCREENSHOTS") else tmp_path
