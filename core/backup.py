"""Backup and restore: one tar.gz holding a consistent database snapshot, the raw config file and a manifest.

Formats of the database part (manifest `database.format`):
- `sqlite`: a copy made with SQLite's online backup API (one step, so it is one consistent snapshot while
  the bot keeps writing); restored with the same API into the target file, which other connections then
  see change atomically.
- `pg_dump`: plain SQL from pg_dump, taken inside an exported snapshot so the manifest's counts and audit
  head describe exactly the dumped data; restored with psql in a single transaction. Tied to the schema
  it was dumped from.
- `jsonl`: a logical export through SQLAlchemy, one JSON line per row, one file per table, read in one
  REPEATABLE READ transaction. Works without PostgreSQL client tools and restores into either database
  (SQLite <-> PostgreSQL), inside one transaction: a failed restore changes nothing.

The config is copied as the raw file text, so secrets stay `${VAR}` references and never land in the
archive resolved. The manifest records the audit chain head, schema revision and row counts; restore
checks the restored database against them and verifies the audit chain.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Integer, MetaData, Table, func, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import migrate
from core.audit.chain import VerifyResult
from core.audit.log import verify
from core.db import Database, create_engine
from core.errors import TocsinError

log = logging.getLogger("tocsin.backup")

FORMAT_VERSION = 1
ARCHIVE_PREFIX = "tocsin-backup-"
SQLITE_FILE = "database/tocsin.sqlite3"
PG_DUMP_FILE = "database/dump.sql"
JSONL_DIR = "database/tables"
VERSION_TABLE = "alembic_version"
BATCH = 2000

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stages are `snapshot`, `export`, `import`, `verify`."""


class BackupError(TocsinError):
    code = "backup_error"


class DatabaseNotEmpty(BackupError):
    """Restore refuses to overwrite data unless forced."""

    code = "not_empty"


@dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]

    def describe(self) -> str:
        m = self.manifest
        rows = sum(v for k, v in m["counts"].items() if k != VERSION_TABLE)
        head = m.get("audit_head")
        head_s = f"audit head #{head['seq']} {head['hash'][:12]}" if head else "audit chain empty"
        return (f"wrote {self.path} ({m['database']['format']}, {rows:,} rows in {len(m['counts'])} tables, "
                f"{head_s}, schema {m['schema_revision'] or 'none'})")


@dataclass
class RestoreResult:
    manifest: dict[str, Any]
    verify: VerifyResult
    counts: dict[str, int]
    count_problems: list[str] = field(default_factory=list)
    head_matches: bool = True
    previous_copy: Path | None = None
    """SQLite: where the database that was replaced (with --force) was saved first."""

    @property
    def ok(self) -> bool:
        return self.verify.ok and not self.count_problems and self.head_matches

    def describe(self) -> str:
        rows = sum(v for k, v in self.counts.items() if k != VERSION_TABLE)
        lines = [f"restored {rows:,} rows in {len(self.counts)} tables "
                 f"(backup of {self.manifest['created_at']}, schema {self.manifest['schema_revision']})"]
        if self.previous_copy:
            lines.append(f"the replaced database was saved to {self.previous_copy}")
        lines.extend(self.count_problems)
        if not self.head_matches:
            lines.append("audit chain head differs from the one recorded in the backup manifest")
        lines.append(f"audit verify: {self.verify.describe()}")
        return "\n".join(lines)


# --- helpers ----------------------------------------------------------------------------------------


def tocsin_version() -> str:
    try:
        return importlib_metadata.version("tocsin")
    except importlib_metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _stamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y%m%d_%H%M%S")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise BackupError("an in-memory SQLite database has nothing on disk to back up or restore into")
    return Path(database)


