"""The worker against a real loopback HTTP peer: delivery, retries, Retry-After, permanent failure, dead
letters with their internal alert, timeouts, wake-up without polling, per-channel concurrency, shutdown."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from core.delivery.message import DeliveryResult, Envelope, Notification
from core.delivery.worker import Worker
from core.metrics import ALERTS, DELIVERIES, REGISTRY, RETRIES
from core.models import OutboxMessage
from tests.delivery.test_worker_kit import (
    ADMIN,
    attempts,
    audit_actions,
    declare,
    deliveries,
    fanout_overrides,
    open_ctx,
    start_worker,
    wait_statuses,
    wait_until,
)
from tests.stand_ins.http import HttpStandIn, hang, retry_after


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_delivers_with_idempotency_key_attempt_row_and_audit(sqlite_url: str, peer: HttpStandIn,
                                                                   http: aiohttp.ClientSession) -> None:
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 3))
    before = metric("tocsin_deliveries_total", channel="webhook", status="delivered")
    comp = await start_worker(ctx, http)
    try:
        out = await declare(ctx)
        await wait_statuses(ctx, {"delivered": 3})
        await comp.close()
        rows = await deliveries(ctx)
        keys = sorted(r.headers["Idempotency-Key"] for r in peer.requests)
        assert keys == sorted(r.idempotency_key for r in rows)
        assert all(r.attempts == 1 and r.delivered_at is not None and r.lease_owner is None for r in rows)
        atts = await attempts(ctx)
        assert [(a.attempt, a.outcome, a.status_code) for a in atts] == [(1, "delivered", 200)] * 3
        audit = await audit_actions(ctx)
        # Delivered pages are audited in batches: one entry per incident per commit, naming every delivery.
        assert {a.action for a in audit} == {"delivery.delivered"}
        assert all(a.resource == out.incident.ref for a in audit)
        named = sorted(d for a in audit for d in json.loads(a.details)["deliveries"])
        assert named == sorted(r.id for r in rows)
    finally:
        await comp.close()
        await ctx.close()
    assert metric("tocsin_deliveries_total", channel="webhook", status="delivered") - before == 3


async def test_retry_then_success(sqlite_url: str, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    peer.script("/hook/0", (500, "boom"), (503, "later"), (200, "ok"))
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 1))
    before = metric("tocsin_retries_total", channel="webhook", reason="server_error")
    comp = await start_worker(ctx, http)
    try:
        await declare(ctx)
        await wait_statuses(ctx, {"delivered": 1})
        d = (await deliveries(ctx))[0]
        assert d.attempts == 3
        assert [(a.attempt, a.outcome, a.status_code) for a in await attempts(ctx, d.id)] == [
            (1, "retry", 500), (2, "retry", 503), (3, "delivered", 200)]
        # The same key on every try: a receiver that got a slow first attempt can drop the repeats.
        assert len({r.headers["Idempotency-Key"] for r in peer.requests}) == 1
    finally:
        await comp.close()
        await ctx.close()
    assert metric("tocsin_retries_total", channel="webhook", reason="server_error") - before == 2


async def test_retry_after_is_honoured_exactly(sqlite_url: str, peer: HttpStandIn,
                                               http: aiohttp.ClientSession) -> None:
    """Backoff here would retry after 0.05 s; the provider asked for 1 s, so nothing may arrive before."""
    peer.script("/hook/0", retry_after(1), (200, "ok"))
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 1, worker={"poll_seconds": 30}))
    comp = await start_worker(ctx, http)
    try:
        await declare(ctx)
        await wait_statuses(ctx, {"delivered": 1}, timeout=10)
        first, second = peer.requests
        assert second.at - first.at >= 1.0
        assert second.at - first.at < 8  # not at the next (30 s) fallback poll either: a timer woke us
        a1 = (await attempts(ctx))[0]
        assert a1.status_code == 429
    finally:
        await comp.close()
        await ctx.close()


async def test_permanent_failure_is_not_retried_and_alerts(sqlite_url: str, peer: HttpStandIn,
                                                           http: aiohttp.ClientSession) -> None:
    peer.script("/hook/0", (404, "no such hook"))
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 1))
    before = metric("tocsin_internal_alerts_total", channel="webhook", status="failed")
    comp = await start_worker(ctx, http)
    try:
        out = await declare(ctx)
        await wait_statuses(ctx, {"failed": 1})
        await asyncio.sleep(0.3)
        assert len(peer.requests) == 1
        d = (await deliveries(ctx))[0]
        assert d.attempts == 1 and "404" in (d.last_error or "")
        alert = [a for a in await audit_actions(ctx) if a.action == "delivery.failed"]
        assert len(alert) == 1 and alert[0].resource == out.incident.ref
        details = json.loads(alert[0].details)
        assert details["delivery"] == d.id and details["recipient"] == "hook-0" and "404" in details["error"]
    finally:
        await comp.close()
        await ctx.close()
    assert metric("tocsin_internal_alerts_total", channel="webhook", status="failed") - before == 1


async def test_dead_after_max_attempts_raises_internal_alert(sqlite_url: str, peer: HttpStandIn,
                                                             http: aiohttp.ClientSession,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    peer.on("/hook/*", (500, "down"))
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 1, retry={"max_retries": 2}))
    before = metric("tocsin_internal_alerts_total", channel="webhook", status="dead")
    comp = await start_worker(ctx, http)
    try:
        await declare(ctx)
        await wait_statuses(ctx, {"dead": 1})
        assert len(peer.requests) == 3  # 1 try + 2 retries
        assert [a.outcome for a in await attempts(ctx)] == ["retry"] * 3
        dead = [a for a in await audit_actions(ctx) if a.action == "delivery.dead"]
        assert len(dead) == 1 and json.loads(dead[0].details)["attempts"] == 3
    finally:
        await comp.close()
        await ctx.close()
    assert metric("tocsin_internal_alerts_total", channel="webhook", status="dead") - before == 1
    errors = [r for r in caplog.records if r.getMessage() == "notify.delivery.failed"]
    assert errors and errors[0].levelname == "ERROR"
    assert errors[0].status == "dead"  # type: ignore[attr-defined]
    # the attempt lines: the last one says it was the end, not "retry" (with no retry to come)
    tries = [r for r in caplog.records if r.getMessage() == "notify.delivery.attempt"]
    assert [(r.outcome, r.next) for r in tries] == [  # type: ignore[attr-defined]
        ("retry", "queued"), ("retry", "queued"), ("dead", "dead")]


async def test_hanging_provider_times_out_and_is_retried(sqlite_url: str, peer: HttpStandIn,
                                                         http: aiohttp.ClientSession) -> None:
    peer.script("/hook/0", hang(30), (200, "ok"))
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 1, retry={"timeout_seconds": 0.3}))
    before = metric("tocsin_retries_total", channel="webhook", reason="timeout")
    comp = await start_worker(ctx, http)
    try:
        t0 = time.monotonic()
        await declare(ctx)
        await wait_statuses(ctx, {"delivered": 1}, timeout=10)
        assert time.monotonic() - t0 < 10  # the peer would have hung for 30 s
        first = (await attempts(ctx))[0]
        assert first.outcome == "retry" and "no answer within" in first.summary
    finally:
        await comp.close()
        await ctx.close()
    assert metric("tocsin_retries_total", channel="webhook", reason="timeout") - before == 1


class _StuckSender:
    """A sender that ignores its own timeout (a bug, or a blocking library): the worker's must fire."""

    channel = "webhook"
    rate_per_second = None

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, envelope: Envelope) -> DeliveryResult:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(3600)
        return DeliveryResult.ok("fine the second time")

    async def aclose(self) -> None:
        return None


