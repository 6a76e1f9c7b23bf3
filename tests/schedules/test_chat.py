"""`/incident oncall ...` through the one grammar and dispatcher, tested through the real Slack, Telegram and
Teams adapters against their stand-ins; and the same Commands from the CLI (`tocsin oncall`)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botbuilder.core.adapters import TestAdapter
from sqlalchemy import select

from bot.commands import Command, UsageError, parse
from bot.teams.bot import TeamsBot
from core.clock import FrozenClock
from core.models import ScheduleOverride
from tests.schedules.conftest import SCHEDULES, berlin
from tests.slack.conftest import SlackEnv, make_slack_env, slack_api  # noqa: F401  (fixtures)
from tests.teams.helpers import teams_msg
from tests.telegram.botapi import command
from tests.telegram.conftest import Harness, api, harness  # noqa: F401  (fixtures)


@pytest.mark.parametrize("text, expected", [
    ("/incident oncall", Command("oncall", target="show")),
    ("oncall primary", Command("oncall", target="show", schedule="primary")),
    ("/incident oncall override primary dave 2h",
     Command("oncall", target="override", schedule="primary", contact="dave", duration="2h")),
    ("oncall take primary 90m", Command("oncall", target="take", schedule="primary", duration="90m")),
    ("oncall cancel #12", Command("oncall", target="cancel", text="12")),
])
def test_grammar(text: str, expected: Command) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize("text, problem", [
    ("oncall override primary dave", "needs a schedule, a contact and a duration"),
    ("oncall take primary", "needs a schedule and a duration"),
    ("oncall cancel x", "needs an override id"),
    ("oncall primary secondary", "at most one schedule"),
])
def test_grammar_errors_show_usage(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse(text)
    assert problem in exc.value.text and "Usage: /incident oncall" in exc.value.text


async def overrides(ctx: Any) -> list[tuple[str, str]]:
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(ScheduleOverride).order_by(ScheduleOverride.id))).scalars().all()
    return [(r.contact, r.created_by) for r in rows]


async def test_slack(make_slack_env: Callable[..., Any], clock: FrozenClock) -> None:  # noqa: F811
    clock.set(berlin(2026, 1, 7, 12))
    env: SlackEnv = await make_slack_env(**SCHEDULES)
    _, [answer] = await env.command("oncall", user="UOP")
    assert answer["response_type"] == "ephemeral"
    assert "now:  alice - layer weekly, until Mon 12 Jan 09:00 CET" in answer["text"]
    assert "next: bob - layer weekly, from Mon 12 Jan 09:00 CET" in answer["text"]
    _, [answer] = await env.command("oncall override primary dave 2h", user="UOP")
    assert answer["text"].startswith("Not allowed: slack:UOP has role OPERATOR: only MANAGER or ADMIN")
    _, [answer] = await env.command("oncall override primary nobody 2h", user="UADMIN")
    assert answer["text"].startswith("unknown contact 'nobody'")
    _, [answer] = await env.command("oncall override primary dave 2h", user="UADMIN")
    assert answer["response_type"] == "in_channel"
    assert answer["text"].startswith("override #1: dave covers primary from Wed 07 Jan 12:00 CET to Wed 07 Jan 14:00")
    _, [answer] = await env.command("oncall take primary 2h", user="UBOB")
    assert "overlaps override #1 (dave" in answer["text"]
    _, [answer] = await env.command("oncall take primary 2h", user="UDAVE")
    assert "slack:UDAVE is not a member of schedule 'primary'" in answer["text"]
    _, [answer] = await env.command("oncall primary")
    assert "now:  dave - override #1, until Wed 07 Jan 14:00 CET" in answer["text"]
    assert await overrides(env.ctx) == [("dave", "slack:UADMIN")]


async def test_telegram(harness: Callable[..., Any], clock: FrozenClock) -> None:  # noqa: F811
    clock.set(berlin(2026, 1, 7, 12))
    h: Harness = await harness(SCHEDULES)
    await h.post(command(1, "/incident oncall take primary 3h", user_id=4343))
    await h.post(command(2, "/incident oncall", user_id=4242))
    await h.post(command(3, "/incident oncall override primary dave 1h", user_id=4242))
    take, show, refused = [c.params["text"] for c in await h.api.wait_calls("sendMessage", 3)]
    assert take.startswith("override #1: bob covers primary from Wed 07 Jan 12:00 CET to Wed 07 Jan 15:00")
    assert "now:  bob - override #1, until Wed 07 Jan 15:00 CET" in show
    assert "next: alice - layer weekly, from Wed 07 Jan 15:00 CET" in show
    assert refused.startswith("Not allowed: telegram:4242")
    assert await overrides(h.ctx) == [("bob", "telegram:4343")]


async def test_teams(make_ctx: Callable[..., Any], clock: FrozenClock) -> None:
    clock.set(berlin(2026, 1, 7, 12))
    ctx = await make_ctx(**SCHEDULES)
    adapter = TestAdapter(TeamsBot(service=ctx.service, seen=ctx.seen, cards_follow=False).on_turn)
    await adapter.send(teams_msg("<at>Tocsin</at> incident oncall take primary 1h", "aad-alice"))
    await adapter.send(teams_msg("incident oncall override primary carol 1d", "aad-bob"))
    await adapter.send(teams_msg("incident oncall cancel 1", "aad-admin"))
    await adapter.send(teams_msg("incident oncall primary", "aad-bob"))
    took, refused, cancelled, show = (a.text for a in adapter.activity_buffer)
    assert "override #1: alice covers primary" in took
    assert "Not allowed: teams:aad-bob (contact bob) has role OPERATOR" in refused
    assert "Cancelled override #1 (alice on primary)" in cancelled
    assert "now:  alice - layer weekly" in show
