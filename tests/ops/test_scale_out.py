"""Scale-out: three `tocsin run` processes on one PostgreSQL database share the work — every delivery sent
exactly once, every escalation fired once, one audit chain — and finish the work of one that is killed."""
from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

from sqlalchemy import func, select, text

from core.audit.log import verify
from core.db import Database
from core.models import Delivery, Incident, IncidentMessage
from tests.ops.fleet import eventually, post_events, start_bot, stop_all, wait_ready, write_config
from tests.stand_ins.http import HttpStandIn, Reply

KEY = b"test-checkpoint-key"


def keys_seen(peer: HttpStandIn) -> collections.Counter[str]:
    return collections.Counter(r.headers["Idempotency-Key"] for r in peer.requests_to("/hook"))


async def statuses(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(Delivery.status, func.count()).group_by(Delivery.status))).all()
    return {s: int(n) for s, n in rows}


async def test_three_processes_send_every_delivery_and_escalation_exactly_once(tmp_path: Path,
                                                                               pg_url: str) -> None:
    n = 200
    async with HttpStandIn() as peer:
        cfg = write_config(
            tmp_path / "config.yaml", db_url=pg_url, hook_url=peer.url + "/hook",
            routing={"rules": [{"name": "page-and-escalate", "targets": {"destinations": ["hook"]},
                                "escalation_policy": "fast"}]},
            escalation_policies=[{"name": "fast", "levels": [
                {"wait_minutes": 0.02, "targets": {"destinations": ["hook"]}}]}])
        bots = [await start_bot(cfg, name=f"bot{i}", log_dir=tmp_path) for i in range(3)]
        db = Database(pg_url)
        try:
            await asyncio.gather(*(wait_ready(b) for b in bots))
            results = await post_events(bots, n)
            assert {r["result"]["action"] for r in results} == {"opened"}

            async def all_done() -> dict[str, int] | None:
                st = await statuses(db)
                # One page per incident on declare, one per incident when level 1 fires ~1.2 s later.
                return st if st.get("delivered", 0) == 2 * n and sum(st.values()) == 2 * n else None

            await eventually(all_done, timeout=60, what="all 400 deliveries delivered")
            seen = keys_seen(peer)
            async with db.engine.connect() as conn:
                keys = set((await conn.execute(select(Delivery.idempotency_key))).scalars())
                per_incident = (await conn.execute(
                    select(IncidentMessage.incident_id, func.count()).where(IncidentMessage.kind == "ESCALATION")
                    .group_by(IncidentMessage.incident_id))).all()
                levels = set((await conn.execute(select(Incident.escalation_level))).scalars())
                escalate_audits = (await conn.execute(text(
                    "SELECT count(*) FROM audit_log WHERE action = 'incident.escalate'"))).scalar()
            assert set(seen) == keys and len(keys) == 2 * n
            dupes = {k: c for k, c in seen.items() if c > 1}
            assert not dupes, f"sent more than once: {dupes}"
            assert len(per_incident) == n and {c for _, c in per_incident} == {1}  # no double escalation
            assert levels == {1} and escalate_audits == n
            res = await verify(db.engine, checkpoint_key=KEY)
            assert res.ok, res.describe()  # one unforked chain written by three processes
        finally:
            await stop_all(bots)
            await db.close()
        for b in bots:
            assert b.proc.returncode == 0, b.tail()


async def test_survivors_finish_the_work_of_a_killed_process(tmp_path: Path, pg_url: str) -> None:
    n = 120
    async with HttpStandIn(default=Reply(200, {}, delay=0.4)) as peer:  # slow receiver: work stays in flight
        cfg = write_config(tmp_path / "config.yaml", db_url=pg_url, hook_url=peer.url + "/hook",
                           channels={"webhook": {"concurrency": 4}}, worker={"batch_size": 4})
        bots = [await start_bot(cfg, name=f"bot{i}", log_dir=tmp_path) for i in range(3)]
        victim, survivors = bots[0], bots[1:]
        db = Database(pg_url)
        try:
            await asyncio.gather(*(wait_ready(b) for b in bots))
            # Every process takes events (the victim's own declares wake its worker first) and claims in
            # small batches, so the victim surely holds leased work when it is killed.
            await post_events(bots, n)

            async def victim_leases() -> set[int] | None:
                async with db.engine.connect() as conn:
                    ids = set((await conn.execute(select(Delivery.id).where(
                        Delivery.status == "sending",
                        Delivery.lease_owner.like(f"%:{victim.pid}:%")))).scalars())
                return ids or None

            await eventually(victim_leases, timeout=20, every=0.05, what="the victim holding leases")
            victim.signal(signal.SIGKILL)
            assert await victim.wait(5) == -signal.SIGKILL
            held = await victim_leases() or set()  # what it held when it died (leases not yet expired)
            assert held

            last: list[dict[str, int]] = [{}]

            async def all_delivered() -> dict[str, int] | None:
                last[0] = st = await statuses(db)
                return st if st == {"delivered": n} else None

            try:
                await eventually(all_delivered, timeout=45, what="every delivery delivered by the survivors")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; statuses {last[0]}\n{survivors[0].tail(15)}") from None
            async with db.engine.connect() as conn:
                key_of = dict((await conn.execute(select(Delivery.id, Delivery.idempotency_key))).all())
            seen = keys_seen(peer)
            assert set(seen) == set(key_of.values())  # nothing lost
            # At-least-once: only a send the victim had in flight when it died may arrive twice,
            # and it carries the same Idempotency-Key both times, so the receiver can drop it.
            dupes = {k for k, c in seen.items() if c > 1}
            assert dupes <= {key_of[i] for i in held}
            res = await verify(db.engine, checkpoint_key=KEY)
            assert res.ok, res.describe()
        finally:
            await stop_all(survivors)
            await db.close()
        for b in survivors:
            assert b.proc.returncode == 0, b.tail()
