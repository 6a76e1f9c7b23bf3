"""Work started after Slack's ack: tracked, bounded, drained on shutdown (mixed into SlackAdapter)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("tocsin.slack")

INTERNAL_ERROR = "Something went wrong on our side and it has been logged; nothing may have changed. " \
                 "Try again."


class Background:
    """Needs `_tasks` (a set) and `_slots` (a Semaphore), set by SlackAdapter."""

    _tasks: set[asyncio.Task[None]]
    _slots: asyncio.Semaphore


    def _spawn(self, work: Coroutine[Any, Any, None], *, what: str,
               tell: Callable[[str], Awaitable[None]] | None) -> None:
        task = asyncio.create_task(self._run(work, what=what, tell=tell), name=f"slack.{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: Coroutine[Any, Any, None], *, what: str,
                   tell: Callable[[str], Awaitable[None]] | None) -> None:
        """Run one piece of work after its ack. A crash is logged with context and the user is told; it
        never surfaces as a stack trace in Slack, and never as silence."""
        async with self._slots:
            try:
                await work
                return
            except Exception:
                log.exception("slack.work.failed", extra={"what": what})
            if tell is None:
                return
            try:
                await tell(INTERNAL_ERROR)
            except Exception:
                log.exception("slack.answer.failed", extra={"what": what})

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for work already acked (tests, shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(list(self._tasks), timeout=left)