def _tick(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


async def _rmtree(path: Path) -> None:
    await asyncio.to_thread(shutil.rmtree, path, True)


def _encode(value: Any) -> Any:
    """JSON for one column value. Naive datetimes are UTC (tocsin stores UTC; SQLite drops the offset)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise BackupError("binary columns are not supported by the logical format")
    return value


def _decoder(table: Table) -> Callable[[dict[str, Any]], dict[str, Any]]:
    dt_cols = {c.name for c in table.columns if isinstance(c.type, DateTime)}
    known = {c.name for c in table.columns}

    def decode(row: dict[str, Any]) -> dict[str, Any]:
        unknown = set(row) - known
        if unknown:
            raise BackupError(f"table {table.name}: the backup has columns {sorted(unknown)} the target lacks")
        for name in dt_cols & set(row):
            if isinstance(row[name], str):
                row[name] = datetime.fromisoformat(row[name])
        return row

    return decode


async def _reflect(conn: AsyncConnection) -> MetaData:
    md = MetaData()
    await conn.run_sync(lambda sync: md.reflect(sync))
    return md


async def _counts(conn: AsyncConnection, md: MetaData) -> dict[str, int]:
    out = {}
    for t in md.sorted_tables:
        out[t.name] = int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
    return out


async def _head_and_revision(conn: AsyncConnection, md: MetaData) -> tuple[dict[str, Any] | None, str | None]:
    head = None
    if "audit_log" in md.tables:
        row = (await conn.execute(text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"))).first()
        head = {"seq": int(row[0]), "hash": str(row[1])} if row else None
    rev = None
    if VERSION_TABLE in md.tables:
        rev = (await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).scalar()
    return head, rev


# --- backup -----------------------------------------------------------------------------------------


async def backup(db: Database, *, out_dir: str | os.PathLike[str] = ".",
                 config_path: str | os.PathLike[str] | None = None, fmt: str = "auto",
                 progress: Progress | None = None, now: datetime | None = None) -> BackupResult:
    """Write `tocsin-backup-YYYYMMDD_HHMMSS.tar.gz` (UTC) into `out_dir`; return its path and manifest.

    fmt: `auto` (SQLite snapshot; pg_dump on PostgreSQL, falling back to the logical format when pg_dump is
    missing or refuses), `native` (no fallback) or `logical` (JSON lines, restorable into either database).
    """
    if fmt not in ("auto", "native", "logical"):
        raise BackupError(f"unknown backup format {fmt!r} (auto, native, logical)")
    now = now or datetime.now(timezone.utc)
    out = Path(out_dir)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    staging = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".tocsin-backup-", dir=out))
    try:
        info = await _snapshot(db, staging, fmt=fmt, progress=progress)
        config: dict[str, Any] | None = None
        if config_path is not None and Path(config_path).is_file():
            name = f"config/{Path(config_path).name}"
            await asyncio.to_thread(_copy_into, Path(config_path), staging / name)
            config = {"file": name, "source": str(Path(config_path).resolve())}
        files = await asyncio.to_thread(_checksums, staging)
        manifest = {
            "format_version": FORMAT_VERSION,
            "tocsin_version": tocsin_version(),
            "created_at": now.astimezone(timezone.utc).isoformat(),
            "database": info["database"],
            "schema_revision": info["schema_revision"],
            "audit_head": info["audit_head"],
            "counts": info["counts"],
            "config": config,
            "files": files,
        }
        await asyncio.to_thread((staging / "manifest.json").write_text,
                                json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        path = await asyncio.to_thread(_write_archive, staging, out, _stamp(now))
    finally:
        await _rmtree(staging)
    log.info("backup.written", extra={"path": str(path), "format": manifest["database"]["format"],
                                      "rows": sum(manifest["counts"].values()),
                                      "audit_seq": (manifest["audit_head"] or {}).get("seq")})
    return BackupResult(path, manifest)


def _checksums(staging: Path) -> dict[str, dict[str, Any]]:
    return {p.relative_to(staging).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(x for x in staging.rglob("*") if x.is_file())}


def _copy_into(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)  # the raw text: ${VAR} references stay references


def _write_archive(staging: Path, out: Path, stamp: str) -> Path:
    """Write next to the final name and rename, so a half-written archive never has the final name.
    The archive holds contacts and the audit trail: readable by the owner only."""
    final = out / f"{ARCHIVE_PREFIX}{stamp}.tar.gz"
    n = 1
    while final.exists():
        final = out / f"{ARCHIVE_PREFIX}{stamp}-{n}.tar.gz"
        n += 1
    partial = final.with_name(final.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.add(staging / "manifest.json", arcname="manifest.json")
        for p in sorted(x for x in staging.rglob("*") if x.is_file() and x.name != "manifest.json"):
            tar.add(p, arcname=p.relative_to(staging).as_posix())
        raw.flush()
    os.replace(partial, final)
    return final


async def _snapshot(db: Database, staging: Path, *, fmt: str, progress: Progress | None) -> dict[str, Any]:
    if db.sqlite:
        snap = staging / SQLITE_FILE
        info = await asyncio.to_thread(_sqlite_snapshot, _sqlite_path(db.cfg.url), snap, progress)
        if fmt != "logical":
            return info
        # Logical from SQLite: export the private snapshot (consistent, and the live database stays free).
        snap_engine = create_engine(f"sqlite+aiosqlite:///{snap}")
        try:
            info = await _logical_export(snap_engine, staging, progress)
        finally:
            await snap_engine.dispose()
        await asyncio.to_thread(snap.unlink)
        return info
    if fmt != "logical":
        if shutil.which("pg_dump"):
            try:
                return await _pg_dump(db, staging, progress)
            except BackupError as exc:
                if fmt == "native":
                    raise
                log.warning("backup.pg_dump.failed", extra={"error": str(exc), "fallback": "jsonl"})
                await _rmtree(staging / "database")
        elif fmt == "native":
            raise BackupError("pg_dump is not installed: install the PostgreSQL client, or use --format logical")
    return await _logical_export(db.engine, staging, progress)


def _sqlite_snapshot(src: Path, dst: Path, progress: Progress | None) -> dict[str, Any]:
    """One-step online backup: a single read transaction, so the copy is one consistent point in time
    (a stepped backup would restart on every concurrent write and could starve under load)."""
    if not src.exists():
        raise BackupError(f"SQLite database {src} does not exist")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(src, timeout=30)) as source, \
            contextlib.closing(sqlite3.connect(dst)) as target:
        source.backup(target, progress=lambda _s, remaining, total: _tick(progress, "snapshot",
                                                                           total - remaining, total))
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        check = target.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the snapshot failed SQLite's integrity check: {check}")
        tables = [r[0] for r in target.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        counts = {t: int(target.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
        head = None
        if "audit_log" in tables:
            row = target.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            head = {"seq": int(row[0]), "hash": str(row[1])} if row else None
        rev = None
        if VERSION_TABLE in tables:
            row = target.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
            rev = row[0] if row else None
    return {"database": {"dialect": "sqlite", "format": "sqlite", "file": SQLITE_FILE},
            "schema_revision": rev, "audit_head": head, "counts": counts}


def _pg_env(url: str) -> dict[str, str]:
    """libpq settings from our URL, passed by environment so the password never shows in `ps`."""
    u = make_url(url)
    env = dict(os.environ)
    for var, value in (("PGHOST", u.host), ("PGPORT", u.port), ("PGUSER", u.username),
                       ("PGPASSWORD", u.password), ("PGDATABASE", u.database)):
        if value is not None:
            env[var] = str(value)
    env["PGCONNECT_TIMEOUT"] = env.get("PGCONNECT_TIMEOUT", "10")
    return env


async def _run_tool(argv: list[str], *, env: dict[str, str], what: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        msg = (err or out).decode(errors="replace").strip()[-2000:]
        raise BackupError(f"{what} failed (exit {proc.returncode}): {msg}")


async def _pg_dump(db: Database, staging: Path, progress: Progress | None) -> dict[str, Any]:
    """pg_dump inside a snapshot we export, so manifest and dump describe the same instant."""
    target = staging / PG_DUMP_FILE
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            snapshot = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
            schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
            md = await _reflect(conn)
            counts = await _counts(conn, md)
            head, rev = await _head_and_revision(conn, md)
            total = sum(counts.values())
            _tick(progress, "export", 0, total)
            argv = ["pg_dump", "--no-password", "--format=plain", "--no-owner", "--no-privileges",
                    f"--snapshot={snapshot}", f"--file={target}"]
            for t in sorted(md.tables):
                argv += ["-t", f'"{schema}"."{t}"']
            await _run_tool(argv, env=_pg_env(db.cfg.url), what="pg_dump")
            _tick(progress, "export", total, total)
    return {"database": {"dialect": "postgresql", "format": "pg_dump", "file": PG_DUMP_FILE, "schema": schema},
            "schema_revision": rev, "audit_head": head, "counts": counts}


async def _logical_export(engine: AsyncEngine, staging: Path, progress: Progress | None) -> dict[str, Any]:
    """Every table as JSON lines, in primary key order, from one repeatable-read transaction."""
    folder = staging / JSONL_DIR
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            md = await _reflect(conn)
            counts = await _counts(conn, md)
            head, rev = await _head_and_revision(conn, md)
            total, done = sum(counts.values()), 0
            _tick(progress, "export", 0, total)
            for t in md.sorted_tables:
                pk = list(t.primary_key.columns) or list(t.columns)
                fh = await asyncio.to_thread((folder / f"{t.name}.jsonl").open, "w", encoding="utf-8")
                try:
                    result = await conn.stream(select(t).order_by(*pk))
                    async for part in result.mappings().partitions(BATCH):
                        chunk = "".join(json.dumps({k: _encode(v) for k, v in row.items()}, ensure_ascii=False,
                                                   separators=(",", ":")) + "\n" for row in part)
                        await asyncio.to_thread(fh.write, chunk)
                        done += len(part)
                        _tick(progress, "export", done, total)
                finally:
                    await asyncio.to_thread(fh.close)
    return {"database": {"dialect": engine.dialect.name, "format": "jsonl", "dir": JSONL_DIR,
                         "tables": [t.name for t in md.sorted_tables]},
            "schema_revision": rev, "audit_head": head, "counts": counts}


# --- restore ----------------------------------------------------------------------------------------


def read_manifest(archive: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an archive, without extracting the rest."""
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise BackupError(f"{archive} has no manifest.json: not a tocsin backup")
        return dict(json.loads(member.read()))


def _extract(archive: Path, dest: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")  # no absolute paths, links out of dest or device files
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"cannot read {archive}: {exc}") from exc
    mf = dest / "manifest.json"
    if not mf.is_file():
        raise BackupError(f"{archive} has no manifest.json: not a tocsin backup")
    manifest = dict(json.loads(mf.read_text()))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"backup format {manifest.get('format_version')} is not supported "
                          f"(this tocsin reads format {FORMAT_VERSION})")
    for rel, meta in manifest.get("files", {}).items():
        p = dest / rel
        if not p.is_file() or _sha256(p) != meta["sha256"]:
            raise BackupError(f"{archive}: {rel} is missing or does not match its checksum (damaged archive)")
    return manifest


