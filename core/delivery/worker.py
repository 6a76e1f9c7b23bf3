"""The delivery worker: claims due deliveries with a lease, sends them concurrently, records every attempt.

One dispatcher task claims work (woken at once by new incidents, by due retries, and by a fallback poll
for work other processes queued), one task per send (bounded per channel by `channels.<ch>.concurrency`
and paced by the sender's `rate_per_second`), and one group-commit writer that records the outcomes of
everything that finished since its last commit in ONE transaction: row updates, attempt rows and the
audit entries. A heartbeat renews our leases; rows of a worker that died are reclaimed when theirs expire.

Failure never goes quiet: a delivery that ends failed (permanent error) or dead (retries exhausted) gets
an audit entry, an ERROR log line and the internal-alert metric.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.clock import Clock, SystemClock
from core.delivery import queue
from core.delivery.fallback import page_next_channel
from core.delivery.message import DeliveryResult
from core.delivery.policy import backoff_seconds, retry_policy
from core.delivery.queue import Claimed, Completion
from core.logs import mask_phone
from core.metrics import ALERTS, DELIVERIES, DELIVERY_LATENCY, RETRIES

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from core.audit.log import AuditLog
    from core.config import Config, ConfigHolder
    from core.db import Database
    from core.delivery.base import Sender

log = logging.getLogger("tocsin.worker")

ACTOR = "system:worker"
"""Who audit entries written by the worker name as actor."""
DEFAULT_CONCURRENCY = 8
"""For channels without a config section (chat surfaces `chat:<platform>`)."""


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


@dataclass
class _ChannelState:
    buffer: deque[Claimed] = field(default_factory=deque)
    inflight: int = 0
    next_start: float = 0.0
    """Monotonic time the next send may start (rate_per_second pacing)."""


class Worker:
    """Component `worker` (start/close). Construct with the senders to use, keyed by channel name."""

    name = "worker"

    def __init__(self, db: Database, config: ConfigHolder, *, senders: Mapping[str, Sender], audit: AuditLog,
                 clock: Clock | None = None, owner: str | None = None, drain_seconds: float = 10.0,
                 rng: random.Random | None = None, write_gate: asyncio.Lock | None = None) -> None:
        self.db = db
        self.config = config
        self.senders = senders
        """Read at send time: a live mapping (e.g. a ChainMap over chat adapters' senders) is fine."""
        self.audit = audit
        self.clock = clock or SystemClock()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.drain_seconds = drain_seconds
        self.rng = rng or random.Random()
        self.write_gate = write_gate or db.write_gate
        """Serializes this process's SQLite write transactions (share it with the outbox store)."""
        self._channels: dict[str, _ChannelState] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._done: list[_Done] = []
        self._done_ready = asyncio.Event()
        self._stop_paging: set[int] = set()
        """Incidents whose buffered escalation pages must be cancelled before they are sent."""
        self._held: list[Claimed] = []
        """Claimed escalation pages of such incidents, kept from sending until cancelled in the database."""
        self._due: list[float] = []
        """Monotonic times at which retries we scheduled become due (wake up then, not at the next poll)."""
        self._dispatcher: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self._more: dict[str, bool] = {}
        """Per channel: did the last claim that asked for it fill its limit (more due work is likely)?
        Missing means unknown (new work was announced, or a poll is due), which counts as yes."""
        self._pg_listener: Any = None
        self.stats: dict[str, int] = dict.fromkeys(
            ("claims", "claimed", "delivered", "retried", "failed", "dead", "reclaimed", "commits"), 0)

    @property
    def cfg(self) -> Config:
        return self.config.cfg

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._writer = asyncio.create_task(self._write_loop(), name="worker-writer")
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="worker-dispatcher")
        if not self.db.sqlite:
            await self._listen_pg()
        log.info("notify.worker.started", extra={"owner": self.owner, "channels": sorted(self.senders)})

    def notify(self, event: object = None) -> None:
        """Event-bus listener: new deliveries were just committed, so wake the dispatcher now.

        When the service says a change stopped paging (`stop_paging`: it cancelled the incident's queued
        escalation pages in its own transaction), the ones this worker already claimed but has not started
        yet are cancelled here, too. The worker does not interpret incident kinds itself."""
        incident_id = getattr(event, "incident_id", None)
        if getattr(event, "stop_paging", False) and incident_id is not None:
            self._stop_paging.add(int(incident_id))
        self._more.clear()
        self._wake.set()

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
        unstarted = [c.id for st in self._channels.values() for c in st.buffer] + [c.id for c in self._held]
        self._held = []
        for st in self._channels.values():
            st.buffer.clear()
        if unstarted:
            try:
                async with self._tx() as s:
                    n = await queue.release(s, owner=self.owner, ids=unstarted, now=self.clock.now(),
                                            undo_attempt=True)
                log.info("notify.worker.released", extra={"owner": self.owner, "count": n})
            except Exception as exc:  # their leases expire and another start picks them up
                log.error("notify.worker.release_failed", extra={"owner": self.owner, "count": len(unstarted),
                                                                 "error": repr(exc)})
        log.info("notify.worker.stopped", extra={"owner": self.owner, **self.stats})

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        """A write transaction. On SQLite ours queue on an asyncio lock instead of in SQLite's busy handler,
        which sleeps in steps of up to 100 ms: the claimer, the writer and the heartbeat would otherwise
        spend most of a fan-out asleep waiting for each other."""
        if self.db.sqlite:
            async with self.write_gate, self.db.transaction() as s:
                yield s
        else:
            async with self.db.transaction() as s:
                yield s

    # --- claiming -----------------------------------------------------------------------------------

    def _state(self, channel: str) -> _ChannelState:
        st = self._channels.get(channel)
        if st is None:
            st = self._channels[channel] = _ChannelState()
        return st

    def _concurrency(self, channel: str) -> int:
        section = getattr(self.cfg.channels, channel, None)
        return int(getattr(section, "concurrency", DEFAULT_CONCURRENCY))

    def _room(self, channel: str) -> int:
        """How many more rows we would hold for `channel`: its slots plus up to two batches waiting, so
        every slot stays busy while the next claim commits (tens of ms on a busy SQLite, behind our own
        writes) and claims come in batches, not one per finished send. The heartbeat keeps their leases."""
        st = self._state(channel)
        return self._concurrency(channel) + 2 * self.cfg.worker.batch_size - st.inflight - len(st.buffer)

    def _low(self, channel: str) -> bool:
        """At most one batch left waiting for a slot: time to claim the next one."""
        return len(self._state(channel).buffer) <= self.cfg.worker.batch_size

    def _wants_more(self, channel: str) -> bool:
        return self._more.get(channel, True) and self._low(channel)

    async def _dispatch_loop(self) -> None:
        wcfg = self.cfg.worker
        housekeeping_every = min(wcfg.lease_seconds / 3, wcfg.poll_seconds)
        next_housekeeping = 0.0
        failures = 0
        while not self._stopping:
            self._wake.clear()
            now = time.monotonic()
            if self._due and self._due[0] <= now:
                # Retries came due. Popped before the claim, whose clock reading comes later, so the claim
                # sees them; and every channel may have work again (`_finish` reads the wall clock first).
                while self._due and self._due[0] <= now:
                    heapq.heappop(self._due)
                self._more.clear()
            try:
                if self._stop_paging:
                    await self._cancel_buffered_escalations()
                if time.monotonic() >= next_housekeeping:
                    await self._housekeeping()
                    next_housekeeping = time.monotonic() + housekeeping_every
                claimed = await self._claim()
                failures = 0
            except Exception as exc:  # database locked/unreachable: back off, keep every lease we hold
                failures += 1
                delay = min(5.0, 0.05 * 2 ** min(failures, 7)) * (0.5 + self.rng.random())
                log.warning("notify.worker.db_error", extra={
                    "owner": self.owner, "error": repr(exc), "failures": failures,
                    "retry_in_s": round(delay, 3)})
                await self._sleep_or_wake(delay)
                continue
            if claimed and any(self._wants_more(ch) for ch in self._channels):
                await asyncio.sleep(0)  # let finished sends free their slots, then claim again
                continue
            now = time.monotonic()
            wait = min(wcfg.poll_seconds, max(0.0, next_housekeeping - now))
            if self._due:
                wait = min(wait, self._due[0] - now + 0.005)
            if not await self._sleep_or_wake(wait):
                self._more.clear()  # the poll (or a retry timer): look at every channel again

    async def _sleep_or_wake(self, seconds: float) -> bool:
        """True when woken, False when the time ran out."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    async def _housekeeping(self) -> None:
        """Renew our leases and take back rows whose holder died."""
        wcfg = self.cfg.worker
        now = self.clock.now()
        async with self._tx() as s:
            if any(st.inflight or st.buffer for st in self._channels.values()) or self._done or self._held:
                await queue.extend_leases(s, owner=self.owner, now=now, lease_seconds=wcfg.lease_seconds)
            reclaimed = await queue.reclaim_expired(s, now=now)
        if reclaimed:
            self.stats["reclaimed"] += len(reclaimed)
            for _id, channel, _prev in reclaimed:
                RETRIES.labels(channel=channel, reason="lease_expired").inc()
            log.warning("notify.delivery.reclaimed", extra={
                "count": len(reclaimed), "owner": self.owner,
                "previous_owners": sorted({p or "" for *_, p in reclaimed}),
                "delivery_ids": [r[0] for r in reclaimed[:50]]})

    def _stopped(self, c: Claimed) -> bool:
        return c.purpose == "escalation" and c.incident_id in self._stop_paging

    async def _cancel_buffered_escalations(self) -> None:
        doomed, self._held = self._held, []
        for st in self._channels.values():
            keep = [c for c in st.buffer if not self._stopped(c)]
            if len(keep) != len(st.buffer):
                doomed += [c for c in st.buffer if self._stopped(c)]
                st.buffer = deque(keep)
        incidents = set(self._stop_paging)
        if doomed:
            try:
                async with self._tx() as s:
                    cancelled = await queue.cancel_claimed(s, owner=self.owner, ids=[c.id for c in doomed],
                                                           now=self.clock.now(),
                                                           reason="cancelled: incident acknowledged")
            except Exception:
                self._held = doomed  # never sent; cancelling them is retried on the next round
                raise
            log.info("notify.escalation.cancelled_buffered", extra={
                "owner": self.owner, "count": len(cancelled), "incidents": sorted(incidents)})
        self._stop_paging -= incidents

    async def _claim(self) -> int:
        wcfg = self.cfg.worker
        # Ask only for channels whose buffer runs low; the others keep theirs (and their rows stay for
        # other workers). Rows of a channel nobody has a sender for are asked for too (they fail loudly).
        channels = set(self.senders) | set(self._channels)
        wanted = {ch for ch in channels if self._low(ch) and self._room(ch) > 0}
        if channels and not wanted:
            return 0  # every channel still has a buffer: a send that drains one wakes us
        if wanted and not any(self._more.get(ch, True) for ch in wanted):
            return 0  # the last claim for these found nothing more; new work or the poll resets that
        room = sum(self._room(ch) for ch in wanted if ch in self.senders) or DEFAULT_CONCURRENCY
        limit = min(wcfg.batch_size, room)
        async with self._tx() as s:
            rows = await queue.claim(s, owner=self.owner, now=self.clock.now(),
                                     lease_seconds=wcfg.lease_seconds, limit=limit,
                                     exclude_channels=channels - wanted)
        more = len(rows) >= limit
        for ch in wanted | {c.channel for c in rows}:
            self._more[ch] = more
        self.stats["claims"] += 1
        self.stats["claimed"] += len(rows)
        for c in rows:
            self._state(c.channel).buffer.append(c)
        for ch in {c.channel for c in rows}:
            self._pump(ch)
        return len(rows)

    def _pump(self, channel: str) -> None:
        """Start sends from the channel's buffer while it has free slots."""
        st = self._state(channel)
        limit = self._concurrency(channel)
        while st.buffer and st.inflight < limit and not self._stopping:
            c = st.buffer.popleft()
            if self._stop_paging and self._stopped(c):
                self._held.append(c)
                continue
            st.inflight += 1
            task = asyncio.create_task(self._attempt(c), name=f"send-{c.id}")
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    # --- one attempt --------------------------------------------------------------------------------

    async def _pace(self, channel: str, sender: Sender) -> None:
        rate = getattr(sender, "rate_per_second", None)
        if not rate:
            return
        st = self._state(channel)
        now = time.monotonic()
        start = max(now, st.next_start)
        st.next_start = start + 1.0 / rate
        if start > now:
            await asyncio.sleep(start - now)

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
                await self._pace(c.channel, sender)
                t0 = time.monotonic()
                try:
                    result = await asyncio.wait_for(sender.send(c.envelope()), timeout=policy.timeout_seconds)
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
        # Every attempt gets a line; a success keeps it lean (the formatter scrubs each string field, and
        # a fan-out logs thousands of these), a failure says what happens next.
        fields: dict[str, Any] = {
            "delivery_id": c.id, "incident": c.resource, "channel": c.channel,
            "to": masked_address(c.channel, c.address), "attempt": c.attempt,
            "outcome": "dead" if status == "dead" else result.outcome,  # the last try says how it ended
            "status_code": result.status_code, "latency_ms": round(latency_s * 1000, 1),
            "summary": result.summary[:300]}
        if result.outcome != "delivered":
            fields.update(recipient=c.recipient, max_attempts=c.max_attempts, next=status,
                          retry_after=result.retry_after,
                          next_attempt_at=next_at.isoformat() if next_at is not None else None)
        log.log(logging.INFO if result.outcome == "delivered" else logging.WARNING, "notify.delivery.attempt",
                extra=fields)
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
        if self._wants_more(c.channel):
            self._wake.set()  # the buffer runs low and there is more due work: claim the next batch

    # --- recording (group commit) ---------------------------------------------------------------------

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
        """Logs and metrics for final states, only once the database says so."""
        for d in batch:
            c, comp = d.claimed, d.completion
            if comp.status == "delivered":
                self.stats["delivered"] += 1
                DELIVERIES.labels(channel=c.channel, status="delivered").inc()
                if d.latency_s is not None:
                    DELIVERY_LATENCY.labels(channel=c.channel).observe(max(0.0, d.latency_s))
                log.info("notify.delivery.success", extra={
                    "delivery_id": c.id, "incident": c.resource, "channel": c.channel,
                    "to": masked_address(c.channel, c.address), "attempts": c.attempt,
                    "queue_to_delivered_s": round(d.latency_s or 0.0, 3)})
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

    # --- PostgreSQL LISTEN/NOTIFY: wake at once on work other processes queued ------------------------

    async def _listen_pg(self) -> None:
        try:
            conn = await self.db.engine.connect()
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            await driver.add_listener(queue.NOTIFY_CHANNEL, self._on_pg_notify)
            self._pg_listener = (conn, driver)
        except Exception as exc:  # the fallback poll still finds the work, only later
            log.warning("notify.worker.listen_failed", extra={
                "owner": self.owner, "error": repr(exc), "fallback_poll_s": self.cfg.worker.poll_seconds})

    def _on_pg_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _unlisten_pg(self) -> None:
        if self._pg_listener is None:
            return
        conn, driver = self._pg_listener
        self._pg_listener = None
        try:
            await driver.remove_listener(queue.NOTIFY_CHANNEL, self._on_pg_notify)
        except Exception as exc:  # the connection is going away anyway
            log.warning("notify.worker.unlisten_failed", extra={"owner": self.owner, "error": repr(exc)})
        await conn.close()
