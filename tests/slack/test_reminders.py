"""Reminders in Slack: the reminder is a thread reply under the incident card with a Snooze button; pressing
it (a real block action through the Bolt app) snoozes the incident's reminders and tells only the presser;
`/incident snooze` does the same; both are refused for a resolved incident, storing nothing."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from core.models import IncidentReminder
from core.reminders import Reminders
from tests.reminders.conftest import REMINDERS, reminder_deliveries
from tests.slack.conftest import SlackEnv
from tests.slack.standin import action_body

CARD_TS = "1700000000.000001"


async def snoozes(env: SlackEnv) -> int:
    async with env.ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(IncidentReminder)
                                    .where(IncidentReminder.kind == "snooze"))).scalar_one())


async def test_a_reminder_in_the_thread_is_snoozed_from_its_button(make_slack_env: Any) -> None:
    env: SlackEnv = await make_slack_env(**REMINDERS)
    clock = env.ctx.clock
    await env.command("declare sev1 Checkout is down", user="UALICE")
    await env.sync_cards()
    r = Reminders(env.ctx.service)
    clock.advance(minutes=10)
    assert await r.run_due() == 1
    assert [x.outcome for x in await env.sync_cards()] == ["delivered"]
    [reply] = env.api.posts(thread_ts=CARD_TS)
    assert reply["text"].startswith(":alarm_clock: *Reminder*: INC-1 is still unacknowledged 10 min after")
    [section, actions] = reply["blocks"]
    assert section["text"]["text"] == reply["text"]
    assert [(b["action_id"], b["text"]["text"]) for b in actions["elements"]] == [("incident.snooze:1", "Snooze")]
    # the commander (slack:UALICE is contact alice) also gets it through her news channels: e-mail, no SMS
    assert [d for d in await reminder_deliveries(env.ctx) if d[2] == "reminder"] == [("alice", "email", "reminder")]

    clock.advance(minutes=2)
    assert await env.press("snooze", 1, user="UALICE") == 200
    [told] = env.api.calls("chat.postEphemeral")  # only the presser sees the answer
    assert told["text"] == "INC-1: reminders snoozed for 30m by ualice, until 2026-01-01 00:42 UTC."
    assert told["user"] == "UALICE"
    assert [e.actor for e in await env.audit("incident.snooze")] == ["slack:UALICE"]
    clock.advance(minutes=29)
    assert await r.run_due() == 0  # the next one (20m) and the update one (30m) wait for the snooze
    clock.advance(minutes=1)
    assert await r.run_due() == 2

    _, [answer] = await env.command("snooze INC-1 45m", user="UALICE")
    assert answer["text"].startswith("INC-1: reminders snoozed for 45m by op")
    assert await snoozes(env) == 2


async def test_snoozing_a_resolved_incident_is_refused_and_stores_nothing(make_slack_env: Any) -> None:
    env: SlackEnv = await make_slack_env(**REMINDERS)
    await env.command("declare sev1 Checkout is down", user="UALICE")
    await env.command("resolve INC-1 fixed", user="UALICE")
    before = await env.audit_count()
    assert await env.press("snooze", 1, user="UALICE") == 200
    told = env.api.calls("chat.postEphemeral")[-1]
    assert told["text"].startswith("INC-1 is resolved; it has no reminders to snooze (nothing was stored).")
    _, [answer] = await env.command("snooze INC-1 10m", user="UALICE")
    assert answer["text"].startswith("INC-1 is resolved; it has no reminders to snooze (nothing was stored).")
    _, [bad] = await env.command("snooze INC-1 later", user="UALICE")
    assert bad["text"].startswith("Duration 'later': must be a duration like")
    assert "Usage: /incident snooze &lt;INC-n&gt;" in bad["text"]  # Slack mrkdwn escapes < and >
    assert await snoozes(env) == 0 and await env.audit_count() == before


async def test_the_commanders_reminder_dm_has_the_snooze_button_too(make_slack_env: Any) -> None:
    """Alice reads news in her Slack DMs (preferences.updates): the reminder is a reply in the thread of
    her DM card, with Snooze; pressing it there snoozes like anywhere else."""
    contacts = [{**REMINDERS["contacts"][0], "preferences": {"default": ["email"], "updates": {"default": ["slack_dm"]}}},
                REMINDERS["contacts"][1]]
    env: SlackEnv = await make_slack_env(**{**REMINDERS, "contacts": contacts})
    await env.command("declare sev1 Checkout is down", user="UALICE")
    env.ctx.clock.advance(minutes=10)
    assert await Reminders(env.ctx.service).run_due() == 1
    assert [r.outcome for r in await env.sync_cards("slack_dm")] == ["delivered"]
    dm_card = next(c for c in env.api.posts(top=True) if c["channel"] == "UALICE")
    [dm_reply] = [c for c in env.api.posts() if c["channel"] == "UALICE" and c.get("thread_ts")]
    assert "INC-1 is still unacknowledged" in dm_reply["text"]
    assert "incident.snooze:1" in str(dm_reply["blocks"]) and dm_card["blocks"]
    n = env.next_id()
    status, _ = await env.post(action_body("incident.snooze:1", user="UALICE", channel="UALICE",
                                           action_ts=f"1700000200.{n:06d}", trigger=f"trig-dm-{n}",
                                           response_url=env.api.response_url(f"dm-{n}")))
    assert status == 200
    assert await snoozes(env) == 1
    assert env.api.calls("chat.postEphemeral")[-1]["text"].startswith("INC-1: reminders snoozed for 30m")
