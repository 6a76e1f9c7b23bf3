"""Reminders in Telegram: the reminder is a reply under the incident card with a Snooze button (a real
callback query through python-telegram-bot); pressing it snoozes the incident's reminders and answers the
presser in a toast; on a resolved incident it is refused in an alert and nothing is stored."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from core.models import IncidentReminder
from core.rbac import Actor
from core.reminders import Reminders
from tests.reminders.conftest import REMINDERS
from tests.telegram.botapi import command, press
from tests.telegram.conftest import INCIDENT_CHAT, Harness


@pytest.fixture
async def reminding(harness: Callable[..., Any]) -> Harness:
    """The Telegram harness (only Telegram mounted, webhook mode) with `reminders:` configured."""
    return await harness(REMINDERS)


async def snoozes(h: Harness) -> int:
    async with h.ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(IncidentReminder)
                                    .where(IncidentReminder.kind == "snooze"))).scalar_one())


async def test_the_snooze_button_under_a_reminder(reminding: Harness) -> None:
    h = reminding
    await h.post(command(1, "/incident declare sev1 Payments failing"))
    await h.api.wait_calls("sendMessage", 1)
    assert [r.outcome for r in await h.drain()] == ["delivered"]
    ref = await h.ctx.cards.get(1, "telegram")
    assert ref is not None
    h.ctx.clock.advance(minutes=10)
    assert await Reminders(h.ctx.service).run_due() == 1
    assert [r.outcome for r in await h.drain()] == ["delivered"]
    note = h.api.calls("sendMessage")[-1].params
    assert note["chat_id"] == INCIDENT_CHAT and note["reply_parameters"]["message_id"] == int(ref.message_ref)
    assert note["text"].startswith("<b>Reminder</b> · INC-1\nINC-1 is still unacknowledged 10 min after")
    assert note["reply_markup"]["inline_keyboard"] == [[{"text": "Snooze", "callback_data": "tocsin:snooze:1"}]]

    await h.post(press(2, "tocsin:snooze:1", message_id=int(ref.message_ref) + 1))
    [answer] = [c.params for c in await h.api.wait_calls("answerCallbackQuery")]
    assert answer["text"] == "INC-1: reminders snoozed for 30m by Alice, until 2026-01-01 00:40 UTC."
    assert answer.get("show_alert") in (None, False, "false")
    assert await snoozes(h) == 1
    h.ctx.clock.advance(minutes=29)
    assert await Reminders(h.ctx.service).run_due() == 0

    # typed, with a length of its own
    await h.post(command(3, "/incident snooze INC-1 2h"))
    reply = (await h.api.wait_calls("sendMessage", 4))[3].params  # declare answer, card, reminder, this
    assert reply["text"].startswith("INC-1: reminders snoozed for 2h by Alice")
    assert await snoozes(h) == 2


async def test_snoozing_a_resolved_incident_from_the_button_is_refused(reminding: Harness) -> None:
    h = reminding
    await h.post(command(1, "/incident declare sev1 Payments failing"))
    await h.api.wait_calls("sendMessage", 1)
    await h.ctx.service.resolve(1, actor=Actor("cli:alice", "cli"))
    await h.post(press(2, "tocsin:snooze:1"))
    [answer] = [c.params for c in await h.api.wait_calls("answerCallbackQuery")]
    assert answer["text"] == "INC-1 is resolved; it has no reminders to snooze (nothing was stored)."
    assert answer["show_alert"] in (True, "true")
    assert await snoozes(h) == 0
