"""Audit hash chain: concurrent appends never fork it; every kind of tampering is detected and named."""
from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from bot.context import Context
from core.audit.chain import GENESIS, canonical_json, entry_hash, redact
from core.audit.log import AuditLog, verify
from core.db import Database

KEY = b"test-checkpoint-key"


async def fill(ctx: Context, n: int) -> None:
    for i in range(n):
        async with ctx.db.transaction() as s:
            await ctx.audit.append(s, actor="cli:admin", action="test.action", resource=f"R-{i}",
                                   details={"i": i})


async def test_concurrent_appends_never_fork(ctx: Context) -> None:
    """Many tasks, each on its own connection, append at once; the chain stays linear and verifies."""
    engine_db = Database(ctx.cfg.database)  # a second engine: real separate connections
    try:
        async def writer(db: Database, w: int) -> None:
            for i in range(15):
                async with db.transaction() as s:
                    await ctx.audit.append(s, actor=f"cli:w{w}", action="concurrent", details={"i": i})

        await asyncio.gather(*(writer(ctx.db if w % 2 else engine_db, w) for w in range(8)))
    finally:
        await engine_db.close()
    res = await verify(ctx.db.engine, checkpoint_key=KEY)
    assert res.ok, res.describe()
    assert res.count == 120


async def test_intact_chain_verifies_with_count(ctx: Context) -> None:
    await fill(ctx, 25)
    res = await verify(ctx.db.engine, checkpoint_key=KEY)
    assert res.ok and res.count == 25
    assert "intact, 25 entries" in res.describe()


async def test_edited_entry_is_named(ctx: Context) -> None:
    await fill(ctx, 12)
    async with ctx.db.transaction() as s:
        await s.execute(text("UPDATE audit_log SET actor = 'cli:mallory' WHERE seq = 7"))
    res = await verify(ctx.db.engine)
    assert not res.ok and res.bad_seq == 7 and "edited" in res.problem


async def test_deleted_entry_is_named(ctx: Context) -> None:
    await fill(ctx, 12)
    async with ctx.db.transaction() as s:
        await s.execute(text("DELETE FROM audit_log WHERE seq = 5"))
    res = await verify(ctx.db.engine)
    assert not res.ok and res.bad_seq == 5 and "missing (deleted)" in res.problem


async def test_reordered_entries_are_named(ctx: Context) -> None:
    """Swap the contents of two entries (keeping seq order): the link breaks at the first."""
    await fill(ctx, 12)
    async with ctx.db.transaction() as s:
        await s.execute(text("UPDATE audit_log SET seq = -4 WHERE seq = 4"))
        await s.execute(text("UPDATE audit_log SET seq = 4 WHERE seq = 5"))
        await s.execute(text("UPDATE audit_log SET seq = 5 WHERE seq = -4"))
    res = await verify(ctx.db.engine)
    assert not res.ok and res.bad_seq == 4


async def test_inserted_entry_is_named(ctx: Context) -> None:
    """A forged entry with a self-consistent hash is inserted in the middle. It cannot reuse entry 6's hash as
    its link (prev_hash is unique: no fork), so it links to a made-up hash and verify names it."""
    await fill(ctx, 12)
    async with ctx.db.transaction() as s:
        await s.execute(text("UPDATE audit_log SET seq = seq + 1000 WHERE seq > 6"))
        prev = "f" * 64
        body = canonical_json({"forged": True})
        h = entry_hash(seq=7, ts="2026-01-01T00:00:00.000000Z", actor="cli:mallory", source="", action="x",
                       resource="", details=body, prev_hash=prev)
        await s.execute(text("INSERT INTO audit_log (seq, ts, actor, source, action, resource, details, prev_hash,"
                             " hash) VALUES (7, '2026-01-01T00:00:00.000000Z', 'cli:mallory', '', 'x', '', "
                             ":d, :p, :h)"), {"d": body, "p": prev, "h": h})
        await s.execute(text("UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000"))
    res = await verify(ctx.db.engine)
    assert not res.ok and res.bad_seq == 7 and "does not link" in res.problem


async def test_truncated_tail_detected_by_signed_checkpoint(ctx: Context) -> None:
    await fill(ctx, 25)  # checkpoint_every=10 in the test config -> checkpoints at 10 and 20
    async with ctx.db.transaction() as s:
        await s.execute(text("DELETE FROM audit_log WHERE seq > 15"))
    assert (await verify(ctx.db.engine)).ok  # without the key, a clean truncation is invisible
    res = await verify(ctx.db.engine, checkpoint_key=KEY)
    assert not res.ok and "truncated" in res.problem and "saw 20 entries" in res.problem


async def test_forged_checkpoint_detected(ctx: Context) -> None:
    await fill(ctx, 12)
    async with ctx.db.transaction() as s:
        await s.execute(text("UPDATE audit_checkpoints SET seq = 11"))
    res = await verify(ctx.db.engine, checkpoint_key=KEY)
    assert not res.ok and "bad signature" in res.problem


