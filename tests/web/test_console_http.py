"""Console over real HTTP: sign-in, cookies, CSRF, role matrix, board, incident page, audit, charts, SSE."""
from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.context import Context
from core.models import AuditEntry
from core.rbac import Actor
from tests.security.kit import login_form
from tests.web.console import console_client

OP = Actor("cli:op", "cli")


@pytest.fixture
async def console(make_ctx: Any) -> AsyncIterator[tuple[Context, TestClient]]:
    ctx = await make_ctx(worker={"enabled": False}, console={"session_secret": "console-test-secret"},
                         flapping={"reopens": 1, "within": "30m"})  # only inbound resolve/reopen cycles flap
    async with console_client(ctx, {"ada": "admin", "otto": "operator", "vera": "viewer"}) as client:
        yield ctx, client


async def post_login(client: TestClient, name: str, password: str, **kw: Any) -> Any:
    """Submit the sign-in form as a browser does: open it first, send its CSRF token back."""
    headers, csrf = await login_form(client)
    return await client.post("/login", data={"name": name, "password": password, "next": "/", "csrf": csrf},
                             headers=headers, **kw)


async def login(client: TestClient, name: str) -> str:
    resp = await post_login(client, name, f"{name}-password", allow_redirects=False)
    assert resp.status == 302, await resp.text()
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = await (await client.get("/")).text()
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


async def test_sign_in_is_required_and_audited(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/login?next=/"
    resp = await post_login(client, "ada", "wrong-password")
    assert resp.status == 401 and "Wrong name or password." in await resp.text()
    resp = await post_login(client, "nobody", "x")
    assert resp.status == 401
    await login(client, "ada")
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(AuditEntry.action, AuditEntry.actor).where(
            AuditEntry.action.like("login.%")))).all()
    assert rows == [("login.failure", "web:ada"), ("login.failure", "web:nobody"), ("login.success", "web:ada")]
    # a tampered cookie is no session
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({"tocsin_session": "e30.deadbeef"})
    assert (await client.get("/", allow_redirects=False)).status == 302


