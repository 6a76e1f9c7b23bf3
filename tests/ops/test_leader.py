"""Leadership: exactly one leader per name on PostgreSQL, takeover when the holder's connection dies;
always the leader on SQLite."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.db import create_engine
from core.leader import Leadership, lock_key
from tests.conftest import PG_URL

FAST = {"retry_seconds": 0.2, "check_seconds": 0.1}


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def elected(self) -> None:
        self.events.append("elected")

    async def lost(self) -> None:
        self.events.append("lost")


@pytest.fixture
async def engines(pg_url: str) -> AsyncIterator[list]:
    """Three engines = three processes' worth of separate connections to one schema."""
    made = [create_engine(pg_url) for _ in range(3)]
    yield made
    for e in made:
        await e.dispose()


async def eventually(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def kill_backend(pid: int) -> None:
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_exactly_one_leader_and_takeover_when_the_holder_connection_dies(engines: list) -> None:
    recs = [Recorder() for _ in engines]
    leads = [Leadership(e, "telegram-polling", on_elected=r.elected, on_lost=r.lost, **FAST)
             for e, r in zip(engines, recs)]
    try:
        for lead in leads:
            await lead.start()
        await eventually(lambda: sum(x.is_leader for x in leads) == 1)
        await asyncio.sleep(0.6)  # several retry rounds: still one
        assert sum(x.is_leader for x in leads) == 1
        first = next(x for x in leads if x.is_leader)
        first_rec = recs[leads.index(first)]
        assert first_rec.events == ["elected"]

        # The holder's database connection is cut (its process died, a network partition, an admin).
        assert first.backend_pid is not None
        await kill_backend(first.backend_pid)
        await eventually(lambda: not first.is_leader)
        assert first_rec.events == ["elected", "lost"]
        await eventually(lambda: sum(x.is_leader for x in leads) == 1)
        second = next(x for x in leads if x.is_leader)
        assert second is not first
        assert recs[leads.index(second)].events == ["elected"]
        # The old holder reconnects and keeps campaigning, but does not take it back.
        await asyncio.sleep(0.6)
        assert [x.is_leader for x in leads].count(True) == 1 and second.is_leader
    finally:
        for lead in leads:
            await lead.close()


async def test_close_steps_down_and_hands_over_promptly(engines: list) -> None:
    a_rec, b_rec = Recorder(), Recorder()
    a = Leadership(engines[0], "slack-socket", on_elected=a_rec.elected, on_lost=a_rec.lost, **FAST)
    b = Leadership(engines[1], "slack-socket", on_elected=b_rec.elected, on_lost=b_rec.lost, **FAST)
    async with a:
        assert await a.wait_elected(5)
        await b.start()
        await asyncio.sleep(0.5)
        assert not b.is_leader
    assert a_rec.events == ["elected", "lost"] and not a.is_leader
    assert await b.wait_elected(2)
    await b.close()
    assert b_rec.events == ["elected", "lost"]


async def test_names_and_schemas_do_not_share_a_leader(engines: list, pg_url: str) -> None:
    x = Leadership(engines[0], "telegram-polling", **FAST)
    y = Leadership(engines[1], "slack-socket", **FAST)
    async with x, y:
        assert await x.wait_elected(5) and await y.wait_elected(5)
    # Same name in another schema (another install in the same database) is another lock.
    assert lock_key("telegram-polling", scope="a") != lock_key("telegram-polling", scope="b")
    other = create_engine(PG_URL)  # schema public
    try:
        async with Leadership(engines[0], "n", **FAST) as mine, Leadership(other, "n", **FAST) as theirs:
            assert await mine.wait_elected(5) and await theirs.wait_elected(5)
    finally:
        await other.dispose()


async def test_a_leader_that_fails_to_start_lets_another_try(engines: list) -> None:
    async def broken() -> None:
        raise RuntimeError("cannot reach Telegram")

    healthy = Recorder()
    bad = Leadership(engines[0], "poller", on_elected=broken, **FAST)
    good = Leadership(engines[1], "poller", on_elected=healthy.elected, **FAST)
    try:
        await bad.start()
        await asyncio.sleep(0.05)
        await good.start()
        await eventually(lambda: good.is_leader, timeout=5)
        assert healthy.events == ["elected"]
    finally:
        await bad.close()
        await good.close()


async def test_lock_is_not_left_on_a_pooled_connection(engines: list) -> None:
    """close() unlocks before the connection goes back to the pool, so the pool never holds a stale lock."""
    a = Leadership(engines[0], "pool-check", **FAST)
    async with a:
        assert await a.wait_elected(5)
    async with engines[0].connect() as conn:
        from sqlalchemy import text

        n = (await conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                     "AND pid = pg_backend_pid()"))).scalar()
    assert n == 0
    b = Leadership(engines[1], "pool-check", **FAST)
    async with b:
        assert await b.wait_elected(2)


async def test_sqlite_is_always_the_leader(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    rec = Recorder()
    try:
        async with Leadership(engine, "telegram-polling", on_elected=rec.elected, on_lost=rec.lost) as lead:
            assert lead.is_leader and await lead.wait_elected(0)
            assert rec.events == ["elected"]
        assert rec.events == ["elected", "lost"] and not lead.is_leader
    finally:
        await engine.dispose()
