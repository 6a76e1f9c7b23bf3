"""Telegram adapter: a python-telegram-bot Application running inside `tocsin run`'s event loop.

A thin edge: `/incident ...` goes to bot.commands/bot.dispatch, buttons to the same dispatcher, and the
incident card is kept by the shared chat-surface subscription (SurfaceSender + TelegramSurface). Updates
arrive by webhook (POST /telegram/webhook, secret checked) or by polling (getUpdates, only in the process
holding the `telegram-polling` leadership); both feed the Application's update queue, where one handler
drops update_ids seen before (SeenKeys, shared by every process).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError
from telegram import LinkPreviewOptions, Message, ReplyParameters, Update, User
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    TypeHandler,
    filters,
)

from bot.commands import HELP, Command
from bot.dispatch import execute, run_text
from bot.server import Provided
from bot.surface import DirectMessageSender, SurfaceSender
from bot.telegram.surface import ChatPacer, TelegramSurface
from core.appearance.telegram import parse_callback, plain, toast
from core.config import TelegramConfig
from core.incidents import IncidentService
from core.leader import Leadership
from core.rbac import Actor
from core.seen import SeenKeys

if TYPE_CHECKING:
    from bot.server import Runtime

log = logging.getLogger("tocsin.telegram")

WEBHOOK_PATH = "/telegram/webhook"
NEVER_OPENED_DM = frozenset({"bot can't initiate conversation", "bot was blocked by the user", "chat not found",
                             "user is deactivated"})
"""Bot API errors meaning the bot cannot write to this person (they never started a chat with it)."""
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
Context = ContextTypes.DEFAULT_TYPE


class _RedactTokens(logging.Filter):
    """A Bot API URL contains the bot token; blank it out of any record that carries one."""

    tokens: ClassVar[set[str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if any(t in msg for t in self.tokens):
            for t in self.tokens:
                msg = msg.replace(t, "<bot-token>")
            record.msg, record.args = msg, ()
        return True


_REDACT = _RedactTokens()


def _guard_token(token: str) -> None:
    """Filter every PTB and HTTP client logger (logger filters do not apply to children, so each one):
    PTB logs the API URL at DEBUG when a Bot is built, httpx logs each request URL at INFO."""
    _RedactTokens.tokens.add(token)
    names = [n for n in list(logging.Logger.manager.loggerDict)
             if n.split(".")[0] in ("telegram", "httpx", "httpcore")]
    for name in {"telegram", "telegram.Bot", "telegram.ext.ExtBot", "httpx", "httpcore", *names}:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


def actor_of(user: User) -> Actor:
    """Telegram users are `telegram:<numeric id>`, the form config `access` maps to roles."""
    display = user.full_name or (f"@{user.username}" if user.username else None)
    return Actor(f"telegram:{user.id}", source="telegram", display=display)


class PerChatUpdates(BaseUpdateProcessor):
    """Updates of one chat in arrival order, different chats concurrently.

    PTB's default processes every update one after another, so a paced reply in one chat would hold up
    all others; fully concurrent processing could run `ack INC-3` before the `declare` typed just before.
    """

    def __init__(self, max_concurrent_updates: int = 256) -> None:
        super().__init__(max_concurrent_updates)
        self._chats: dict[int, tuple[asyncio.Lock, int]] = {}
        """chat id -> (lock, updates holding or awaiting it); dropped when the count falls to zero."""

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        lock, users = self._chats.get(chat.id, (asyncio.Lock(), 0))
        self._chats[chat.id] = (lock, users + 1)
        try:
            async with lock:
                await coroutine
        finally:
            lock, users = self._chats[chat.id]
            if users == 1:
                del self._chats[chat.id]
            else:
                self._chats[chat.id] = (lock, users - 1)

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass  # we asked for it: the step is moot now


def file_url(api_url: str) -> str:
    """https://api.telegram.org/bot -> https://api.telegram.org/file/bot (same rule for a stand-in)."""
    return api_url[: -len("/bot")] + "/file/bot" if api_url.endswith("/bot") else api_url