async def test_board_incident_page_and_acknowledge(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    await ctx.service.declare(actor=OP, title="Checkout <failing>", severity="sev1")
    csrf = await login(client, "otto")
    board = await (await client.get("/")).text()
    assert "INC-1" in board and "Checkout &lt;failing&gt;" in board  # escaped
    page = await (await client.get("/incidents/1")).text()
    assert 'id="ack"' in page and "INITIAL" in page and "alice" in page  # timeline + delivery matrix
    resp = await client.post("/incidents/1/ack", data={}, allow_redirects=False)
    assert resp.status == 403  # no CSRF token
    assert (await ctx.service.get("INC-1")).acknowledged_at is None
    resp = await client.post("/incidents/1/ack", data={"csrf": csrf})
    assert resp.status == 200 and resp.url.query_string == "msg=acked" and "Acknowledged." in await resp.text()
    inc = await ctx.service.get("INC-1")
    assert inc.acknowledged_by == "web:otto"
    resp = await client.post("/incidents/1/resolve", data={"csrf": csrf})
    assert (await ctx.service.get("INC-1")).state == "resolved"
    assert (await client.get("/incidents/99")).status == 404


async def test_board_says_how_many_older_incidents_it_does_not_show(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    for n in range(5):
        await ctx.service.declare(actor=OP, title=f"Incident {n}", severity="sev3")
    await login(client, "otto")
    board = await (await client.get("/?limit=3")).text()
    assert "INC-5" in board and "INC-3" in board and "INC-2" not in board
    assert "2 older incidents not shown (the newest 3 are)" in board and 'href="/?limit=6"' in board
    assert 'data-live="/board/rows?limit=3"' in board  # live updates keep the same page
    rows = await (await client.get("/board/rows?limit=3")).text()
    assert "2 older incidents not shown" in rows
    assert "not shown" not in await (await client.get("/")).text()


async def test_viewer_reads_but_cannot_act_or_audit(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    await ctx.service.declare(actor=OP, title="x", severity="sev3")
    csrf = await login(client, "vera")
    assert "INC-1" in await (await client.get("/")).text()
    page = await (await client.get("/incidents/1")).text()
    assert 'id="ack"' not in page and ">Audit<" not in page
    resp = await client.post("/incidents/1/ack", data={"csrf": csrf})
    assert "has role VIEWER" in await resp.text()
    assert (await ctx.service.get("INC-1")).acknowledged_at is None
    assert (await client.get("/audit")).status == 403
    assert (await client.post("/audit/verify", data={"csrf": csrf})).status == 403


async def test_audit_page_verifies_chain(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    csrf = await login(client, "ada")
    page = await (await client.get("/audit")).text()
    assert "user.add" in page and "login.success" in page
    resp = await client.post("/audit/verify", data={"csrf": csrf})
    assert "OK: audit chain intact" in await resp.text()


async def test_stats_page_draws_svg_charts(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    await ctx.service.declare(actor=OP, title="a", severity="sev1")
    await ctx.service.declare(actor=OP, title="b", severity="sev3")
    ctx.clock.advance(minutes=4)  # type: ignore[attr-defined]
    await ctx.service.acknowledge("INC-1", actor=OP)
    await login(client, "vera")
    page = await (await client.get("/stats")).text()
    # per day, times; no delivery finished (the worker is off), so no success chart but a sentence
    assert page.count("<svg class=\"chart\"") == 2 and "Incidents per day by severity (2)" in page
    assert "No delivery finished in this period." in page
    assert "sev1: 1</title>" in page and "4m00s" in page
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing fetched from elsewhere


async def test_board_streams_changes(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    await login(client, "vera")
    resp = await client.get("/events")
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert (await resp.content.readline()) == b": connected\n"
    await resp.content.readline()
    await ctx.service.declare(actor=OP, title="live", severity="sev2")
    line = await asyncio.wait_for(resp.content.readline(), 5)
    assert line == b"event: incident\n"
    data = await asyncio.wait_for(resp.content.readline(), 5)
    assert b'"kind": "declare"' in data
    resp.close()


async def test_incident_id_too_long_for_any_database_is_404(console: tuple[Context, TestClient]) -> None:
    _ctx, client = console
    await login(client, "ada")
    for path in ("/incidents/99999999999999999999999", "/incidents/9223372036854775808"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert "no incident INC-" in await resp.text()


async def test_notice_shows_only_fixed_texts(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    await ctx.service.declare(actor=OP, title="x", severity="sev3")
    csrf = await login(client, "otto")
    page = await (await client.get("/incidents/1?msg=Your+session+expired.+Call+%2B1-555-0100")).text()
    assert "session expired" not in page and 'id="notice"' not in page
    assert "Resolved." in await (await client.get("/incidents/1?msg=resolved")).text()
    # a refusal is said on the answer to the POST itself, never through a link
    await client.post("/incidents/1/resolve", data={"csrf": csrf})
    resp = await client.post("/incidents/1/ack", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 409 and "resolved" in await resp.text()


async def test_login_form_requires_its_csrf_token(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    resp = await client.post("/login", data={"name": "ada", "password": "ada-password", "next": "/"},
                             allow_redirects=False)
    assert resp.status == 403 and "sign in again" in await resp.text()
    # a token from another browser's form (another nonce) does not fit this one's cookie
    _other, foreign = await login_form(client)
    client.session.cookie_jar.clear()
    mine, _ = await login_form(client)
    resp = await client.post("/login", data={"name": "ada", "password": "ada-password", "csrf": foreign + "x"},
                             headers=mine, allow_redirects=False)
    assert resp.status == 403
    assert (await post_login(client, "ada", "ada-password", allow_redirects=False)).status == 302


async def test_failed_sign_ins_back_off_per_user_and_address(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    for _ in range(3):  # a few typos are free
        assert (await post_login(client, "ada", "wrong-password")).status == 401
    resp = await post_login(client, "ada", "wrong-password")
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    assert "try again in 1 seconds" in await resp.text()
    # while blocked even the right password is not checked
    resp = await post_login(client, "ada", "ada-password", allow_redirects=False)
    assert resp.status == 429
    ctx.clock.advance(seconds=2)  # type: ignore[attr-defined]
    resp = await post_login(client, "ada", "wrong-password")
    assert resp.status == 429 and resp.headers["Retry-After"] == "2"  # doubles
    ctx.clock.advance(seconds=3)  # type: ignore[attr-defined]
    assert (await post_login(client, "ada", "ada-password", allow_redirects=False)).status == 302
    # the address is throttled too, across names: 10 free failures from one address (5 were ada's)
    client.session.cookie_jar.clear()
    for i in range(4):
        await post_login(client, f"guess{i}", "x")
    statuses = [(await post_login(client, f"other{i}", "x")).status for i in range(2)]
    assert statuses == [401, 429]
    async with ctx.db.sessions() as s:
        throttled = (await s.execute(select(AuditEntry.actor).where(AuditEntry.action == "login.throttled"))).all()
    assert ("web:ada",) in throttled and ("web:other1",) in throttled


async def test_the_board_shows_active_maintenance_and_what_it_suppressed(
        console: tuple[Context, TestClient]) -> None:
    from datetime import timedelta

    from core.maintenance import Maintenance
    from core.rbac import Actor

    ctx, client = console
    await Maintenance(ctx.service).start(actor=Actor("cli:admin", "cli"), duration=timedelta(hours=2),
                                         match="source=alertmanager", reason="DB upgrade")
    await ctx.service.declare(actor=Actor("api:alertmanager", "x"), title="Disk <full>", severity="sev1",
                              source="alertmanager", event_type="alertmanager")
    await login(client, "otto")
    board = await (await client.get("/")).text()
    assert "M-1 [source=alertmanager] active" in board and "suppressed 1 event(s)" in board
    assert "Disk &lt;full&gt;" in board and "DB upgrade" in board


async def test_board_age_is_time_since_declared_and_resolve_time_has_its_own_column(
        console: tuple[Context, TestClient]) -> None:
    """Age means the same for open and resolved incidents (since declared); time to resolve is its own column."""
    ctx, client = console
    await ctx.service.declare(actor=OP, title="Resolved one", severity="sev2")
    ctx.clock.advance(minutes=30)  # type: ignore[attr-defined]
    await ctx.service.resolve("INC-1", actor=Actor("cli:admin", "cli"), text="fixed")
    await ctx.service.declare(actor=OP, title="Open one", severity="sev2")
    ctx.clock.advance(hours=2)  # type: ignore[attr-defined]
    await login(client, "otto")
    board = await (await client.get("/")).text()
    assert "<th>Age</th><th>Resolved in</th>" in board

    def cells(ref: str) -> list[str]:
        row = re.search(rf'<tr class="state-\w+" id="row-{ref}">(.*?)</tr>', board, re.S)
        assert row, board
        return [c.strip() for c in re.findall(r"<td>(.*?)</td>", row.group(1), re.S)]

    resolved, still_open = cells("1"), cells("2")
    assert resolved[-3:-1] == ["2h30m", "30m00s"], resolved  # age since declared, not frozen at resolve
    assert still_open[-3:-1] == ["2h00m", "—"], still_open


async def test_incident_page_says_why_each_recipient_was_paged(console: tuple[Context, TestClient]) -> None:
    """Each delivery cell shows its status and, next to it, the reason the recipient was paged."""
    ctx, client = console
    await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev1")
    d = await ctx.service.detail(1, actor=OP)
    reasons = {x.recipient: x.reason for x in d.deliveries if x.purpose != "surface"}
    assert reasons and all(reasons.values()), reasons
    await login(client, "otto")
    page = await (await client.get("/incidents/1")).text()
    for who, reason in reasons.items():
        row = re.search(rf"<tr><td>{who}</td>(.*?)</tr>", page, re.S)
        assert row, page
        cell = row.group(1)
        assert re.search(r'<span class="st st-\w+">\w+</span>', cell), cell
        assert f'<small class="muted">{reason}</small>' in cell, cell


async def test_incident_page_shows_roles_and_downloads_the_export(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    from bot.dispatch import run_text

    await ctx.service.declare(actor=OP, title="Checkout <failing>", severity="sev2")
    assert (await run_text(ctx.service, OP, "role INC-1 comms bob"))[1].ok
    assert (await run_text(ctx.service, OP, "note INC-1 Found the | bad index"))[1].ok
    await login(client, "vera")  # a viewer may read and download
    page = await (await client.get("/incidents/1")).text()
    assert '<dd id="role-commander">cli:op</dd>' in page and '<dd id="role-comms">bob</dd>' in page
    assert '<dd id="role-scribe">—</dd>' in page
    assert 'href="/incidents/1/export.md"' in page and "Found the | bad index" in page and "PAGED" in page
    resp = await client.get("/incidents/1/export.md")
    assert resp.status == 200 and resp.content_type == "text/markdown"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="INC-1-timeline.md"'
    text = await resp.text()
    assert text.startswith("# INC-1: Checkout \\<failing>\n") and "| Note | cli:op | Found the \\| bad index |" in text
    assert "- Comms: bob" in text and "## Postmortem" in text
    resp = await client.get("/incidents/1/export.json")
    assert resp.status == 200 and (await resp.json())["roles"]["comms"] == {"identity": "contact:bob", "name": "bob"}
    assert (await client.get("/incidents/9/export.md")).status == 404
    assert (await client.get("/incidents/1/export.pdf")).status == 404
    client.session.cookie_jar.clear()
    assert (await client.get("/incidents/1/export.md", allow_redirects=False)).status == 302  # sign-in first


async def test_board_and_incident_page_mark_a_flapping_incident(console: tuple[Context, TestClient]) -> None:
    """An incident held open as flapping (core/flapping.py) reads `Open (flapping)` on the board and its page."""
    ctx, client = console
    api = Actor("api:alertmanager", "x")
    for _ in range(2):
        out = await ctx.service.declare(actor=api, title="Link flaps", severity="sev2", correlation_key="k")
        await ctx.service.resolve(out.incident.id, actor=api)
    out = await ctx.service.declare(actor=api, title="Link flaps", severity="sev2", correlation_key="k")
    assert out.incident.flapping
    await login(client, "otto")
    board = await (await client.get("/")).text()
    assert "Open (flapping)" in board
    page = await (await client.get(f"/incidents/{out.incident.id}")).text()
    assert '<dd id="state">Open (flapping)</dd>' in page
