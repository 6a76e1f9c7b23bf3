"""Slack adapter: bolt AsyncApp behind POST /slack/events (or Socket Mode when slack.app_token is set).

A thin edge: it acks at once, then turns slash commands, card buttons and modal submissions into the
platform-neutral Commands of bot/commands.py and runs them through bot/dispatch.py as the Slack user.
Slack's retried deliveries and double clicks are acted on once (SeenKeys on trigger_id / action_ts / view id).
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.commands import Command
from bot.dispatch import execute, run_text
from bot.slack.background import Background
from bot.slack.forms import Forms, answer_text, read_declare, read_update
from bot.slack.pins import Pins
from bot.slack.requests import actor_of, malformed, retry_num
from bot.slack.socket_mode import SocketMode
from bot.slack.surface import SlackSurface
from bot.server import Provided
from bot.surface import DirectMessageSender, SurfaceSender
from core.appearance.slack import ACTION_RE, DECLARE_VIEW, OPEN_RE, UPDATE_VIEW, parse_action_id, read_metadata
from core.cards import CardStore
from core.incidents import IncidentService
from core.leader import Leadership
from core.seen import SeenKeys

if TYPE_CHECKING:
    from bot.server import Runtime
    from core.config import SlackConfig

log = logging.getLogger("tocsin.slack")

EVENTS_PATH = "/slack/events"
NEVER_OPENED_DM = frozenset({"cannot_dm_bot", "channel_not_found", "user_not_found", "user_disabled",
                             "messages_tab_disabled"})
"""chat.postMessage errors meaning the bot cannot DM this person (they never opened the app's DM)."""


class SlackAdapter(Forms, Background, SocketMode, Pins):
    """Component `slack`: the bolt app, its HTTP route, optional Socket Mode, and the background work
    started after each ack (tracked, bounded, drained on shutdown)."""

    name = "slack"

    def __init__(self, cfg: SlackConfig, *, service: IncidentService, seen: SeenKeys,
                 http: aiohttp.ClientSession, cards: CardStore, max_inflight: int = 64) -> None:
        # What an enabled Slack needs is checked once, when the config loads (core.config.platform_problems).
        assert cfg.bot_token is not None, "slack.bot_token is checked when the config loads"
        signing = cfg.signing_secret.get_secret_value() if cfg.signing_secret else ""
        self.app_token = cfg.app_token.get_secret_value() if cfg.app_token else ""
        self.cfg = cfg
        self.service = service
        self.seen = seen
        self.cards = cards
        self.http = http
        self.http_enabled = bool(signing)
        self.verifier = SignatureVerifier(signing) if signing else None
        # Interactive answers wait out a 429 (Retry-After) a couple of times: the user is waiting for them.
        self.retry_handlers: list[AsyncRetryHandler] = [AsyncConnectionErrorRetryHandler(max_retry_count=1),
                                                        AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
        self.client = AsyncWebClient(token=cfg.bot_token.get_secret_value(), base_url=cfg.api_url,
                                     session=http, timeout=10, retry_handlers=list(self.retry_handlers),
                                     logger=logging.getLogger("tocsin.slack.web"))
        self.bolt = AsyncApp(signing_secret=signing or None, client=self.client, name="tocsin",
                             process_before_response=False, request_verification_enabled=bool(signing),
                             logger=logging.getLogger("tocsin.slack.bolt"))
        self.bolt.command(re.compile(r"^/"))(self._on_command)
        self.bolt.action(ACTION_RE)(self._on_button)
        self.bolt.action(OPEN_RE)(self._on_open)
        self.bolt.action(re.compile(r".*"))(self._on_unknown_action)
        self.bolt.view(DECLARE_VIEW)(self._on_declare_submit)
        self.bolt.view(UPDATE_VIEW)(self._on_update_submit)
        self.bolt.event("reaction_added")(self._on_reaction)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_inflight)
        self._socket: Any = None
        self._connector: asyncio.Task[None] | None = None

    # --- HTTP edge ------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/events. Bolt verifies the signature and timestamp (401 otherwise); we only add
        what bolt cannot: a body it fails to parse is still checked for a signature before we answer."""
        body = await request.text()
        ts = request.headers.get("X-Slack-Request-Timestamp", "")
        if not ts.isdigit():
            # bolt's verifier would raise on int(ts); answer as it does for any unsigned request
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            bolt_req = AsyncBoltRequest(body=body, query=request.query_string,
                                        headers=request.headers)  # type: ignore[arg-type]
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # payload=<not JSON>, payload=[1]
            return self._malformed(body, request, f"unparsable body ({type(exc).__name__})")
        why = malformed(bolt_req.body)
        if why:
            return self._malformed(body, request, why)
        return await to_aiohttp_response(await self.bolt.async_dispatch(bolt_req))

    def _malformed(self, body: str, request: web.Request, why: str) -> web.Response:
        """Bolt would crash on these (500) or act on half a request: unsigned -> 401, signed -> 400."""
        assert self.verifier is not None  # the route exists only with a signing secret
        if not self.verifier.is_valid_request(body, request.headers):
            return web.json_response({"error": "invalid request"}, status=401)
        log.warning("slack.request.malformed", extra={"why": why})
        return web.json_response({"error": f"malformed request: {why}"}, status=400)

    # --- listeners: ack first, then work in the background ------------------------------------------------

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any], request: AsyncBoltRequest) -> None:
        await ack()
        self._spawn(self._command(body, retry=retry_num(request)), what="command",
                    tell=lambda text: self._answer(body, text, in_channel=False))

    async def _on_button(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                         request: AsyncBoltRequest) -> None:
        await ack()
        self._spawn(self._button(body, action, retry=retry_num(request)), what="button",
                    tell=lambda text: self._tell_user(body, text))

    async def _on_open(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Open incident is a URL button: the browser opens the console page, and Slack still sends the
        press. Acknowledge it and do nothing else (no command, no answer to the presser)."""
        await ack()
        log.debug("slack.open_button", extra={"user": str((body.get("user") or {}).get("id"))[:40],
                                              "action_id": str(action.get("action_id"))[:100]})

    async def _on_unknown_action(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        """A button we do not know (an old card, a forged id): acknowledge and say so, never silence."""
        await ack()
        log.warning("slack.action.unknown", extra={"action_id": str(action.get("action_id"))[:100]})
        text = ("That button is not one Tocsin knows (the card may be out of date); nothing was changed. "
                "Try `/incident help`.")
        self._spawn(self._tell_user(body, text), what="unknown_action", tell=None)

    async def _on_declare_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                                 request: AsyncBoltRequest) -> None:
        result = read_declare(view, self.service.cfg)
        if isinstance(result, dict):  # pure checks, no I/O: shown inside the modal, which stays open
            await ack(response_action="errors", errors=result)
            return
        await ack()
        self._spawn(self._submitted(body, view, result, retry=retry_num(request)), what="declare_form",
                    tell=lambda text: self._tell_user(body, text, metadata=read_metadata(view)))

    async def _on_update_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                                request: AsyncBoltRequest) -> None:
        result = read_update(view)
        if isinstance(result, dict):
            await ack(response_action="errors", errors=result)
            return
        await ack()
        self._spawn(self._submitted(body, view, result, retry=retry_num(request)), what="update_form",
                    tell=lambda text: self._tell_user(body, text, metadata=read_metadata(view)))

    # --- the work ---------------------------------------------------------------------------------------

    async def _command(self, body: dict[str, Any], *, retry: str | None) -> None:
        if not await self._first_time(f"slack:command:{body['trigger_id']}", retry=retry):
            return
        actor = actor_of(body["user_id"], body.get("user_name"))
        cmd, reply = await run_text(self.service, actor, body.get("text") or "")
        log.info("slack.command", extra={"user": actor.identity, "verb": cmd.verb if cmd else None,
                                         "ok": reply.ok})
        if cmd is not None and cmd.verb == "form":
            await self._open_declare_form(body, actor)
            return
        in_channel = not reply.ephemeral and reply.ok and body.get("channel_id") != self.cfg.incident_channel
        await self._answer(body, answer_text(reply, cmd), in_channel=in_channel)

    async def _button(self, body: dict[str, Any], action: dict[str, Any], *, retry: str | None) -> None:
        parsed = parse_action_id(str(action["action_id"]))
        assert parsed is not None  # the listener only matches ACTION_RE
        verb, incident_id = parsed
        user = body["user"]
        when = action.get("action_ts") or body.get("trigger_id")
        key = f"slack:action:{when}:{user['id']}:{action['action_id']}"
        if not await self._first_time(key, retry=retry):
            return
        actor = actor_of(user["id"], user.get("username") or user.get("name"))
        log.info("slack.button", extra={"user": actor.identity, "verb": verb, "incident": incident_id})
        if verb == "update":
            await self._open_update_form(body, actor, incident_id)
            return
        cmd = Command(verb, incident=f"INC-{incident_id}")
        reply = await execute(self.service, actor, cmd)
        # Success shows on the card and in its thread; refusals and no-ops ("already acknowledged") go
        # to the presser only.
        if not reply.ok or reply.ephemeral:
            await self._tell_user(body, answer_text(reply, cmd))

    async def _submitted(self, body: dict[str, Any], view: dict[str, Any], cmd: Command, *,
                         retry: str | None) -> None:
        if not await self._first_time(f"slack:view:{view['id']}", retry=retry):
            return
        user = body["user"]
        actor = actor_of(user["id"], user.get("username") or user.get("name"))
        reply = await execute(self.service, actor, cmd)
        log.info("slack.form", extra={"user": actor.identity, "verb": cmd.verb, "ok": reply.ok})
        if cmd.verb == "update" and reply.ok and not reply.ephemeral:
            return  # like a button press: the card's thread shows the update
        meta = read_metadata(view)
        in_channel = (reply.ok and not reply.ephemeral and bool(meta.get("response_url"))
                      and meta.get("channel") != self.cfg.incident_channel)
        await self._tell_user(body, answer_text(reply, cmd), metadata=meta, in_channel=in_channel)

    async def _first_time(self, key: str, *, retry: str | None) -> bool:
        """Exactly once per key across processes: Slack's retries and double clicks do nothing."""
        try:
            first = await self.seen.first_time(key)
        except SQLAlchemyError:
            # Fail open: a possible duplicate beats a lost command.
            log.exception("slack.dedup.failed", extra={"key": key})
            return True
        if not first:
            log.info("slack.duplicate.ignored", extra={"key": key, "retry_num": retry})
        return first

    # --- component lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        log.info("slack.started", extra={"http": self.http_enabled, "socket_mode": bool(self.app_token),
                                         "incident_channel": self.cfg.incident_channel})

    async def close(self) -> None:
        await self.stop_socket_mode()
        await self.drain()
        for task in list(self._tasks):
            log.warning("slack.work.abandoned", extra={"task": task.get_name()})
            task.cancel()


