"""Slack adapter: bolt AsyncApp behind POST /slack/events (or Socket Mode when slack.app_token is set).

A thin edge: it acks at once, then turns slash commands, card buttons and modal submissions into the
platform-neutral Commands of bot/commands.py and runs them through bot/dispatch.py as the Slack user.
Slack's retried deliveries and double clicks are acted on once (SeenKeys on trigger_id / action_ts / view id).
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from sqlalchemy.exc import SQLAlchemyError

from bot.commands import Command
from bot.dispatch import Reply, execute, run_text
from bot.slack.forms import answer_text, read_declare, read_update
from bot.slack.surface import SlackSurface
from bot.surface import SurfaceSender
from core.appearance.card import IncidentCard
from core.appearance.slack import (
    ACTION_RE,
    DECLARE_VIEW,
    UPDATE_VIEW,
    declare_modal,
    parse_action_id,
    read_metadata,
    update_modal,
)
from core.appearance.vocabulary import escape_slack
from core.errors import Forbidden, NotFound
from core.incidents import IncidentService
from core.leader import Leadership
from core.rbac import Actor, Permission, require
from core.seen import SeenKeys

if TYPE_CHECKING:
    from bot.server import Runtime
    from core.config import SlackConfig

log = logging.getLogger("tocsin.slack")

EVENTS_PATH = "/slack/events"
# Where chat.postEphemeral cannot reach the user (bot not in the channel, a DM): answer by DM instead.
_UNREACHABLE = frozenset({"channel_not_found", "not_in_channel", "user_not_in_channel", "is_archived"})
INTERNAL_ERROR = "Something went wrong on our side and it has been logged; nothing may have changed. " \
                 "Try again."


def actor_of(user_id: str, name: str | None) -> Actor:
    """The Slack user as the core knows them: `slack:U123` (roles come from config `access`)."""
    return Actor(f"slack:{user_id}", source="slack", display=name or None)


def malformed(body: Any) -> str | None:
    """What a signed request lacks that we need to act on it once and answer (None when usable)."""
    if not isinstance(body, dict):
        return "body is not an object"
    if "command" in body:
        missing = [k for k in ("user_id", "trigger_id") if not body.get(k)]
        return f"slash command without {', '.join(missing)}" if missing else None
    kind = body.get("type")
    if kind not in ("block_actions", "view_submission"):
        return None  # url_verification, ssl_check, events: bolt answers those itself
    if not isinstance(body.get("user"), dict) or not body["user"].get("id"):
        return f"{kind} without user.id"
    if kind == "block_actions":
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions or not all(
                isinstance(a, dict) and a.get("action_id") for a in actions):
            return "block_actions without actions[].action_id"
    if kind == "view_submission" and not (isinstance(body.get("view"), dict) and body["view"].get("id")):
        return "view_submission without view.id"
    return None


class SlackAdapter:
    """Component `slack`: the bolt app, its HTTP route, optional Socket Mode, and the background work
    started after each ack (tracked, bounded, drained on shutdown)."""

    name = "slack"

    def __init__(self, cfg: SlackConfig, *, service: IncidentService, seen: SeenKeys,
                 http: aiohttp.ClientSession, max_inflight: int = 64) -> None:
        # What an enabled Slack needs is checked once, when the config loads (core.config.platform_problems).
        assert cfg.bot_token is not None, "slack.bot_token is checked when the config loads"
        signing = cfg.signing_secret.get_secret_value() if cfg.signing_secret else ""
        self.app_token = cfg.app_token.get_secret_value() if cfg.app_token else ""
        self.cfg = cfg
        self.service = service
        self.seen = seen
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
        self.bolt.action(re.compile(r".*"))(self._on_unknown_action)
        self.bolt.view(DECLARE_VIEW)(self._on_declare_submit)
        self.bolt.view(UPDATE_VIEW)(self._on_update_submit)
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
        self._spawn(self._command(body, retry=_retry_num(request)), what="command",
                    tell=lambda text: self._answer(body, text, in_channel=False))

    async def _on_button(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                         request: AsyncBoltRequest) -> None:
        await ack()
        self._spawn(self._button(body, action, retry=_retry_num(request)), what="button",
                    tell=lambda text: self._tell_user(body, text))

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
        self._spawn(self._submitted(body, view, result, retry=_retry_num(request)), what="declare_form",
                    tell=lambda text: self._tell_user(body, text, metadata=read_metadata(view)))

    async def _on_update_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                                request: AsyncBoltRequest) -> None:
        result = read_update(view)
        if isinstance(result, dict):
            await ack(response_action="errors", errors=result)
            return
        await ack()
        self._spawn(self._submitted(body, view, result, retry=_retry_num(request)), what="update_form",
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

    async def _open_declare_form(self, body: dict[str, Any], actor: Actor) -> None:
        """Bare `/incident`: the form, unless the user may not declare anyway (say so now, not after
        they typed it all)."""
        try:
            require(self.service.cfg, actor, Permission.SEND_INCIDENTS)
        except Forbidden as exc:
            await self._answer(body, answer_text(Reply(f"Not allowed: {exc}", ok=False), Command("declare")),
                               in_channel=False)
            return
        view = declare_modal(self.service.cfg, channel=body.get("channel_id"),
                             response_url=body.get("response_url"))
        try:
            await self.client.views_open(trigger_id=body["trigger_id"], view=view)
        except SlackApiError as exc:
            log.warning("slack.views_open.failed", extra={"error": exc.response.get("error")})
            text = (f"The declare form could not open (Slack said: {exc.response.get('error')}). "
                    "Use `/incident declare <sev1..sev4> <title>`.")
            await self._answer(body, escape_slack(text), in_channel=False)

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

    async def _open_update_form(self, body: dict[str, Any], actor: Actor, incident_id: int) -> None:
        try:
            require(self.service.cfg, actor, Permission.SEND_INCIDENTS)
            inc = await self.service.get(incident_id, actor=actor)
        except (Forbidden, NotFound) as exc:
            prefix = "Not allowed: " if isinstance(exc, Forbidden) else ""
            await self._tell_user(body, answer_text(Reply(f"{prefix}{exc}", ok=False), Command("update")))
            return
        card = IncidentCard.of(inc, self.service.cfg.server.public_url)
        if not card.open:
            await self._tell_user(body, f"{card.ref} is resolved; it takes no more updates.")
            return
        try:
            await self.client.views_open(trigger_id=body["trigger_id"],
                                         view=update_modal(card, channel=_channel_of(body)))
        except SlackApiError as exc:
            log.warning("slack.views_open.failed", extra={"error": exc.response.get("error")})
            text = (f"The update form could not open (Slack said: {exc.response.get('error')}). "
                    f"Use `/incident update {card.ref} <text>`.")
            await self._tell_user(body, escape_slack(text))

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

    # --- answering the user -----------------------------------------------------------------------------

    async def _answer(self, body: dict[str, Any], text: str, *, in_channel: bool) -> None:
        """Slash command answers go to its response_url (works in DMs and channels the bot is not in)."""
        url = body.get("response_url")
        if url and await self._respond(url, text, in_channel=in_channel):
            return
        where = {"user": {"id": body.get("user_id")}, "channel": {"id": body.get("channel_id")}}
        await self._tell_user(where, text)

    async def _respond(self, url: str, text: str, *, in_channel: bool) -> bool:
        hook = AsyncWebhookClient(url, session=self.http, timeout=10,
                                  retry_handlers=list(self.retry_handlers),
                                  logger=logging.getLogger("tocsin.slack.web"))
        resp = await hook.send(text=text, response_type="in_channel" if in_channel else "ephemeral",
                               replace_original=False)
        if resp.status_code == 200:
            return True
        log.warning("slack.respond.failed", extra={"status": resp.status_code, "body": str(resp.body)[:200]})
        return False

    async def _tell_user(self, body: dict[str, Any], text: str, *, metadata: dict[str, Any] | None = None,
                         in_channel: bool = False) -> None:
        """Answer the presser/submitter: the form's response_url when it has one, else an ephemeral
        message in the channel, else (bot not in that channel) a DM."""
        user = str((body.get("user") or {}).get("id") or "")
        meta = metadata or {}
        url = meta.get("response_url")
        if isinstance(url, str) and url and await self._respond(url, text, in_channel=in_channel):
            return
        channel = meta.get("channel") or _channel_of(body)
        if channel:
            try:
                await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
                return
            except SlackApiError as exc:
                if exc.response.get("error") not in _UNREACHABLE:
                    raise
                log.info("slack.ephemeral.unreachable", extra={"error": exc.response.get("error")})
        await self.client.chat_postMessage(channel=user, text=text)

    # --- background tasks -----------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None], *, what: str,
               tell: Callable[[str], Awaitable[None]] | None) -> None:
        task = asyncio.create_task(self._run(work, what=what, tell=tell), name=f"slack.{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: Coroutine[Any, Any, None], *, what: str,
                   tell: Callable[[str], Awaitable[None]] | None) -> None:
        """Run one piece of work after its ack. A crash is logged with context and the user is told; it
        never surfaces as a stack trace in Slack, and never as silence."""
        async with self._slots:
            try:
                await work
                return
            except Exception:
                log.exception("slack.work.failed", extra={"what": what})
            if tell is None:
                return
            try:
                await tell(INTERNAL_ERROR)
            except Exception:
                log.exception("slack.answer.failed", extra={"what": what})

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for work already acked (tests, shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(list(self._tasks), timeout=left)

    # --- component lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        log.info("slack.started", extra={"http": self.http_enabled, "socket_mode": bool(self.app_token),
                                         "incident_channel": self.cfg.incident_channel})

    async def start_socket_mode(self) -> None:
        """Leadership's on_elected: only one process holds the Socket Mode connection (returns at once)."""
        if self.app_token and self._connector is None:
            self._connector = asyncio.create_task(self._connect_socket_mode(), name="slack.socket_mode")

    async def stop_socket_mode(self) -> None:
        """Leadership's on_lost (and shutdown): drop the connection so two processes never both consume."""
        if self._connector is not None:
            connector, self._connector = self._connector, None
            connector.cancel()
            await asyncio.gather(connector, return_exceptions=True)
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close_async()

    async def _connect_socket_mode(self) -> None:
        """Socket Mode: connect, retrying with backoff while Slack is unreachable (the client reconnects
        by itself once connected)."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        self._socket = AsyncSocketModeHandler(self.bolt, self.app_token, web_client=self.client)
        delay = 1.0
        while True:
            try:
                await self._socket.connect_async()
                log.info("slack.socket_mode.connected")
                return
            except (TimeoutError, SlackApiError, aiohttp.ClientError, OSError) as exc:
                log.warning("slack.socket_mode.connect_failed",
                            extra={"error": f"{type(exc).__name__}: {exc}", "retry_in": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def close(self) -> None:
        await self.stop_socket_mode()
        await self.drain()
        for task in list(self._tasks):
            log.warning("slack.work.abandoned", extra={"task": task.get_name()})
            task.cancel()


def _retry_num(request: AsyncBoltRequest) -> str | None:
    values = request.headers.get("x-slack-retry-num") or []
    return values[0] if values else None


def _channel_of(body: dict[str, Any]) -> str | None:
    channel = body.get("channel")
    if isinstance(channel, dict) and channel.get("id"):
        return str(channel["id"])
    container = body.get("container")
    if isinstance(container, dict) and container.get("channel_id"):
        return str(container["channel_id"])
    return None


def mount(rt: Runtime) -> None:
    """Wire Slack when enabled: the events route (or Socket Mode), the component, and the card sender
    for `chat:slack` deliveries when slack.incident_channel is set."""
    cfg = rt.cfg.slack
    if not cfg.enabled:
        return
    ctx = rt.ctx
    adapter = SlackAdapter(cfg, service=ctx.service, seen=ctx.seen, http=rt.http)
    if adapter.http_enabled:
        rt.app.router.add_post(EVENTS_PATH, adapter.handle)
    rt.components.append(adapter)
    if adapter.app_token:
        # Socket Mode is a consumer like Telegram polling: one process at a time, taken over if it dies.
        rt.components.append(Leadership(ctx.db.engine, "slack-socket-mode", on_elected=adapter.start_socket_mode,
                                        on_lost=adapter.stop_socket_mode))
    if cfg.incident_channel:
        assert cfg.bot_token is not None
        # No rate-limit retry handler here: a 429 goes back to the queue as retry(after=Retry-After).
        cards_client = AsyncWebClient(token=cfg.bot_token.get_secret_value(), base_url=cfg.api_url,
                                      session=rt.http, timeout=10, retry_handlers=[],
                                      logger=logging.getLogger("tocsin.slack.web"))
        surface = SlackSurface(cards_client, channel=cfg.incident_channel, clock=ctx.clock)
        rt.chat_senders["chat:slack"] = SurfaceSender(surface, service=ctx.service, cards=ctx.cards)
