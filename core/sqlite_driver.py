"""SQLAlchemy's aiosqlite dialect, with the small statements of write transactions run on the loop thread.

aiosqlite runs every call on the connection's own thread. SQLAlchemy's adapter makes a call for the cursor,
one for `execute`, one for `fetchall` and one to close the cursor; each hand-over costs more loop-thread
time than a small statement itself (on a busy 2-core machine 0.1-0.4 ms of GIL hand-over per call, see
docs/benchmarks.md, "Profile"), and a declare is dozens of statements. So:

* every statement is one call (execute, fetch everything, close), keeping description, rows, rowcount and
  lastrowid here;
* inside a write transaction (BEGIN IMMEDIATE taken, so no other writer can make it wait: SQLite serves one
  `tocsin run` per file and this process's writers queue on `Database.write_gate`) the call runs right on
  the loop thread: a few microseconds of SQLite instead of a thread round trip;
* BEGIN is tried on the loop thread without waiting (busy timeout 0); only when another process holds the
  write lock (the CLI, say) does it go to the thread and wait there with the configured busy timeout;
* COMMIT and ROLLBACK run on the loop thread too (in WAL mode with synchronous=NORMAL a commit appends to
  the log without an fsync), except the COMMIT of a transaction that changed thousands of rows; a
  ROLLBACK with no transaction open (the pool's reset after a commit) costs nothing;
* what can take long stays on aiosqlite's thread: reads through `Database.sessions` (reports, listings,
  verify), large executemany batches, statements marked `execution_options(tocsin_offload=True)` (bulk
  deletes), and anything while a call of that connection is still running there.

Everything else (pool, terminate on cancel, the file lock) is the stock dialect's. Engines use it
through the `sqlite+tocsin_aiosqlite` drivername; users keep writing `sqlite+aiosqlite`.
"""
from __future__ import annotations

import collections
import sqlite3
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import await_

DRIVERNAME = "sqlite+tocsin_aiosqlite"

_Outcome = tuple[Any, list[Any], int, Any]


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """On aiosqlite's thread: execute, fetch everything, close the cursor."""
    cur = conn.cursor()
    try:
        if many:
            cur.executemany(operation, parameters)
        elif parameters is None:
            cur.execute(operation)
        else:
            cur.execute(operation, parameters)
        description = cur.description
        rows = cur.fetchall() if description else []
        return description, rows, cur.rowcount, cur.lastrowid
    finally:
        cur.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement runs in one call on the driver thread."""

    __slots__ = ("_description", "_rowcount", "_lastrowid", "inline")

    def __init__(self, adapt_connection: Any) -> None:  # no driver cursor: nothing to open here
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: Any = None
        self.inline = False
        """Run the next statement on the calling (loop) thread; set per statement by `place()`."""

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        return None  # the driver cursor is already closed; the rows stay buffered here

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None

    async def _call(self, operation: Any, parameters: Any, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            conn = self._connection
            if self.inline and operation[:5].upper() == "BEGIN":
                await self._begin(operation)
                return
            if self.inline:
                description, rows, rowcount, lastrowid = _run(conn._conn, operation, parameters, many)
            else:
                description, rows, rowcount, lastrowid = await conn._execute(_run, conn._conn, operation,
                                                                             parameters, many)
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows)

    async def _begin(self, operation: str) -> None:
        """BEGIN without waiting on the loop thread; if another process holds the lock, wait on the thread."""
        conn = self._connection
        raw = conn._conn
        self._adapt_connection.begun_changes = raw.total_changes
        raw.execute("PRAGMA busy_timeout=0")
        try:
            raw.execute(operation)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        finally:
            raw.execute(f"PRAGMA busy_timeout={self._adapt_connection.busy_ms}")
        await conn._execute(raw.execute, operation)

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._call(operation, parameters, False)
        return None

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._call(operation, seq_of_parameters, True)
        return None


LARGE_COMMIT_ROWS = 2000
"""A transaction that changed more rows than this commits on the driver thread (a 20,000-recipient fan-out
writes tens of megabytes to the log at COMMIT)."""

INLINE_MANY_MAX = 200
"""executemany batches larger than this go to the driver thread."""


def place(cursor: Any, statement: str, parameters: Any, options: Any, executemany: bool) -> None:
    """Decide where the statement runs (see the module docstring); `options` are its execution options."""
    if not isinstance(cursor, OneHopCursor):
        return
    cursor.inline = not (options.get("tocsin_read_only") or options.get("tocsin_offload")
                         or (executemany and len(parameters) > INLINE_MANY_MAX))


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("busy_ms", "begun_changes")
    _cursor_cls = OneHopCursor

    def __init__(self, dbapi: Any, connection: Any, busy_ms: int) -> None:
        super().__init__(dbapi, connection)
        self.busy_ms = busy_ms
        self.begun_changes = 0
        """sqlite3's total_changes when the transaction began: a large one commits on the thread."""

    def _end(self, how: str) -> None:
        """COMMIT or ROLLBACK on the loop thread (see the module docstring); nothing when no transaction."""
        driver = self._connection
        if driver._connection is None:
            return
        if self._execute_mutex.locked():  # a call of this connection still runs on the thread: queue behind it
            super().commit() if how == "commit" else super().rollback()
            return
        raw = driver._conn
        if not raw.in_transaction:
            return
        if how == "commit" and raw.total_changes - self.begun_changes > LARGE_COMMIT_ROWS:
            super().commit()  # writing thousands of rows' pages to the log: not on the loop thread
            return
        try:
            raw.commit() if how == "commit" else raw.rollback()
        except Exception as error:
            self._handle_exception(error)

    def commit(self) -> None:
        self._end("commit")

    def rollback(self) -> None:
        self._end("rollback")