async def test_first_entry_links_to_genesis_and_redacts_secrets(ctx: Context) -> None:
    async with ctx.db.transaction() as s:
        await ctx.audit.append(s, actor="cli:admin", action="config.reload",
                               details={"after": {"slack": {"bot_token": "xoxb-123", "enabled": True}}})
    async with ctx.db.sessions() as s:
        [e] = await AuditLog.entries(s)
    assert e.prev_hash == GENESIS and e.seq == 1
    assert "xoxb-123" not in e.details and json.loads(e.details)["after"]["slack"]["enabled"] is True


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_canonical_encoding_round_trips_and_is_stable(value: object) -> None:
    enc = canonical_json(value)
    assert canonical_json(json.loads(enc)) == enc
    h1 = entry_hash(seq=1, ts="t", actor="a", source="s", action="x", resource="r", details=enc, prev_hash=GENESIS)
    h2 = entry_hash(seq=1, ts="t", actor="a", source="s", action="x", resource="r", details=enc, prev_hash=GENESIS)
    assert h1 == h2 and len(h1) == 64


def test_redact_keeps_shape() -> None:
    assert redact({"password": "x", "nested": [{"api_key": "k", "name": "n"}], "token": None}) == {
        "password": "**********", "nested": [{"api_key": "**********", "name": "n"}], "token": None}


@pytest.mark.parametrize("n", [0])
async def test_empty_chain_is_ok(ctx: Context, n: int) -> None:
    res = await verify(ctx.db.engine, checkpoint_key=KEY)
    assert res.ok and res.count == n


async def test_append_many_links_into_the_same_chain(ctx: Context) -> None:
    await fill(ctx, 3)
    async with ctx.db.transaction() as s:
        n = await ctx.audit.append_many(s, [{"actor": "system:worker", "action": "delivery.delivered",
                                             "resource": f"delivery:{i}", "details": {"token": "x"}}
                                            for i in range(25)])
    await fill(ctx, 2)
    assert n == 25
    res = await verify(ctx.db.engine, checkpoint_key=KEY)
    assert res.ok and res.count == 30, res.describe()
    async with ctx.db.sessions() as s:
        e = (await AuditLog.entries(s))[5]
    assert e.details == '{"token":"**********"}'


@given(st.integers(min_value=0, max_value=2**62), st.lists(st.text(), min_size=7, max_size=7))
def test_entry_material_is_canonical_json(seq: int, fields: list[str]) -> None:
    from core.audit.chain import entry_material

    assert entry_material(seq, *fields) == json.dumps([seq, *fields], separators=(",", ":"), ensure_ascii=False)


async def test_entries_limit_gives_the_latest_in_chain_order(ctx: Context) -> None:
    await fill(ctx, 12)
    async with ctx.db.sessions() as s:
        assert [e.seq for e in await AuditLog.entries(s, limit=3)] == [10, 11, 12]
        assert [e.seq for e in await AuditLog.entries(s, resource="R-4", limit=3)] == [5]
        assert len(await AuditLog.entries(s)) == 12


async def test_append_after_a_rollback_or_another_writer_links_to_the_real_head(ctx: Context) -> None:
    """An appender remembers the head it wrote last; a rolled-back append and another appender's entries
    make that memory stale, and the next append must still link to the real head (one chain, no gap)."""
    other = AuditLog(checkpoint_key=KEY, checkpoint_every=ctx.audit.checkpoint_every)
    await fill(ctx, 2)
    with pytest.raises(RuntimeError):
        async with ctx.db.transaction() as s:
            await ctx.audit.append(s, actor="cli:admin", action="rolled.back")
            raise RuntimeError("abort the transaction")
    async with ctx.db.transaction() as s:
        await ctx.audit.append(s, actor="cli:admin", action="after.rollback")
    async with ctx.db.sessions() as s:
        assert (await AuditLog.entries(s))[-1].seq == 3
    for i in range(3):
        for log in (other, ctx.audit):
            async with ctx.db.transaction() as s:
                await log.append(s, actor="cli:admin", action="interleaved", details={"i": i})
    res = await verify(ctx.db.engine, checkpoint_key=KEY)
    assert res.ok and res.count == 9, res.describe()
    async with ctx.db.sessions() as s:
        assert [e.action for e in await AuditLog.entries(s)][:3] == ["test.action", "test.action", "after.rollback"]


