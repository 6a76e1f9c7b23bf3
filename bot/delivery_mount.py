"""Wires the delivery worker into `tocsin run`: senders from config, the outbox, chat senders, wake-up."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.server import Provided
from core.delivery.outbox import OutboxStore
from core.delivery.registry import build_senders, close_senders
from core.delivery.worker import Worker

if TYPE_CHECKING:
    from bot.context import Context
    from bot.server import Runtime
    from core.delivery.base import Sender

log = logging.getLogger("tocsin.worker")


class WorkerComponent:
    """The worker plus what it owns (senders, outbox store), closed in the right order."""

    name = "worker"

    def __init__(self, worker: Worker, *, senders: dict[str, Sender], outbox: OutboxStore) -> None:
        self.worker = worker
        self.senders = senders
        self.outbox = outbox

    async def start(self) -> None:
        await self.worker.start()

    async def close(self) -> None:
        try:
            await self.worker.close()
        finally:
            await self.outbox.aclose()
            await close_senders(self.senders)


def build_worker(ctx: Context, *, http: aiohttp.ClientSession, chat_senders: dict[str, Sender] | None = None,
                 **worker_kw: Any) -> WorkerComponent:
    """Senders from config (outbox where configured) plus chat senders behind one worker that wakes on new
    work. The server mounts it; tests and the benchmark build the same thing."""
    gate = ctx.db.write_gate  # one queue for this process's SQLite writes (groups, worker, outbox)
    outbox = OutboxStore(ctx.db, clock=ctx.clock, write_gate=gate)
    built = build_senders(ctx.holder, http=http, db=ctx.db, outbox_factory=outbox.sender)
    senders = {**built, **(chat_senders or {})}
    worker = Worker(ctx.db, ctx.holder, senders=senders, audit=ctx.audit, clock=ctx.clock, write_gate=gate,
                    **worker_kw)
    ctx.service.events.subscribe(worker.notify)
    return WorkerComponent(worker, senders=built, outbox=outbox)


def mount_worker(rt: Runtime) -> Provided:
    """The worker unless `worker.enabled: false` (e.g. a process that only serves chat and the API). It
    sends `chat:<platform>` deliveries with the card senders the chat adapters, mounted before it, provided."""
    if not rt.cfg.worker.enabled:
        log.info("notify.worker.disabled", extra={"why": "worker.enabled is false in the config"})
        return Provided()
    comp = build_worker(rt.ctx, http=rt.http, chat_senders=dict(rt.chat_senders))
    return Provided(components=[comp], health={"worker": comp.worker.health})


def mount_channel_tests(rt: Runtime) -> Provided:
    """`/incident test` from chat sends through this process's HTTP session (with or without the worker)."""
    from core.channel_test import ChannelTests

    ctx = rt.ctx
    ctx.service.channel_tests = ChannelTests(ctx.db, ctx.holder, audit=ctx.audit, clock=ctx.clock, http=rt.http)
    return Provided()


def mount_digests(rt: Runtime) -> Provided:
    """The digest timer (config `digests`): every process ticks, one sends each run (core/digests.py)."""
    from core.digests import Digests, DigestTimer

    ctx = rt.ctx
    return Provided(components=[DigestTimer(Digests(ctx.db, ctx.holder, audit=ctx.audit, clock=ctx.clock))])
