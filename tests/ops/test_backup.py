"""Backup and restore: a round trip loses nothing (SQLite, PostgreSQL logical and pg_dump, and across the
two), snapshots stay consistent under writes, restore refuses to clobber data, damage is detected."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import tarfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.context import Context, open_context
from core.migrate import head_revision
from core import backup as B
from core.audit.log import verify
from core.db import Database
from core.rbac import Actor
from tests.conftest import BASE_CONFIG, deep_merge, make_config

ADMIN = Actor("cli:admin", source="test")
KEY = b"test-checkpoint-key"


async def populate(ctx: Context, n: int = 4) -> None:
    """A bit of everything: incidents in every state, thread messages, deliveries, audit + checkpoints."""
    svc = ctx.service
    for i in range(n):
        out = await svc.declare(actor=ADMIN, title=f"outage {i} — ünïcode ✓", severity="sev1" if i % 2 else "sev3",
                                description=f"call +1555010000{i}", labels={"team": "db", "n": i},
                                payload={"nested": {"list": [1, 2.5, None, "x"]}})
        ref = out.incident.ref
        await svc.update(ref, actor=ADMIN, text=f"update {i}")
        if i % 3 == 1:
            await svc.acknowledge(ref, actor=ADMIN)
        if i % 2 == 0:
            await svc.resolve(ref, actor=ADMIN, text="fixed")
    await svc.notify(actor=ADMIN, text="one-time heads-up", contact_list="leads")


def _norm(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


async def dump_all(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, normalized so SQLite and PostgreSQL compare equal."""
    out: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as conn:
        md = MetaData()
        await conn.run_sync(lambda s: md.reflect(s))
        for t in md.sorted_tables:
            pk = list(t.primary_key.columns) or list(t.columns)
            rows = (await conn.execute(select(t).order_by(*pk))).mappings().all()
            out[t.name] = [{k: _norm(v) for k, v in r.items()} for r in rows]
    return out


async def fresh_db(url: str) -> Database:
    return Database(make_config(url).database)


# --- SQLite -----------------------------------------------------------------------------------------


async def test_sqlite_round_trip_loses_nothing(tmp_path: Path, sqlite_url: str) -> None:
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("# secrets stay references\naudit:\n  checkpoint_key: ${TOCSIN_AUDIT_KEY:-x}\n")
    ctx = await open_context(cfg=make_config(sqlite_url))
    try:
        await populate(ctx)
        before = await dump_all(ctx.db.engine)
        stages: list[str] = []
        res = await B.backup(ctx.db, out_dir=tmp_path / "out", config_path=cfg_file,
                             progress=lambda st, d, t: stages.append(st),
                             now=datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc))
    finally:
        await ctx.close()
    assert res.path.name == "tocsin-backup-20260304_050607.tar.gz"
    assert [x.name for x in (tmp_path / "out").iterdir()] == [res.path.name]  # no staging or .partial left
    assert res.path.stat().st_mode & 0o077 == 0  # owner-only: it holds contacts and the audit trail
    assert "snapshot" in stages
    m = B.read_manifest(res.path)
    assert m["database"]["format"] == "sqlite" and m["schema_revision"] == head_revision()
    assert m["counts"]["incidents"] == 4 and m["counts"]["audit_log"] == len(before["audit_log"])
    assert m["audit_head"] == {"seq": before["audit_log"][-1]["seq"], "hash": before["audit_log"][-1]["hash"]}
    assert m["created_at"] == "2026-03-04T05:06:07+00:00" and m["tocsin_version"]
    with tarfile.open(res.path) as tar:
        raw = tar.extractfile(m["config"]["file"]).read().decode()  # type: ignore[union-attr]
    assert "${TOCSIN_AUDIT_KEY:-x}" in raw  # the raw text, not the resolved secret

    target = await fresh_db(f"sqlite+aiosqlite:///{tmp_path / 'restored' / 'tocsin.db'}")
    try:
        out = await B.restore(res.path, db=target, checkpoint_key=KEY)
        assert out.ok, out.describe()
        assert out.verify.ok and out.verify.count == len(before["audit_log"])
        assert await dump_all(target.engine) == before
    finally:
        await target.close()


