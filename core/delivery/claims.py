"""The worker's claiming side: leases, per-channel buffers and slots, the dispatcher loop, the heartbeat,
and waking on new work (the event bus, retry timers, PostgreSQL LISTEN/NOTIFY, a fallback poll).

Worker (core/delivery/worker.py) adds what happens to a claimed row: the attempt, its outcome and the
group-commit writer that records it. Split so each side reads on its own: the claimer never decides an
outcome, the worker never picks rows.
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
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.clock import Clock, SystemClock
from core.delivery import queue
from core.delivery.queue import Claimed
from core.metrics import RETRIES

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from core.config import Config, ConfigHolder
    from core.db import Database
    from core.delivery.base import Sender

log = logging.getLogger("tocsin.worker")

DEFAULT_CONCURRENCY = 8
"""For channels without a config section (chat surfaces `chat:<platform>`)."""


@dataclass
class _ChannelState:
    buffer: deque[Claimed] = field(default_factory=deque)
    inflight: int = 0
    next_start: float = 0.0
    """Monotonic time the next send may start (rate_per_second pacing)."""


class Claimer(ABC):
    """Claims due deliveries under a lease and keeps every channel's slots busy; `_attempt` (the Worker)
    sends one claimed row and hands back its slot through `_slot_freed`."""

    def __init__(self, db: Database, config: ConfigHolder, *, senders: Mapping[str, Sender],
                 clock: Clock | None, owner: str | None, rng: random.Random | None,
                 write_gate: asyncio.Lock | None) -> None:
        self.db = db
        self.config = config
        self.senders = senders
        """Read at send time: a live mapping (e.g. a ChainMap over chat adapters' senders) is fine."""
        self.clock = clock or SystemClock()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.rng = rng or random.Random()
        self.write_gate = write_gate or (db.write_gate if db is not None else asyncio.Lock())
        """Serializes this process's SQLite write transactions (shared with the outbox and group commit)."""
        self._channels: dict[str, _ChannelState] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stop_paging: set[int] = set()
        """Incidents whose buffered escalation pages must be cancelled before they are sent."""
        self._held: list[Claimed] = []
        """Claimed escalation pages of such incidents, kept from sending until cancelled in the database."""
        self._shared: queue.SharedPayloads = {}
        """Shared message payloads already read (core.delivery.queue.claim)."""
        self._due: list[float] = []
        """Monotonic times at which retries we scheduled become due (wake up then, not at the next poll)."""
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

    @abstractmethod
    async def _attempt(self, c: Claimed) -> None:
        """Send one claimed row and record its outcome."""

    def _unrecorded(self) -> bool:
        """Finished attempts not yet committed (their rows are still leased to us)."""
        return False

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
            if any(st.inflight or st.buffer for st in self._channels.values()) or self._unrecorded() or self._held:
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
            now = self.clock.now()
            rows = await queue.claim(s, owner=self.owner, now=now, lease_seconds=wcfg.lease_seconds,
                                     limit=limit, exclude_channels=channels - wanted, shared=self._shared)
            # On SQLite, ask now whether more is due (a statement inside the write lock we hold) rather than
            # learn it from an empty claim, a write transaction of its own. On PostgreSQL that question is
            # a round trip per claim; the empty claim at the end of a burst costs less.
            more = len(rows) >= limit and (not self.db.sqlite or await queue.has_due(
                s, now=now, exclude_channels=channels - wanted))
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

    async def _release_unstarted(self) -> None:
        """Shutdown: give back the rows we claimed but never started (due now, attempt not counted)."""
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
        # As notify(): every channel may have work now. Setting only the wake flag let the dispatcher
        # believe its last empty claim and sleep to the next housekeeping (10 s with the default lease).
        self._more.clear()
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

