"""The timer's shutdown (core/timers.py TimerScheduler): a job in the middle of a database statement is let
finish, not cancelled. A cancel inside an aiosqlite statement made SQLAlchemy terminate the connection while
its worker thread stopped, and the test run's teardown then waited forever (CI: a 300 s timeout in
tests/api/test_incidents.py). On both databases, with a statement that takes a noticeable time."""
from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from bot.context import Context
from core.timers import Ticker, TimerScheduler

SLOW = {  # a single statement that runs for a while (hundreds of milliseconds)
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
              "SELECT count(*) FROM c",
    "postgresql": "SELECT count(*) FROM (SELECT pg_sleep(0.4)) s, generate_series(1, 1000)",
}


def _slow_sql(ctx: Context) -> str:
    return SLOW["sqlite" if ctx.db.sqlite else "postgresql"]


async def test_close_lets_a_tick_in_a_statement_finish_and_the_database_closes(ctx: Context) -> None:
    started = asyncio.Event()
    finished: list[int] = []
    sql = _slow_sql(ctx)

    async def job() -> None:
        started.set()
        async with ctx.db.transaction() as s:
            finished.append(int((await s.execute(text(sql))).scalar_one()))

    ticker = Ticker(job, seconds=3600, job_id="slow")
    ticker.start()
    await asyncio.wait_for(started.wait(), 10)
    t0 = time.monotonic()
    await asyncio.wait_for(ticker.close(), 15)
    assert finished, "the tick in progress was cancelled instead of being let finish"
    assert not ticker.running and time.monotonic() - t0 < 10
    async with ctx.db.sessions() as s:  # the connection went back to the pool in good order
        assert (await s.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_job_longer_than_the_grace_is_cancelled_once_and_stop_returns(ctx: Context) -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def job() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
            outcome.append("ran")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    scheduler = TimerScheduler()
    scheduler.add_job(job, "date")
    scheduler.start()
    await asyncio.wait_for(started.wait(), 10)
    assert scheduler.in_progress == 1
    await asyncio.wait_for(scheduler.stop(grace=0.2), 5)
    assert outcome == ["cancelled"] and scheduler.in_progress == 0


async def test_many_jobs_due_at_once_are_submitted_in_passes_that_hand_the_loop_back() -> None:
    """Each of 1,000 jobs due at the same instant runs once, and the scheduler submits at most DUE_PER_PASS
    of them per event-loop iteration (all of them in one callback held the loop for 150-340 ms)."""
    from datetime import datetime, timezone

    from apscheduler.events import EVENT_JOB_SUBMITTED

    from core.timers import DUE_PER_PASS

    loop = asyncio.get_running_loop()
    n = 5 * DUE_PER_PASS
    ran: list[int] = []
    iteration = [0]
    per_iteration: dict[int, int] = {}

    def count_iterations() -> None:  # one increment per pass of the event loop
        iteration[0] += 1
        if len(ran) < n:
            loop.call_soon(count_iterations)

    def submitted(_event: object) -> None:
        per_iteration[iteration[0]] = per_iteration.get(iteration[0], 0) + 1

    async def job(i: int) -> None:
        ran.append(i)

    sched = TimerScheduler()
    sched.add_listener(submitted, EVENT_JOB_SUBMITTED)
    at = datetime.now(timezone.utc)
    for i in range(n):
        sched.add_job(job, "date", run_date=at, args=[i], id=f"j{i}")
    loop.call_soon(count_iterations)
    sched.start()
    try:
        for _ in range(1000):
            if len(ran) == n:
                break
            await asyncio.sleep(0.01)
    finally:
        await sched.stop()
    assert sorted(ran) == list(range(n))
    assert sum(per_iteration.values()) == n
    assert max(per_iteration.values()) <= DUE_PER_PASS and len(per_iteration) >= 5, per_iteration
