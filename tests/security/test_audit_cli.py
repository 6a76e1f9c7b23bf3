"""`tocsin audit verify`, the real CLI on a SQLite file, against every kind of tampering someone with write
access to the database could do: it exits 1 and names the entry. (tests/core/test_audit.py checks the same
kinds on verify() itself, on both databases; this is what an operator runs.)

The chain shows edits, deletions, reordering and insertions by itself. A truncated tail, or a tail
rewritten with recomputed hashes, is only visible against the HMAC-signed checkpoints, which nobody without
audit.checkpoint_key can forge.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.audit.chain import canonical_json, checkpoint_signature, entry_hash
from core.rbac import Actor
from tests.conftest import BASE_CONFIG, deep_merge

ROOT = Path(__file__).resolve().parents[2]
KEY = "sec-audit-checkpoint-key"
ENTRIES = 17  # checkpoints every 5: at 5, 10 and 15

Tamper = Callable[[sqlite3.Connection], None]


def forge_entry(con: sqlite3.Connection, seq: int, prev: str, **fields: str) -> str:
    """Write entry `seq` with a self-consistent hash, as an attacker without the key can."""
    row = {"ts": "2026-01-01T00:00:00.000000Z", "actor": "cli:mallory", "source": "cli", "action": "x",
           "resource": "", "details": canonical_json({"forged": True}), **fields}
    h = entry_hash(seq=seq, prev_hash=prev, **row)
    con.execute("INSERT INTO audit_log (seq, ts, actor, source, action, resource, details, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, row["ts"], row["actor"], row["source"], row["action"], row["resource"], row["details"],
                 prev, h))
    return h


def edit(con: sqlite3.Connection) -> None:
    con.execute("UPDATE audit_log SET details = '{\"title\":\"nothing happened\"}' WHERE seq = 3")


def edit_and_rehash(con: sqlite3.Connection) -> None:
    """Edit entry 3 and recompute its own hash: entry 4 no longer links to it."""
    seq, ts, _actor, source, action, resource, _details, prev = con.execute(
        "SELECT seq, ts, actor, source, action, resource, details, prev_hash FROM audit_log WHERE seq = 3"
    ).fetchone()
    details = canonical_json({"title": "nothing happened"})
    h = entry_hash(seq=seq, ts=ts, actor="cli:mallory", source=source, action=action, resource=resource,
                   details=details, prev_hash=prev)
    con.execute("UPDATE audit_log SET actor = 'cli:mallory', details = ?, hash = ? WHERE seq = 3",
                (details, h))


def delete(con: sqlite3.Connection) -> None:
    con.execute("DELETE FROM audit_log WHERE seq = 4")


def reorder(con: sqlite3.Connection) -> None:
    con.execute("UPDATE audit_log SET seq = -6 WHERE seq = 6")
    con.execute("UPDATE audit_log SET seq = 6 WHERE seq = 7")
    con.execute("UPDATE audit_log SET seq = 7 WHERE seq = -6")


def insert(con: sqlite3.Connection) -> None:
    """A forged entry 8 between 7 and the old 8 (renumbered): it cannot link to entry 7's hash without
    forking the chain, so it links to a made-up one."""
    con.execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 8")
    forge_entry(con, 8, "f" * 64)
    con.execute("UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000")


def truncate(con: sqlite3.Connection) -> None:
    con.execute("DELETE FROM audit_log WHERE seq > 12")


def rewrite_tail(con: sqlite3.Connection) -> None:
    """Replace entries 9.. with a fresh, perfectly linked forgery: only the signed checkpoints at 10 and 15
    still remember the real heads."""
    prev = con.execute("SELECT hash FROM audit_log WHERE seq = 8").fetchone()[0]
    con.execute("DELETE FROM audit_log WHERE seq >= 9")
    for seq in range(9, ENTRIES + 1):
        prev = forge_entry(con, seq, prev)


def truncate_and_resign(con: sqlite3.Connection) -> None:
    """Truncate, drop the checkpoints that would tell, and sign a new one for the shorter chain with a
    guessed key."""
    con.execute("DELETE FROM audit_log WHERE seq > 12")
    con.execute("DELETE FROM audit_checkpoints WHERE seq > 12")
    head = con.execute("SELECT hash FROM audit_log WHERE seq = 12").fetchone()[0]
    ts = "2026-01-01T00:00:00.000000Z"
    sig = checkpoint_signature(b"guessed-key", seq=12, head_hash=head, created_at=ts)
    con.execute("INSERT INTO audit_checkpoints (seq, head_hash, created_at, signature) VALUES (12, ?, ?, ?)",
                (head, ts, sig))


@dataclass(frozen=True)
class Case:
    name: str
    tamper: Tamper | None
    code: int
    says: tuple[str, ...]


CASES = [
    Case("intact", None, 0, (f"OK: audit chain intact, {ENTRIES} entries",)),
    Case("edit", edit, 1, ("BROKEN at entry 3:", "entry 3 was edited")),
    Case("edit and recompute its hash", edit_and_rehash, 1,
         ("BROKEN at entry 4:", "does not link to entry 3")),
    Case("delete", delete, 1, ("BROKEN at entry 4:", "entry 4 is missing (deleted)")),
    Case("reorder", reorder, 1, ("BROKEN at entry 6:", "does not link to entry 5")),
    Case("insert", insert, 1, ("BROKEN at entry 8:", "entry 8 does not link to entry 7")),
    Case("truncate the tail", truncate, 1, ("BROKEN at entry 13:", "chain was truncated",
                                            "saw 15 entries, only 12 remain")),
    Case("rewrite the tail with valid hashes", rewrite_tail, 1,
         ("BROKEN at entry 10:", "entry 10 differs from its signed checkpoint")),
    Case("truncate and sign a new checkpoint", truncate_and_resign, 1,
         ("BROKEN at entry 12:", "bad signature")),
]


async def build_chain(make_ctx: Callable[..., Any]) -> Path:
    """A real chain: incidents declared, updated, acknowledged and resolved through the service."""
    ctx = await make_ctx(audit={"checkpoint_key": KEY, "checkpoint_every": 5})
    actor = Actor("cli:admin", source="cli")
    for i in range(5):
        out = await ctx.service.declare(actor=actor, title=f"Incident {i}", severity="sev3")
        await ctx.service.acknowledge(out.incident.id, actor=actor)
        await ctx.service.resolve(out.incident.id, actor=actor, text="fixed")
    await ctx.service.notify(actor=actor, text="one", contact_list="oncall")
    await ctx.service.notify(actor=actor, text="two", contact_list="oncall")
    db = Path(ctx.db.engine.url.database or "")
    await ctx.close()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM audit_log").fetchone()[0] == ENTRIES
        assert [r[0] for r in con.execute("SELECT seq FROM audit_checkpoints ORDER BY seq")] == [5, 10, 15]
    return db


async def verify_with_cli(config: Path) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), "--as", "cli:admin", "audit", "verify",
        cwd=str(config.parent), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, out.decode() + err.decode()


async def test_audit_verify_names_every_kind_of_tampering(make_ctx: Callable[..., Any],
                                                         tmp_path: Path) -> None:
    pristine = await build_chain(make_ctx)
    configs = []
    for i, case in enumerate(CASES):
        where = tmp_path / f"case{i}"
        where.mkdir()
        db = where / "tocsin.db"
        shutil.copy(pristine, db)
        if case.tamper is not None:
            with sqlite3.connect(db) as con:
                case.tamper(con)
        cfg = deep_merge(BASE_CONFIG, {"database": {"url": f"sqlite+aiosqlite:///{db}"},
                                       "audit": {"checkpoint_key": KEY, "checkpoint_every": 5}})
        path = where / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        configs.append(path)
    gate = asyncio.Semaphore(3)  # a small machine: three CLI processes at a time

    async def run(path: Path) -> tuple[int, str]:
        async with gate:
            return await verify_with_cli(path)

    results = await asyncio.gather(*(run(p) for p in configs))
    problems = []
    for case, (code, out) in zip(CASES, results, strict=True):
        if code != case.code or not all(s in out for s in case.says):
            problems.append(f"{case.name}: exit {code}, said {out.strip()!r}; expected exit {case.code} "
                            f"saying {case.says}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("tamper", [truncate, rewrite_tail])
async def test_without_the_key_a_clean_truncation_or_rewrite_is_invisible(make_ctx: Callable[..., Any],
                                                                          tamper: Tamper) -> None:
    """Why the key matters (and what docs/reliability.md says we do not guarantee): verify() without a
    checkpoint key passes a chain whose tail was cut or consistently rewritten."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from core.audit.log import verify

    db = await build_chain(make_ctx)
    with sqlite3.connect(db) as con:
        tamper(con)
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    try:
        assert (await verify(engine)).ok
        assert not (await verify(engine, checkpoint_key=KEY.encode())).ok
    finally:
        await engine.dispose()


async def test_a_truncation_that_also_removes_later_checkpoints_is_not_detected(
        make_ctx: Callable[..., Any]) -> None:
    """The limit of an in-database chain, stated in docs/reliability.md: someone who can delete rows can cut
    the tail together with the checkpoints that saw it, back to an earlier signed checkpoint, and verify
    still passes. Only a head kept outside the database (a backup manifest, a shipped log line) shows it."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from core.audit.log import verify

    db = await build_chain(make_ctx)
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM audit_log WHERE seq > 10")
        con.execute("DELETE FROM audit_checkpoints WHERE seq > 10")
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    try:
        res = await verify(engine, checkpoint_key=KEY.encode())
    finally:
        await engine.dispose()
    assert res.ok and res.count == 10
