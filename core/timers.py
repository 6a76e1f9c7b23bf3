"""Periodic jobs on the APScheduler timer that run once per period across every process.

Every `tocsin run` process ticks the same job; the tick first moves `timer_jobs.next_run_at` forward by
compare-and-set (`UPDATE ... WHERE next_run_at <= now`), and only the process whose update hit a row runs
the job. The period lives in the database, so a restart neither repeats nor skips a run.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from core.clock import Clock
from core.db import Database
from core.models import TimerJob

log = logging.getLogger("tocsin.timers")


DUE_PER_PASS = 200
"""At most this many due jobs are submitted per scheduler pass (see _PacedJobStore)."""


class _PacedJobStore(MemoryJobStore):
    """APScheduler submits every due job in one event-loop callback: 3,000 escalations due at the same
    instant held the loop for 150-340 ms. Handing it at most DUE_PER_PASS per pass keeps the rest due, so
    the scheduler wakes again at once (a zero wait), and acks and requests get the loop in between."""

    def get_due_jobs(self, now: datetime) -> list[Any]:
        return list(super().get_due_jobs(now)[:DUE_PER_PASS])


class TimerScheduler(AsyncIOScheduler):
    """The one APScheduler timer setup of Tocsin: UTC, missed runs coalesced, one instance per job, and
    coroutine jobs that are never cancelled in the middle of a database statement.

    APScheduler's shutdown() cancels the task of a job in progress. A cancel that lands inside an aiosqlite
    statement makes SQLAlchemy terminate the connection while its worker thread is stopping, which can
    leave a close waiting forever (a hung shutdown). So each coroutine job runs as its own task that the
    scheduler's task only awaits through a shield: stop() lets a job in progress finish (up to `grace`)
    and cancels it only after that, once."""

    def __init__(self) -> None:
        super().__init__(timezone=timezone.utc, jobstores={"default": _PacedJobStore()}, job_defaults={
            "misfire_grace_time": None, "coalesce": True, "max_instances": 1})
        self._bodies: set[asyncio.Future[Any]] = set()

    def add_job(self, func: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if inspect.iscoroutinefunction(func):
            func = self._shielded(func)
        return super().add_job(func, *args, **kwargs)

    def _shielded(self, func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(*args: Any, **kwargs: Any) -> Any:
            body = asyncio.ensure_future(func(*args, **kwargs))
            self._bodies.add(body)
            body.add_done_callback(self._bodies.discard)
            try:
                return await asyncio.shield(body)
            except asyncio.CancelledError:
                if self.running or body.done():
                    raise
                # shutdown() cancelled the scheduler's wait, not the run: stop() gives the run its grace.
                # Said here at INFO instead of APScheduler's "raised an exception" traceback.
                log.info("timer.job.left_to_finish", extra={"job": run.__qualname__})
                return None

        run.__name__ = run.__qualname__ = getattr(func, "__qualname__", "job")
        return run

    @property
    def in_progress(self) -> int:
        return sum(1 for b in self._bodies if not b.done())

    async def stop(self, grace: float = 5.0) -> None:
        """No new runs; a run in progress may commit for up to `grace` seconds, then it is cancelled."""
        if self.running:
            self.shutdown(wait=False)
        me = asyncio.current_task()
        pending = [b for b in self._bodies if not b.done() and b is not me]
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=grace)
        for b in late:
            b.cancel()
        await asyncio.gather(*late, return_exceptions=True)


class Ticker:
    """The timer of the periodic components (pruning, heartbeats, maintenance): `job` now and every
    `seconds`, one at a time, missed ticks coalesced. close() lets a tick in progress finish first."""

    def __init__(self, job: Callable[[], Awaitable[object]], *, seconds: float, job_id: str) -> None:
        self.job = job
        self.seconds = seconds
        self.job_id = job_id
        self.scheduler: TimerScheduler | None = None

    async def tick(self) -> None:
        """One run of the job (also the target of extra one-off jobs)."""
        await self.job()

    def start(self) -> TimerScheduler:
        self.scheduler = TimerScheduler()
        self.scheduler.add_job(self.tick, IntervalTrigger(seconds=self.seconds, timezone=timezone.utc),
                               id=self.job_id, next_run_time=datetime.now(timezone.utc))
        self.scheduler.start()
        return self.scheduler

    @property
    def running(self) -> bool:
        return self.scheduler is not None and self.scheduler.running

    async def close(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await scheduler.stop()


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
