"""Scheduled digests: fired on their cron once (frozen clock), a missed run sent once at start and marked
late, routed like any event, HTML table by email and a compact card elsewhere; once across two processes on
PostgreSQL; `tocsin digest send`."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bot.context import Context
from core.appearance.email import render_email
from core.appearance.slack import render_slack
from core.clock import FrozenClock
from core.delivery.message import Notification
from core.digests import Digests, next_fire
from core.models import AuditEntry, Delivery, TimerJob
from core.rbac import Actor
from tests.conftest import BASE_CONFIG, deep_merge, make_config, pg_schema

ADMIN = Actor("cli:admin", source="cli")
DIGESTS = {
    "digests": [{"name": "daily", "cron": "0 9 * * mon-fri", "timezone": "Europe/Berlin",
                 "event_type": "scheduled.daily_summary"}],
    "routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
        {"name": "summaries", "event_types": ["scheduled.daily_summary"], "targets": {"contacts": ["carol"],
                                                                                     "lists": ["leads"]}}]},
}
MON_0800_UTC = datetime(2026, 3, 2, 7, 0, tzinfo=timezone.utc)  # Monday 08:00 in Berlin (CET)


def digests(ctx: Context) -> Digests:
    return Digests(ctx.db, ctx.holder, audit=ctx.audit, clock=ctx.clock)


async def queued(ctx: Context) -> list[Delivery]:
    async with ctx.db.transaction() as s:
        return list((await s.execute(select(Delivery).where(Delivery.incident_id.is_(None))
                                     .order_by(Delivery.id))).scalars().all())


def test_next_fire_follows_cron_and_timezone() -> None:
    from core.config import Digest

    d = Digest(name="daily", cron="0 9 * * mon-fri", timezone="Europe/Berlin", event_type="x")
    assert next_fire(d, MON_0800_UTC) == datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
    fri = datetime(2026, 3, 6, 8, 0, tzinfo=timezone.utc)  # Friday 09:00 Berlin, exactly: next is Monday
    assert next_fire(d, fri) == datetime(2026, 3, 9, 8, 0, tzinfo=timezone.utc)
    summer = datetime(2026, 4, 1, 0, 0, tzinfo=timezone.utc)  # CEST: 09:00 is 07:00 UTC
    assert next_fire(d, summer) == datetime(2026, 4, 1, 7, 0, tzinfo=timezone.utc)


async def test_fires_once_on_time_routed_like_any_event(make_ctx: Any) -> None:
    clock = FrozenClock(MON_0800_UTC)
    ctx = await make_ctx(clock=clock, **DIGESTS)
    # an incident to report: acked after 5 minutes, resolved after 30
    out = await ctx.service.declare(actor=ADMIN, title="Checkout <b>down</b>", severity="sev2")
    ref = out.incident.ref
    clock.advance(minutes=5)
    await ctx.service.acknowledge(ref, actor=ADMIN)
    clock.advance(minutes=25)
    await ctx.service.resolve(ref, actor=ADMIN, text="fixed")
    await ctx.service.declare(actor=ADMIN, title="Search slow", severity="sev3")
    clock.set(MON_0800_UTC)
    t = digests(ctx)
    assert await t.tick() == []  # first sight: schedules 09:00 Berlin, sends nothing
    clock.set(datetime(2026, 3, 2, 7, 59, 59, tzinfo=timezone.utc))
    assert await t.tick() == []
    clock.set(datetime(2026, 3, 2, 8, 0, 10, tzinfo=timezone.utc))
    [sent] = await t.tick()
    assert sent.name == "daily" and not sent.late and sent.queued == 1  # carol, once (rule + list deduped)
    assert await t.tick() == []  # the same run never twice
    [row] = await queued(ctx)
    assert (row.recipient, row.channel) == ("carol", "email")
    n = Notification.from_json(row.notification_json)
    assert n.kind == "DIGEST" and n.title == "Tocsin daily digest: 1 open, 2 in the period"
    assert "MTTA 5m00s, MTTR 30m00s" in n.body and "Failed deliveries: 0 failed, 0 dead" in n.body
    data = n.event["payload"]["digest"]
    assert n.event["event_type"] == "scheduled.daily_summary"
    assert [i["ref"] for i in data["open"]] == ["INC-2"]
    mail = render_email(n)
    assert "<table" in mail.html and "INC-1" in mail.html and "Checkout &lt;b&gt;down&lt;/b&gt;" in mail.html
    assert "<b>down</b>" not in mail.html
    card = json.dumps(render_slack(n))
    assert "MTTA 5m00s" in card
    async with ctx.db.transaction() as s:
        job = await s.get(TimerJob, "digest:daily")
        audit = (await s.execute(select(AuditEntry).where(AuditEntry.action == "digest.sent"))).scalars().all()
    assert job is not None and job.next_run_at.replace(tzinfo=timezone.utc) == \
        datetime(2026, 3, 3, 8, 0, tzinfo=timezone.utc)
    assert len(audit) == 1


async def test_missed_runs_after_downtime_are_sent_once_marked_late(make_ctx: Any) -> None:
    clock = FrozenClock(MON_0800_UTC)
    ctx = await make_ctx(clock=clock, **DIGESTS)
    assert await digests(ctx).tick() == []
    clock.set(datetime(2026, 3, 5, 12, 0, tzinfo=timezone.utc))  # down Monday to Thursday noon: 4 runs missed
    fresh = digests(ctx)  # a restart: a new timer, the schedule in the database
    [sent] = await fresh.tick()
    assert sent.late
    assert await fresh.tick() == []
    [row] = await queued(ctx)
    n = Notification.from_json(row.notification_json)
    assert n.title.startswith("Tocsin daily digest (late)") and "Sent late: due 2026-03-02 09:00" in n.body
    clock.set(datetime(2026, 3, 6, 8, 0, 5, tzinfo=timezone.utc))  # Friday's run is on time again
    [sent] = await fresh.tick()
    assert not sent.late


async def test_send_now_and_unknown_name(make_ctx: Any) -> None:
    from core.errors import Forbidden, NotFound

    ctx = await make_ctx(**DIGESTS)
    out = await digests(ctx).send_now("daily", actor=ADMIN)
    assert out.queued == 1
    with pytest.raises(NotFound, match="no digest named 'weekly' \\(digests: daily\\)"):
        await digests(ctx).send_now("weekly", actor=ADMIN)
    with pytest.raises(Forbidden):
        await digests(ctx).send_now("daily", actor=Actor("cli:viewer"))


def test_bad_digest_config_fails_at_load_with_a_line() -> None:
    from core.config import loads
    from core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        loads("digests:\n  - name: d\n    cron: '0 9 * *'\n    event_type: x\n", filename="c.yaml")
    assert "c.yaml:2 digests[0]: cron '0 9 * *'" in str(err.value)


CHILD = """
import asyncio, json, sys
from datetime import datetime
from bot.context import open_context
from core import config
from core.clock import FrozenClock
from core.digests import Digests

