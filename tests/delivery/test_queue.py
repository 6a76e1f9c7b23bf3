"""Queue semantics on SQLite and PostgreSQL: claim leases, concurrent claimers never overlap, leases renew,
expire and are reclaimed, release gives rows back, and completion ignores a lease that was lost."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from bot.context import Context
from core.clock import utc
from core.db import Database
from core.delivery import queue
from core.delivery.queue import Completion
from core.models import Delivery, DeliveryAttempt
from tests.delivery.test_worker_kit import ADMIN, fanout_overrides, open_ctx, statuses


async def _ctx_with(db_url: str, n: int) -> tuple[Context, int]:
    ctx = await open_ctx(db_url, **fanout_overrides("http://127.0.0.1:9", n))
    out = await ctx.service.declare(actor=ADMIN, title="queue test", severity="sev3")
    assert out.queued == n
    return ctx, n


async def test_claim_leases_due_rows_once_and_counts_the_attempt(db_url: str) -> None:
    ctx, n = await _ctx_with(db_url, 5)
    try:
        now = ctx.clock.now()
        async with ctx.db.transaction() as s:
            got = await queue.claim(s, owner="w1", now=now, lease_seconds=30, limit=3)
        assert [c.attempt for c in got] == [1, 1, 1]
        assert got == sorted(got, key=lambda c: c.id)
        env = got[0].envelope()
        assert env.idempotency_key.startswith("tocsin-") and env.notification.title.endswith("queue test")
        async with ctx.db.transaction() as s:
            more = await queue.claim(s, owner="w2", now=now, lease_seconds=30, limit=10)
        assert len(more) == 2 and not {c.id for c in more} & {c.id for c in got}
        async with ctx.db.transaction() as s:
            assert await queue.claim(s, owner="w3", now=now, lease_seconds=30, limit=10) == []
        rows = {r.id: r for r in await _rows(ctx)}
        assert {rows[c.id].lease_owner for c in got} == {"w1"}
        assert all(r.status == "sending" and r.attempts == 1 for r in rows.values())
        assert utc(rows[got[0].id].lease_expires_at) == now + timedelta(seconds=30)
    finally:
        await ctx.close()


async def test_claim_skips_future_rows_and_excluded_channels(db_url: str) -> None:
    ctx, n = await _ctx_with(db_url, 4)
    try:
        now = ctx.clock.now()
        ids = [r.id for r in await _rows(ctx)]
        async with ctx.db.transaction() as s:
            await s.execute(update(Delivery).where(Delivery.id == ids[0])
                            .values(next_attempt_at=now + timedelta(seconds=60)))
        async with ctx.db.transaction() as s:
            assert await queue.claim(s, owner="w", now=now, lease_seconds=5, limit=10,
                                     exclude_channels=["webhook"]) == []
        async with ctx.db.transaction() as s:
            got = await queue.claim(s, owner="w", now=now, lease_seconds=5, limit=10)
        assert sorted(c.id for c in got) == ids[1:]
    finally:
        await ctx.close()


async def test_concurrent_claimers_never_get_the_same_row(db_url: str) -> None:
    """Eight claimers on separate engines (as separate processes would be), racing for 200 rows."""
    ctx, n = await _ctx_with(db_url, 200)
    dbs = [Database(ctx.cfg.database) for _ in range(8)]
    try:
        now = ctx.clock.now()

        async def claimer(i: int, db: Database) -> list[int]:
            mine: list[int] = []
            while True:
                async with db.transaction() as s:
                    got = await queue.claim(s, owner=f"w{i}", now=now, lease_seconds=30, limit=7)
                if not got:
                    return mine
                mine += [c.id for c in got]
                await asyncio.sleep(0)

        results = await asyncio.gather(*(claimer(i, db) for i, db in enumerate(dbs)))
        flat = [i for r in results for i in r]
        assert len(flat) == len(set(flat)) == n
        assert sum(1 for r in results if r) > 1  # they really competed
        owners = {r.id: r.lease_owner for r in await _rows(ctx)}
        for i, r in enumerate(results):
            assert all(owners[d] == f"w{i}" for d in r)
    finally:
        for db in dbs:
            await db.close()
        await ctx.close()


async def test_leases_renew_expire_and_are_reclaimed(db_url: str) -> None:
    ctx, n = await _ctx_with(db_url, 3)
    try:
        t0 = ctx.clock.now()
        async with ctx.db.transaction() as s:
            a = await queue.claim(s, owner="alive", now=t0, lease_seconds=10, limit=1)
            d = await queue.claim(s, owner="dead", now=t0, lease_seconds=10, limit=2)
        t1 = t0 + timedelta(seconds=8)
        async with ctx.db.transaction() as s:
            assert await queue.extend_leases(s, owner="alive", now=t1, lease_seconds=10) == 1
        async with ctx.db.transaction() as s:  # nothing expired yet
            assert await queue.reclaim_expired(s, now=t0 + timedelta(seconds=9)) == []
        async with ctx.db.transaction() as s:
            back = await queue.reclaim_expired(s, now=t0 + timedelta(seconds=11))
        assert sorted(b[0] for b in back) == sorted(c.id for c in d)
        assert {b[2] for b in back} == {"dead"}
        rows = {r.id: r for r in await _rows(ctx)}
        assert rows[a[0].id].status == "sending" and rows[a[0].id].lease_owner == "alive"
        for c in d:
            r = rows[c.id]
            assert r.status == "queued" and r.lease_owner is None and r.attempts == 1
            assert "lease expired" in (r.last_error or "")
        async with ctx.db.transaction() as s:  # reclaimed rows are due again; their attempt stays counted
            again = await queue.claim(s, owner="new", now=t0 + timedelta(seconds=11), lease_seconds=10,
                                      limit=5)
        assert sorted(c.id for c in again) == sorted(c.id for c in d) and {c.attempt for c in again} == {2}
    finally:
        await ctx.close()


async def test_release_gives_rows_back(db_url: str) -> None:
    ctx, n = await _ctx_with(db_url, 3)
    try:
        now = ctx.clock.now()
        async with ctx.db.transaction() as s:
            got = await queue.claim(s, owner="w", now=now, lease_seconds=30, limit=3)
        async with ctx.db.transaction() as s:
            ids = [c.id for c in got]
            assert await queue.release(s, owner="other", ids=ids, now=now, undo_attempt=True) == 0
            assert await queue.release(s, owner="w", ids=ids[:1], now=now, undo_attempt=False) == 1
            assert await queue.release(s, owner="w", ids=ids[1:], now=now, undo_attempt=True) == 2
        rows = {r.id: r for r in await _rows(ctx)}
        assert [rows[c.id].attempts for c in got] == [1, 0, 0]
        assert {r.status for r in rows.values()} == {"queued"}
        assert all(r.lease_owner is None and r.lease_expires_at is None for r in rows.values())
    finally:
        await ctx.close()


async def test_complete_records_attempts_and_respects_lost_leases(db_url: str) -> None:
    ctx, n = await _ctx_with(db_url, 4)
    try:
        now = ctx.clock.now()
        async with ctx.db.transaction() as s:
            got = await queue.claim(s, owner="w", now=now, lease_seconds=30, limit=4)
        a, b, c, d = (x.id for x in got)
        # d's lease was lost: another worker reclaimed and now holds it.
        async with ctx.db.transaction() as s:
            await s.execute(update(Delivery).where(Delivery.id == d).values(lease_owner="thief"))
        later = now + timedelta(seconds=1)

        def done(i: int, status: str, **kw: Any) -> Completion:
            outcome = {"delivered": "delivered", "queued": "retry"}.get(status, "permanent")
            return Completion(delivery_id=i, status=status, at=later, attempt=1, started_at=now,
                              latency_ms=12.5, outcome=outcome, summary=f"{status} summary", **kw)

        async with ctx.db.transaction() as s:
            moved = await queue.complete(s, [
                done(a, "delivered"),
                done(b, "queued", next_attempt_at=later + timedelta(seconds=5), last_error="HTTP 503"),
                done(c, "dead", last_error="HTTP 500"),
                done(d, "failed", last_error="HTTP 400"),
            ], owner="w")
        assert moved == [c]  # d was not ours any more: no second alert for it
        rows = {r.id: r for r in await _rows(ctx)}
        assert rows[a].status == "delivered" and utc(rows[a].delivered_at) == later
        assert rows[b].status == "queued" and utc(rows[b].next_attempt_at) == later + timedelta(seconds=5)
        assert rows[b].last_error == "HTTP 503" and rows[b].lease_owner is None
        assert rows[c].status == "dead"
        assert rows[d].status == "sending" and rows[d].lease_owner == "thief"
        async with ctx.db.sessions() as s:
            q = select(DeliveryAttempt).order_by(DeliveryAttempt.delivery_id)
            att = (await s.execute(q)).scalars().all()
        assert [(x.delivery_id, x.outcome) for x in att] == [(a, "delivered"), (b, "retry"), (c, "permanent"),
                                                             (d, "permanent")]
        assert att[0].latency_ms == 12.5
        assert await statuses(ctx) == {"delivered": 1, "queued": 1, "dead": 1, "sending": 1}
    finally:
        await ctx.close()


async def _rows(ctx: Context) -> list[Delivery]:
    async with ctx.db.sessions() as s:
        return list((await s.execute(select(Delivery).order_by(Delivery.id))).scalars().all())


async def test_a_fanout_stores_its_notification_once_and_rows_keep_only_their_own(db_url: str) -> None:
    """The recipients of one message share one stored payload (message_payloads), each row holds only its
    own keys, and the worker still sends each recipient the whole notification."""
    ctx, n = await _ctx_with(db_url, 50)
    try:
        from core.models import MessagePayload

        async with ctx.db.sessions() as s:
            shared = (await s.execute(select(MessagePayload))).scalars().all()
            rows = list((await s.execute(select(Delivery).where(Delivery.channel == "webhook"))).scalars())
        assert len(rows) == n
        # one shared payload for the webhooks (with the event); others (chat surfaces) may add one without it
        hooks = [p for p in shared if p.id in {r.payload_id for r in rows}]
        assert len(hooks) == 1 and hooks[0].payload["title"].endswith("queue test")
        assert all(r.payload == {} for r in rows)
        assert all(r.notification_json == hooks[0].payload for r in rows)
        cache: queue.SharedPayloads = {}
        async with ctx.db.transaction() as s:
            got = await queue.claim(s, owner="w1", now=ctx.clock.now(), lease_seconds=30, limit=n, shared=cache)
        assert len(got) == n and list(cache) == [hooks[0].id]
        # one Notification object for all of them (rendered once per fan-out), equal to what was stored
        assert len({id(c.notification) for c in got}) == 1
        assert got[0].notification.to_json() == hooks[0].payload
    finally:
        await ctx.close()


async def test_a_row_with_its_own_ack_link_and_a_row_from_before_shared_payloads(db_url: str) -> None:
    """A row's own keys override the shared payload; a row written before migration 0065 (whole payload,
    no payload_id) is still claimed with exactly its payload."""
    ctx, _ = await _ctx_with(db_url, queue.SHARE_MIN_ROWS)
    try:
        async with ctx.db.transaction() as s:
            first, second = (await s.execute(select(Delivery).where(Delivery.channel == "webhook")
                                              .order_by(Delivery.id))).scalars().all()[:2]
            assert first.payload_id is not None and first.payload_id == second.payload_id
            whole = {**second.notification_json, "title": "legacy row", "ack_url": "https://x/ack/2"}
            await s.execute(update(Delivery).where(Delivery.id == first.id)
                            .values(payload={"ack_url": "https://x/ack/1"}))
            await s.execute(update(Delivery).where(Delivery.id == second.id)
                            .values(payload=whole, payload_id=None))
        async with ctx.db.transaction() as s:
            got = await queue.claim(s, owner="w1", now=ctx.clock.now(), lease_seconds=30, limit=10)
        by_id = {c.id: c.notification for c in got}
        assert by_id[first.id].ack_url == "https://x/ack/1" and by_id[first.id].title.endswith("queue test")
        assert by_id[second.id].to_json() == whole
    finally:
        await ctx.close()


async def test_a_notification_few_rows_send_stays_whole_in_each_row(db_url: str) -> None:
    """Fewer than SHARE_MIN_ROWS rows: no shared payload row (one statement fewer per escalation, one-time
    message or page to a small rota); each row holds the whole notification and is sent exactly that."""
    n = queue.SHARE_MIN_ROWS - 1
    ctx, _ = await _ctx_with(db_url, n)
    try:
        from core.models import MessagePayload

        async with ctx.db.sessions() as s:
            rows = (await s.execute(select(Delivery).where(Delivery.channel == "webhook"))).scalars().all()
            shared_ids = set((await s.execute(select(MessagePayload.id))).scalars())
        assert len(rows) == n and shared_ids == set()
        assert all(r.payload_id is None and r.payload["title"].endswith("queue test") for r in rows)
        assert all(r.notification_json == r.payload for r in rows)
        async with ctx.db.transaction() as s:
            got = {c.id: c for c in await queue.claim(s, owner="w1", now=ctx.clock.now(), lease_seconds=30,
                                                        limit=50)}
        assert all(got[r.id].notification.to_json() == r.payload for r in rows)
    finally:
        await ctx.close()
