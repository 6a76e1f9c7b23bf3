"""Generic webhook sender, plus the HTTP attempt, masking and result logging every HTTP sender shares.

Body: JSON (core/appearance/webhook.py). Headers: the destination's own, `Idempotency-Key` (the same on every
retry, so a slow receiver that got the first attempt can drop the repeat) and, when the destination has an
`hmac_secret`, `X-Tocsin-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from core.appearance.common import json_bytes
from core.appearance.webhook import render_webhook
from core.config import Config, ConfigHolder, Destination
from core.delivery.base import classify_http
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.policy import retry_policy
from core.logs import mask_phone

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

USER_AGENT = "Tocsin/0.1"
SIGNATURE_HEADER = "X-Tocsin-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_RESPONSE_BYTES = 64 * 1024
"""We only keep a snippet of the answer for the attempt log; never buffer a huge error page."""


# --- signatures -------------------------------------------------------------------------------------


def sign_body(secret: str | bytes, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the exact bytes sent, keyed by the destination's hmac_secret."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """What a receiver runs: constant-time comparison of the header with our own signature."""
    if not header:
        return False
    return hmac.compare_digest(sign_body(secret, body), header.strip())


# --- shared plumbing for HTTP senders ---------------------------------------------------------------


ATTEMPT_TIMEOUT_SHARE = 0.9
"""The worker bounds a whole send by the policy's timeout_seconds; our own I/O gives up a little earlier so
the sender reports the timeout itself (with detail) instead of being cancelled."""


def attempt_timeout(cfg: Config, channel: str) -> float:
    """Per-attempt I/O timeout from the channel's retry policy (config, else core.delivery.policy)."""
    return retry_policy(cfg, channel).timeout_seconds * ATTEMPT_TIMEOUT_SHARE


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Remove secrets (webhook URLs, bot tokens) from text bound for logs and the attempt record."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "<redacted>")
    return text


def mask_address(channel: str, address: str) -> str:
    """Phones keep their last 4 digits, emails their first letter and domain; names and chat ids stay."""
    if channel in ("sms", "voice"):
        return mask_phone(address)
    if channel == "email" and "@" in address:
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return address


@dataclass(frozen=True)
class HttpReply:
    """What came back: status, headers and the first MAX_RESPONSE_BYTES of the body as text."""

    status: int
    headers: Mapping[str, str]
    text: str

    def classify(self, summary: str | None = None) -> DeliveryResult:
        return classify_http(self.status, retry_after=self.headers.get("Retry-After"),
                             summary=self.text.strip() if summary is None else summary)


