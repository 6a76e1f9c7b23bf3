"""ntfy sender: JSON publish to the topic's server, with the destination's or the channel's access token.

A contact's page goes to `contacts[].ntfy_topic` (a topic on `channels.ntfy.server`, or a full topic URL);
a destination's to its `url` with its own `token`. ntfy answers 200 with the message id; 429 when the
visitor's rate limit is hit (Retry-After honoured); other statuses follow the shared classifier.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from core.appearance.common import headline, json_bytes
from core.appearance.ntfy import render_ntfy
from core.config import Config, ConfigHolder
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.base import Wire
from core.delivery.transport import (USER_AGENT, HttpReply, HttpRequest, attempt_timeout, log_result, redact,
                                     reply_object, send_request)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NtfyTarget:
    server: str
    topic: str
    token: str | None


def split_topic_url(url: str) -> tuple[str, str]:
    """`https://ntfy.example/base/ops` -> (`https://ntfy.example/base`, `ops`)."""
    parts = urlsplit(url)
    base, _, topic = parts.path.rstrip("/").rpartition("/")
    return urlunsplit((parts.scheme, parts.netloc, base, "", "")), topic


def ntfy_target(cfg: Config, envelope: Envelope) -> NtfyTarget | DeliveryResult:
    """Where this page goes: a ntfy destination named like the recipient, else the contact's topic."""
    dest = cfg.destination(envelope.recipient)
    if dest is not None and dest.channel == "ntfy" and envelope.address == dest.name and dest.url:
        server, topic = split_topic_url(dest.url.get_secret_value())
        return NtfyTarget(server, topic, dest.token.get_secret_value() if dest.token else None)
    address = envelope.address
    if not address:
        return DeliveryResult.permanent("no ntfy topic")
    chan = cfg.channels.ntfy
    token = chan.token.get_secret_value() if chan.token else None
    if address.startswith(("http://", "https://")):
        server, topic = split_topic_url(address)
        return NtfyTarget(server, topic, token if server == chan.server else None)
    return NtfyTarget(chan.server, address, token)


class NtfySender:
    """One JSON publish per page; the message id from ntfy's answer becomes the attempt summary."""

    channel: ClassVar[str] = "ntfy"
    rate_per_second: ClassVar[float | None] = None

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession) -> None:
        self._config = config
        self._http = http

    def request(self, envelope: Envelope) -> HttpRequest | DeliveryResult:
        """The exact publish `send` makes (also what the outbox shows, the token masked)."""
        target = ntfy_target(self._config.cfg, envelope)
        if isinstance(target, DeliveryResult):
            return target
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        body = json_bytes(render_ntfy(envelope.notification, topic=target.topic))
        return HttpRequest("POST", target.server + "/", headers, body,
                           tuple(s for s in (f"Bearer {target.token}", target.token) if target.token))

    def wire(self, envelope: Envelope) -> Wire | DeliveryResult:
        req = self.request(envelope)
        return req if isinstance(req, DeliveryResult) else req.wire(headline(envelope.notification))

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        req = self.request(envelope)
        if isinstance(req, DeliveryResult):
            return log_result(log, envelope, req, started=started)
        reply = await send_request(self._http, req, timeout=attempt_timeout(self._config.cfg, self.channel))
        result = classify_ntfy(reply) if isinstance(reply, HttpReply) else reply
        if isinstance(reply, HttpReply):  # ntfy's error text may quote what we sent
            result = DeliveryResult(result.outcome, redact(result.summary, list(req.secrets)), result.status_code,
                                    result.retry_after)
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""


def classify_ntfy(reply: HttpReply) -> DeliveryResult:
    """200 `{"id": ...}` is delivered (the id is the provider's); errors carry ntfy's `error` text."""
    data = reply_object(reply)
    if 200 <= reply.status < 300:
        return DeliveryResult.ok(f"HTTP {reply.status}: accepted, id {data.get('id', '?')}", reply.status)
    summary = str(data.get("error") or reply.text.strip())
    return reply.classify(summary)