async def test_sqlite_snapshot_is_consistent_while_the_bot_writes(tmp_path: Path, sqlite_url: str) -> None:
    ctx = await open_context(cfg=make_config(sqlite_url))
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            await ctx.service.declare(actor=ADMIN, title=f"busy {i}", severity="sev4")
            i += 1

    try:
        await populate(ctx, 2)
        task = asyncio.create_task(writer())
        await asyncio.sleep(0.2)
        res = await B.backup(ctx.db, out_dir=tmp_path)
        await asyncio.sleep(0.1)
        stop.set()
        await task
    finally:
        await ctx.close()
    target = await fresh_db(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    try:
        out = await B.restore(res.path, db=target, checkpoint_key=KEY)
        assert out.ok, out.describe()  # counts and audit head equal the manifest's: one instant
    finally:
        await target.close()


async def test_restore_refuses_a_database_with_data_unless_forced(tmp_path: Path, sqlite_url: str) -> None:
    ctx = await open_context(cfg=make_config(sqlite_url))
    try:
        await populate(ctx, 2)
        before = await dump_all(ctx.db.engine)
        res = await B.backup(ctx.db, out_dir=tmp_path)
        await ctx.service.declare(actor=ADMIN, title="after the backup", severity="sev4")
        with pytest.raises(B.DatabaseNotEmpty, match="--force"):
            await B.restore(res.path, db=ctx.db, checkpoint_key=KEY)
        assert len((await dump_all(ctx.db.engine))["incidents"]) == 3  # untouched
        out = await B.restore(res.path, db=ctx.db, checkpoint_key=KEY, force=True)
        assert out.ok, out.describe()
        assert await dump_all(ctx.db.engine) == before
        assert out.previous_copy is not None and out.previous_copy.exists()  # the replaced data is kept
        # The running context's engine keeps working on the restored file.
        again = await ctx.service.declare(actor=ADMIN, title="after restore", severity="sev4")
        assert again.incident.id == 3
        assert (await verify(ctx.db.engine, checkpoint_key=KEY)).ok
    finally:
        await ctx.close()


async def test_an_empty_migrated_database_is_not_data(tmp_path: Path, sqlite_url: str) -> None:
    """`tocsin run` once (schema, no rows) must not need --force."""
    src = await open_context(cfg=make_config(sqlite_url))
    try:
        await populate(src, 1)
        res = await B.backup(src.db, out_dir=tmp_path)
    finally:
        await src.close()
    empty = await open_context(cfg=make_config(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"))
    try:
        out = await B.restore(res.path, db=empty.db, checkpoint_key=KEY)
        assert out.ok and out.previous_copy is None
    finally:
        await empty.close()


async def test_a_damaged_archive_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    ctx = await open_context(cfg=make_config(sqlite_url))
    try:
        await populate(ctx, 1)
        res = await B.backup(ctx.db, out_dir=tmp_path, fmt="logical")
    finally:
        await ctx.close()
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(res.path) as src, tarfile.open(bad, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith("incidents.jsonl"):
                data = data.replace(b"outage 0", b"outage X")
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    target = await fresh_db(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    try:
        with pytest.raises(B.BackupError, match="checksum"):
            await B.restore(bad, db=target, checkpoint_key=KEY)
    finally:
        await target.close()


async def test_a_tampered_audit_chain_is_reported_after_restore(tmp_path: Path, sqlite_url: str) -> None:
    ctx = await open_context(cfg=make_config(sqlite_url))
    try:
        await populate(ctx, 2)
        async with ctx.db.transaction() as s:
            from sqlalchemy import text

            await s.execute(text("UPDATE audit_log SET actor = 'cli:mallory' WHERE seq = 2"))
        res = await B.backup(ctx.db, out_dir=tmp_path)
    finally:
        await ctx.close()
    target = await fresh_db(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    try:
        out = await B.restore(res.path, db=target, checkpoint_key=KEY)
        assert not out.ok and not out.verify.ok
        assert "entry 2" in out.describe()
    finally:
        await target.close()


# --- PostgreSQL -------------------------------------------------------------------------------------


@pytest.fixture
async def second_pg_url() -> Any:
    from tests.conftest import pg_schema

    async with pg_schema() as url:
        yield url


async def test_postgres_logical_round_trip_into_another_schema(tmp_path: Path, pg_url: str,
                                                               second_pg_url: str) -> None:
    ctx = await open_context(cfg=make_config(pg_url))
    try:
        await populate(ctx)
        before = await dump_all(ctx.db.engine)
        res = await B.backup(ctx.db, out_dir=tmp_path, fmt="logical")
    finally:
        await ctx.close()
    assert res.manifest["database"]["format"] == "jsonl"
    target = await fresh_db(second_pg_url)
    try:
        out = await B.restore(res.path, db=target, checkpoint_key=KEY)
        assert out.ok, out.describe()
        assert await dump_all(target.engine) == before
    finally:
        await target.close()
    # Sequences moved past the restored ids: the restored install takes new work without collisions.
    restored = await open_context(cfg=make_config(second_pg_url))
    try:
        nxt = await restored.service.declare(actor=ADMIN, title="after restore", severity="sev2")
        assert nxt.incident.id == 5
        assert (await verify(restored.db.engine, checkpoint_key=KEY)).ok
    finally:
        await restored.close()


async def test_postgres_pg_dump_round_trip_with_force(tmp_path: Path, pg_url: str, second_pg_url: str) -> None:
    ctx = await open_context(cfg=make_config(pg_url))
    try:
        await populate(ctx)
        before = await dump_all(ctx.db.engine)
        res = await B.backup(ctx.db, out_dir=tmp_path, fmt="native")
        assert res.manifest["database"]["format"] == "pg_dump"
        await ctx.service.declare(actor=ADMIN, title="written after the backup", severity="sev4")
        with pytest.raises(B.DatabaseNotEmpty):
            await B.restore(res.path, db=ctx.db, checkpoint_key=KEY)
        out = await B.restore(res.path, db=ctx.db, checkpoint_key=KEY, force=True)
        assert out.ok, out.describe()
        assert await dump_all(ctx.db.engine) == before
        nxt = await ctx.service.declare(actor=ADMIN, title="new work", severity="sev4")
        assert nxt.incident.id == 5
    finally:
        await ctx.close()
    # A pg_dump is tied to its schema: say so, and name the way out.
    other = await fresh_db(second_pg_url)
    try:
        with pytest.raises(B.BackupError, match="--format logical"):
            await B.restore(res.path, db=other, checkpoint_key=KEY)
    finally:
        await other.close()


async def test_postgres_backup_is_consistent_while_the_bot_writes(tmp_path: Path, pg_url: str,
                                                                  second_pg_url: str) -> None:
    ctx = await open_context(cfg=make_config(pg_url))
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            await ctx.service.declare(actor=ADMIN, title=f"busy {w}/{i}", severity="sev4")
            i += 1

    try:
        tasks = [asyncio.create_task(writer(w)) for w in range(3)]
        await asyncio.sleep(0.3)
        native = await B.backup(ctx.db, out_dir=tmp_path / "n", fmt="native")
        logical = await B.backup(ctx.db, out_dir=tmp_path / "l", fmt="logical")
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        await ctx.close()
    for res in (logical, native):
        target = await fresh_db(second_pg_url if res is logical else pg_url)
        try:
            out = await B.restore(res.path, db=target, checkpoint_key=KEY, force=True)
            assert out.ok, out.describe()
        finally:
            await target.close()


async def test_pg_dump_refusing_falls_back_to_logical(tmp_path: Path, pg_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A pg_dump older than the server aborts ("server version mismatch"): auto falls back, native says why."""
    fake = tmp_path / "bin" / "pg_dump"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'pg_dump: error: aborting because of server version mismatch' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{__import__('os').environ['PATH']}")
    db = await fresh_db(pg_url)
    try:
        from core import migrate

        await migrate.upgrade(db.engine)
        res = await B.backup(db, out_dir=tmp_path)
        assert res.manifest["database"]["format"] == "jsonl"
        with pytest.raises(B.BackupError, match="server version mismatch"):
            await B.backup(db, out_dir=tmp_path, fmt="native")
    finally:
        await db.close()


async def test_between_sqlite_and_postgres_both_ways(tmp_path: Path, sqlite_url: str, pg_url: str) -> None:
    lite = await open_context(cfg=make_config(sqlite_url))
    try:
        await populate(lite)
        before = await dump_all(lite.db.engine)
        res = await B.backup(lite.db, out_dir=tmp_path)  # a SQLite snapshot...
    finally:
        await lite.close()
    pg = await fresh_db(pg_url)
    try:
        out = await B.restore(res.path, db=pg, checkpoint_key=KEY)  # ...restored into PostgreSQL
        assert out.ok, out.describe()
        assert await dump_all(pg.engine) == before
        back = await B.backup(pg, out_dir=tmp_path / "pg", fmt="logical")
    finally:
        await pg.close()
    lite2 = await fresh_db(f"sqlite+aiosqlite:///{tmp_path / 'again.db'}")
    try:
        out = await B.restore(back.path, db=lite2, checkpoint_key=KEY)
        assert out.ok, out.describe()
        assert await dump_all(lite2.engine) == before
    finally:
        await lite2.close()


# --- CLI --------------------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def write_config(path: Path, db_url: str) -> Path:
    data = deep_merge(BASE_CONFIG, {"database": {"url": db_url}})
    data["audit"]["checkpoint_key"] = "${TOCSIN_TEST_AUDIT_KEY:-test-checkpoint-key}"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_backup_then_restore(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 restore_logging: None) -> None:
    from bot.cli import main

    src_cfg = write_config(tmp_path / "src.yaml", f"sqlite+aiosqlite:///{tmp_path / 'src.db'}")
    dst_cfg = write_config(tmp_path / "dst.yaml", f"sqlite+aiosqlite:///{tmp_path / 'dst.db'}")
    assert main(["--config", str(src_cfg), "db", "upgrade"]) == 0
    assert main(["--config", str(src_cfg), "--as", "cli:admin", "incident", "declare", "sev2", "db", "down"]) == 0
    assert main(["--config", str(src_cfg), "--as", "cli:viewer", "backup", "--out", str(tmp_path)]) == 1
    assert "error:" in capsys.readouterr().err  # admins only
    assert main(["--config", str(src_cfg), "--as", "cli:admin", "backup", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"wrote (\S+tocsin-backup-\d{8}_\d{6}\.tar\.gz) \(sqlite, \d+ rows", out)
    assert m, out
    archive = m.group(1)
    assert main(["--config", str(dst_cfg), "--as", "cli:admin", "restore", archive]) == 0
    out = capsys.readouterr().out
    assert "audit verify: OK: audit chain intact" in out
    assert main(["--config", str(dst_cfg), "--as", "cli:admin", "restore", archive]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["--config", str(dst_cfg), "--as", "cli:admin", "restore", "--force", archive]) == 0
    assert main(["--config", str(dst_cfg), "--as", "cli:admin", "incident", "show", "INC-1"]) == 0
    assert "db down" in capsys.readouterr().out


def test_progress_shows_on_a_terminal_only() -> None:
    from bot.cli_ops import StageProgress

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        p = StageProgress(stream)
        p("export", 0, 10)
        p("export", 10, 10)
        p("verify", 5, 5)
        p.finish()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty.getvalue())  # what the terminal displays
    assert "exporting rows" in shown and "10/10" in shown
    assert "verifying audit chain" in shown and "5/5" in shown
    assert pipe.getvalue() == ""


