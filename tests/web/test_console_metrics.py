"""The console's metrics page and its CSV download over real HTTP (sign-in, session cookie): the same
figures as `tocsin report`, for the period and grouping the page's form asks for."""
from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from bot.context import Context
from core.rbac import Actor
from core.users import UserService
from tests.web.browser import browse, shots_dir, sign_in
from tests.web.test_console_http import OP, console, login  # noqa: F401  (console is a fixture)


async def incidents(ctx: Context) -> None:
    """Two incidents on the frozen clock: INC-1 sev1 acked after 4m, resolved after 30m; INC-2 sev3 acked
    after 10m (declared 1m after INC-1), still open."""
    clock: Any = ctx.clock
    await ctx.service.declare(actor=OP, title="a", severity="sev1")
    clock.advance(minutes=1)
    await ctx.service.declare(actor=OP, title="b", severity="sev3")
    clock.advance(minutes=3)
    await ctx.service.acknowledge("INC-1", actor=OP)
    clock.advance(minutes=7)
    await ctx.service.acknowledge("INC-2", actor=OP)
    clock.advance(minutes=19)
    await ctx.service.resolve("INC-1", actor=OP)
    clock.advance(hours=1)


async def test_metrics_page_shows_the_report_tables(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    await incidents(ctx)
    await login(client, "vera")
    page = await (await client.get("/stats")).text()
    assert 'href="/stats">Metrics</a>' in page and page.count('<svg class="chart"') == 2
    # MTTA 4m and 10m: median 7m, p90 10m; MTTR 30m.
    assert ('<tr class="total"><td>all</td><td class="num">2</td><td class="num">2</td>\n    <td class="num">1</td>'
            '<td class="num">7m00s</td><td class="num">10m00s</td>\n    <td class="num">30m00s</td>'
            '<td class="num">30m00s</td>') in page
    assert '<td>sev1</td><td class="num">1</td>' in page and '<td>sev3</td><td class="num">1</td>' in page
    # alice and bob (list oncall) are paged for both; the clock starts at 00:00 UTC, inside the default night
    # (22:00-07:00 UTC), so both of alice's pages are night pages.
    assert '<td>alice</td><td class="num">2</td><td class="num">2</td>' in page
    assert 'href="/stats.csv?since=30d&amp;by=severity"' in page
    page = await (await client.get("/stats?since=12h&by=source")).text()
    assert '<option value="source" selected>' in page and 'value="12h"' in page
    assert "<th>Source</th>" in page and '<td>cli</td><td class="num">2</td>' in page


async def test_csv_download(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    await incidents(ctx)
    await login(client, "vera")
    resp = await client.get("/stats.csv?since=2d&by=severity")
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="tocsin-report-')
    got = {(r["section"], r["group"], r["metric"]): r["value"] for r in csv.DictReader(io.StringIO(await resp.text()))}
    assert got[("incidents", "all", "mtta_median_seconds")] == "420"
    assert got[("incidents", "all", "mtta_p90_seconds")] == "600"
    assert got[("incidents", "sev1", "mttr_median_seconds")] == "1800"
    assert got[("incidents", "sev3", "mttr_median_seconds")] == ""
    assert got[("pages", "alice", "pages")] == "2" and got[("period", "", "by")] == "severity"
    resp = await client.get("/stats.csv", params={"since": "2\n d", "by": "contact"})
    assert resp.status == 200
    assert resp.headers["Content-Disposition"].endswith('-2d-by-contact.csv"')


async def test_bad_input_is_a_clear_400(console: tuple[Context, TestClient]) -> None:
    _ctx, client = console
    assert (await client.get("/stats.csv", allow_redirects=False)).status == 302  # sign in first
    await login(client, "vera")
    resp = await client.get("/stats?since=3x")
    assert resp.status == 400 and "since must be a duration with a unit, like 30d" in await resp.text()
    resp = await client.get("/stats?by=colour")
    assert resp.status == 400 and "by must be one of severity, source, schedule, contact" in await resp.text()
    resp = await client.get("/stats.csv?since=0d")
    assert resp.status == 400 and (await resp.json()) == {"error": "since must be longer than zero (got '0d')"}


async def test_metrics_page_in_a_browser(make_ctx: Any, tmp_path: Path) -> None:
    """Pick another grouping in the page's form; the tables follow and the CSV link keeps the choice."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ctx = await make_ctx(worker={"enabled": False}, console={"session_secret": "browser-test-secret"})
    await UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder).add(
        name="vera", role="viewer", password="vera-password", actor=Actor("cli:admin", "cli"))
    await incidents(ctx)
    run = asyncio.to_thread
    async with browse(ctx) as (driver, base):
        wait = WebDriverWait(driver, 15)
        await sign_in(driver, base, "vera", "vera-password", path="/stats")
        table = await run(wait.until, ec.presence_of_element_located((By.ID, "incidents")))
        assert "sev1" in table.text and "7m00s" in table.text
        await run(lambda: Select(driver.find_element(By.ID, "by")).select_by_value("contact"))
        await run(lambda: driver.find_element(By.CSS_SELECTOR, ".report-form button").click())
        await run(wait.until, ec.url_contains("by=contact"))
        table = await run(driver.find_element, By.ID, "incidents")
        assert "Contact" in table.text and "alice" in table.text
        link = await run(driver.find_element, By.ID, "csv")
        assert link.get_attribute("href").endswith("/stats.csv?since=30d&by=contact")
        await run(driver.save_screenshot, str(shots_dir(tmp_path) / "console-metrics.png"))
