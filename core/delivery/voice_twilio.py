"""Voice sender: a Twilio call that reads the page and gathers "press 1 to acknowledge".

The keypress comes back to POST /twilio/voice, an aiohttp handler in bot/twilio_mount.py."""
from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, cast

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from core.appearance.voice import render_voice, speakable
from core.config import ConfigHolder
from core.delivery.base import classify_http
from core.delivery.message import DeliveryResult, Envelope, Notification
from core.delivery.transport import USER_AGENT, attempt_timeout, log_result

log = logging.getLogger(__name__)

VOICE_CALLBACK_PATH = "/twilio/voice"
TWIML_MAX = 4000
"""Twilio's limit for the inline `Twiml` parameter of a call."""
RING_SECONDS = 45
E164 = re.compile(r"^\+[1-9]\d{6,14}$")

# Twilio's exceptions drop the response headers; the HTTP client leaves them here for the sender
# (a ContextVar: concurrent calls in other tasks cannot see each other's answers).
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


def voice_action_url(public_url: str, delivery_id: int) -> str:
    """Where Twilio posts the pressed digit; the same string Twilio signs."""
    return f"{public_url.rstrip('/')}{VOICE_CALLBACK_PATH}?delivery={delivery_id}"


def _wants_ack(n: Notification) -> bool:
    return bool(n.incident) and n.kind.upper() not in ("RESOLVED", "ACK", "ONE_TIME")


def build_twiml(n: Notification, *, action_url: str) -> str:
    """<Say> the page inside a <Gather numDigits=1> so pressing 1 works mid-sentence; ask once more."""
    script = render_voice(n)
    vr = VoiceResponse()
    if not _wants_ack(n):
        vr.say(script)
        return str(vr)
    prompt = "Press 1 to acknowledge."
    first = vr.gather(num_digits=1, action=action_url, method="POST", timeout=8)
    first.say(script)
    first.pause(length=1)
    first.say(prompt)
    again = vr.gather(num_digits=1, action=action_url, method="POST", timeout=8)
    again.say(f"Press 1 to acknowledge {speakable(n.incident or '')}.")
    vr.say("No answer received. Goodbye.")
    twiml = str(vr)
    if len(twiml) > TWIML_MAX and n.body:  # cannot happen with render_voice's caps, but never send a 400
        return build_twiml(Notification.from_json({**n.to_json(), "body": ""}), action_url=action_url)
    return twiml


class TwilioVoiceSender:
    """One outbound call per attempt through Twilio's REST API (`api_url` points tests at a stand-in)."""

    channel: ClassVar[str] = "voice"
    rate_per_second: ClassVar[float | None] = 1.0
    """Twilio's default outbound calls-per-second for an account."""

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession) -> None:
        self._config = config
        """channels.voice and server.public_url are read at send time; the Twilio client is rebuilt when what
        it was built from changes."""
        self._http = http
        self._client: Client | None = None
        self._client_for: tuple[Any, ...] | None = None

    def _twilio(self) -> Client | None:
        c = self._config.cfg.channels.voice
        timeout = attempt_timeout(self._config.cfg, self.channel)
        token = c.auth_token.get_secret_value() if c.auth_token else ""
        key = (c.account_sid, token, c.api_url, timeout)
        if key != self._client_for:
            self._client_for, self._client = key, None
            if c.account_sid and token:
                client = Client(c.account_sid, token, account_sid=c.account_sid,
                                http_client=SharedSessionHttpClient(self._http, timeout=timeout))
                client.edge = client.region = None  # ignore TWILIO_EDGE/REGION: api_url decides the host
                client.api.base_url = c.api_url.rstrip("/")
                self._client = client
        return self._client

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        cfg = self._config.cfg
        client, from_number = self._twilio(), cfg.channels.voice.from_number
        timeout = attempt_timeout(cfg, self.channel)
        if client is None or not from_number:
            result = DeliveryResult.permanent(
                "voice is not configured (channels.voice.account_sid, auth_token, from_number)")
            return log_result(log, envelope, result, started=started)
        if not E164.match(envelope.address):
            return log_result(log, envelope, DeliveryResult.permanent("not an E.164 phone number"),
                              started=started)
        twiml = build_twiml(envelope.notification,
                            action_url=voice_action_url(cfg.server.public_url, envelope.delivery_id))
        _last_headers.set(None)
        try:
            call = await client.calls.create_async(to=envelope.address, from_=from_number, twiml=twiml,
                                                   timeout=RING_SECONDS)
            result = DeliveryResult.ok(f"call {call.sid} {call.status}", 201)
        except TwilioException as exc:
            status = getattr(exc, "status", None)
            if not isinstance(status, int):
                raise
            headers = _last_headers.get() or {}
            code = getattr(exc, "code", None)
            msg = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
            result = classify_http(status, retry_after=headers.get("Retry-After"),
                                   summary=f"Twilio {code}: {msg}")
        except TimeoutError:
            result = DeliveryResult.retry(f"Twilio did not answer within {timeout:g}s")
        except aiohttp.ClientError as exc:
            result = DeliveryResult.retry(f"Twilio unreachable: {type(exc).__name__}: {exc}"[:300])
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""


# --- inbound: the digit the person pressed --------------------------------------------------------------
