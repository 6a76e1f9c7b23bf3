"""The outbox: the embedded default channel. It "sends" by storing the rendered message in the database.

So a fresh install pages nobody by accident, yet `tocsin outbox` and the log show exactly what each
recipient would have received. Writes are group-committed (every send waiting at the same moment shares
one transaction), so the outbox keeps up with a large fan-out, and they are idempotent per delivery: a
retry after a crash does not store the message twice.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import insert, select

from core.appearance.terminal import render_text, wire_text
from core.clock import Clock, SystemClock
from core.delivery.base import Wire
from core.delivery.message import DeliveryResult, Envelope
from core.logs import mask_phone
from core.models import OutboxMessage

if TYPE_CHECKING:
    from core.db import Database

log = logging.getLogger("tocsin.outbox")


def masked(channel: str, address: str) -> str:
    """Phone numbers never reach a log line whole."""
    return mask_phone(address) if channel in ("sms", "voice") else address


@dataclass
class _Pending:
    envelope: Envelope
    subject: str
    body: str
    payload: dict[str, Any] | None
    done: asyncio.Future[int]


class OutboxStore:
    """Owns the group-commit writer; hands out one OutboxSender per channel that stands in for it."""

    def __init__(self, db: Database, *, clock: Clock | None = None,
                 write_gate: asyncio.Lock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.write_gate = write_gate
        """The worker's SQLite write lock, so our writes queue behind its own instead of busy-waiting."""
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def sender(self, channel: str) -> OutboxSender:
        """The `outbox_factory` the sender registry calls for every channel configured `outbox: true`."""
        return OutboxSender(self, channel=channel)

    async def store(self, envelope: Envelope, *, subject: str, body: str,
                    payload: dict[str, Any] | None = None) -> int:
        """Persist one rendered message (or find the one a previous attempt stored); returns its row id."""
        if self._closed:
            raise RuntimeError("outbox store is closed")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(envelope, subject, body, payload, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="outbox-writer")
        return await fut

    async def _write_all(self) -> None:
        """Drain the pending list one transaction at a time; sends arriving meanwhile join the next one."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                ids = await self._write(batch)
            except Exception as exc:  # each waiting send gets the error and the worker retries it
                log.warning("notify.outbox.write_failed", extra={"count": len(batch), "error": repr(exc)})
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                continue
            for p in batch:
                if not p.done.done():
                    p.done.set_result(ids[p.envelope.delivery_id])

    async def _write(self, batch: list[_Pending]) -> dict[int, int]:
        """One transaction for the whole batch; idempotent per delivery."""
        now = self.clock.now()
        by_delivery = {p.envelope.delivery_id: p for p in batch}
        if self.write_gate is not None and self.db.sqlite:
            async with self.write_gate:
                return await self._write_tx(by_delivery, now)
        return await self._write_tx(by_delivery, now)

    async def _write_tx(self, by_delivery: dict[int, _Pending], now: datetime) -> dict[int, int]:
        async with self.db.transaction() as s:
            existing = dict((await s.execute(
                select(OutboxMessage.delivery_id, OutboxMessage.id)
                .where(OutboxMessage.delivery_id.in_(list(by_delivery))))).all())
            new = [p for d, p in by_delivery.items() if d not in existing]
            if new:
                await s.execute(insert(OutboxMessage.__table__), [
                    {"delivery_id": p.envelope.delivery_id, "channel": p.envelope.channel,
                     "recipient": p.envelope.recipient, "address": p.envelope.address, "subject": p.subject,
                     "body": p.body, "payload": p.payload, "created_at": now} for p in new])
                existing.update((await s.execute(
                    select(OutboxMessage.delivery_id, OutboxMessage.id)
                    .where(OutboxMessage.delivery_id.in_([p.envelope.delivery_id for p in new])))).all())
        return {int(d): int(i) for d, i in existing.items() if d is not None}

    async def aclose(self) -> None:
        """Let a running write finish; later sends fail (the worker releases them for the next start)."""
        self._closed = True
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)


class OutboxSender:
    """Stands in for a real channel: stores what that channel's sender would send (its `wire()`, handed in by
    OutboxSwitch), or, for the outbox channel itself, the plain-text page."""

    channel: ClassVar[str] = "outbox"
    rate_per_second: ClassVar[float | None] = None

    def __init__(self, store: OutboxStore, *, channel: str = "outbox") -> None:
        self.store = store
        self.for_channel = channel
        """The channel whose messages this instance stores (email, sms, ... or outbox itself)."""

    async def send(self, envelope: Envelope, *, wire: Wire | None = None) -> DeliveryResult:
        if wire is None:
            subject, body = render_text(envelope.channel, envelope.notification)
            payload = None
        else:
            subject, body, payload = wire.subject, wire_text(envelope.channel, wire.data), wire.data
        row = await self.store.store(envelope, subject=subject, body=body, payload=payload)
        log.info("notify.outbox.stored", extra={
            "outbox_id": row, "delivery_id": envelope.delivery_id, "channel": envelope.channel,
            "recipient": envelope.recipient, "to": masked(envelope.channel, envelope.address),
            "subject": subject})
        return DeliveryResult.ok(f"stored in outbox #{row}")

    async def aclose(self) -> None:
        """The store is shared by every channel's instance; its owner closes it."""