async def http_attempt(session: aiohttp.ClientSession, *, method: str, url: str, body: bytes,
                       headers: Mapping[str, str], timeout: float) -> HttpReply | DeliveryResult:
    """One request bounded by `timeout`. Transport failures become `retry`; statuses are the caller's."""
    try:
        async with session.request(method, url, data=body, headers=headers, allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.content.read(MAX_RESPONSE_BYTES)
            return HttpReply(resp.status, resp.headers, raw.decode(resp.charset or "utf-8", errors="replace"))
    except TimeoutError:
        return DeliveryResult.retry(f"no answer within {timeout:g}s")
    except aiohttp.InvalidURL:
        return DeliveryResult.permanent("invalid URL")
    except aiohttp.ClientError as exc:
        return DeliveryResult.retry(f"{type(exc).__name__}: {redact(str(exc), [url])}"[:300])


def log_result(logger: logging.Logger, envelope: Envelope, result: DeliveryResult, *,
               started: float) -> DeliveryResult:
    """What the provider said, at DEBUG (the worker logs the attempt itself, once, at INFO): no secrets,
    masked addresses. Returns `result` for chaining."""
    logger.debug("notify.provider.response", extra={
        "event": "notify.provider.response",
        "channel": envelope.channel,
        "delivery_id": envelope.delivery_id,
        "attempt": envelope.attempt,
        "to": mask_address(envelope.channel, envelope.address),
        "outcome": result.outcome,
        "status_code": result.status_code,
        "retry_after": result.retry_after,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "summary": result.summary,
    })
    return result


def resolve_destination(cfg: Config, name: str, channel: str) -> Destination | DeliveryResult:
    """Look the destination up at send time (its secrets never sit in the database)."""
    dest = cfg.destination(name)
    if dest is None:
        return DeliveryResult.permanent(f"unknown destination {name!r}")
    if dest.channel != channel:
        return DeliveryResult.permanent(f"destination {name!r} is a {dest.channel} destination, "
                                        f"not {channel}")
    if dest.url is None:
        return DeliveryResult.permanent(f"destination {name!r} has no url")
    return dest


async def post_to_destination(session: aiohttp.ClientSession, dest: Destination, *, body: bytes,
                              timeout: float,
                              extra_headers: Mapping[str, str] | None = None) -> HttpReply | DeliveryResult:
    """JSON to a destination's url with its method, the destination headers first and ours on top."""
    assert dest.url is not None
    headers: CIMultiDict[str] = CIMultiDict({k: v.get_secret_value() for k, v in dest.headers.items()})
    headers["Content-Type"] = "application/json; charset=utf-8"
    headers["User-Agent"] = USER_AGENT
    for k, v in (extra_headers or {}).items():
        headers[k] = v
    url = dest.url.get_secret_value()
    result = await http_attempt(session, method=dest.method, url=url, body=body, headers=headers,
                                timeout=timeout)
    secrets = destination_secrets(dest)
    if isinstance(result, HttpReply):
        # The answer's text becomes the attempt summary (logs, audit, API): receivers often echo the
        # request path ("Cannot POST /services/T0/B0/<token>"), which is the secret part of the URL.
        return replace(result, text=redact(result.text, secrets))
    return DeliveryResult(result.outcome, redact(result.summary, secrets), result.status_code,
                          result.retry_after)


def destination_secrets(dest: Destination) -> list[str]:
    """The destination's secret values as they may come back: the URL, its path and query on their own
    (longest first, so the whole URL is replaced before its parts), header values and the HMAC key."""
    url = dest.url.get_secret_value() if dest.url else ""
    parts = urlsplit(url)
    path_query = parts.path + (f"?{parts.query}" if parts.query else "")
    found = [url, path_query, parts.path if len(parts.path) > 1 else "", parts.query]
    found += [v.get_secret_value() for v in dest.headers.values()]
    found.append(dest.hmac_secret.get_secret_value() if dest.hmac_secret else "")
    return sorted({s for s in found if s}, key=len, reverse=True)


# --- the generic webhook sender --------------------------------------------------------------------------


class DestinationSender:
    """One POST to a named destination's URL: resolve it (secrets stay in config), render, send, classify,
    log. The Slack, Teams and generic webhook senders differ only in `body`, `headers` and `classify`."""

    channel: ClassVar[str]
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession) -> None:
        self._config = config
        """Read at send time: a reload that adds a destination (or changes its url) applies to the next page."""
        self._http = http

    def body(self, envelope: Envelope) -> bytes:
        """The exact bytes to send (each channel renders its own format)."""
        raise TypeError(f"{type(self).__name__} must define body()")

    def headers(self, dest: Destination, envelope: Envelope, body: bytes) -> dict[str, str] | None:
        return None

    def classify(self, reply: HttpReply) -> DeliveryResult:
        return reply.classify()

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        cfg = self._config.cfg
        dest = resolve_destination(cfg, envelope.address, self.channel)
        if isinstance(dest, DeliveryResult):
            return log_result(self.log, envelope, dest, started=started)
        body = self.body(envelope)
        reply = await post_to_destination(self._http, dest, body=body, timeout=attempt_timeout(cfg, self.channel),
                                          extra_headers=self.headers(dest, envelope, body))
        result = self.classify(reply) if isinstance(reply, HttpReply) else reply
        return log_result(self.log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""


class WebhookSender(DestinationSender):
    """POST/PUT the event + notification as JSON to a named destination, signed when it has a secret."""

    channel: ClassVar[str] = "webhook"
    rate_per_second: ClassVar[float | None] = None
    log = log

    def body(self, envelope: Envelope) -> bytes:
        return json_bytes(render_webhook(envelope.notification, idempotency_key=envelope.idempotency_key,
                                         delivery_id=envelope.delivery_id, attempt=envelope.attempt))

    def headers(self, dest: Destination, envelope: Envelope, body: bytes) -> dict[str, str]:
        headers = {
            IDEMPOTENCY_HEADER: envelope.idempotency_key,
            "X-Tocsin-Delivery": str(envelope.delivery_id),
            "X-Tocsin-Attempt": str(envelope.attempt),
        }
        if dest.hmac_secret is not None and dest.hmac_secret.get_secret_value():
            headers[SIGNATURE_HEADER] = sign_body(dest.hmac_secret.get_secret_value(), body)
        return headers
