"""Two real `tocsin run` processes on one PostgreSQL database: each ticks its reminder timer, every due
reminder is sent exactly once (one row, one thread entry, one e-mail to the commander, one audit entry)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select

from bot.context import open_context
from core.clock import FrozenClock
from core.config import load
from core.db import Database
from core.models import AuditEntry, Delivery, IncidentMessage, IncidentReminder
from core.rbac import Actor
from tests.ops.fleet import eventually, start_bot, stop_all, wait_ready, write_config
from tests.stand_ins.http import HttpStandIn

N = 20


async def counts(db: Database) -> tuple[int, int, int, int]:
    async with db.engine.connect() as conn:
        sent = (await conn.execute(select(func.count()).select_from(IncidentReminder))).scalar_one()
        thread = (await conn.execute(select(func.count()).select_from(IncidentMessage)
                                     .where(IncidentMessage.kind == "REMINDER"))).scalar_one()
        mails = (await conn.execute(select(func.count()).select_from(Delivery)
                                    .where(Delivery.purpose == "reminder"))).scalar_one()
        audit = (await conn.execute(select(func.count()).select_from(AuditEntry)
                                    .where(AuditEntry.action == "incident.reminder"))).scalar_one()
    return int(sent), int(thread), int(mails), int(audit)


async def test_two_processes_send_each_reminder_once(tmp_path: Path, pg_url: str) -> None:
    async with HttpStandIn() as peer:
        cfg_path = write_config(tmp_path / "config.yaml", db_url=pg_url, hook_url=peer.url + "/hook",
                                access={"cli:alice": "operator"},
                                reminders={"unacknowledged": {"sev1": "1m"}})
        # N incidents declared 5 minutes ago (the clock of the declaring process), none acknowledged
        ctx = await open_context(cfg=load(cfg_path), clock=FrozenClock(
            datetime.now(timezone.utc) - timedelta(minutes=5)))
        try:
            for i in range(N):
                await ctx.service.declare(actor=Actor("cli:alice", "cli"), title=f"Outage {i}", severity="sev1")
        finally:
            await ctx.close()
        bots = [await start_bot(cfg_path, name=f"bot{i}", log_dir=tmp_path) for i in range(2)]
        db = Database(pg_url)
        try:
            await asyncio.gather(*(wait_ready(b) for b in bots))

            async def all_sent() -> tuple[int, int, int, int] | None:
                got = await counts(db)
                return got if got[0] >= N else None

            await eventually(all_sent, timeout=60, what=f"{N} reminders sent")
            await asyncio.sleep(2)  # both timers have ticked again meanwhile: nothing more is due
            assert await counts(db) == (N, N, N, N)
            async with db.engine.connect() as conn:
                per = (await conn.execute(select(IncidentReminder.incident_id, func.count())
                                          .group_by(IncidentReminder.incident_id))).all()
            assert sorted(n for _, n in per) == [1] * N
            # each process logs what it sent: together exactly N (however they split them)
            sent_by = [b.log.read_text(errors="replace").count('"reminder.sent"') for b in bots]
            assert sum(sent_by) == N, sent_by
        finally:
            await stop_all(bots)
            await db.close()
