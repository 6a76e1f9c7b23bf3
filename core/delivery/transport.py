"""What every sender shares: the per-attempt timeout, secret redaction, masked result logging, one HTTP
attempt with its classification, and the base of the senders that POST to a named destination (generic,
Slack and Teams webhooks). Kept apart from core/delivery/webhook.py so each sender imports only this."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from core.config import Config, ConfigHolder, Destination
from core.appearance.common import headline
from core.delivery.base import Wire, classify_http
from core.delivery.keepalive import KeepAlivePool, Target, Unsupported
from core.delivery.keepalive import head as keepalive_head
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.policy import retry_policy
from core.logs import mask_phone

if TYPE_CHECKING:
    from collections.abc import Iterable

USER_AGENT = "Tocsin/0.1"
MAX_RESPONSE_BYTES = 64 * 1024
"""We only keep a snippet of the answer for the attempt log; never buffer a huge error page."""


ATTEMPT_TIMEOUT_SHARE = 0.9
"""The worker bounds a whole send by the policy's timeout_seconds; our own I/O gives up a little earlier so
the sender reports the timeout itself (with detail) instead of being cancelled."""


def reply_object(reply: "HttpReply") -> dict[str, object]:
    """A provider's JSON answer as a dict; an empty, non-JSON or non-object body is {} (the status decides)."""
    try:
        data = json.loads(reply.text) if reply.text.strip() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


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


def decode_answer(raw: bytes, charset: str | None) -> str:
    """An answer's bytes as text in its charset (UTF-8 when it names none, or one Python does not know)."""
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


async def http_attempt(session: aiohttp.ClientSession, *, method: str, url: str, body: bytes,
                       headers: Mapping[str, str], timeout: float,
                       pool: KeepAlivePool | None = None) -> HttpReply | DeliveryResult:
    """One request bounded by `timeout`. Transport failures become `retry`; statuses are the caller's.
    With a `pool`, a plain http(s) URL goes over its keep-alive connections (core/delivery/keepalive.py)
    and anything else over `session`."""
    if pool is not None:
        try:
            t = pool.target(method, url)
        except Unsupported:
            pass
        except ValueError:
            return DeliveryResult.permanent("invalid URL")
        else:
            return await _pooled_attempt(pool, t, body=body, headers=headers, timeout=timeout, url=url)
    try:
        async with session.request(method, url, data=body, headers=headers, allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.content.read(MAX_RESPONSE_BYTES)
            return HttpReply(resp.status, resp.headers, decode_answer(raw, resp.charset))
    except TimeoutError:
        return DeliveryResult.retry(f"no answer within {timeout:g}s")
    except aiohttp.InvalidURL:
        return DeliveryResult.permanent("invalid URL")
    except aiohttp.ClientError as exc:
        return DeliveryResult.retry(f"{type(exc).__name__}: {redact(str(exc), [url])}"[:300])


async def _pooled_attempt(pool: KeepAlivePool, t: Target, *, body: bytes, headers: Mapping[str, str],
                          timeout: float, url: str) -> HttpReply | DeliveryResult:
    try:
        request_head = keepalive_head(t, headers, len(body))
    except ValueError as exc:
        return DeliveryResult.permanent(f"invalid request: {exc}")
    try:
        answer = await pool.request(t, request_head, body, timeout=timeout)
    except TimeoutError:
        return DeliveryResult.retry(f"no answer within {timeout:g}s")
    except OSError as exc:  # refused, reset, TLS verification (ssl.SSLError is an OSError), closed early
        return DeliveryResult.retry(f"cannot talk to {t.host}:{t.port}: {type(exc).__name__}: "
                                    f"{redact(str(exc), [url])}"[:300])
    return HttpReply(answer.status, answer.headers, decode_answer(answer.body, answer.charset))


def log_result(logger: logging.Logger, envelope: Envelope, result: DeliveryResult, *,
               started: float) -> DeliveryResult:
    """What the provider said, at DEBUG (the worker logs the attempt itself, once, at INFO): no secrets,
    masked addresses. Returns `result` for chaining."""
    if not logger.isEnabledFor(logging.DEBUG):
        return result  # a fan-out would build thousands of these fields for nobody
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


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request exactly as a sender sends it, plus which of its values are secrets."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    secrets: tuple[str, ...] = ()

    def wire(self, subject: str) -> Wire:
        """The request for display: secret URL parts and header values replaced by <redacted>, the JSON
        body parsed (it is compact JSON, so `json_bytes(data["body"])` gives back the bytes sent)."""
        secrets = list(self.secrets)
        return Wire(subject, {
            "method": self.method,
            "url": mask_url(self.url, secrets),
            "headers": {k: redact(v, secrets) if v not in secrets else "<redacted>" for k, v in self.headers.items()},
            "body": json.loads(self.body),
        })


def mask_url(url: str, secrets: Iterable[str | None]) -> str:
    """Scheme and host stay readable; a secret path or query (Slack/Teams webhook keys, bot tokens) does not."""
    found = [s for s in secrets if s]
    if url in found:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}/<redacted>" if len(parts.path) > 1 or parts.query else url
    return redact(url, found)


