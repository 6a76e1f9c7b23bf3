"""Twilio's REST client on our shared aiohttp session, cached per credentials, and its errors classified:
shared by the voice sender (Calls) and the SMS sender's Twilio provider (Messages). The twilio library itself
is loaded only when a client is built (core/delivery/twilio_http.py)."""
from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from core.delivery.base import classify_http
from core.delivery.message import DeliveryResult

if TYPE_CHECKING:
    from twilio.rest import Client

T = TypeVar("T")


async def load_twilio() -> None:
    """Import the twilio library (core/delivery/twilio_http.py) in a thread, so the first Twilio send of
    the process does not hold the event loop while ~16 MB of modules load; later calls return at once."""
    if "core.delivery.twilio_http" not in sys.modules:
        await asyncio.to_thread(importlib.import_module, "core.delivery.twilio_http")


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
                from core.delivery.twilio_http import make_client

                self._client = make_client(self._http, account_sid=account_sid, auth_token=auth_token,
                                           api_url=api_url, timeout=timeout)
        return self._client


async def twilio_attempt(call: Callable[[], Awaitable[T]], *, timeout: float,
                         done: Callable[[T], DeliveryResult]) -> DeliveryResult:
    """Run one Twilio REST request and classify it: Twilio's HTTP errors through the shared classifier
    (honouring Retry-After), timeouts and connection errors as retry. Only called with a client, so the
    twilio library is loaded by then."""
    from twilio.base.exceptions import TwilioException

    from core.delivery.twilio_http import last_headers

    last_headers.set(None)
    try:
        return done(await call())
    except TwilioException as exc:
        status = getattr(exc, "status", None)
        if not isinstance(status, int):
            raise
        headers = last_headers.get() or {}
        code = getattr(exc, "code", None)
        msg = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
        return classify_http(status, retry_after=headers.get("Retry-After"), summary=f"Twilio {code}: {msg}")
    except TimeoutError:
        return DeliveryResult.retry(f"Twilio did not answer within {timeout:g}s")
    except aiohttp.ClientError as exc:
        return DeliveryResult.retry(f"Twilio unreachable: {type(exc).__name__}: {exc}"[:300])
