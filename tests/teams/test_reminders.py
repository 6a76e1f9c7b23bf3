"""Reminders in Teams, over real HTTP against the Bot Connector stand-in: the reminder is a card in the
incident card's thread with a Snooze action (Action.Execute, Action.Submit fallback). Execute answers with
the reminder card replaced by the answer; Submit answers in the thread; both run the one snooze; a resolved
incident is refused and nothing is stored."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from core.models import IncidentReminder
from core.rbac import Actor
from core.reminders import Reminders
from tests.conftest import deep_merge
from tests.reminders.conftest import REMINDERS
from tests.teams.helpers import INCIDENT_CONV, action_titles, bot_connector, card_of, card_text, execute, plain, \
    submit, teams_config
from tests.teams.test_http import Driver, post, teams_server


async def snoozes(ctx: Any) -> int:
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(IncidentReminder)
                                    .where(IncidentReminder.kind == "snooze"))).scalar_one())


async def test_snooze_from_the_reminder_card(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        ctx = await make_ctx(**deep_merge(teams_config(bc.url, incident_conversation=INCIDENT_CONV), REMINDERS))
        async with teams_server(ctx) as (url, rt):
            deliver = Driver(ctx, rt.chat_senders["chat:teams"])
            await ctx.service.declare(actor=Actor("teams:aad-alice", "teams", "Alice"), title="Disk full",
                                      severity="sev1")
            assert await deliver() == ["delivered"]
            ctx.clock.advance(minutes=10)
            assert await Reminders(ctx.service).run_due() == 1
            assert await deliver() == ["delivered"]
            (thread,) = bc.replies(INCIDENT_CONV)
            assert thread.json["replyToId"] == "srv-1"
            card = card_of(thread.json)
            assert "Reminder: INC-1 is still unacknowledged 10 min after it was declared" in card_text(card)
            assert action_titles(card) == ["Snooze"]
            action = card["actions"][0]
            assert action["type"] == "Action.Execute" and action["data"] == {"tocsin": "snooze", "incident": "INC-1"}
            assert action["fallback"]["type"] == "Action.Submit"

            # Action.Execute: the reminder card becomes the answer
            press = execute("snooze", "INC-1", card_id="srv-2", conversation=INCIDENT_CONV, user="aad-alice",
                            user_name="Alice", service_url=bc.url)
            status, body = await post(url, press)
            assert status == 200 and body["statusCode"] == 200
            assert card_text(body["value"]).count("INC-1: reminders snoozed for 30m by Alice, until "
                                                  "2026-01-01 00:40 UTC.") == 1
            assert await snoozes(ctx) == 1
            status, body = await post(url, press)  # redelivered by the Bot Framework: acts once
            assert status == 200 and "This snooze was already done" in card_text(body["value"])
            assert await snoozes(ctx) == 1 and len(bc.replies(INCIDENT_CONV)) == 1
            # Action.Submit (older clients): answered in the thread, the reminder card stays
            ctx.clock.advance(minutes=1)
            status, _ = await post(url, submit({"tocsin": "snooze", "incident": "INC-1"}, card_id="srv-2",
                                               conversation=INCIDENT_CONV, user="aad-alice", user_name="Alice",
                                               service_url=bc.url))
            assert status == 200
            assert plain(bc.replies(INCIDENT_CONV)[-1].json["text"]).startswith(
                "INC-1: reminders snoozed for 30m by Alice, until 2026-01-01 00:41 UTC.")
            # the reminder card (srv-2) was not replaced by the incident card; only the reminder's own card
            # sync edited the incident card (srv-1)
            assert [u.path.rsplit("/", 1)[1] for u in bc.updates(INCIDENT_CONV)] == ["srv-1"]
            assert await snoozes(ctx) == 2
            ctx.clock.advance(minutes=29)
            assert await Reminders(ctx.service).run_due() == 0

            await ctx.service.resolve("INC-1", actor=Actor("teams:aad-alice", "teams"))
            status, body = await post(url, execute("snooze", "INC-1", card_id="srv-2", conversation=INCIDENT_CONV,
                                                   user="aad-alice", service_url=bc.url))
            assert status == 200
            assert "INC-1 is resolved; it has no reminders to snooze (nothing was stored)." in card_text(body["value"])
            assert await snoozes(ctx) == 2