async def test_an_append_never_holds_the_chain_lock_while_waiting_for_a_row(ctx: Context) -> None:
    """Two transactions, each changing incidents and appending: A appends (INC-1) and then needs INC-2, which
    B holds while it appends. Were the chain's lock taken at A's append, A would wait for B's row and B for
    A's lock: PostgreSQL's deadlock. The chain lock is the last lock a transaction takes, so B commits and
    A follows, and both entries are in one chain."""
    from sqlalchemy import select

    from core.models import Incident
    from core.rbac import Actor

    op = Actor("cli:admin", "cli")
    for title in ("a", "b"):
        await ctx.service.declare(actor=op, title=title, severity="sev3")
    b_holds_row = asyncio.Event()

    async def a() -> None:
        await b_holds_row.wait()
        async with ctx.db.transaction() as s:  # an SMS "ack all": two incidents in one transaction
            await ctx.service.acknowledge(1, actor=op, session=s)
            await ctx.service.acknowledge(2, actor=op, session=s)

    async def b() -> None:
        async with ctx.db.transaction() as s:  # any change of INC-2: its row locked, then its audit entry
            await s.execute(select(Incident).where(Incident.id == 2).with_for_update())
            b_holds_row.set()
            await asyncio.sleep(0.5)  # A has appended for INC-1 and waits for INC-2's row by now
            await ctx.audit.append(s, actor="cli:admin", action="incident.update", resource="INC-2")

    if ctx.db.sqlite:  # one writer at a time: B's transaction must end before A's can begin
        await asyncio.gather(b(), a())
    else:
        await asyncio.wait_for(asyncio.gather(a(), b()), 30)
    res = await verify(ctx.db.engine, checkpoint_key=KEY)
    assert res.ok and res.count == 5, res.describe()  # 2 declares, B's entry, 2 acks


async def test_large_batches_link_to_the_real_head_after_a_rollback_and_single_appends(ctx: Context) -> None:
    """Batches too large to run inline on SQLite take the conditional path (the head this process wrote last,
    checked by the INSERT): a rolled-back batch leaves that memory ahead of the chain, single appends in
    between move the head, and every batch still links to the real head (one chain, no gap, checkpoints)."""
    def batch(tag: str) -> list[dict[str, object]]:
        return [{"actor": "system:worker", "action": tag, "resource": f"delivery:{i}", "details": {"i": i}}
                for i in range(250)]

    await fill(ctx, 2)
    async with ctx.db.transaction() as s:
        assert await ctx.audit.append_many(s, batch("first")) == 250
    with pytest.raises(RuntimeError):
        async with ctx.db.transaction() as s:
            await ctx.audit.append_many(s, batch("rolled.back"))
            raise RuntimeError("abort the transaction")
    async with ctx.db.transaction() as s:
        await ctx.audit.append_many(s, batch("after.rollback"))
    await fill(ctx, 3)
    async with ctx.db.transaction() as s:
        await ctx.audit.append_many(s, batch("after.singles"))
    res = await verify(ctx.db.engine, checkpoint_key=KEY)
    assert res.ok and res.count == 2 + 250 * 3 + 3, res.describe()
    async with ctx.db.sessions() as s:
        actions = [e.action for e in await AuditLog.entries(s)]
    assert "rolled.back" not in actions
    assert actions[252] == "after.rollback" and actions[-1] == "after.singles"


def test_entries_hash_to_the_bytes_stored_chains_were_written_with() -> None:
    """Known answers computed by the append code as it was before the fast paths (edbeb32): the timestamp,
    redaction, canonical JSON, entry hashes and checkpoint signatures must not change by a byte, or every
    stored chain would stop verifying."""
    from datetime import datetime, timedelta, timezone

    from core.audit.log import _ts

    ts = _ts(datetime(2026, 12, 3, 18, 5, 7, 123, tzinfo=timezone(timedelta(hours=2))))
    assert ts == "2026-12-03T16:05:07.000123Z"
    log = AuditLog(checkpoint_key=b"kat-key", checkpoint_every=2)
    rows, checkpoints = log._chain([
        {"actor": "cli:admin", "action": "config.reload", "source": "cli", "ts": ts,
         "details": {"after": {"slack": {"bot_token": "xoxb-1", "enabled": True}}, "password": "",
                     "n": [1, 2.5, None], "é": "ü ✓"}},
        {"actor": "system:worker", "action": "delivery.delivered", "resource": "delivery:7", "ts": ts,
         "details": None},
        {"actor": "web:bob", "action": "login.throttled", "ts": ts,
         "details": {"Api_Key": False, "z": {"signing_secret": 0}, "when": datetime(2026, 1, 1)}},
    ], 41, "ab" * 32)
    assert [(r["seq"], r["details"], r["hash"]) for r in rows] == [
        (42, '{"after":{"slack":{"bot_token":"**********","enabled":true}},"n":[1,2.5,null],"password":"",'
             '"é":"ü ✓"}', "53076a1a85f7c570215804e718156791b1ba427c4af3334a4c9ffe6f13a1eb24"),
        (43, "{}", "6cc53156b6eb489f7be5b2a70cf755f2e9da7aa0399105ff69eed67504245178"),
        (44, '{"Api_Key":false,"when":"2026-01-01 00:00:00","z":{"signing_secret":"**********"}}',
         "dd15c9a3196657d65b5390fd0a369a59f4f2b86c48dc68270fcf96e8ee781c90"),
    ]
    assert [r["prev_hash"] for r in rows] == ["ab" * 32, rows[0]["hash"], rows[1]["hash"]]
    assert [(c["seq"], c["head_hash"], c["signature"]) for c in checkpoints] == [
        (42, rows[0]["hash"], "35a8f7b286fe87306850988efb45cb33e1260de8a5fe16d358c6c55845bc1b31"),
        (44, rows[2]["hash"], "1d05bc196969ed2a7b38432b7e8e66ddd1c1d08d6e21e96831f2320de66c10a1"),
    ]
