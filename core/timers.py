"""Periodic jobs on the APScheduler timer that run once per period across every process.

Every `tocsin run` process ticks the same job; the tick first moves `timer_jobs.next_run_at` forward by
compare-and-set (`UPDATE ... WHERE next_run_at <= now`), and only the process whose update hit a row runs
the job. The period lives in the database, so a restart neither repeats nor skips a run.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from core.clock import Clock
from core.db import Database
from core.models import TimerJob

log = logging.getLogger("tocsin.timers")


class Ticker:
    """APScheduler calling `job` now and every `seconds` (one at a time, missed ticks coalesced): the timer
    of the periodic components (pruning, heartbeats, maintenance). close() also cancels a tick in progress,
    which the scheduler's shutdown alone would leave running."""

    def __init__(self, job: Callable[[], Awaitable[object]], *, seconds: float, job_id: str) -> None:
        self.job = job
        self.seconds = seconds
        self.job_id = job_id
        self.scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[object]] = set()

    async def tick(self) -> None:
        """One run of the job, tracked so close() can cancel it (also for extra one-off jobs)."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self.job()
        finally:
            self._running.discard(task)  # type: ignore[arg-type]

    def start(self) -> AsyncIOScheduler:
        self.scheduler = AsyncIOScheduler(timezone=timezone.utc, job_defaults={
            "misfire_grace_time": None, "coalesce": True, "max_instances": 1})
        self.scheduler.add_job(self.tick, IntervalTrigger(seconds=self.seconds, timezone=timezone.utc),
                               id=self.job_id, next_run_time=datetime.now(timezone.utc))
        self.scheduler.start()
        return self.scheduler

    @property
    def running(self) -> bool:
        return self.scheduler is not None and self.scheduler.running

    async def close(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.scheduler = None
        tasks = [t for t in self._running if t is not asyncio.current_task()]
        self._running.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def claim_run(db: Database, name: str, *, now: datetime, every: timedelta) -> bool:
    """True for exactly one caller per period of `every` (the first after `next_run_at`), in any process."""
    async with db.transaction() as s:
        res = await s.execute(update(TimerJob).where(TimerJob.name == name, TimerJob.next_run_at <= now)
                              .values(next_run_at=now + every, last_run_at=now))
        if int(getattr(res, "rowcount", 0) or 0) == 1:
            return True
        if await s.get(TimerJob, name) is not None:
            return False
    try:  # never ran anywhere: the first insert wins
        async with db.transaction() as s:
            s.add(TimerJob(name=name, next_run_at=now + every, last_run_at=now))
    except IntegrityError:
        return False
    return True


class PeriodicJob:
    """Component: ticks `job` every `tick_seconds` on APScheduler; runs it when `claim_run` says this
    process has the period. `every` is read at each tick (it follows config reloads)."""

    def __init__(self, name: str, job: Callable[[], Awaitable[object]], *, db: Database, clock: Clock,
                 every: Callable[[], timedelta], tick_seconds: float = 60.0) -> None:
        self.name = f"timer:{name}"
        self.job_name = name
        self.job = job
        self.db = db
        self.clock = clock
        self.every = every
        self.tick_seconds = tick_seconds
        self.runs = 0
        self.ticker: Ticker | None = None

    async def tick(self) -> bool:
        """One tick: run the job if this process claimed the period. Failures are logged, tried next period."""
        if not await claim_run(self.db, self.job_name, now=self.clock.now(), every=self.every()):
            return False
        try:
            await self.job()
        except Exception:
            log.exception("timer.job.failed", extra={"job": self.job_name})
            return False
        self.runs += 1
        return True

    async def _safe_tick(self) -> None:
        try:
            await self.tick()
        except Exception:  # database down: the next tick tries again
            log.warning("timer.tick.failed", extra={"job": self.job_name}, exc_info=True)

    async def start(self) -> None:
        self.ticker = Ticker(self._safe_tick, seconds=self.tick_seconds, job_id=self.name)
        self.ticker.start()

    async def close(self) -> None:
        if self.ticker is not None:
            await self.ticker.close()
        self.ticker = None
