"""The delivery worker: claims due deliveries with a lease, sends them concurrently, records every attempt.

One dispatcher task claims work (woken at once by new incidents, by due retries, and by a fallback poll
for work other processes queued), one task per send (bounded per channel by `channels.<ch>.concurrency`
and paced by the sender's `rate_per_second`), and one group-commit writer that records the outcomes of
everything that finished since its last commit in ONE transaction: row updates, attempt rows and the
audit entries (while sends are still in flight it lets their outcomes gather for up to
GROUP_WAIT_SECONDS or a full batch first). A heartbeat renews our leases; rows of a worker that died are
reclaimed when theirs expire.

Failure never goes quiet: a delivery that ends failed (permanent error) or dead (retries exhausted) gets
an audit entry, an ERROR log line and the internal-alert metric.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.clock import Clock
from core.delivery import queue
from core.delivery.claims import DEFAULT_CONCURRENCY, Claimer  # noqa: F401 (DEFAULT_CONCURRENCY: re-exported)
from core.delivery.fallback import page_next_channel
from core.delivery.message import DeliveryResult
from core.delivery.policy import backoff_seconds, retry_policy
from core.delivery.queue import Claimed, Completion
from core.logs import mask_phone
from core.metrics import ALERTS, DELIVERIES, DELIVERY_LATENCY, RETRIES

if TYPE_CHECKING:
    from core.audit.log import AuditLog
    from core.config import ConfigHolder
    from core.db import Database
    from core.delivery.base import Sender

log = logging.getLogger("tocsin.worker")

GROUP_WAIT_SECONDS = 0.005
"""How long the writer lets outcomes of sends still in flight gather before it commits what it has."""

ACTOR = "system:worker"
"""Who audit entries written by the worker name as actor."""



def masked_address(channel: str, address: str) -> str:
    return mask_phone(address) if channel in ("sms", "voice") else address


def retry_reason(result: DeliveryResult, *, timed_out: bool = False) -> str:
    """A small, fixed vocabulary for the RETRIES metric label."""
    if timed_out:
        return "timeout"
    code = result.status_code
    if code == 429 or result.retry_after is not None:
        return "throttled"
    if code == 408:
        return "timeout"
    if code is not None and code >= 500:
        return "server_error"
    if code is None:
        return "transport" if "within" not in result.summary else "timeout"
    return "other"


@dataclass
class _Done:
    """A finished attempt waiting for the writer, with what to say about it once committed."""

    claimed: Claimed
    completion: Completion
    latency_s: float | None = None
    """Queue-to-delivered seconds (delivered only)."""


class Worker(Claimer):
    """Component `worker` (start/close). Construct with the senders to use, keyed by channel name.
    Claiming and leases: Claimer (core/delivery/claims.py); here: attempts, outcomes, recording."""

    name = "worker"

    def __init__(self, db: Database, config: ConfigHolder, *, senders: Mapping[str, Sender], audit: AuditLog,
                 clock: Clock | None = None, owner: str | None = None, drain_seconds: float = 10.0,
                 rng: random.Random | None = None, write_gate: asyncio.Lock | None = None) -> None:
        super().__init__(db, config, senders=senders, clock=clock, owner=owner, rng=rng, write_gate=write_gate)
        self.audit = audit
        self.drain_seconds = drain_seconds
        self._done: list[_Done] = []
        self._done_ready = asyncio.Event()
        self._done_full = asyncio.Event()
        """Set when the writer should stop gathering outcomes: a full batch, or no other send in flight."""
        self._dispatcher: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    def _unrecorded(self) -> bool:
        return bool(self._done)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._writer = asyncio.create_task(self._write_loop(), name="worker-writer")
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="worker-dispatcher")
        if not self.db.sqlite:
            await self._listen_pg()
        log.info("notify.worker.started", extra={"owner": self.owner, "channels": sorted(self.senders)})

    @property
    def alive(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done() and \
            self._writer is not None and not self._writer.done()

    async def health(self) -> str | None:
        """Readiness: None when the dispatcher and the writer run, else what stopped them."""
        if self.alive:
            return None
        for t in (self._dispatcher, self._writer):
            if t is not None and t.done() and not t.cancelled() and t.exception() is not None:
                return f"worker task {t.get_name()} died: {t.exception()!r}"
        return "worker is not running"

    async def close(self) -> None:
        """Stop claiming; give in-flight sends `drain_seconds`; record what finished; give back the rest."""
        self._stopping = True
        self._wake.set()
        await self._unlisten_pg()
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._sends:
            _, pending = await asyncio.wait(set(self._sends), timeout=self.drain_seconds)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        self._done_ready.set()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._done:  # the writer could not commit them (database down): their leases will expire
            log.error("notify.worker.unrecorded", extra={"owner": self.owner, "count": len(self._done),
                                                         "why": "database unavailable at shutdown; "
                                                                "they are retried when their lease expires"})
        if self._held or self._stop_paging:
            try:
                await self._cancel_buffered_escalations()
            except Exception as exc:  # released below; the next start may send them (a late page, not lost)
                log.error("notify.escalation.cancel_failed", extra={"owner": self.owner, "error": repr(exc)})
        await self._release_unstarted()
        log.info("notify.worker.stopped", extra={"owner": self.owner, **self.stats})

    # --- one attempt --------------------------------------------------------------------------------

    async def _attempt(self, c: Claimed) -> None:
        policy = retry_policy(self.cfg, c.channel)
        sender = self.senders.get(c.channel)
        started_at = self.clock.now()
        t0 = time.monotonic()
        timed_out = False
        try:
            if sender is None:
                result = DeliveryResult.permanent(f"no sender for channel {c.channel!r} in this process "
                                                  f"(known: {', '.join(sorted(self.senders)) or 'none'})")
            else:
                if getattr(sender, "rate_per_second", None):
                    await self._pace(c.channel, sender)
                t0 = time.monotonic()
                try:
                    # asyncio.timeout, not wait_for: wait_for wraps the send in a task of its own (one more
                    # task per page of a fan-out).
                    async with asyncio.timeout(policy.timeout_seconds):
                        result = await sender.send(c.envelope())
                except TimeoutError:
                    timed_out = True
                    result = DeliveryResult.retry(
                        f"no answer within {policy.timeout_seconds:g}s (worker timeout)")
                except Exception as exc:  # a sender bug must not lose the page: retry it, loudly
                    log.exception("notify.sender.crashed", extra={"delivery_id": c.id, "channel": c.channel,
                                                                  "incident": c.resource})
                    result = DeliveryResult.retry(f"sender raised {type(exc).__name__}: {exc}"[:300])
        except asyncio.CancelledError:
            # Shutdown gave up waiting: record the interrupted attempt; the row goes back to the queue.
            self._finish(c, DeliveryResult.retry("interrupted by shutdown"), started_at=started_at,
                         latency_s=time.monotonic() - t0, interrupted=True)
            raise
        self._finish(c, result, started_at=started_at, latency_s=time.monotonic() - t0, timed_out=timed_out)

    def _finish(self, c: Claimed, result: DeliveryResult, *, started_at: datetime, latency_s: float,
                timed_out: bool = False, interrupted: bool = False) -> None:
        """Decide what happens next (the worker retries, not the sender) and hand it to the writer."""
        now = self.clock.now()
        policy = retry_policy(self.cfg, c.channel)
        next_at: datetime | None = None
        error: str | None = None
        if result.outcome == "delivered":
            status = "delivered"
        elif result.outcome == "permanent":
            status, error = "failed", result.summary
        elif interrupted:
            status, error, next_at = "queued", result.summary, now
        elif c.attempt >= c.max_attempts:
            status, error = "dead", result.summary
        else:
            status, error = "queued", result.summary
            if result.retry_after is not None:
                delay = result.retry_after  # the provider said when: exactly that, no jitter
            else:
                delay = backoff_seconds(policy, c.attempt, rng=self.rng)
            next_at = now + timedelta(seconds=delay)
            heapq.heappush(self._due, time.monotonic() + delay)
            self._wake.set()  # let the dispatcher set its timer for this retry
            reason = retry_reason(result, timed_out=timed_out)
            RETRIES.labels(channel=c.channel, reason=reason).inc()
            DELIVERIES.labels(channel=c.channel, status="retry").inc()
            self.stats["retried"] += 1
        # Every attempt gets a line. A success is said once, at INFO, by `notify.delivery.success` after the
        # commit (with the same status code and latency), so its attempt line is DEBUG: a fan-out of
        # thousands spent a fifth of its CPU formatting the same fact twice. A failure says what comes next.
        delivered = result.outcome == "delivered"
        if not delivered or log.isEnabledFor(logging.DEBUG):
            fields: dict[str, Any] = {
                "delivery_id": c.id, "incident": c.resource, "channel": c.channel,
                "to": masked_address(c.channel, c.address), "attempt": c.attempt,
                "outcome": "dead" if status == "dead" else result.outcome,  # the last try says how it ended
                "status_code": result.status_code, "latency_ms": round(latency_s * 1000, 1),
                "summary": result.summary[:300]}
            if not delivered:
                fields.update(recipient=c.recipient, max_attempts=c.max_attempts, next=status,
                              retry_after=result.retry_after,
                              next_attempt_at=next_at.isoformat() if next_at is not None else None)
            log.log(logging.DEBUG if delivered else logging.WARNING, "notify.delivery.attempt", extra=fields)
        completion = Completion(
            delivery_id=c.id, status=status, at=now, next_attempt_at=next_at, last_error=error,
            attempt=c.attempt, started_at=started_at, latency_ms=latency_s * 1000, outcome=result.outcome,
            status_code=result.status_code, summary=result.summary)
        queued_for = (now - c.created_at).total_seconds() if status == "delivered" else None
        self._done.append(_Done(c, completion, queued_for))
        self._done_ready.set()
        st = self._state(c.channel)
        st.inflight -= 1
        self._pump(c.channel)
        if self._commit_now():
            self._done_full.set()
        if self._wants_more(c.channel):
            self._wake.set()  # the buffer runs low and there is more due work: claim the next batch

    # --- recording (group commit) ---------------------------------------------------------------------

    def _commit_now(self) -> bool:
        """Stop gathering outcomes: a full batch, no send left in flight, or shutting down."""
        return (len(self._done) >= self.cfg.worker.batch_size or self._stopping
                or not any(st.inflight for st in self._channels.values()))

    async def _write_loop(self) -> None:
        failures = 0
        while True:
            if not self._done:
                dispatching = self._dispatcher is not None and not self._dispatcher.done()
                if self._stopping and not self._sends and not dispatching:
                    return
                self._done_ready.clear()
                await self._done_ready.wait()
                continue
            self._done_full.clear()
            if not self._commit_now():
                # Sends are still in flight: give their outcomes a moment to join this commit, as a
                # database's commit delay does. A fan-out of 200 made 7-12 commits of a few dozen rows
                # each (each with its audit entry); nothing waits on the record but the lease.
                try:
                    await asyncio.wait_for(self._done_full.wait(), GROUP_WAIT_SECONDS)
                except TimeoutError:
                    pass
            batch, self._done = self._done, []
            try:
                alerts = await self._record(batch)
            except Exception as exc:  # keep them: the rows stay leased to us until the write succeeds
                self._done[:0] = batch
                failures += 1
                delay = min(5.0, 0.05 * 2 ** min(failures, 7)) * (0.5 + self.rng.random())
                # A blip (locked database) is a warning; a write that keeps failing is an outage of its own.
                level = logging.WARNING if failures < 5 else logging.ERROR
                log.log(level, "notify.worker.record_failed", extra={
                    "owner": self.owner, "count": len(batch), "error": repr(exc), "failures": failures,
                    "retry_in_s": round(delay, 3)})
                if self._stopping and failures >= 5:
                    return  # close() reports what stayed unrecorded
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.stats["commits"] += 1
            self._after_commit(batch, alerts)

    async def _record(self, batch: list[_Done]) -> set[int]:
        """One transaction: row updates, attempt rows, one `delivery.delivered` audit entry per incident in
        the batch, and one `delivery.failed`/`delivery.dead` entry per page that ended badly."""
        async with self._tx() as s:
            moved = set(await queue.complete(s, [d.completion for d in batch], owner=self.owner))
            delivered: dict[str, list[_Done]] = {}
            for d in batch:
                if d.completion.status == "delivered":
                    delivered.setdefault(d.claimed.resource, []).append(d)
            for resource, items in delivered.items():
                channels: dict[str, int] = {}
                for d in items:
                    channels[d.claimed.channel] = channels.get(d.claimed.channel, 0) + 1
                await self.audit.append(s, actor=ACTOR, source=self.owner, action="delivery.delivered",
                                        resource=resource, now=batch[-1].completion.at, details={
                                            "count": len(items), "channels": channels,
                                            "deliveries": [d.claimed.id for d in items],
                                            "recipients": sorted({d.claimed.recipient for d in items})})
            for d in batch:
                if d.claimed.id in moved:
                    c = d.claimed
                    await self.audit.append(
                        s, actor=ACTOR, source=self.owner, action=f"delivery.{d.completion.status}",
                        resource=c.resource, now=d.completion.at, details={
                            "delivery": c.id, "recipient": c.recipient, "channel": c.channel,
                            "purpose": c.purpose, "attempts": c.attempt,
                            "error": (d.completion.last_error or "")[:500]})
                    if d.completion.status in ("failed", "dead"):
                        await page_next_channel(s, self.cfg, c, now=d.completion.at)
        return moved

    def _after_commit(self, batch: list[_Done], alerts: set[int]) -> None:
        """Logs and metrics for final states, only once the database says so. Successes are logged as one
        `notify.delivery.success` line per incident and channel in the commit (naming every delivery), as
        the audit trail records them: a storm of thousands of pages wrote as many near-identical lines, and
        formatting them cost a tenth of the worker's CPU."""
        counted: dict[str, int] = {}  # delivered per channel: one metric update per channel and batch
        latency: dict[str, Any] = {}  # each channel's histogram child, looked up once per batch
        succeeded: dict[tuple[str, str], list[_Done]] = {}
        for d in batch:
            c, comp = d.claimed, d.completion
            if comp.status == "delivered":
                self.stats["delivered"] += 1
                counted[c.channel] = counted.get(c.channel, 0) + 1
                if d.latency_s is not None:
                    hist = latency.get(c.channel)
                    if hist is None:
                        hist = latency[c.channel] = DELIVERY_LATENCY.labels(channel=c.channel)
                    hist.observe(max(0.0, d.latency_s))
                group = succeeded.get((c.resource, c.channel))
                if group is None:
                    group = succeeded[(c.resource, c.channel)] = []
                group.append(d)
            elif comp.status in ("failed", "dead"):
                self.stats[comp.status] += 1
                DELIVERIES.labels(channel=c.channel, status=comp.status).inc()
                if c.id in alerts:
                    ALERTS.labels(channel=c.channel, status=comp.status).inc()
                    log.error("notify.delivery.failed", extra={
                        "delivery_id": c.id, "incident": c.resource, "channel": c.channel,
                        "recipient": c.recipient, "to": masked_address(c.channel, c.address),
                        "status": comp.status, "attempts": c.attempt, "purpose": c.purpose,
                        "error": (comp.last_error or "")[:300], "alert": True})
                else:
                    log.warning("notify.delivery.lease_lost", extra={
                        "delivery_id": c.id, "channel": c.channel, "status": comp.status,
                        "why": "another worker took this delivery over after our lease expired"})
        for channel, n in counted.items():
            DELIVERIES.labels(channel=channel, status="delivered").inc(n)
        for (incident, channel), group in succeeded.items():
            codes: dict[str, int] = {}
            for d in group:
                code = str(d.completion.status_code)
                codes[code] = codes.get(code, 0) + 1
            log.info("notify.delivery.success", extra={
                "incident": incident, "channel": channel, "count": len(group),
                "delivery_ids": [d.claimed.id for d in group],
                "to": [masked_address(channel, d.claimed.address) for d in group],
                "attempts": max(d.claimed.attempt for d in group), "status_codes": codes,
                "latency_ms": round(max(d.completion.latency_ms for d in group), 1),
                "queue_to_delivered_s": round(max(d.latency_s or 0.0 for d in group), 3)})
