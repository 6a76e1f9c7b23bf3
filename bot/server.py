"""Composition root of `tocsin run`: config -> db -> services -> aiohttp app -> adapters, worker, timer.

Everything that holds a connection or a task is a Component with start()/close(); this module owns
their lifetimes, in order, and closes them in reverse on shutdown (SIGTERM/SIGINT).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp import web

from bot.context import Context, open_context
from core import heap
from core.config import Config
from core.errors import TocsinError

if TYPE_CHECKING:
    from core.delivery.base import Sender

log = logging.getLogger("tocsin.server")


class Component(Protocol):
    """A long-lived part of the process (worker, scheduler, chat adapter)."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...


HealthCheck = Callable[[], Awaitable[str | None]]
"""A readiness check: None when healthy, else what is wrong."""


@dataclass
class Provided:
    """What a mount gives the process besides the routes it adds to the app: components to start and
    close, readiness checks, and senders for `chat:<platform>` deliveries (incident cards)."""

    components: list[Component] = field(default_factory=list)
    health: dict[str, HealthCheck] = field(default_factory=dict)
    chat_senders: dict[str, Sender] = field(default_factory=dict)


@dataclass
class Runtime:
    """What mounts get: the core context, the app and process-wide shared objects, and what the mounts
    before them provided (components in start order, readiness checks, chat senders)."""

    ctx: Context
    app: web.Application
    http: aiohttp.ClientSession
    components: list[Component] = field(default_factory=list)
    chat_senders: dict[str, Sender] = field(default_factory=dict)
    health: dict[str, HealthCheck] = field(default_factory=dict)

    @property
    def cfg(self) -> Config:
        return self.ctx.cfg

    def provide(self, provided: Provided) -> None:
        """Take in what one mount returned; its components start after those already here."""
        self.components.extend(provided.components)
        self.health.update(provided.health)
        self.chat_senders.update(provided.chat_senders)


class StartupError(TocsinError):
    """`tocsin run` cannot start (port in use, ...): one line for the operator, nothing left running."""

    code = "startup_failed"


def bind(host: str, port: int) -> socket.socket:
    """Take the port before anything starts, so a failed start leaves no worker or timer behind."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(f"cannot listen on {host}:{port}: {reason.lower()} (server.host/server.port or "
                           "--host/--port)") from None
    sock.setblocking(False)
    return sock


Mount = Callable[[Runtime], Provided]
"""Adds its routes to rt.app (if any) and returns what else it provides; decides from config if it is on."""
RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
STOP: web.AppKey[asyncio.Event] = web.AppKey("stop_event", asyncio.Event)


def _mounts() -> list[Mount]:
    """The composition of `tocsin run`, in start order (shutdown runs it backwards). The chat adapters come
    before the worker: the worker sends `chat:<platform>` deliveries with the card senders they provide,
    and it stops before them. Imported here, not at the top, so the CLI never loads slack_bolt,
    botbuilder or telegram."""
    from bot.api import mount as mount_api
    from bot.delivery_mount import mount_channel_tests, mount_digests, mount_worker
    from bot.escalation_mount import (mount_escalator, mount_flapping, mount_handoffs, mount_heartbeats,
                                      mount_maintenance, mount_reminders)
    from bot.metrics_http import mount_metrics
    from bot.reload_mount import mount_reloader
    from bot.slack.app import mount as mount_slack
    from bot.sns_mount import mount_sns_sms
    from bot.teams.app import mount_teams
    from bot.telegram.bot import mount as mount_telegram
    from bot.twilio_mount import mount_twilio
    from bot.web.ack import mount_ack_links
    from bot.web.app import mount_console

    return [mount_metrics, mount_telegram, mount_slack, mount_teams, mount_worker, mount_channel_tests,
            mount_digests, mount_api, mount_twilio, mount_sns_sms, mount_console, mount_ack_links, mount_reloader,
            mount_escalator, mount_heartbeats, mount_maintenance, mount_handoffs, mount_flapping,
            mount_reminders, mount_seen_keys]


def mount_seen_keys(rt: Runtime) -> Provided:
    """One job prunes the duplicate keys of every platform and the API (core/seen.py KEEP, config
    `retention`), once per `retention.prune_every` across processes."""
    from core.seen import pruner

    return Provided(components=[pruner(rt.ctx.seen, rt.ctx.holder)])


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    problems: dict[str, str] = {}
    for name, check in rt.health.items():
        try:
            msg = await asyncio.wait_for(check(), timeout=5)
        except Exception as exc:  # a failing check is reported, not raised
            msg = f"{type(exc).__name__}: {exc}"
        if msg:
            problems[name] = msg
    if problems:
        return web.json_response({"status": "unavailable", "failing": problems}, status=503)
    return web.json_response({"status": "ready", "checks": sorted(rt.health)})


async def build_app(ctx: Context) -> tuple[web.Application, Runtime]:
    """The aiohttp app with every route and component wired, not yet started."""
    cfg = ctx.cfg
    app = web.Application(client_max_size=cfg.server.max_body_bytes)
    http = aiohttp.ClientSession()
    rt = Runtime(ctx=ctx, app=app, http=http)
    app[RUNTIME] = rt
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    async def db_check() -> str | None:
        from core import migrate

        problem = await ctx.db.check()  # deleted/replaced/unwritable file, unreachable server: names it
        if problem:
            return problem
        if not await migrate.is_current(ctx.db.engine):
            return "database schema is not at the latest migration (run `tocsin db upgrade`)"
        return None

    rt.health["database"] = db_check
    try:
        for mount in _mounts():
            rt.provide(mount(rt))
    except BaseException:
        await http.close()  # nothing has started yet; leave no open session behind
        raise

    async def on_startup(_app: web.Application) -> None:
        for comp in rt.components:
            log.info("component.start", extra={"component": comp.name})
            await comp.start()

    async def on_cleanup(_app: web.Application) -> None:
        for comp in reversed(rt.components):
            try:
                await comp.close()
            except Exception:
                log.exception("component.close.failed", extra={"component": comp.name})
        await http.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    heap.settle()  # everything loaded so far lives as long as the process (core/heap.py)
    return app, rt


async def serve(config_path: str | None, *, host: str | None = None, port: int | None = None,
                ready: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT, then stop taking work, release leases and close everything."""
    from core.logs import setup

    ctx = await open_context(config_path, run_lock=True)
    try:
        setup(ctx.cfg.logging.level, ctx.cfg.logging.format)
        h = host or ctx.cfg.server.host
        p = port if port is not None else ctx.cfg.server.port
        sock = bind(h, p)
        try:
            app, rt = await build_app(ctx)
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            try:
                await runner.setup()  # starts the components (worker, timer, adapters)
                site = web.SockSite(runner, sock)
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            sock.close()
            raise
    except BaseException:
        await ctx.close()
        raise
    log.info("server.started", extra={"listen": f"{h}:{sock.getsockname()[1]}", "pid": os.getpid(),
                                      "config": str(ctx.config_path), "database": ctx.db.name})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rt.app[STOP] = stop
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("server.stopping")
    await runner.cleanup()
    await ctx.close()
    log.info("server.stopped")
    return 0