def loop_thread_connection(conn: Any) -> sqlite3.Connection | None:
    """The sqlite3 connection under the SQLAlchemy Connection `conn` when a statement may run on it right
    here, as `place()` would run it inline: a write transaction is open (BEGIN IMMEDIATE held, nothing can
    make it wait) and no call of this connection is running on the driver thread. None otherwise (not this
    driver, a read session, no transaction, a call in flight): go through SQLAlchemy then. For the smallest,
    hottest writes (an audit append), where SQLAlchemy's per-execution work costs more than SQLite's; the
    caller wraps sqlite3 errors as SQLAlchemy would (`DBAPIError.instance`)."""
    if conn.get_execution_options().get("tocsin_read_only"):
        return None
    adapted = conn.connection.dbapi_connection
    if not isinstance(adapted, OneHopConnection) or adapted._execute_mutex.locked():
        return None
    driver = adapted._connection
    if driver._connection is None:
        return None
    raw: sqlite3.Connection = driver._conn
    return raw if raw.in_transaction else None


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as the stock dialect: never keep the process alive
        busy_ms = int(float(kw.get("timeout", 5.0)) * 1000)
        return OneHopConnection(self, await_(connection), busy_ms)


class OneHopDialect(SQLiteDialect_aiosqlite):
    driver = "tocsin_aiosqlite"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> OneHopDBAPI:  # type: ignore[override]
        return OneHopDBAPI(__import__("aiosqlite"), __import__("sqlite3"))

    # Savepoints as plain driver SQL: SQLAlchemy compiles a SavepointClause afresh each time (no statement
    # cache), and group commit opens and releases one per operation. Names are SQLAlchemy's sa_savepoint_N.
    def do_savepoint(self, connection: Any, name: str) -> None:
        connection.exec_driver_sql(f"SAVEPOINT {name}")

    def do_release_savepoint(self, connection: Any, name: str) -> None:
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {name}")

    def do_rollback_to_savepoint(self, connection: Any, name: str) -> None:
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")


registry.register("sqlite.tocsin_aiosqlite", __name__, "OneHopDialect")