async def data_counts(engine: AsyncEngine) -> dict[str, int]:
    """Rows per table in the target's schema (empty dict when there are no tables yet)."""
    async with engine.connect() as conn:
        md = await _reflect(conn)
        return await _counts(conn, md)


async def restore(archive: str | os.PathLike[str], *, db: Database, checkpoint_key: bytes = b"",
                  force: bool = False, progress: Progress | None = None) -> RestoreResult:
    """Restore `archive` into `db`, then check counts and audit head against the manifest and verify
    the chain. Refuses (DatabaseNotEmpty) when the database already holds rows, unless `force`.
    Stop every `tocsin run` on this database first."""
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"no such backup archive: {archive}")
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="tocsin-restore-"))
    previous: Path | None = None
    try:
        manifest = await asyncio.to_thread(_extract, archive, work)
        _check_revision(manifest.get("schema_revision"))
        fmt = manifest["database"]["format"]
        existing = await _existing_rows(db)
        if existing and not force:
            listed = ", ".join(f"{k}: {v}" for k, v in sorted(existing.items()))
            raise DatabaseNotEmpty(f"the database already holds data ({listed}); "
                                   "use --force to replace it (stop every `tocsin run` on it first)")
        if fmt == "sqlite" and db.sqlite:
            await db.engine.dispose()  # no pooled connection of ours across the swap
            previous = await asyncio.to_thread(_sqlite_restore, work / manifest["database"]["file"],
                                               _sqlite_path(db.cfg.url), keep_previous=bool(existing))
        elif fmt == "sqlite":
            # SQLite archive into PostgreSQL: read the snapshot through the logical path.
            snap_engine = create_engine(f"sqlite+aiosqlite:///{work / manifest['database']['file']}")
            try:
                await _logical_export(snap_engine, work, None)
            finally:
                await snap_engine.dispose()
            await _logical_import(db.engine, work / JSONL_DIR, manifest, progress)
        elif fmt == "jsonl":
            if db.sqlite and existing:
                previous = await asyncio.to_thread(_sqlite_keep_copy, _sqlite_path(db.cfg.url))
            await _logical_import(db.engine, work / manifest["database"]["dir"], manifest, progress)
        elif fmt == "pg_dump":
            if db.sqlite:
                raise BackupError("this archive is a pg_dump of PostgreSQL and cannot be restored into SQLite; "
                                  "make the backup with --format logical to move between databases")
            await _psql_restore(db, work / manifest["database"]["file"], manifest)
        else:
            raise BackupError(f"unknown database format {fmt!r} in the manifest")
    finally:
        await _rmtree(work)
    return await _check(db, manifest, checkpoint_key=checkpoint_key, progress=progress, previous=previous)