def destination_request(dest: Destination, *, body: bytes,
                        extra_headers: Mapping[str, str] | None = None) -> HttpRequest:
    """JSON to a destination's url with its method, the destination headers first and ours on top."""
    assert dest.url is not None
    url, base, secrets, names = _prepared(dest)
    if not extra_headers:
        return HttpRequest(dest.method, url, base, body, secrets)
    if not any(k.lower() in names for k in extra_headers):  # the usual case: nothing to override
        return HttpRequest(dest.method, url, {**base, **extra_headers}, body, secrets)
    headers: CIMultiDict[str] = CIMultiDict(base)
    for k, v in extra_headers.items():
        headers[k] = v
    return HttpRequest(dest.method, url, dict(headers), body, secrets)


_BASE_HEADERS = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
"""A destination without headers of its own sends these."""
_Prepared = tuple[str, Mapping[str, str], tuple[str, ...], frozenset[str]]
_PREPARED: dict[int, tuple[Destination, _Prepared]] = {}
"""Per destination object (a reload builds new ones): its url, base headers, secret values and lower-case
header names, worked out once instead of on every page of a fan-out."""


def _prepared(dest: Destination) -> _Prepared:
    hit = _PREPARED.get(id(dest))
    if hit is not None and hit[0] is dest:
        return hit[1]
    assert dest.url is not None
    if dest.headers:
        headers: Mapping[str, str] = CIMultiDict({k: v.get_secret_value() for k, v in dest.headers.items()})
        headers["Content-Type"] = "application/json; charset=utf-8"  # type: ignore[index]
        headers["User-Agent"] = USER_AGENT  # type: ignore[index]
    else:
        headers = _BASE_HEADERS
    value = (dest.url.get_secret_value(), MappingProxyType(dict(headers)), tuple(destination_secrets(dest)),
             frozenset(k.lower() for k in headers))
    if len(_PREPARED) >= 50_000:  # reloads replaced the destinations many times over: start afresh
        _PREPARED.clear()
    _PREPARED[id(dest)] = (dest, value)
    return value


async def post_to_destination(session: aiohttp.ClientSession, dest: Destination, *, body: bytes,
                              timeout: float,
                              extra_headers: Mapping[str, str] | None = None) -> HttpReply | DeliveryResult:
    """Send destination_request(...) and keep the destination's secrets out of the answer's text."""
    req = destination_request(dest, body=body, extra_headers=extra_headers)
    return await send_request(session, req, timeout=timeout)


async def send_request(session: aiohttp.ClientSession, req: HttpRequest, *, timeout: float,
                       pool: KeepAlivePool | None = None) -> HttpReply | DeliveryResult:
    result = await http_attempt(session, method=req.method, url=req.url, body=req.body, headers=req.headers,
                                timeout=timeout, pool=pool)
    secrets = list(req.secrets)
    if isinstance(result, HttpReply):
        # The answer's text becomes the attempt summary (logs, audit, API): receivers often echo the
        # request path ("Cannot POST /services/T0/B0/<token>"), which is the secret part of the URL.
        return HttpReply(result.status, result.headers, redact(result.text, secrets)) if result.text else result
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
    found += [v.get_secret_value() for v in (dest.token, dest.routing_key) if v is not None]
    return sorted({s for s in found if s}, key=len, reverse=True)


class DestinationSender:
    """One POST to a named destination's URL: resolve it (secrets stay in config), render, send, classify,
    log. The Slack, Teams and generic webhook senders differ only in `body`, `headers` and `classify`."""

    channel: ClassVar[str]
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession) -> None:
        self._config = config
        """Read at send time: a reload that adds a destination (or changes its url) applies to the next page."""
        self._http = http
        self._pool = KeepAlivePool()
        """Our keep-alive connections for the destination POSTs (see core/delivery/keepalive.py)."""

    def body(self, envelope: Envelope) -> bytes:
        """The exact bytes to send (each channel renders its own format)."""
        raise TypeError(f"{type(self).__name__} must define body()")

    def headers(self, dest: Destination, envelope: Envelope, body: bytes) -> dict[str, str] | None:
        return None

    def classify(self, reply: HttpReply) -> DeliveryResult:
        return reply.classify()

    def request(self, envelope: Envelope) -> HttpRequest | DeliveryResult:
        """The exact request `send` makes (also what the outbox shows, masked)."""
        dest = resolve_destination(self._config.cfg, envelope.address, self.channel)
        if isinstance(dest, DeliveryResult):
            return dest
        body = self.body(envelope)
        return destination_request(dest, body=body, extra_headers=self.headers(dest, envelope, body))

    def wire(self, envelope: Envelope) -> Wire | DeliveryResult:
        req = self.request(envelope)
        return req if isinstance(req, DeliveryResult) else req.wire(headline(envelope.notification))

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        cfg = self._config.cfg
        req = self.request(envelope)
        if isinstance(req, DeliveryResult):
            return log_result(self.log, envelope, req, started=started)
        reply = await send_request(self._http, req, timeout=attempt_timeout(cfg, self.channel), pool=self._pool)
        result = self.classify(reply) if isinstance(reply, HttpReply) else reply
        return log_result(self.log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Close our keep-alive connections (the aiohttp session belongs to the server)."""
        await self._pool.aclose()
