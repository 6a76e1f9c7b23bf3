"""GET /api/v1/schedules/{name}.ics: iCalendar with the feed's own token (403 wrong, 404 unknown), parsed
back; overrides are marked."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from icalendar import Calendar

from bot.server import build_app
from core.clock import FrozenClock
from core.rbac import Actor
from tests.schedules.conftest import SCHEDULES, berlin

TOKEN = "feed-token-0123456789abcdef"


@pytest.fixture
async def served(make_ctx: Callable[..., Any], clock: FrozenClock) -> AsyncIterator[tuple[TestClient, Any]]:
    clock.set(berlin(2026, 1, 7, 12))
    sched = dict(SCHEDULES["schedules"][0], feed_token=TOKEN)
    ctx = await make_ctx(**{**SCHEDULES, "schedules": [sched, {**SCHEDULES["schedules"][0], "name": "quiet"}],
                            "worker": {"enabled": False}})
    app, _ = await build_app(ctx)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client, ctx
    await client.close()


async def test_feed_parses_back_with_overrides_marked(served: tuple[TestClient, Any]) -> None:
    client, ctx = served
    await ctx.service.schedules.override("primary", "dave", actor=Actor("cli:admin", "cli"),
                                         length=timedelta(hours=2))
    resp = await client.get(f"/api/v1/schedules/primary.ics?token={TOKEN}&weeks=2")
    assert resp.status == 200 and resp.content_type == "text/calendar"
    cal = Calendar.from_ical(await resp.read())
    events = list(cal.walk("VEVENT"))
    assert [str(e["SUMMARY"]) for e in events[:4]] == [
        "On call: dave (override)", "On call: alice", "On call: bob", "On call: alice"]
    assert events[0].decoded("DTSTART") == berlin(2026, 1, 7, 12)
    assert events[1].decoded("DTEND") == berlin(2026, 1, 12, 9)  # alice until the Monday handoff
    resp = await client.get(f"/api/v1/schedules/primary.ics?token={TOKEN}&contact=bob")
    mine = Calendar.from_ical(await resp.read())
    assert {str(e["SUMMARY"]) for e in mine.walk("VEVENT")} == {"On call: bob"}


@pytest.mark.parametrize("path, status, reason", [
    ("/api/v1/schedules/primary.ics?token=wrong", 403, "not schedule 'primary''s feed token"),
    ("/api/v1/schedules/primary.ics", 400, "token"),
    ("/api/v1/schedules/quiet.ics?token=" + TOKEN, 403, "it has none"),
    ("/api/v1/schedules/nope.ics?token=" + TOKEN, 404, "no schedule named 'nope'"),
    (f"/api/v1/schedules/primary.ics?token={TOKEN}&contact=zed", 404, "no contact named 'zed'"),
    (f"/api/v1/schedules/primary.ics?token={TOKEN}&weeks=99", 400, "weeks"),
])
async def test_feed_refusals(served: tuple[TestClient, Any], path: str, status: int, reason: str) -> None:
    client, _ = served
    resp = await client.get(path)
    assert resp.status == status
    assert reason in (await resp.text())