async def main():
    clock = FrozenClock(datetime.fromisoformat(sys.argv[2]))
    ctx = await open_context(cfg=config.load(sys.argv[1]), clock=clock)
    try:
        t = Digests(ctx.db, ctx.holder, audit=ctx.audit, clock=clock)
        sent = []
        for _ in range(20):
            sent += [s.name for s in await t.tick()]
        print(json.dumps(sent))
    finally:
        await ctx.close()

asyncio.run(main())
"""


async def test_two_processes_on_postgresql_send_each_run_once(tmp_path: Path) -> None:
    from tests.conftest import require_pg

    require_pg()
    from tests.procs import die_with_parent

    async with pg_schema() as url:
        data = deep_merge(deep_merge(BASE_CONFIG, DIGESTS), {"database": {"url": url}})
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
        make_config(url, **DIGESTS)  # valid

        async def child(at: datetime) -> list[str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD, str(tmp_path / "c.yaml"), at.isoformat(), cwd=os.getcwd(),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent)
            out, err = await asyncio.wait_for(proc.communicate(), 90)
            assert proc.returncode == 0, err.decode()
            return json.loads(out.decode().strip().splitlines()[-1])

        assert await child(MON_0800_UTC) == []  # schedules the first run
        runs = await asyncio.gather(*(child(datetime(2026, 3, 2, 8, 0, 30, tzinfo=timezone.utc))
                                      for _ in range(2)))
        assert sorted(runs) == [[], ["daily"]]
        late = await asyncio.gather(*(child(datetime(2026, 3, 4, 15, 0, tzinfo=timezone.utc)) for _ in range(2)))
        assert sorted(late) == [[], ["daily"]]


async def test_cli_digest_send(tmp_path: Path) -> None:
    data = deep_merge(deep_merge(BASE_CONFIG, DIGESTS),
                      {"database": {"url": f"sqlite+aiosqlite:///{tmp_path / 't.db'}"}})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    env = dict(os.environ, TOCSIN_CONFIG=str(tmp_path / "c.yaml"), USER="admin", LOGNAME="admin")

    async def tocsin(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", *args, cwd=tmp_path, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    assert (await tocsin("db", "upgrade"))[0] == 0
    code, out, err = await tocsin("digest", "send", "daily")
    assert code == 0 and "digest daily: 1 deliveries queued" in out, err
    code, out, err = await tocsin("digest", "send", "nope")
    assert code == 1 and "no digest named 'nope'" in err
