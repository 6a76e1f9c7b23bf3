"""PagerDuty Events API v2 sender: trigger on declare, acknowledge on ack, resolve on resolve, one dedup_key
(the incident id) for all three. 202 is success; 400 is permanent with PagerDuty's `errors`; 429 and 5xx
retry (the shared classifier)."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import ClassVar

import aiohttp

from core.appearance.common import headline, json_bytes
from core.appearance.pagerduty import pagerduty_dedup_key, render_pagerduty
from core.config import ConfigHolder
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.base import Wire
from core.delivery.transport import (
    reply_object,
    HttpReply,
    HttpRequest,
    attempt_timeout,
    destination_request,
    log_result,
    resolve_destination,
    send_request,
)

log = logging.getLogger(__name__)


class PagerDutySender:
    """POSTs one Events v2 event to the destination's events URL with its routing_key."""

    channel: ClassVar[str] = "pagerduty"
    rate_per_second: ClassVar[float | None] = None

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession) -> None:
        self._config = config
        self._http = http

    def request(self, envelope: Envelope, *, kind: str | None = None) -> HttpRequest | DeliveryResult:
        """The exact event `send` posts (also what the outbox shows, masked); `kind` overrides the
        notification's (the channel test's resolving event)."""
        dest = resolve_destination(self._config.cfg, envelope.address, self.channel)
        if isinstance(dest, DeliveryResult):
            return dest
        assert dest.routing_key is not None  # the config model requires it
        n = envelope.notification if kind is None else replace(envelope.notification, kind=kind)
        key = pagerduty_dedup_key(envelope.notification, envelope.idempotency_key)
        body = json_bytes(render_pagerduty(n, routing_key=dest.routing_key.get_secret_value(), dedup_key=key))
        return destination_request(dest, body=body)

    def wire(self, envelope: Envelope) -> Wire | DeliveryResult:
        """The event as sent, its routing key (a secret, in the body) masked like the URL and headers."""
        req = self.request(envelope)
        if isinstance(req, DeliveryResult):
            return req
        wire = req.wire(headline(envelope.notification))
        wire.data["body"]["routing_key"] = "<redacted>"
        return wire

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        timeout = attempt_timeout(self._config.cfg, self.channel)
        req = self.request(envelope)
        if isinstance(req, DeliveryResult):
            return log_result(log, envelope, req, started=started)
        reply = await send_request(self._http, req, timeout=timeout)
        result = classify_pagerduty(reply) if isinstance(reply, HttpReply) else reply
        if envelope.notification.kind.upper() == "TEST" and result.outcome == "delivered":
            # A channel test proves the key works without leaving an alert open that pages someone.
            done = self.request(envelope, kind="RESOLVED")
            again = done if isinstance(done, DeliveryResult) else await send_request(self._http, done,
                                                                                     timeout=timeout)
            closed = classify_pagerduty(again) if isinstance(again, HttpReply) else again
            result = replace(result, summary=f"{result.summary}; test alert resolved again: {closed.summary}")
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""


def classify_pagerduty(reply: HttpReply) -> DeliveryResult:
    """202 `{"status": "success", "dedup_key": ...}`; 400 `{"message": ..., "errors": [...]}`."""
    data = reply_object(reply)
    if 200 <= reply.status < 300:
        return DeliveryResult.ok(f"HTTP {reply.status}: {data.get('message') or 'accepted'}, dedup_key "
                                 f"{data.get('dedup_key', '?')}", reply.status)
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        summary = f"{data.get('message') or 'rejected'}: " + "; ".join(str(e) for e in errors)
    else:
        summary = str(data.get("message") or reply.text.strip())
    return reply.classify(summary)
