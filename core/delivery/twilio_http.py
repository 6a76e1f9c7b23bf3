"""The part of the Twilio plumbing that needs the twilio library (~16 MB resident): its REST client on our
shared aiohttp session. Imported by core/delivery/twilio_rest.py only once a Twilio channel has
credentials, so a server without SMS-through-Twilio or voice never loads twilio."""
from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, cast

import aiohttp
from twilio.http import AsyncHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from core.delivery.transport import USER_AGENT

# Twilio's exceptions drop the response headers; the HTTP client leaves them here for the sender
# (a ContextVar: concurrent requests in other tasks cannot see each other's answers).
last_headers: ContextVar[Mapping[str, str] | None] = ContextVar("tocsin_twilio_last_headers", default=None)


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
            last_headers.set(dict(resp.headers))
            return TwilioResponse(resp.status, text, resp.headers)


def make_client(http: aiohttp.ClientSession, *, account_sid: str, auth_token: str, api_url: str,
                timeout: float) -> Client:
    """A Twilio client whose requests go through `http` to `api_url`."""
    client = Client(account_sid, auth_token, account_sid=account_sid,
                    http_client=SharedSessionHttpClient(http, timeout=timeout))
    client.edge = client.region = None  # ignore TWILIO_EDGE/REGION: api_url decides the host
    client.api.base_url = api_url.rstrip("/")
    return client
