"""One leader per name across every `tocsin run` process on a database, for work that must not run twice.

The queue and the escalation timer need no leader: claims are leases and escalations are compare-and-set,
so any number of processes share them. Polling consumers are different — two processes both calling
Telegram's getUpdates or both holding a Slack Socket Mode session would fight or double-handle — so they
run only while `Leadership.is_leader`:

    lead = Leadership(rt.ctx.db.engine, "telegram-polling", on_elected=start_polling, on_lost=stop_polling)
    rt.components.append(lead)          # start() campaigns in the background; close() steps down

On PostgreSQL the leader holds a session-level advisory lock (`pg_try_advisory_lock`) on a connection of
its own. The lock lives exactly as long as that connection: if the process dies or its connection is
cut, PostgreSQL releases it and a follower (retrying every `retry_seconds`) takes over. The leader checks
its connection every `check_seconds` (shorter than the followers' retry) and steps down — calling
`on_lost` — as soon as the check fails, so an overlap of two leaders lasts at most about one check.
On SQLite there is one process by design: it is always the leader.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("tocsin.leader")

Callback = Callable[[], Awaitable[None]]


def lock_key(name: str, *, scope: str = "") -> int:
    """A stable signed 64-bit advisory lock key for `name` within `scope` (the schema: several installs can
    share one database in different schemas, and must not share leaders)."""
    digest = hashlib.sha256(f"tocsin-leader:{scope}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """Campaigns for leadership of `name` until closed; see the module docstring. Also a Component."""

    def __init__(self, engine: AsyncEngine, name: str, *, retry_seconds: float = 5.0,
                 check_seconds: float | None = None, on_elected: Callback | None = None,
                 on_lost: Callback | None = None) -> None:
        self.engine = engine
        self.lock_name = name
        self.name = f"leader:{name}"
        self.retry_seconds = retry_seconds
        self.check_seconds = check_seconds if check_seconds is not None else max(0.05, retry_seconds / 2)
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.key: int | None = None
        self.backend_pid: int | None = None
        """PostgreSQL backend pid of the connection holding (or trying for) the lock: for ops and tests."""
        self._leader = False
        self._elected = asyncio.Event()
        self._conn: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    # --- Component --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None or self._leader:
            return
        self._closing = False
        if self.sqlite:
            await self._become_leader()
            return
        self._task = asyncio.create_task(self._campaign(), name=self.name)

    async def close(self) -> None:
        """Step down: stop campaigning, call on_lost if leading, release the lock, close the connection."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._leader:
            await self._step_down("closing")
        await self._release()

    async def __aenter__(self) -> Leadership:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def wait_elected(self, timeout: float | None = None) -> bool:
        """True once this process leads (False if `timeout` passed first)."""
        if self._elected.is_set():
            return True
        try:
            await asyncio.wait_for(self._elected.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # --- the campaign -----------------------------------------------------------------------------

    async def _campaign(self) -> None:
        while not self._closing:
            try:
                if self._leader:
                    await asyncio.wait_for(self._check(), timeout=max(self.check_seconds, 1.0))
                elif await self._try_acquire():
                    await self._become_leader()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection is gone or unusable: the lock went with it
                log.warning("leader.connection.lost", extra={
                    "leader": self.lock_name, "was_leader": self._leader, "backend_pid": self.backend_pid,
                    "error": f"{type(exc).__name__}: {exc}"})
                await self._drop_connection()
                if self._leader:
                    await self._step_down("connection lost")
            await asyncio.sleep(self.check_seconds if self._leader else self.retry_seconds)

    async def _connect(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self.engine.connect()
            try:
                # Autocommit: a session-level lock needs no transaction, and an idle open transaction
                # would hold back vacuum and trip idle_in_transaction_session_timeout.
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                row = (await conn.execute(text("SELECT pg_backend_pid(), current_schema()"))).one()
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
            self.backend_pid = int(row[0])
            self.key = lock_key(self.lock_name, scope=str(row[1] or ""))
        return self._conn

    async def _try_acquire(self) -> bool:
        conn = await self._connect()
        return bool((await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})).scalar())

    async def _check(self) -> None:
        """The lock is held as long as this connection lives; prove it still does."""
        if self._conn is None:
            raise ConnectionError("leader connection is closed")
        await self._conn.execute(text("SELECT 1"))

    async def _become_leader(self) -> None:
        self._leader = True
        self._elected.set()
        log.info("leader.elected", extra={"leader": self.lock_name, "backend_pid": self.backend_pid})
        if self.on_elected is None:
            return
        try:
            await self.on_elected()
        except Exception:
            # A leader that cannot do the job must let someone else try: step down and release the lock.
            log.exception("leader.on_elected.failed", extra={"leader": self.lock_name})
            await self._step_down("on_elected failed")
            await self._release()

    async def _step_down(self, why: str) -> None:
        self._leader = False
        self._elected.clear()
        log.warning("leader.lost", extra={"leader": self.lock_name, "why": why, "backend_pid": self.backend_pid})
        if self.on_lost is None:
            return
        try:
            await self.on_lost()
        except Exception:
            log.exception("leader.on_lost.failed", extra={"leader": self.lock_name})

    async def _release(self) -> None:
        """Unlock explicitly before closing: the connection goes back to a pool that must not keep the lock."""
        conn = self._conn
        if conn is None:
            return
        try:
            await conn.execute(text("SELECT pg_advisory_unlock_all()"))
        except Exception as exc:
            log.warning("leader.release.failed", extra={"leader": self.lock_name,
                                                        "error": f"{type(exc).__name__}: {exc}"})
            await self._drop_connection()
            return
        self._conn = None
        await conn.close()

    async def _drop_connection(self) -> None:
        """Discard the connection for good (never back to the pool): closing it frees any lock it held."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.invalidate()
        except Exception as exc:
            log.warning("leader.invalidate.failed", extra={"leader": self.lock_name,
                                                           "error": f"{type(exc).__name__}: {exc}"})
        try:
            await conn.close()
        except Exception as exc:
            log.warning("leader.close.failed", extra={"leader": self.lock_name,
                                                      "error": f"{type(exc).__name__}: {exc}"})
