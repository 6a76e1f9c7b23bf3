"""Twilio's REST client on our shared aiohttp session, cached per credentials, and its errors classified:
shared by the voice sender (Calls) and the SMS sender's Twilio provider (Messages)."""
from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar, cast

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from core.delivery.base import classify_http
from core.delivery.message import DeliveryResult
from core.delivery.transport import USER_AGENT

T = TypeVar("T")

# Twilio's exceptions drop the response headers; the HTTP client leaves them here for the sender
# (a ContextVar: concurrent requests in other tasks cannot see each other's answers).
_last_headers: ContextVar[Mapping[str, str] | None] = ContextVar("tocsin_twilio_last_headers", default=None)


class SharedSessionHttpClient(AsyncHttpClient):
    """Twilio's async HTTP client on our shared aiohttp session, with our per-attempt timeout."""

    def __init__(self, session: aiohttp.ClientSession, *, timeout: float) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), True, timeout)
        self._session = session

    async def request(self, method: str, uri: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> TwilioResponse:
        hdrs = dict(headers or {})
        hdrs.setdefault("User-Agent", USER_AGENT)
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            hdrs["Authorization"] = f"Basic {token}"
        async with self._session.request(
            method.upper(), uri, params=cast(Any, params), data=data, headers=hdrs,
            allow_redirects=allow_redirects, timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
        ) as resp:
            text = await resp.text(errors="replace")
            _last_headers.set(dict(resp.headers))
            return TwilioResponse(resp.status, text, resp.headers)


class TwilioClients:
    """One Twilio client per (account, token, base URL, timeout); rebuilt when a reload changes them."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self._http = http
        self._client: Client | None = None
        self._client_for: tuple[Any, ...] | None = None

    def get(self, *, account_sid: str | None, auth_token: str, api_url: str, timeout: float) -> Client | None:
        key = (account_sid, auth_token, api_url, timeout)
        if key != self._client_for:
            self._client_for, self._client = key, None
            if account_sid and auth_token:
                client = Client(account_sid, auth_token, account_sid=account_sid,
                                http_client=SharedSessionHttpClient(self._http, timeout=timeout))
                client.edge = client.region = None  # ignore TWILIO_EDGE/REGION: api_url decides the host
                client.api.base_url = api_url.rstrip("/")
                self._client = client
        return self._client


async def twilio_attempt(call: Callable[[], Awaitable[T]], *, timeout: float,
                         done: Callable[[T], DeliveryResult]) -> DeliveryResult:
    """Run one Twilio REST request and classify it: Twilio's HTTP errors through the shared classifier
    (honouring Retry-After), timeouts and connection errors as retry."""
    _last_headers.set(None)
    try:
        return done(await call())
    except TwilioException as exc:
        status = getattr(exc, "status", None)
        if not isinstance(status, int):
            raise
        headers = _last_headers.get() or {}
        code = getattr(exc, "code", None)
        msg = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
        return classify_http(status, retry_after=headers.get("Retry-After"), summary=f"Twilio {code}: {msg}")
    except TimeoutError:
        return DeliveryResult.retry(f"Twilio did not answer within {timeout:g}s")
    except aiohttp.ClientError as exc:
        return DeliveryResult.retry(f"Twilio unreachable: {type(exc).__name__}: {exc}"[:300])