async def test_worker_enforces_the_attempt_timeout_itself(sqlite_url: str, peer: HttpStandIn) -> None:
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 1, retry={"timeout_seconds": 0.2}))
    stuck = _StuckSender()
    worker = Worker(ctx.db, ctx.holder, senders={"webhook": stuck}, audit=ctx.audit, clock=ctx.clock)
    ctx.service.events.subscribe(worker.notify)
    await worker.start()
    try:
        await declare(ctx)
        await wait_statuses(ctx, {"delivered": 1}, timeout=5)
        assert stuck.calls == 2
        assert "worker timeout" in (await attempts(ctx))[0].summary
    finally:
        await worker.close()
        await ctx.close()


async def test_new_work_wakes_the_worker_without_waiting_for_the_poll(sqlite_url: str, peer: HttpStandIn,
                                                                      http: aiohttp.ClientSession) -> None:
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 2, worker={"poll_seconds": 60}))
    comp = await start_worker(ctx, http)
    try:
        await asyncio.sleep(0.2)  # the worker is idle, waiting for the (long) poll
        await declare(ctx)
        t0 = time.monotonic()
        await wait_statuses(ctx, {"delivered": 2}, timeout=20)
        assert time.monotonic() - t0 < 10  # far below the 60 s poll, with room for a loaded machine
    finally:
        await comp.close()
        await ctx.close()


