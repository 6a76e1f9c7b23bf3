"""SIGTERM: stop taking work, finish or hand back what is in flight, exit 0 — and a restart loses nothing."""
from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

from sqlalchemy import func, select

from core.db import Database
from core.models import Delivery
from tests.ops.fleet import eventually, post_events, start_bot, stop_all, wait_ready, write_config
from tests.stand_ins.http import HttpStandIn, Reply


async def statuses(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(Delivery.status, func.count()).group_by(Delivery.status))).all()
    return {s: int(n) for s, n in rows}


async def test_sigterm_exits_cleanly_and_a_restart_resumes_without_loss(tmp_path: Path, db_url: str) -> None:
    n = 12
    async with HttpStandIn(default=Reply(200, {}, delay=0.8)) as peer:  # slow: work is in flight at SIGTERM
        cfg = write_config(tmp_path / "config.yaml", db_url=db_url, hook_url=peer.url + "/hook",
                           channels={"webhook": {"concurrency": 2}})
        bot = await start_bot(cfg, name="first", log_dir=tmp_path)
        db = Database(db_url)
        restarted = None
        try:
            await wait_ready(bot)
            await post_events([bot], n)
            await peer.wait_for(2, "/hook", timeout=15)  # sends are under way
            t0 = time.monotonic()
            bot.signal(signal.SIGTERM)
            code = await bot.wait(10)
            took = time.monotonic() - t0
            assert code == 0, bot.tail()
            assert took < 6, f"shutdown took {took:.1f}s"
            st = await statuses(db)
            assert "sending" not in st, st  # in-flight finished and recorded, the rest handed back
            assert sum(st.values()) == n and st.get("queued", 0) > 0, st  # work was left for the restart
            log = bot.log.read_text()
            assert '"server.stopped"' in log and '"notify.worker.stopped"' in log

            restarted = await start_bot(cfg, name="second", log_dir=tmp_path)
            await wait_ready(restarted)

            async def all_delivered() -> dict[str, int] | None:
                s = await statuses(db)
                return s if s == {"delivered": n} else None

            await eventually(all_delivered, timeout=30, what="the restart delivering the rest")
            async with db.engine.connect() as conn:
                keys = set((await conn.execute(select(Delivery.idempotency_key))).scalars())
            seen = collections.Counter(r.headers["Idempotency-Key"] for r in peer.requests_to("/hook"))
            assert set(seen) == keys  # nothing lost
            assert max(seen.values()) == 1, seen  # and, with a clean stop, nothing sent twice
        finally:
            await stop_all([b for b in (bot, restarted) if b is not None])
            await db.close()
        assert restarted is not None and restarted.proc.returncode == 0, restarted.tail()
