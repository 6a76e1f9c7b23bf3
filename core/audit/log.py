"""Append to, read and verify the audit chain in the database. Appends are serialized per database."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Dialect, bindparam, cast, event, exists, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from core.audit.chain import (
    GENESIS,
    ChainVerifier,
    VerifyResult,
    canonical_json,
    checkpoint_signature,
    entry_material,
    hash_material,
    redact,
)
from core.db import render_positional
from core.models import AuditCheckpoint, AuditEntry
from core.sqlite_driver import INLINE_MANY_MAX, loop_thread_connection

# Arbitrary constant: the PostgreSQL advisory lock that serializes appends to the chain.
AUDIT_LOCK_ID = 0x70C5_1A0D  # fits the int4 of the two-key form
# The second key is the schema: installs sharing one database (`?search_path=`) have separate chains.
_LOCK = text("SELECT pg_advisory_xact_lock(:k, hashtext(current_schema()))")
_PENDING = "tocsin_audit_pending"
"""session.info key: (AuditLog, entries) appended in this transaction, written at commit (PostgreSQL)."""
_T = AuditEntry.__table__
_INSERT = insert(AuditEntry.__table__)  # type: ignore[arg-type]
_INSERT_CP = insert(AuditCheckpoint.__table__)  # type: ignore[arg-type]


def _insert_if_head() -> Any:
    """INSERT one entry only if (head_seq, prev_hash) is still the head: the check and the write are one
    statement under the append lock (SQLite's write lock, PostgreSQL's advisory lock)."""
    t = _T
    cols = ["seq", "ts", "actor", "source", "action", "resource", "details", "prev_hash", "hash"]
    values = select(*[cast(bindparam(c), t.c[c].type) for c in cols]).where(
        exists().where(t.c.seq == bindparam("head_seq"), t.c.hash == bindparam("prev_hash")),
        ~exists().where(t.c.seq > bindparam("head_seq")))
    return insert(t).from_select(cols, values)  # type: ignore[arg-type]


_INSERT_IF_HEAD = _insert_if_head()
_HEAD_SQL = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
_ENTRY_COLS = ("seq", "ts", "actor", "source", "action", "resource", "details", "prev_hash", "hash")
_PLAIN_INSERT = (f"INSERT INTO audit_log ({', '.join(_ENTRY_COLS)}) "
                 f"VALUES ({', '.join('?' * len(_ENTRY_COLS))})")
_values = itemgetter(*_ENTRY_COLS)


class _Statements:
    """The conditional INSERT rendered once per dialect, run as driver SQL with positional parameters: an
    append is on every action's path, and SQLAlchemy's per-execution work for a compiled statement (cache
    key, parameter processing) cost more than SQLite's for the statement itself."""

    _by_dialect: dict[tuple[type, str], _Statements] = {}

    def __init__(self, dialect: Dialect) -> None:
        self.insert_if_head: str
        self.names: tuple[str, ...]
        """Parameter names in positional order (qmark repeats a name; numeric styles name each once)."""
        self.insert_if_head, self.names, _ = render_positional(_INSERT_IF_HEAD, dialect)

    @classmethod
    def of(cls, dialect: Dialect) -> _Statements:
        key = (type(dialect), dialect.paramstyle)
        found = cls._by_dialect.get(key)
        if found is None:
            found = cls._by_dialect[key] = cls(dialect)
        return found

    def if_head(self, row: dict[str, Any], head_seq: int) -> tuple[Any, ...]:
        values = row | {"head_seq": head_seq}
        return tuple([values[n] for n in self.names])


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    """Write the entries queued by `AuditLog._link` (PostgreSQL) as the transaction's last statements:
    flush the unit of work first, so nothing after the audit lock waits for a row lock."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    session.flush()
    conn = session.connection()
    for log, items in pending:
        log._write(conn, items)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _ts(now: datetime | None) -> str:
    """UTC, ISO 8601 with microseconds and a Z: what strftime("%Y-%m-%dT%H:%M:%S.%fZ") gives, three times
    faster (every append stamps one)."""
    now = datetime.now(timezone.utc) if now is None else now.astimezone(timezone.utc)
    return now.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(slots=True)
class Appended:
    """An entry as written, with AuditEntry's attribute names; on PostgreSQL (written at commit) seq,
    prev_hash and hash are None. A plain record: building an ORM instance per append cost more than its
    SQL."""

    seq: int | None
    ts: str
    actor: str
    source: str
    action: str
    resource: str
    details: str
    prev_hash: str | None
    hash: str | None


class AuditLog:
    """Writes entries inside the caller's transaction, so the action and its audit row commit together."""

    def __init__(self, *, checkpoint_key: bytes = b"", checkpoint_every: int = 100,
                 on_append: Callable[[Appended], None] | None = None) -> None:
        self.checkpoint_key = checkpoint_key
        self.checkpoint_every = checkpoint_every
        self.on_append = on_append
        self._heads: dict[int, tuple[int, str]] = {}
        """(seq, hash) of the last entry this process appended, per engine: a hint, checked by the INSERT."""

    async def append(self, session: AsyncSession, *, actor: str, action: str, resource: str = "",
                     source: str = "", details: dict[str, Any] | None = None,
                     now: datetime | None = None) -> Appended:
        """Link a new entry to the head. On PostgreSQL a transaction-scoped advisory lock serializes
        appenders; on SQLite the IMMEDIATE transaction already holds the write lock."""
        rows = await self._link(session, [{"actor": actor, "action": action, "resource": resource,
                                           "source": source, "details": details}], now)
        return Appended(**rows[0])

    async def append_many(self, session: AsyncSession, items: Sequence[dict[str, Any]],
                          now: datetime | None = None) -> int:
        """Append several entries under one lock and one head read (batched delivery outcomes, bulk loads).
        Each item has actor, action and optionally resource, source, details."""
        return len(await self._link(session, items, now)) if items else 0

    async def _link(self, session: AsyncSession, items: Sequence[dict[str, Any]],
                    now: datetime | None) -> list[dict[str, Any]]:
        """Link `items` after the head, or (PostgreSQL) queue them for the end of the transaction.

        On PostgreSQL the chain is serialized by an advisory lock held until commit. Taken mid-transaction,
        a writer holding it could then wait for a row lock (the next incident of an SMS "ack all", a seen
        key) that another transaction holds while it waits for the audit lock: a deadlock. So the entries
        are written in `before_commit` (`_write_pending`), after the transaction's last flush: the audit
        lock is always the last lock a transaction takes, and its holder never waits for another lock.
        Their `seq` and `hash` are then only known after the commit (the returned rows have None there).
        SQLite serializes writers already (BEGIN IMMEDIATE): the entries are written at once."""
        ts = _ts(now)
        stamped = [{**it, "ts": ts} for it in items]
        if session.bind.dialect.name == "postgresql":
            session.info.setdefault(_PENDING, []).append((self, stamped))
            return [{"seq": None, "ts": ts, "actor": it["actor"], "source": it.get("source") or "",
                     "action": it["action"], "resource": it.get("resource") or "",
                     "details": canonical_json(redact(it.get("details") or {})), "prev_hash": None,
                     "hash": None} for it in stamped]
        return await session.run_sync(self._flush_and_write, stamped)

    def _flush_and_write(self, ss: Session, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        ss.flush()  # the caller's pending rows reach the database first, as an ORM add would (free if clean)
        return self._write(ss.connection(), items)

    def _write(self, conn: Connection, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Plain INSERTs on the transaction's connection (no ORM unit of work: an append is on every action's
        path, and the flush machinery cost more than the SQL), then the signed checkpoints that fall among
        the entries. On SQLite the write lock is held and the head is read and linked in two statements on
        the loop thread; otherwise the entries first link to the head this process wrote last, in one
        conditional INSERT that only lands if that head is still the head (under the append lock, so it
        stays the head until commit), and the head is read when it is not (another writer or process, a
        rolled-back transaction or savepoint, a first append). Returns the rows as written."""
        key = id(conn.engine)
        raw = loop_thread_connection(conn) if len(items) <= INLINE_MANY_MAX else None
        if raw is not None:
            rows, checkpoints = self._write_inline(raw, items)
        else:
            rows, checkpoints = self._write_checked(conn, key, items)
        if checkpoints:
            conn.execute(_INSERT_CP, checkpoints if len(checkpoints) > 1 else checkpoints[0])
        last = rows[-1]
        self._heads[key] = (last["seq"], last["hash"])
        if self.on_append:
            for r in rows:
                self.on_append(Appended(**r))
        return rows

    def _write_inline(self, raw: sqlite3.Connection,
                      items: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """SQLite, inside this transaction's write lock (BEGIN IMMEDIATE): nobody else can append until we
        commit, so the head read here is the head. Both statements go straight to sqlite3 on the loop thread,
        as the driver would run them (core/sqlite_driver.py), without SQLAlchemy's per-execution work."""
        sql = _HEAD_SQL
        try:
            head = raw.execute(sql).fetchone()
            rows, checkpoints = self._chain(items, *(head or (0, GENESIS)))
            sql = _PLAIN_INSERT
            if len(rows) == 1:
                raw.execute(sql, _values(rows[0]))
            else:
                raw.executemany(sql, [_values(r) for r in rows])
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
        return rows, checkpoints

    def _write_checked(self, conn: Connection, key: int,
                       items: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Through SQLAlchemy (PostgreSQL, large batches): under the append lock, link to the head this
        process wrote last if it is still the head (one conditional INSERT), else read the head."""
        if conn.dialect.name == "postgresql":
            conn.execute(_LOCK, {"k": AUDIT_LOCK_ID})
        cached = self._heads.get(key)
        rows: list[dict[str, Any]] = []
        checkpoints: list[dict[str, Any]] = []
        if cached:
            rows, checkpoints = self._chain(items, *cached)
            sql = _Statements.of(conn.dialect)
            if conn.exec_driver_sql(sql.insert_if_head, sql.if_head(rows[0], cached[0])).rowcount == 1:
                if len(rows) > 1:
                    conn.execute(_INSERT, rows[1:])
            else:
                rows = []
        if not rows:
            head = conn.exec_driver_sql(_HEAD_SQL).first()
            rows, checkpoints = self._chain(items, *((head[0], head[1]) if head else (0, GENESIS)))
            conn.execute(_INSERT, rows if len(rows) > 1 else rows[0])
        return rows, checkpoints

    def _chain(self, items: Sequence[dict[str, Any]], seq: int,
               prev: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The entry rows linked after (seq, prev), and the signed checkpoints that fall among them."""
        rows, checkpoints = [], []
        for it in items:
            seq += 1
            ts, actor, action = it["ts"], it["actor"], it["action"]
            source, resource, details = it.get("source") or "", it.get("resource") or "", it.get("details")
            body = canonical_json(redact(details)) if details else "{}"
            h = hash_material(entry_material(seq, ts, actor, source, action, resource, body, prev))
            rows.append({"seq": seq, "ts": ts, "actor": actor, "source": source, "action": action,
                         "resource": resource, "details": body, "prev_hash": prev, "hash": h})
            prev = h
            if self.checkpoint_key and seq % self.checkpoint_every == 0:
                checkpoints.append({"seq": seq, "head_hash": prev, "created_at": ts, "signature": checkpoint_signature(
                    self.checkpoint_key, seq=seq, head_hash=prev, created_at=ts)})
        return rows, checkpoints

    async def checkpoint(self, session: AsyncSession, now: datetime | None = None) -> AuditCheckpoint | None:
        """Sign the current (length, head) now; the server does this periodically."""
        if not self.checkpoint_key:
            return None
        head = (await session.execute(
            select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1))).first()
        if not head:
            return None
        ts = _ts(now)
        cp = AuditCheckpoint(seq=head[0], head_hash=head[1], created_at=ts, signature=checkpoint_signature(
            self.checkpoint_key, seq=head[0], head_hash=head[1], created_at=ts))
        session.add(cp)
        await session.flush()
        return cp

    @staticmethod
    async def entries(session: AsyncSession, *, resource: str | None = None, limit: int | None = None,
                      resource_prefix: str | None = None) -> Sequence[AuditEntry]:
        """Entries in chain order; with `limit`, only the latest `limit` (read newest first from the index,
        so a page of 200 never loads a million-entry chain)."""
        q = select(AuditEntry)
        if resource is not None:
            q = q.where(AuditEntry.resource == resource)
        if resource_prefix is not None:
            q = q.where(AuditEntry.resource.like(resource_prefix + "%"))
        if limit:
            rows = (await session.execute(q.order_by(AuditEntry.seq.desc()).limit(limit))).scalars().all()
            return list(reversed(rows))
        return (await session.execute(q.order_by(AuditEntry.seq))).scalars().all()


async def verify(engine: AsyncEngine, *, checkpoint_key: bytes = b"", chunk: int = 20_000,
                 progress: Callable[[int, int], None] | None = None) -> VerifyResult:
    """Check the whole chain in seq order, in chunks (constant memory), then the signed checkpoints.

    A SQLite file is read on a thread through its own read-only connection: tuples straight from C, and
    no write lock held for the seconds a large chain takes (our engine begins every transaction IMMEDIATE)."""
    db_file = engine.url.database if engine.dialect.name == "sqlite" else None
    if db_file and db_file != ":memory:":
        return await asyncio.to_thread(_verify_sqlite_file, db_file, checkpoint_key, chunk, progress)
    v = ChainVerifier()
    async with engine.connect() as conn:
        total = (await conn.execute(select(func.count()).select_from(AuditEntry))).scalar_one()
        last = 0
        while True:
            rows = (await conn.exec_driver_sql(
                f"SELECT {_COLS} FROM audit_log WHERE seq > {int(last)} ORDER BY seq LIMIT {int(chunk)}")).all()
            if not rows or not v.feed(rows):
                break
            last = rows[-1][0]
            if progress:
                progress(v.count, total)
        cps = [tuple(r) for r in (await conn.exec_driver_sql(_CP_SQL)).all()]
        wanted = sorted({cp[1] for cp in cps})
        heads: dict[int, str] = {}
        if wanted:
            heads = dict((await conn.execute(select(AuditEntry.seq, AuditEntry.hash).where(
                AuditEntry.seq.in_(wanted)))).all())
    return _conclude(v, total, cps, heads, checkpoint_key)


_COLS = "seq, ts, actor, source, action, resource, details, prev_hash, hash"
_CP_SQL = "SELECT id, seq, head_hash, created_at, signature FROM audit_checkpoints ORDER BY id"


def _verify_sqlite_file(path: str, key: bytes, chunk: int,
                        progress: Callable[[int, int], None] | None) -> VerifyResult:
    v = ChainVerifier()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        total = con.execute("SELECT count(*) FROM audit_log").fetchone()[0]
        cur = con.execute(f"SELECT {_COLS} FROM audit_log ORDER BY seq")
        while True:
            rows = cur.fetchmany(chunk)
            if not rows or not v.feed(rows):
                break
            if progress:
                progress(v.count, total)
        cur.close()
        cps = con.execute(_CP_SQL).fetchall()
        wanted = sorted({cp[1] for cp in cps})
        heads = dict(con.execute(f"SELECT seq, hash FROM audit_log WHERE seq IN ({','.join('?' * len(wanted))})",
                                 wanted).fetchall()) if wanted else {}
    finally:
        con.close()
    return _conclude(v, total, cps, heads, key)


def _conclude(v: ChainVerifier, total: int, cps: Sequence[tuple[Any, ...]], heads: dict[int, str],
              key: bytes) -> VerifyResult:
    """After the walk: every row reached, and every signed checkpoint genuine and still matching."""
    result = v.result()
    if not result.ok:
        return result
    if result.count != total:
        return VerifyResult(False, result.count, result.head,
                            f"{total - result.count} entries are not reachable in sequence", result.count + 1)
    if not key:
        return result
    for cp_id, seq, head_hash, created_at, signature in cps:
        if checkpoint_signature(key, seq=seq, head_hash=head_hash, created_at=created_at) != signature:
            return VerifyResult(False, result.count, result.head,
                                f"checkpoint {cp_id} has a bad signature (forged or edited)", seq)
        if seq > result.count:
            return VerifyResult(False, result.count, result.head,
                                f"chain was truncated: a signed checkpoint saw {seq} entries, "
                                f"only {result.count} remain", result.count + 1)
        if heads.get(seq) != head_hash:
            return VerifyResult(False, result.count, result.head,
                                f"entry {seq} differs from its signed checkpoint (chain rewritten)", seq)
    return result