async def test_per_channel_concurrency_limit(sqlite_url: str, peer: HttpStandIn,
                                             http: aiohttp.ClientSession) -> None:
    current = peak = 0

    async def slow(_req: Any) -> Any:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.05)
        current -= 1
        return (200, "ok")

    peer.on("/hook/*", slow)
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 20, concurrency=3))
    comp = await start_worker(ctx, http)
    try:
        await declare(ctx)
        await wait_statuses(ctx, {"delivered": 20}, timeout=10)
    finally:
        await comp.close()
        await ctx.close()
    assert peak == 3


async def test_outbox_stores_rendered_message_once(sqlite_url: str, http: aiohttp.ClientSession) -> None:
    """The embedded default: every channel goes to the outbox (the conftest config), rendered per channel."""
    ctx = await open_ctx(sqlite_url)
    comp = await start_worker(ctx, http)
    try:
        out = await declare(ctx, title="payments down", severity="sev1")
        total = out.queued
        await wait_statuses(ctx, {"delivered": total})
        async with ctx.db.sessions() as s:
            rows = (await s.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars().all()
        assert len(rows) == total
        assert {r.delivery_id for r in rows} == {d.id for d in await deliveries(ctx)}
        sms = [r for r in rows if r.channel == "sms"]
        assert sms and all("payments down" in r.body for r in sms)
        assert all(r.subject and "payments down" in r.subject for r in rows)
        # A second store for the same delivery (a retry after a crash) does not duplicate the message.
        store = comp.outbox
        d = (await deliveries(ctx))[0]
        env = Envelope(d.id, d.channel, d.recipient, d.address, d.idempotency_key, 2,
                       Notification.from_json(d.notification_json))
        again = await store.sender(d.channel).send(env)
        assert again.outcome == "delivered"
        async with ctx.db.sessions() as s:
            n = len((await s.execute(select(OutboxMessage).where(OutboxMessage.delivery_id == d.id)))
                    .scalars().all())
        assert n == 1
    finally:
        await comp.close()
        await ctx.close()


async def test_close_releases_unfinished_leases_and_a_restart_resumes(sqlite_url: str, peer: HttpStandIn,
                                                                      http: aiohttp.ClientSession) -> None:
    peer.on("/hook/*", hang(30))
    over = fanout_overrides(peer.url, 5, concurrency=2, retry={"timeout_seconds": 20})
    ctx = await open_ctx(sqlite_url, **over)
    comp = await start_worker(ctx, http, drain_seconds=0.2)
    await declare(ctx)
    await peer.wait_for(2, "/hook/*")
    await comp.close()
    rows = await deliveries(ctx)
    assert {r.status for r in rows} == {"queued"}
    assert all(r.lease_owner is None and r.lease_expires_at is None for r in rows)
    # Two were in flight (attempt counted, recorded as interrupted); three never started (not counted).
    assert sorted(r.attempts for r in rows) == [0, 0, 0, 1, 1]
    assert [a.summary for a in await attempts(ctx)] == ["interrupted by shutdown"] * 2
    peer.reset()
    peer.on("/hook/*", (200, "ok"))
    comp = await start_worker(ctx, http)
    try:
        await wait_statuses(ctx, {"delivered": 5})
    finally:
        await comp.close()
        await ctx.close()


async def test_unknown_channel_fails_loudly(sqlite_url: str, peer: HttpStandIn) -> None:
    """A chat surface whose adapter is not running: the card update fails with an alert, never sits silent."""
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 1))
    ctx.service.surfaces.append("slack")
    worker = Worker(ctx.db, ctx.holder, senders={}, audit=ctx.audit, clock=ctx.clock)
    ctx.service.events.subscribe(worker.notify)
    await worker.start()
    try:
        await declare(ctx)
        await wait_statuses(ctx, {"failed": 2})
        errors = {d.channel: d.last_error for d in await deliveries(ctx)}
        assert "no sender for channel 'chat:slack'" in (errors["chat:slack"] or "")
    finally:
        await worker.close()
        await ctx.close()


