"""Engine and session factory: SQLite (WAL, busy timeout, IMMEDIATE writes) or PostgreSQL, same code.

Storage faults are loud: a write to a SQLite file that was deleted, replaced or made unwritable since
this process opened it, or to a database that cannot be reached, raises StorageUnavailable (nothing is
reported as stored that was not), and the first fault of an outage raises an internal alert.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import ARRAY, DateTime, Table, bindparam, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core import sqlite_driver
from core.config import DatabaseConfig
from core.errors import StorageUnavailable, TocsinError
from core.metrics import ALERTS

log = logging.getLogger("tocsin.db")


class DatabaseInUse(TocsinError):
    """Another `tocsin run` holds this SQLite database (SQLite is for one process; PostgreSQL for several)."""

    code = "database_in_use"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for PostgreSQL and in-memory SQLite."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" \
            or u.database.startswith("file:") or u.query.get("mode") == "memory":
        return None
    return Path(u.database)


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """A relative SQLite path resolved against `base_dir` (the config file's directory), so the database
    does not depend on the directory a command happens to be run from."""
    path = sqlite_file(url)
    if path is None or path.is_absolute():
        return url
    u = make_url(url)
    return u.set(database=str((base_dir / path).absolute())).render_as_string(hide_password=False)


def unavailable(exc: BaseException) -> bool:
    """Does this exception mean the database cannot be reached or written (as opposed to a bug, a
    constraint violation or a busy lock that the busy timeout and retries handle)?"""
    if isinstance(exc, StorageUnavailable):
        return True
    if isinstance(exc, DBAPIError):
        if any(m in str(exc.orig) for m in ("database is locked", "syntax error")):
            return False  # busy: the busy timeout and the callers' retries handle it; syntax: a bug, not storage
        return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    return type(exc).__module__.startswith("asyncpg.exceptions") and type(exc).__name__ in (
        "CannotConnectNowError", "ConnectionDoesNotExistError", "InvalidCatalogNameError", "TooManyConnectionsError")


def busy(exc: BaseException) -> bool:
    """SQLite's write lock stayed taken past the busy timeout: a retry later will do (not an outage)."""
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def is_sqlite(engine_or_url: AsyncEngine | str) -> bool:
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return make_url(url).get_backend_name() == "sqlite"


def to_json_text(value: Any) -> str:
    """JSON columns' serializer: orjson (a near-limit event payload, a million bytes of JSON, in 2 ms instead
    of the standard library's 30 ms, all of it holding the event loop). What orjson cannot write (an
    integer beyond 64 bits) goes through the standard library, which writes it exactly as before; reads
    stay on the standard library, which keeps such integers exact."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def create_engine(cfg: DatabaseConfig | str) -> AsyncEngine:
    """Build the engine. On SQLite every transaction starts with BEGIN IMMEDIATE, so two writers
    never both read the same audit head or queue row and then collide on upgrade."""
    if isinstance(cfg, str):
        cfg = DatabaseConfig(url=cfg)
    kwargs: dict[str, Any] = {"json_serializer": to_json_text}
    url = make_url(cfg.url)
    if is_sqlite(cfg.url):
        # check_same_thread off: write-transaction statements run on the loop thread (core/sqlite_driver.py)
        kwargs["connect_args"] = {"timeout": cfg.busy_timeout_ms / 1000, "check_same_thread": False}
        if url.drivername == "sqlite+aiosqlite":
            url = url.set(drivername=sqlite_driver.DRIVERNAME)  # one thread hand-over per statement
    else:
        kwargs["pool_size"] = cfg.pool_size
        kwargs["pool_pre_ping"] = True
        if "search_path" in url.query:
            # `?search_path=schema` puts every connection in that schema (one database, several installs).
            kwargs["connect_args"] = {"server_settings": {"search_path": str(url.query["search_path"])}}
            url = url.difference_update_query(["search_path"])
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(cfg.url):
        busy = cfg.busy_timeout_ms

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Reads (Database.sessions) begin deferred so they never hold the write lock; everything else
            # takes it up front, so a read-then-write unit cannot fail on a stale snapshot.
            deferred = conn.get_execution_options().get("tocsin_read_only", False)
            conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _place(_conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            sqlite_driver.place(cursor, statement, parameters, context.execution_options, many)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


_CONN = "tocsin.connection"
T = TypeVar("T")


async def connection(session: AsyncSession) -> AsyncConnection:
    """The session's connection for Core statements in its transaction, kept per innermost transaction
    (a savepoint is its own: asking the session inside it is what opens the SAVEPOINT). Asking the session
    each time costs more than a small statement, and hot paths run several."""
    sync = session.sync_session
    tx = sync.get_nested_transaction() or sync.get_transaction()
    cached = session.info.get(_CONN)
    if cached is not None and tx is not None and cached[0] is tx:
        return cached[1]  # type: ignore[no-any-return]
    conn = await session.connection()
    session.info[_CONN] = (sync.get_nested_transaction() or sync.get_transaction(), conn)
    return conn


def render_positional(stmt: Any, dialect: Any,
                      keys: tuple[str, ...] | None = None) -> tuple[str, tuple[str, ...], Any]:
    """`stmt` rendered once as driver SQL with positional parameters, for hot statements run without
    SQLAlchemy's per-execution work: (SQL, parameter names in positional order, the compiled statement).
    `keys`: the columns an INSERT/UPDATE is given. Refuses a statement whose parameters cannot all be
    supplied by name."""
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
    names = tuple(compiled.positiontup or ())
    if set(names) != set(compiled.binds) or (keys is not None and not set(names) <= set(keys)):
        raise RuntimeError(f"cannot run {stmt} positionally on {dialect.name}"
                           + (f" with {keys}" if keys is not None else ""))
    return compiled.string, names, compiled


def _same_time(proc: Callable[[Any], Any], memo: list[Any]) -> Callable[[Any], Any]:
    """A timestamp's bind processor that reuses its last answer for the same datetime object (shared by a
    statement's timestamp columns): a fan-out's rows carry one `now` three times each, an outcome its time
    twice or three times, and SQLite's formatting was 7 of each page's parameter conversions."""
    def process(value: Any) -> Any:
        if value is not None and value is memo[0]:
            return memo[1]
        out = proc(value)
        memo[0], memo[1] = value, out
        return out
    return process


class Prepared:
    """A small Core statement on a hot path (a declare's rows, a seen key). On SQLite inside a write
    transaction, with the connection idle, it runs straight on the sqlite3 connection, as
    `sqlite_driver.place()` would run it inline anyway: rendered once per dialect and set of columns, the
    parameters converted by the column types' bind processors, driver errors wrapped as SQLAlchemy wraps
    them. SQLAlchemy's per-execution work (cache key, parameter and result processing, two greenlet
    switches) cost several times SQLite's own. Anywhere else (PostgreSQL, a read session) it goes through
    SQLAlchemy. Rows come back as the driver gives them: only for statements whose result columns need no
    conversion (ids, counts)."""

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt
        self._rendered: dict[tuple[Any, ...], tuple[str, tuple[str, ...], tuple[Any, ...]]] = {}

    def _render(self, dialect: Any, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        sql, names, compiled = render_positional(self.stmt, dialect, keys)
        memo: list[Any] = [None, None]
        procs = tuple(_same_time(p, memo) if p is not None and isinstance(compiled.binds[n].type, DateTime) else p
                      for n in names for p in (compiled.binds[n].type._cached_bind_processor(dialect),))
        return sql, names, procs

    def _for(self, conn: AsyncConnection, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        key = (type(conn.dialect), keys)
        found = self._rendered.get(key)
        if found is None:
            found = self._rendered[key] = self._render(conn.dialect, keys)
        return found

    @staticmethod
    def _values(names: tuple[str, ...], procs: tuple[Any, ...], params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple([p(params[n]) if p is not None else params[n] for n, p in zip(names, procs)])

    async def run(self, session: AsyncSession, params: dict[str, Any]) -> list[Any]:
        conn = await connection(session)
        raw = sqlite_driver.loop_thread_connection(conn.sync_connection)
        if raw is None:
            res = await conn.execute(self.stmt, params)
            return list(res.all()) if res.returns_rows else []
        sql, names, procs = self._for(conn, tuple(params))
        values = self._values(names, procs, params)
        try:
            return raw.execute(sql, values).fetchall()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc

    async def run_many(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        """The statement once per row (executemany; every row has the same keys), no result: a worker's
        batch of outcomes and attempt rows. On SQLite's fast path one sqlite3 executemany."""
        if not rows:
            return
        conn = await connection(session)
        raw = sqlite_driver.loop_thread_connection(conn.sync_connection)
        if raw is None:
            await conn.execute(self.stmt, rows)
            return
        sql, names, procs = self._for(conn, tuple(rows[0]))
        values = [self._values(names, procs, params) for params in rows]
        try:
            raw.executemany(sql, values)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc


async def pg_insert_unnest(session: AsyncSession, table: Table, rows: list[dict[str, Any]],
                           returning: Sequence[str] = ()) -> list[Any]:
    """PostgreSQL: many rows as ONE `INSERT ... SELECT * FROM unnest(<one array per column>) RETURNING`,
    so the statement has a parameter per column instead of per value. A fan-out's 2,000 delivery rows as
    multi-row VALUES were 34,000 parameters the server parsed and planned, about half of the declare's time.
    Every row has the same keys; values go through the columns' own types (JSON, timestamps)."""
    cols = list(rows[0])
    dialect = session.bind.dialect
    quote = dialect.identifier_preparer.quote
    arrays = ", ".join(f"CAST(:{c} AS {table.c[c].type.compile(dialect=dialect)}[])" for c in cols)
    back = f" RETURNING {', '.join(quote(c) for c in returning)}" if returning else ""
    stmt = text(f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in cols)}) "
                f"SELECT * FROM unnest({arrays}){back}")
    stmt = stmt.bindparams(*[bindparam(c, type_=ARRAY(table.c[c].type)) for c in cols])
    params = {c: [r[c] for r in rows] for c in cols}
    result = await session.execute(stmt, params)
    return list(result.all()) if returning else []