def _check_revision(rev: str | None) -> None:
    if rev is None:
        return
    from alembic.script import ScriptDirectory

    try:
        ScriptDirectory.from_config(migrate.alembic_config()).get_revision(rev)
    except Exception as exc:  # alembic raises several types for an unknown revision
        raise BackupError(f"the backup is at schema revision {rev!r}, which this tocsin does not know "
                          f"(made by a newer version?): {exc}") from exc


async def _existing_rows(db: Database) -> dict[str, int]:
    if db.sqlite and not _sqlite_path(db.cfg.url).exists():
        return {}
    counts = await data_counts(db.engine)
    return {k: v for k, v in counts.items() if v and k != VERSION_TABLE}


def _sqlite_keep_copy(target: Path) -> Path:
    """Before replacing data, keep what was there (the cheapest undo there is)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    copy = target.with_name(f"{target.name}.before-restore-{stamp}")
    with contextlib.closing(sqlite3.connect(target, timeout=30)) as src, \
            contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
    return copy


def _sqlite_restore(snapshot: Path, target: Path, *, keep_previous: bool) -> Path | None:
    """Copy the snapshot into the target through SQLite's backup API: it takes the target's write lock
    and replaces every page in one go, so any other connection sees the old or the new database, never
    a mix — unlike moving files under a live WAL database."""
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = _sqlite_keep_copy(target) if keep_previous else None
    with contextlib.closing(sqlite3.connect(snapshot)) as src, \
            contextlib.closing(sqlite3.connect(target, timeout=30)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")
        check = dst.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the restored database failed SQLite's integrity check: {check}")
    return previous


async def _logical_import(engine: AsyncEngine, folder: Path, manifest: dict[str, Any],
                          progress: Progress | None) -> None:
    """Drop what is there, create the schema at the backup's revision, load every row, fix sequences —
    all in one transaction (DDL is transactional on PostgreSQL and SQLite), so a failure changes nothing."""
    rev = manifest.get("schema_revision")
    counts: dict[str, int] = manifest["counts"]
    total = sum(v for k, v in counts.items() if k != VERSION_TABLE)
    done = 0
    async with engine.begin() as conn:
        old = await _reflect(conn)
        await conn.run_sync(lambda sync: old.drop_all(sync))
        if rev is not None:
            await conn.run_sync(lambda sync: _upgrade(sync, rev))
        md = await _reflect(conn)
        missing = [t for t in counts if t not in md.tables]
        if missing:
            raise BackupError(f"tables {missing} of the backup do not exist at revision {rev}")
        _tick(progress, "import", 0, total)
        for t in md.sorted_tables:
            path = folder / f"{t.name}.jsonl"
            if t.name == VERSION_TABLE or not path.exists():
                continue
            decode = _decoder(t)
            fh = await asyncio.to_thread(path.open, "r", encoding="utf-8")
            try:
                while True:
                    lines = await asyncio.to_thread(_read_lines, fh, BATCH)
                    if not lines:
                        break
                    await conn.execute(t.insert(), [decode(json.loads(x)) for x in lines])
                    done += len(lines)
                    _tick(progress, "import", done, total)
            finally:
                await asyncio.to_thread(fh.close)
        if engine.dialect.name == "postgresql":
            await _reset_sequences(conn, md.sorted_tables)
    # The schema stays at the backup's revision, exactly as backed up; `tocsin run` upgrades it on start.


def _upgrade(sync: Connection, rev: str) -> None:
    from alembic import command

    command.upgrade(migrate.alembic_config(sync), rev)


def _read_lines(fh: Any, n: int) -> list[str]:
    out = []
    for line in fh:
        if line.strip():
            out.append(line)
            if len(out) >= n:
                break
    return out


async def _reset_sequences(conn: AsyncConnection, tables: Iterable[Table]) -> None:
    """Rows came with their ids: move each serial sequence past the highest, or the next insert collides."""
    for t in tables:
        for col in t.primary_key.columns:
            if not isinstance(col.type, Integer):
                continue
            seq = (await conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                      {"t": t.name, "c": col.name})).scalar()
            if seq:
                await conn.execute(text(f'SELECT setval(:s, COALESCE((SELECT max("{col.name}") FROM "{t.name}"), 0)'
                                        " + 1, false)"), {"s": seq})


async def _psql_restore(db: Database, dump: Path, manifest: dict[str, Any]) -> None:
    """Drop our tables and load the dump in ONE psql transaction (-1, stop on the first error)."""
    if not shutil.which("psql"):
        raise BackupError("psql is not installed: install the PostgreSQL client to restore a pg_dump archive")
    async with db.engine.connect() as conn:
        schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
        md = await _reflect(conn)
    source_schema = manifest["database"].get("schema")
    if source_schema != schema:
        raise BackupError(f"this pg_dump archive holds schema {source_schema!r} but the configured database "
                          f"uses {schema!r}; restore into {source_schema!r}, or back up with --format logical")
    drops = "".join(f'DROP TABLE IF EXISTS "{schema}"."{t}" CASCADE;' for t in sorted(md.tables))
    argv = ["psql", "--no-psqlrc", "--quiet", "--no-password", "--single-transaction",
            "--set=ON_ERROR_STOP=1", "--output=/dev/null"]
    if drops:
        argv += ["--command", drops]
    argv += ["--file", str(dump)]
    await db.engine.dispose()
    await _run_tool(argv, env=_pg_env(db.cfg.url), what="psql restore")


async def _check(db: Database, manifest: dict[str, Any], *, checkpoint_key: bytes, progress: Progress | None,
                 previous: Path | None) -> RestoreResult:
    counts = await data_counts(db.engine)
    problems = []
    for table, want in sorted(manifest["counts"].items()):
        if table == VERSION_TABLE:
            continue
        got = counts.get(table)
        if got != want:
            problems.append(f"table {table}: {got} rows restored, the backup has {want}")
    res = await verify(db.engine, checkpoint_key=checkpoint_key,
                       progress=(lambda d, t: _tick(progress, "verify", d, t)) if progress else None)
    head = manifest.get("audit_head")
    async with db.engine.connect() as conn:
        row = (await conn.execute(text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"))).first()
    now_head = {"seq": int(row[0]), "hash": str(row[1])} if row else None
    result = RestoreResult(manifest, res, counts, problems, head_matches=(now_head == head), previous_copy=previous)
    log.info("backup.restored", extra={"ok": result.ok, "rows": sum(counts.values()),
                                       "audit": res.describe(), "format": manifest["database"]["format"]})
    return result