def mount(rt: Runtime) -> Provided:
    """Wire Slack when enabled: the events route (or Socket Mode), the component, and the card sender
    for `chat:slack` deliveries when slack.incident_channel is set."""
    cfg = rt.cfg.slack
    if not cfg.enabled:
        return Provided()
    out = Provided()
    ctx = rt.ctx
    adapter = SlackAdapter(cfg, service=ctx.service, seen=ctx.seen, http=rt.http, cards=ctx.cards)
    if adapter.http_enabled:
        rt.app.router.add_post(EVENTS_PATH, adapter.handle)
    out.components.append(adapter)
    if adapter.app_token:
        # Socket Mode is a consumer like Telegram polling: one process at a time, taken over if it dies.
        out.components.append(Leadership(ctx.db.engine, "slack-socket-mode", on_elected=adapter.start_socket_mode,
                                        on_lost=adapter.stop_socket_mode))
    assert cfg.bot_token is not None
    # No rate-limit retry handler here: a 429 goes back to the queue as retry(after=Retry-After).
    cards_client = AsyncWebClient(token=cfg.bot_token.get_secret_value(), base_url=cfg.api_url,
                                  session=rt.http, timeout=10, retry_handlers=[],
                                  logger=logging.getLogger("tocsin.slack.web"))
    if cfg.incident_channel:
        surface = SlackSurface(cards_client, channel=cfg.incident_channel, clock=ctx.clock)
        out.chat_senders["chat:slack"] = SurfaceSender(surface, service=ctx.service, cards=ctx.cards)
    # slack_dm pages: chat.postMessage with channel=<user id> opens the app's DM with that person.
    out.chat_senders["slack_dm"] = DirectMessageSender(
        "slack", lambda user: SlackSurface(cards_client, channel=user, clock=ctx.clock), service=ctx.service,
        cards=ctx.cards, never_opened=NEVER_OPENED_DM)
    return out