async def per_transaction(session: AsyncSession, key: str, load: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """`load(conn)`, read once per (outer) transaction and kept in session.info for the operations that share
    it (group commit). Only for rows no operation writes inside a shared transaction, and that nobody else
    can change while it is open: on SQLite it holds the write lock (BEGIN IMMEDIATE) for the whole group. On
    PostgreSQL each service operation is its own transaction, so this is one read per operation, as before
    (a transaction that spans several sees the rows as of its first read, as if it had begun then)."""
    tx = session.sync_session.get_transaction()
    slot = f"tocsin.tx.{key}"
    cached = session.info.get(slot)
    if cached is not None and tx is not None and cached[0] is tx:
        return cached[1]  # type: ignore[no-any-return]
    value = await load(await connection(session))
    session.info[slot] = (session.sync_session.get_transaction(), value)
    return value


class Database:
    """Owns the engine and hands out transactional sessions."""

    def __init__(self, cfg: DatabaseConfig | str) -> None:
        self.cfg = cfg if isinstance(cfg, DatabaseConfig) else DatabaseConfig(url=cfg)
        self.engine = create_engine(self.cfg)
        self.sqlite = is_sqlite(self.cfg.url)
        self.path = sqlite_file(self.cfg.url)
        """The SQLite file (absolute once bot.context resolved it), None for PostgreSQL and :memory:."""
        self.name = str(self.path) if self.path else make_url(self.cfg.url).render_as_string(hide_password=True)
        """How messages name this database: the SQLite file, or the URL without its password."""
        self._writes = session_factory(self.engine)
        self.sessions = session_factory(self.engine.execution_options(tocsin_read_only=True))
        """Sessions for reading. Write through `transaction()`."""
        self._identity: tuple[int, int] | None = None
        self._lock_fd: int | None = None
        self.fault: str | None = None
        """What is wrong with the storage right now (None when writes work); set on the first failure."""
        self.fault_since: float | None = None
        self.on_recovered: list[Any] = []
        """Callables (problem, since_epoch) -> awaitable, run when a fault clears (e.g. write the audit entry)."""
        self.write_gate = asyncio.Lock()
        """Serializes this process's SQLite write transactions (groups, worker, outbox): writers queue here,
        not in SQLite's busy handler, which sleeps up to 100 ms between tries while the lock sits unused."""
        self.groups = GroupCommit(self)
        """Group commit for service operations: see `grouped()`."""

    # --- storage identity (SQLite) ----------------------------------------------------------------------

    def pin(self) -> None:
        """Remember which file this process writes to (after migrations created it): a later delete or
        replace is then detected before and after every write."""
        if self.path is not None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return
            self._identity = (st.st_dev, st.st_ino)

    def storage_problem(self, *, writable: bool = True) -> str | None:
        """Why a write to the SQLite file would be lost or refused now, else None (cheap: one stat)."""
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"database file {self.path} was deleted while tocsin was running" \
                if self._identity else f"database file {self.path} does not exist"
        except OSError as exc:
            return f"database file {self.path} cannot be read: {exc.strerror or exc}"
        if self._identity is None:
            self._identity = (st.st_dev, st.st_ino)
        elif (st.st_dev, st.st_ino) != self._identity:
            return (f"database file {self.path} was replaced while tocsin was running "
                    "(it is not the file this process opened; restart tocsin to use the new one)")
        if writable:
            for p in (self.path, self.path.parent):
                if not os.access(p, os.W_OK):
                    return f"{'database file' if p == self.path else 'database directory'} {p} is not writable"
        return None

    # --- faults -------------------------------------------------------------------------------------------

    def _fault(self, problem: str) -> StorageUnavailable:
        """Record the fault; the first of an outage is an internal alert (ERROR log + metric)."""
        if self.fault is None:
            self.fault_since = time.time()
            ALERTS.labels(channel="database", status="unavailable").inc()
            log.error("storage.unavailable", extra={"database": self.name, "problem": problem, "alert": True})
        self.fault = problem
        return StorageUnavailable(f"database unavailable: {problem}")

    async def _cleared(self) -> None:
        if self.fault is None:
            return
        problem, since = self.fault, self.fault_since or time.time()
        self.fault = self.fault_since = None
        log.warning("storage.recovered", extra={"database": self.name, "problem": problem,
                                                "outage_s": round(time.time() - since, 1)})
        for hook in list(self.on_recovered):
            try:
                await hook(problem, since)
            except Exception:  # the database works again; a hook failing must not fail the write that proved it
                log.exception("storage.recovered.hook_failed", extra={"database": self.name})

    def describe_error(self, exc: BaseException) -> str:
        if isinstance(exc, StorageUnavailable):
            return str(exc).removeprefix("database unavailable: ")
        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines()
        reason = orig.strerror if isinstance(orig, OSError) and orig.strerror else (
            lines[0] if lines else type(orig).__name__)
        return f"{self.name} cannot be reached or written: {reason}"

    def unavailable_error(self, exc: BaseException) -> StorageUnavailable:
        """Map a low-level failure (see `unavailable`) to StorageUnavailable, raising the alert."""
        return self._fault(self.describe_error(exc))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit on success, roll back on any error. Refused with StorageUnavailable
        when the change could not be stored, or (SQLite file deleted/replaced during the commit) was not."""
        problem = self.storage_problem()
        if problem:
            raise self._fault(problem)
        try:
            async with self._writes() as session, session.begin():
                yield session
        except Exception as exc:
            if unavailable(exc) and not isinstance(exc, StorageUnavailable):
                raise self.unavailable_error(exc) from exc
            raise
        problem = self.storage_problem(writable=False)
        if problem:
            # Committed into a file that is gone from its path: lost at the next restart. Say so.
            raise self._fault(f"{problem}; the last change was not stored")
        if self.fault is not None and self.storage_problem() is None:
            # Only a store that takes writes again ends an outage: a transaction that began before the fault
            # and committed nothing new must not clear it (the next write would raise a second alert).
            await self._cleared()

    def grouped(self) -> Any:
        """A write unit that shares one transaction with the service operations arriving with it (group
        commit), in its own SAVEPOINT: see GroupCommit. Yields the session; the caller's block returns only
        once the group has committed, and raises what made its own savepoint or the group's commit fail."""
        return self.groups.operation()

    async def check(self) -> str | None:
        """Readiness of the storage: None when writes would work, else what is wrong (naming the database).
        Also raises the alert when a fault is found here first, and clears it when it is gone."""
        problem = self.storage_problem()
        if problem is None:
            try:
                await self.ping()
            except Exception as exc:
                if not unavailable(exc):
                    raise
                problem = self.describe_error(exc)
        if problem:
            self._fault(problem)
            return problem
        await self._cleared()
        return None

    # --- one `tocsin run` per SQLite file ---------------------------------------------------------------

    def lock_for_run(self) -> None:
        """Hold an OS lock (flock on `<file>.lock`) for this process's lifetime; refuse if another process
        holds it, naming that process. The kernel drops the lock when the process dies, however it dies."""
        if self.path is None:
            return
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageUnavailable(f"database unavailable: cannot create lock file {lock_path}: "
                                     f"{exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DatabaseInUse(f"database {self.path} is in use by another `tocsin run` (pid {holder}, lock "
                                f"{lock_path}); SQLite serves one process: stop it first, or use PostgreSQL "
                                "to run several") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock; the file stays (removing it would race a new holder)
            self._lock_fd = None


# --- group commit ----------------------------------------------------------------------------------------

_IN_GROUP: ContextVar[AsyncSession | None] = ContextVar("tocsin_group_session", default=None)


class _Group:
    """One transaction shared by the operations that joined it while it was open."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        """Operations run one after another on the shared session (an AsyncSession is not concurrent)."""
        self.pending = 0
        """Joined and not yet finished: the last one to finish commits."""
        self.members = 0
        self.closed = False
        """No more joiners (committing, or full)."""
        self.session: AsyncSession | None = None
        self.cm: Any = None
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class GroupCommit:
    """Group commit: operations that arrive while one transaction is open (or while the previous group
    commits) share the next one, each in its own SAVEPOINT, in arrival order.

    * A failing operation rolls back to its savepoint and raises to its caller; the others still commit.
    * Results are handed back only after the commit: an operation's block returns once the group's COMMIT
      succeeded; if the commit fails, every operation that had succeeded in it gets that error (nothing
      was answered as accepted that is not stored).
    * Groups run one at a time per process behind `Database.write_gate` (shared with the worker and the
      outbox), so a storm's writers queue here, not in SQLite's busy handler, and the per-transaction cost
      (BEGIN IMMEDIATE, COMMIT, the WAL sync, the pool's reset) is paid once per group, not per operation.
    * SQLite only (one process per file). On PostgreSQL each operation keeps its own transaction: several
      processes write there, and groups locking rows in arrival order could deadlock each other.
    * Inside an operation a nested `grouped()` joins the same transaction in a nested savepoint.
    """

    def __init__(self, db: Database, *, max_members: int = 64) -> None:
        self.db = db
        self.max_members = max_members
        self._open: _Group | None = None
        self._live: set[AsyncSession] = set()
        self.stats = {"groups": 0, "operations": 0, "largest": 0}

    def _join(self) -> _Group:
        g = self._open
        if g is None or g.closed:
            g = self._open = _Group()
        g.pending += 1
        g.members += 1
        if g.members >= self.max_members:
            g.closed = True
        return g

    async def _begin(self, g: _Group) -> None:
        gate = self.db.write_gate
        await gate.acquire()
        try:
            g.cm = self.db.transaction()
            g.session = await g.cm.__aenter__()
            self._live.add(g.session)
        except BaseException:
            gate.release()
            raise

    async def _commit(self, g: _Group) -> None:
        """Close the group to joiners and commit it; the outcome goes to every member waiting on it."""
        g.closed = True
        if self._open is g:
            self._open = None
        gate = self.db.write_gate
        assert g.session is not None
        self._live.discard(g.session)
        try:
            await g.cm.__aexit__(None, None, None)
        except BaseException as exc:
            if not g.committed.done():
                g.committed.set_exception(exc)
                g.committed.exception()  # retrieved here: members that failed on their own never await it
        else:
            g.committed.set_result(None)
            self.stats["groups"] += 1
            self.stats["largest"] = max(self.stats["largest"], g.members)
        finally:
            gate.release()

    @asynccontextmanager
    async def operation(self) -> AsyncIterator[AsyncSession]:
        if not self.db.sqlite:
            # PostgreSQL: one transaction per operation, as before. It has no single write lock to amortize,
            # and a group locks incident rows in arrival order, so two processes' groups could deadlock.
            async with self.db.transaction() as s:
                yield s
            return
        outer = _IN_GROUP.get()
        if outer is not None and outer in self._live:  # re-entrant: the caller's transaction, own savepoint
            async with outer.begin_nested():
                yield outer
            return
        g = self._join()
        failed: BaseException | None = None
        async with g.lock:
            try:
                if g.session is None:
                    await self._begin(g)
                s = g.session
                assert s is not None
                snapshot = _info_snapshot(s)
                token = _IN_GROUP.set(s)
                try:
                    async with s.begin_nested():
                        yield s
                except BaseException:
                    _info_restore(s, snapshot)
                    raise
                finally:
                    _IN_GROUP.reset(token)
                self.stats["operations"] += 1
            except BaseException as exc:
                failed = exc
                if isinstance(exc, Exception) and unavailable(exc) and not isinstance(exc, StorageUnavailable):
                    raise self.db.unavailable_error(exc) from exc
                raise
            finally:
                g.pending -= 1
                if g.pending == 0 or g.closed:
                    g.closed = True
                    if self._open is g:
                        self._open = None
                if g.pending == 0 and g.session is not None:
                    await self._commit(g)
                elif g.pending == 0 and not g.committed.done():
                    g.committed.set_result(None)  # nobody got as far as a transaction
        if failed is None:
            await g.committed  # raises the commit's error: this operation was not stored


def _info_snapshot(s: AsyncSession) -> dict[str, int | None]:
    """What session.info held before an operation (pending after-commit events are lists there)."""
    return {k: (len(v) if isinstance(v, list) else None) for k, v in s.info.items()}


def _info_restore(s: AsyncSession, snap: dict[str, int | None]) -> None:
    """Forget what a rolled-back operation queued in session.info (its after-commit events)."""
    for k in list(s.info):
        if k not in snap:
            del s.info[k]
        elif snap[k] is not None and isinstance(s.info[k], list):
            del s.info[k][snap[k]:]