async def test_server_mounts_the_worker_with_readiness_and_chat_senders(
        sqlite_url: str, peer: HttpStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bot import server
    from bot.server import Provided, build_app

    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 1))
    ctx.service.surfaces.append("slack")

    class ChatStandIn(_StuckSender):
        async def send(self, envelope: Envelope) -> DeliveryResult:
            self.calls += 1
            return DeliveryResult.ok("card posted")

    chat = ChatStandIn()

    def chat_adapter(_rt: Any) -> Provided:  # like the Slack mount: mounted before the worker
        return Provided(chat_senders={"chat:slack": chat})

    composition = server._mounts()
    where = [m.__module__ for m in composition]
    assert where.index("bot.delivery_mount") > max(where.index(m) for m in (
        "bot.slack.app", "bot.teams.app", "bot.telegram.bot"))  # the worker gets the chat senders
    monkeypatch.setattr(server, "_mounts", lambda: [chat_adapter, *composition])
    app, rt = await build_app(ctx)
    assert rt.chat_senders["chat:slack"] is chat
    try:
        async with TestClient(TestServer(app)) as c:
            body = await (await c.get("/readyz")).json()
            assert body["status"] == "ready" and "worker" in body["checks"]
            await declare(ctx)
            await wait_statuses(ctx, {"delivered": 2})
            assert chat.calls == 1 and len(peer.requests) == 1
    finally:
        await ctx.close()


async def test_outbox_cli_prints_and_follows(sqlite_url: str, tmp_path: Any,
                                             http: aiohttp.ClientSession) -> None:
    import io

    import yaml

    from bot.cli import build_parser
    from bot.cli_outbox import cmd_outbox
    from tests.conftest import BASE_CONFIG, deep_merge

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(deep_merge(BASE_CONFIG, {"database": {"url": sqlite_url}})))
    ctx = await open_ctx(sqlite_url)
    comp = await start_worker(ctx, http)
    try:
        args = build_parser().parse_args(["--config", str(path), "--as", "cli:viewer", "outbox"])
        buf = io.StringIO()
        assert await cmd_outbox(args, out=buf) == 0
        assert "the outbox is empty" in buf.getvalue()
        out = await declare(ctx, title="cache cold")
        await wait_statuses(ctx, {"delivered": out.queued})
        buf = io.StringIO()
        args = build_parser().parse_args(["--config", str(path), "outbox", "--limit", "1"])
        assert await cmd_outbox(args, out=buf) == 0
        text = buf.getvalue()
        assert len(re.findall(r"^#\d+ ", text, re.M)) == 1 and "cache cold" in text
        assert "--- text/plain ---" in text and "--- text/html ---" in text  # the email as sent: both parts

        # --json: one object per line, each with the payload the real sender would have sent.
        buf = io.StringIO()
        args = build_parser().parse_args(["--config", str(path), "outbox", "--json", "-n", str(out.queued)])
        assert await cmd_outbox(args, out=buf) == 0
        rows = [json.loads(line) for line in buf.getvalue().splitlines()]
        assert len(rows) == out.queued and {r["channel"] for r in rows} == {"email"}
        for r in rows:
            assert r["subject"] == "[SEV2] INC-1 Declared: cache cold"
            assert r["payload"]["headers"]["To"] == r["address"] and r["payload"]["text"].startswith(r["subject"])

        # --follow prints what arrives later.
        buf = io.StringIO()
        args = build_parser().parse_args(["--config", str(path), "outbox", "--limit", "1", "--follow",
                                          "--interval", "0.05"])
        tty, pipe = _Tty(), io.StringIO()
        follower = asyncio.create_task(cmd_outbox(args, out=buf, status=tty))
        quiet = asyncio.create_task(cmd_outbox(args, out=io.StringIO(), status=pipe))
        await asyncio.sleep(0.3)
        out2 = await declare(ctx, title="queue backlog")
        await wait_until(lambda: _has(buf, "queue backlog", out2.queued), timeout=5)
        await asyncio.sleep(0.3)
        for task in (follower, quiet):
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # Progress on a terminal (how many new messages were printed), nothing off one.
        shown = tty.getvalue()
        assert "following the outbox, Ctrl-C stops; new messages" in shown and f"{out2.queued}/?" in shown
        assert pipe.getvalue() == ""
    finally:
        await comp.close()
        await ctx.close()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def _has(buf: Any, text: str, n: int) -> bool:
    return buf.getvalue().count(text) >= n


