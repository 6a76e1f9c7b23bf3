"""Telegram channel sender: Bot API sendMessage (parse_mode HTML) to a person's or a destination's chat id."""
from __future__ import annotations

import json
import logging
import time
from typing import Any, ClassVar

import aiohttp

from core.appearance.common import headline, json_bytes
from core.appearance.telegram import render_telegram
from core.config import ConfigHolder
from core.delivery.base import Wire, classify_http
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.transport import (
    USER_AGENT,
    HttpReply,
    HttpRequest,
    attempt_timeout,
    http_attempt,
    log_result,
    redact,
)

log = logging.getLogger(__name__)


def classify_telegram(reply: HttpReply) -> DeliveryResult:
    """Bot API answers `{"ok": false, "error_code", "description", "parameters": {"retry_after"}}`.

    429 carries the wait in `parameters.retry_after` (not always a Retry-After header); we honour it.
    `ok: false` is never a delivery, whatever the HTTP status says.
    """
    try:
        data: Any = json.loads(reply.text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return reply.classify()
    if data.get("ok") is True and 200 <= reply.status < 300:
        result = data.get("result")
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return DeliveryResult.ok(f"message_id={message_id}", reply.status)
    try:
        code = int(data.get("error_code") or reply.status)
    except (TypeError, ValueError):
        code = reply.status
    description = str(data.get("description") or "")
    raw_params = data.get("parameters")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    if "migrate_to_chat_id" in params:
        new_id = params["migrate_to_chat_id"]
        description += f" (the group is now chat {new_id}: update the configured chat id)"
    if 200 <= code < 300:
        summary = f"ok:false with HTTP {reply.status}: {description}"[:300]
        return DeliveryResult.permanent(summary, reply.status)
    retry_after = params.get("retry_after")
    result = classify_http(code, retry_after=str(retry_after) if retry_after is not None
                           else reply.headers.get("Retry-After"), summary=description)
    return DeliveryResult(result.outcome, result.summary, reply.status, result.retry_after)


class TelegramSender:
    """Reuses the chat bot's token and API url (cfg.telegram); the address is the chat id."""

    channel: ClassVar[str] = "telegram"
    rate_per_second: ClassVar[float | None] = 20.0
    """Telegram's global bot limit is ~30/s (1/s per chat); a 429 tells us the exact wait."""

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession) -> None:
        self._config = config
        """Token, API url and timeout are read at send time, so a reload applies to the next message."""
        self._http = http

    def request(self, envelope: Envelope) -> HttpRequest:
        """The sendMessage call `send` makes (without a token configured, the URL holds an empty one)."""
        cfg = self._config.cfg
        token = cfg.telegram.bot_token.get_secret_value() if cfg.telegram.bot_token else ""
        body = json_bytes({
            "chat_id": envelope.address,
            "text": render_telegram(envelope.notification),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        })
        return HttpRequest("POST", f"{cfg.telegram.api_url}{token}/sendMessage",
                           {"Content-Type": "application/json", "User-Agent": USER_AGENT}, body,
                           (token,) if token else ())

    def wire(self, envelope: Envelope) -> Wire:
        return self.request(envelope).wire(headline(envelope.notification))

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        cfg = self._config.cfg
        token = cfg.telegram.bot_token.get_secret_value() if cfg.telegram.bot_token else ""
        if not token:
            return log_result(log, envelope, DeliveryResult.permanent("telegram.bot_token is not configured"),
                              started=started)
        if not envelope.address:
            return log_result(log, envelope, DeliveryResult.permanent("no telegram chat id"), started=started)
        req = self.request(envelope)
        url = req.url
        reply = await http_attempt(self._http, method=req.method, url=url, body=req.body,
                                   timeout=attempt_timeout(cfg, self.channel), headers=req.headers)
        if isinstance(reply, HttpReply):
            result = classify_telegram(reply)
        else:
            result = reply
        # The token is part of the URL: make sure no error text carries it into logs or the database.
        result = DeliveryResult(result.outcome, redact(result.summary, [token, url]),
                                result.status_code, result.retry_after)
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""