class TelegramBot:
    """The Component: builds the Application, connects to the Bot API in the background, serves updates.

    Connecting in the background (with backoff) means an unreachable Telegram never stops `tocsin run`
    from paging by every other channel; updates that arrive by webhook meanwhile wait in the queue.
    """

    name = "telegram"
    allowed_updates: ClassVar[list[str]] = [Update.MESSAGE, Update.CALLBACK_QUERY]
    poll_timeout: ClassVar[int] = 25
    """Long-poll seconds for getUpdates."""
    max_backoff: ClassVar[float] = 60.0
    leader_retry_seconds: ClassVar[float] = 5.0
    """How often a follower tries to take over polling from a leader that went away."""
    """Telegram drops an undelivered update after 24 hours: remembering update_ids twice as long is enough."""

    def __init__(self, cfg: TelegramConfig, *, service: IncidentService, seen: SeenKeys,
                 public_url: str) -> None:
        assert cfg.bot_token is not None
        token = cfg.bot_token.get_secret_value()
        _guard_token(token)
        self.cfg = cfg
        self.service = service
        self.seen = seen
        self.webhook_url = public_url.rstrip("/") + WEBHOOK_PATH
        self._secret = cfg.webhook_secret.get_secret_value() if cfg.webhook_secret else ""
        builder = (Application.builder().token(token)
                   .base_url(cfg.api_url).base_file_url(file_url(cfg.api_url))
                   .rate_limiter(ChatPacer()).concurrent_updates(PerChatUpdates()).job_queue(None))
        if cfg.mode == "webhook":
            builder = builder.updater(None)
        self.app: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self.app.add_handler(TypeHandler(Update, self.drop_duplicates), group=-1)
        self.app.add_handler(CommandHandler("incident", self.on_command, filters=filters.UpdateType.MESSAGE))
        self.app.add_handler(CommandHandler("start", self.on_start, filters=filters.UpdateType.MESSAGE))
        self.app.add_handler(CallbackQueryHandler(self.on_button))
        self.app.add_error_handler(self.on_error)
        self.connected = asyncio.Event()
        self.polling = asyncio.Event()
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = self._spawn(self._connect(), "telegram-connect")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        return task

    @staticmethod
    def _task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("telegram.task.crashed", exc_info=task.exception(), extra={"task": task.get_name()})

    async def _retrying(self, step: str, action: Callable[[], Awaitable[None]]) -> None:
        """Run a Bot API step until it succeeds, backing off; each failure is logged."""
        delay = 1.0
        while True:
            try:
                await action()
                self.last_error = None
                return
            except TelegramError as exc:
                self.last_error = f"{step}: {type(exc).__name__}: {exc.message}"
                log.error(f"telegram.{step}.failed", extra={"mode": self.cfg.mode, "error": self.last_error,
                                                            "retry_in": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    async def _connect(self) -> None:
        """initialize (getMe) and start the Application; in webhook mode, (re)register the webhook."""

        async def up() -> None:
            if not self.app.running:
                await self.app.initialize()
                await self.app.start()
            if self.cfg.mode == "webhook":
                await self.app.bot.set_webhook(url=self.webhook_url, secret_token=self._secret,
                                               allowed_updates=self.allowed_updates)

        await self._retrying("connect", up)
        self.connected.set()
        webhook = self.webhook_url if self.cfg.mode == "webhook" else None
        log.info("telegram.connected", extra={"mode": self.cfg.mode, "bot": self.app.bot.username,
                                              "webhook": webhook})

    # --- polling (only in the process that holds the `telegram-polling` leadership) -------------------

    async def start_polling(self) -> None:
        """Leadership's on_elected: returns at once (the campaign must not wait on Telegram)."""
        if self._poll_task is None or self._poll_task.done():
            self._poll_task = self._spawn(self._poll(), "telegram-polling")

    async def _poll(self) -> None:
        await self.connected.wait()
        updater = self.app.updater
        assert updater is not None

        async def begin() -> None:
            # start_polling calls deleteWebhook first: a webhook and getUpdates exclude each other.
            await updater.start_polling(timeout=self.poll_timeout, allowed_updates=self.allowed_updates,
                                        error_callback=self._polling_error)

        await self._retrying("polling", begin)
        self.polling.set()
        log.info("telegram.polling.started")

    async def stop_polling(self) -> None:
        """Leadership's on_lost (and shutdown): stop calling getUpdates at once, so two never overlap."""
        if self._poll_task is not None and not self._poll_task.done():
            await _cancel(self._poll_task)
        self.polling.clear()
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
            log.info("telegram.polling.stopped")

    def _polling_error(self, exc: TelegramError) -> None:
        """PTB keeps polling with its own backoff; we make it visible (a 409 means another poller)."""
        self.last_error = f"polling: {type(exc).__name__}: {exc.message}"
        log.error("telegram.polling.failed", extra={"error": self.last_error})

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            await _cancel(self._task)
        await self.stop_polling()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()
        log.info("telegram.closed")

    # --- webhook ----------------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        """Check the secret, parse the Update, queue it, answer at once (processing follows)."""
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            why = "secret mismatch" if given else "no secret"
            log.warning("telegram.webhook.rejected", extra={"remote": request.remote, "why": why})
            return web.json_response({"ok": False, "error": "forbidden"}, status=403)
        raw = await request.read()
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return self._bad("body is not JSON")
        if not isinstance(data, dict) or type(data.get("update_id")) is not int:
            return self._bad("not a Telegram Update (no integer update_id)")
        try:
            update = Update.de_json(data, self.app.bot)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            return self._bad(f"not a Telegram Update ({type(exc).__name__}: {exc})")
        await self.app.update_queue.put(update)
        return web.json_response({"ok": True})

    @staticmethod
    def _bad(why: str) -> web.Response:
        log.warning("telegram.webhook.malformed", extra={"why": why[:200]})
        return web.json_response({"ok": False, "error": why[:200]}, status=400)

    # --- handlers -------------------------------------------------------------------------------------

    async def drop_duplicates(self, update: Update, context: Context) -> None:
        """Telegram redelivers an update until it sees a 200; act on each update_id once, in any process."""
        key = f"telegram:{context.bot.id}:update:{update.update_id}"
        try:
            first = await self.seen.first_time(key)
        except SQLAlchemyError:
            # Fail open: a possible duplicate beats a lost command.
            log.exception("telegram.dedup.failed", extra={"update_id": update.update_id})
            return
        if not first:
            log.info("telegram.update.duplicate", extra={"update_id": update.update_id})
            raise ApplicationHandlerStop

    async def on_command(self, update: Update, context: Context) -> None:
        msg, user = update.effective_message, update.effective_user
        if msg is None or not msg.text:
            return
        if user is None:
            await self._answer(msg, "I cannot tell who sent this, so I cannot act on it. "
                                    "Send the command from your own account.")
            return
        actor = actor_of(user)
        cmd, reply = await run_text(self.service, actor, msg.text)
        log.info("telegram.command", extra={"update_id": update.update_id, "chat": msg.chat_id,
                                            "actor": actor.identity, "verb": cmd.verb if cmd else None,
                                            "ok": reply.ok})
        await self._answer(msg, reply.text or HELP)

    async def on_start(self, update: Update, context: Context) -> None:
        if update.effective_message is not None:
            await self._answer(update.effective_message, HELP)

    async def on_button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        assert query is not None
        parsed = parse_callback(query.data)
        if parsed is None:
            await query.answer("This button is not one of Tocsin's (or is too old).", show_alert=True)
            return
        action, incident_id = parsed
        actor = actor_of(query.from_user)
        reply = await execute(self.service, actor, Command(action, incident=f"INC-{incident_id}"))
        log.info("telegram.button", extra={"update_id": update.update_id, "actor": actor.identity,
                                           "action": action, "incident": incident_id, "ok": reply.ok})
        # The card itself is edited by the chat-surface subscription the service just queued.
        await query.answer(toast(reply.text), show_alert=not reply.ok)

    async def on_error(self, update: object, context: Context) -> None:
        """Log with context, and tell the user: an error is never silence."""
        log.error("telegram.handler.failed", exc_info=context.error,
                  extra={"update_id": update.update_id if isinstance(update, Update) else None})
        if not isinstance(update, Update):
            return
        if update.callback_query is not None:
            await update.callback_query.answer("Something went wrong; it was logged. Try again.",
                                               show_alert=True)
        elif update.effective_message is not None:
            await self._answer(update.effective_message, "Something went wrong handling that; it was logged. "
                                                         "Try again.")

    @staticmethod
    async def _answer(msg: Message, text: str) -> None:
        """Answer in the chat as a reply to the command (in its forum topic, if any)."""
        await msg.reply_text(plain(text), link_preview_options=_NO_PREVIEW,
                             reply_parameters=ReplyParameters(message_id=msg.message_id,
                                                              allow_sending_without_reply=True))


def mount(rt: Runtime) -> Provided:
    """Wire Telegram into the server: component, webhook route, and the `chat:telegram` card sender."""
    cfg = rt.cfg.telegram
    if not cfg.enabled:
        return Provided()
    out = Provided()
    # What an enabled Telegram needs is checked once, when the config loads (core.config.platform_problems).
    tg = TelegramBot(cfg, service=rt.ctx.service, seen=rt.ctx.seen, public_url=rt.cfg.server.public_url)
    if cfg.mode == "webhook":
        rt.app.router.add_post(WEBHOOK_PATH, tg.webhook)
    out.components.append(tg)
    if cfg.mode == "polling":
        # Every process sends (replies, cards); only the leader calls getUpdates, or Telegram answers 409.
        out.components.append(Leadership(rt.ctx.db.engine, "telegram-polling", on_elected=tg.start_polling,
                                        on_lost=tg.stop_polling, retry_seconds=tg.leader_retry_seconds))
    if cfg.incident_chat_id:
        surface = TelegramSurface(tg.app.bot, chat_id=cfg.incident_chat_id, topic_id=cfg.topic_id)
        out.chat_senders["chat:telegram"] = SurfaceSender(surface, service=rt.ctx.service, cards=rt.ctx.cards)
    # telegram_dm pages: sendMessage to the person's private chat (its id is their user id).
    out.chat_senders["telegram_dm"] = DirectMessageSender(
        "telegram", lambda user: TelegramSurface(tg.app.bot, chat_id=user), service=rt.ctx.service,
        cards=rt.ctx.cards, never_opened=NEVER_OPENED_DM)
    return out