def test_metric_objects_are_the_shared_ones() -> None:
    """The worker bumps core.metrics' series (no twins): the names below are what dashboards query."""
    names = {m._name for m in (DELIVERIES, RETRIES, ALERTS)}  # type: ignore[attr-defined]
    assert names == {"tocsin_deliveries", "tocsin_retries", "tocsin_internal_alerts"}


async def test_ack_cancels_escalation_pages_the_worker_already_claimed(
        sqlite_url: str, peer: HttpStandIn, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    """Escalation pages waiting in the worker's buffer (claimed, not started) are cancelled by an ack too."""
    caplog.set_level(logging.INFO, logger="tocsin.worker")
    async def slow(_req: Any) -> Any:
        await asyncio.sleep(0.3)
        return (200, "ok")

    peer.on("/hook/*", slow)
    over = fanout_overrides(peer.url, 3, concurrency=1)
    names = over["routing"]["default_targets"]["destinations"]
    over["routing"]["rules"] = [{"name": "page-hooks", "targets": {"destinations": names},
                                 "escalation_policy": "hooks"}]
    over["routing"]["default_targets"] = {"lists": []}
    over["escalation_policies"] = [{"name": "hooks", "levels": [
        {"wait_minutes": 5, "targets": {"destinations": names}}]}]
    ctx = await open_ctx(sqlite_url, **over)
    comp = await start_worker(ctx, http)
    try:
        out = await declare(ctx, severity="sev1")
        await ctx.service.escalate(out.incident.ref, actor=ADMIN)

        async def escalations_buffered() -> bool:
            st = comp.worker._channels.get("webhook")
            return st is not None and any(c.purpose == "escalation" for c in st.buffer)

        await wait_until(escalations_buffered, timeout=5, what="escalation pages claimed into the buffer")
        await ctx.service.acknowledge(out.incident.ref, actor=ADMIN)

        async def settled() -> bool:
            rows = await deliveries(ctx)
            return all(r.status in ("delivered", "cancelled") for r in rows)

        await wait_until(settled, timeout=15, what="every delivery delivered or cancelled")
        rows = await deliveries(ctx)
        esc = [r for r in rows if r.purpose == "escalation"]
        assert esc and {r.status for r in esc} == {"cancelled"}
        assert all(r.attempts == 0 and r.lease_owner is None for r in esc)
        sent_types = {r.json["type"] for r in peer.requests}
        assert "tocsin.escalation" not in sent_types and "tocsin.initial" in sent_types
        # ...and it was the worker that cancelled them (they were already claimed when the ack committed).
        assert [r for r in caplog.records if r.getMessage() == "notify.escalation.cancelled_buffered"]
    finally:
        await comp.close()
        await ctx.close()


async def test_claims_and_outcomes_are_batched(sqlite_url: str, peer: HttpStandIn,
                                               http: aiohttp.ClientSession) -> None:
    """The hot path's shape: a fan-out takes a handful of claim and commit transactions, not one per page."""
    over = fanout_overrides(peer.url, 300, concurrency=16, worker={"batch_size": 50})
    ctx = await open_ctx(sqlite_url, **over)
    comp = await start_worker(ctx, http)
    try:
        await declare(ctx)
        await wait_statuses(ctx, {"delivered": 300}, timeout=20)
        stats = comp.worker.stats
        assert stats["claimed"] == 300
        assert stats["claims"] <= 300 // 25  # on average at least half a batch (50) per claim
        assert stats["commits"] < 100  # group commit: many outcomes per transaction
        audit = [a for a in await audit_actions(ctx) if a.action == "delivery.delivered"]
        assert sum(json.loads(a.details)["count"] for a in audit) == 300 and len(audit) == stats["commits"]
    finally:
        await comp.close()
        await ctx.close()


async def test_webhook_payload_names_the_routed_event_type(sqlite_url: str, peer: HttpStandIn,
                                                           http: aiohttp.ClientSession) -> None:
    """Issue 14.7: receivers get the event type rules matched (declare, ack, monitor, resolve), not the
    message kind (initial, monitoring, resolved)."""
    ctx = await open_ctx(sqlite_url, **fanout_overrides(peer.url, 1))
    comp = await start_worker(ctx, http)
    try:
        out = await declare(ctx)
        await ctx.service.acknowledge(out.incident.id, actor=ADMIN)
        await ctx.service.monitor(out.incident.id, actor=ADMIN)
        await ctx.service.resolve(out.incident.id, actor=ADMIN)
        await peer.wait_for(4, "/hook/*")
        got = [(r.json["type"], r.json["event"]["event_type"]) for r in
               sorted(peer.requests, key=lambda r: r.json["delivery_id"])]
        assert got == [("tocsin.initial", "declare"), ("tocsin.ack", "ack"), ("tocsin.monitoring", "monitor"),
                       ("tocsin.resolved", "resolve")]
    finally:
        await comp.close()
        await ctx.close()


def test_the_worker_cancels_what_the_service_says_not_what_it_guesses_from_kinds() -> None:
    """Issue 15.2: the worker no longer keeps its own table of incident kinds that stop paging; an event
    marked `stop_paging` by the service is what makes it drop claimed escalation pages."""
    from core.events import IncidentEvent

    w = Worker(None, None, senders={}, audit=None)  # type: ignore[arg-type]
    w.notify(IncidentEvent("ack", 5, 1, "cli:op"))  # an ack the service did not mark: nothing to drop
    w.notify(IncidentEvent("custom", 6, 1, "cli:op", stop_paging=True))
    w.notify(None)  # a bare wake-up (another process's work)
    assert w._stop_paging == {6}


async def test_bulk_paths_write_every_row_exactly_on_both_databases(db_url: str, peer: HttpStandIn,
                                                                     http: aiohttp.ClientSession) -> None:
    """A fan-out past the few-rows path goes through the bulk statements (PostgreSQL: INSERT/UPDATE over
    unnest arrays; SQLite: one executemany and a read of the new ids): every row keeps its own recipient,
    address and key, a retry in between is recorded as such, and each attempt is one attempt row."""
    n = 40
    peer.script("/hook/7", (503, {"error": "busy"}))  # hook-7 fails once, then the default 200
    ctx = await open_ctx(db_url, **fanout_overrides(peer.url, n, concurrency=8, worker={"batch_size": 16}))
    comp = await start_worker(ctx, http)
    try:
        out = await declare(ctx)
        assert out.queued == n
        await wait_statuses(ctx, {"delivered": n}, timeout=20)
        rows = {r.recipient: r for r in await deliveries(ctx)}
        assert sorted(rows) == sorted(f"hook-{i}" for i in range(n))
        for name, r in rows.items():
            assert r.address == name and r.channel == "webhook" and r.idempotency_key.endswith(f"-webhook-{name}")
            assert r.lease_owner is None and r.lease_expires_at is None and r.delivered_at is not None
            assert r.attempts == (2 if name == "hook-7" else 1)
            assert r.last_error is None  # the success cleared the retry's error
        tries = await attempts(ctx)
        assert len(tries) == n + 1
        by_delivery: dict[int, list[Any]] = {}
        for t in tries:
            by_delivery.setdefault(t.delivery_id, []).append(t)
        assert sorted(by_delivery) == sorted(r.id for r in rows.values())
        flaky = sorted(by_delivery[rows["hook-7"].id], key=lambda t: t.attempt)
        assert [(t.attempt, t.outcome, t.status_code) for t in flaky] == [(1, "retry", 503), (2, "delivered", 200)]
        assert {(t.attempt, t.outcome, t.status_code) for d, ts in by_delivery.items()
                if d != rows["hook-7"].id for t in ts} == {(1, "delivered", 200)}
        sent = {r.path for r in peer.requests}
        assert sent == {f"/hook/{i}" for i in range(n)}
    finally:
        await comp.close()
        await ctx.close()
