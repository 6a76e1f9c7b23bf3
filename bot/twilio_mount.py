"""POST /twilio/voice: the keypress callback of voice pages ("press 1 to acknowledge").

The callback is platform-neutral (`handle_voice_callback`) with a thin aiohttp handler on top
(`twilio_voice_handler`); the sender that places the call is core/delivery/voice_twilio.py."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.twiml.voice_response import VoiceResponse

from core.appearance.voice import speakable
from core.delivery.transport import mask_address
from core.delivery.voice_twilio import VOICE_CALLBACK_PATH
from core.errors import TocsinError

log = logging.getLogger("core.delivery.voice_twilio")
"""The logger name the callback's events have always had (dashboards filter on it)."""

AckCallable = Callable[[int], Awaitable[str]]
"""acknowledge(delivery_id) -> sentence to speak back ("Incident 12 acknowledged.")."""


def _twiml_say(text: str, *, hangup: bool = True) -> str:
    vr = VoiceResponse()
    vr.say(speakable(text) or "Done.")
    if hangup:
        vr.hangup()
    return str(vr)


async def handle_voice_callback(*, url: str, params: Mapping[str, Any], signature: str, auth_token: str,
                                acknowledge: AckCallable,
                                signature_settings: str | None = None) -> tuple[int, str]:
    """Verify Twilio's signature over (url, form), then act on the digit. Returns (HTTP status, TwiML).

    403 for a bad signature, 400 without a usable `delivery` query parameter, else 200 with TwiML.
    """
    algorithm = get_signature_algorithm(signature_settings)
    validator = RequestValidator(auth_token)
    if not signature or not validator.validate(url, params, signature, algorithm=algorithm):
        log.warning("notify.voice.callback_rejected", extra={"event": "notify.voice.callback_rejected",
                                                               "reason": "bad signature"})
        return 403, ""
    raw = parse_qs(urlsplit(url).query).get("delivery", [""])[0]
    if not raw.isdigit():
        return 400, ""
    delivery_id = int(raw)
    digits = str(params.get("Digits", "") or "")
    extra = {"event": "notify.voice.callback", "delivery_id": delivery_id, "digits": digits,
             "to": mask_address("voice", str(params.get("To", "") or ""))}
    if digits != "1":
        log.info("notify.voice.callback", extra=extra)
        vr = VoiceResponse()
        again = vr.gather(num_digits=1, action=url, method="POST", timeout=8)
        again.say("Press 1 to acknowledge.")
        vr.say("Not acknowledged. Goodbye.")
        return 200, str(vr)
    try:
        sentence = await acknowledge(delivery_id)
    except TocsinError as exc:
        # Already acknowledged or resolved, unknown delivery: the message is safe to say aloud.
        log.info("notify.voice.ack_refused", extra={**extra, "event": "notify.voice.ack_refused",
                                                    "error": exc.code, "reason": str(exc)})
        return 200, _twiml_say(str(exc))
    log.info("notify.voice.acknowledged", extra={**extra, "event": "notify.voice.acknowledged"})
    return 200, _twiml_say(sentence)


def twilio_voice_handler(*, auth_token: str, public_url: str,
                         acknowledge: AckCallable) -> Callable[[web.Request], Awaitable[web.Response]]:
    """aiohttp handler for POST /twilio/voice. The URL Twilio signed is rebuilt from public_url (it is
    the one we gave Twilio), not from the Host header, so it holds behind a TLS-terminating proxy."""

    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        params: MultiDict[str] = MultiDict((k, v) for k, v in form.items() if isinstance(v, str))
        query = request.rel_url.raw_query_string
        url = f"{public_url.rstrip('/')}{VOICE_CALLBACK_PATH}" + (f"?{query}" if query else "")
        status, body = await handle_voice_callback(
            url=url, params=params, signature=request.headers.get(SIGNATURE_HEADER, ""),
            auth_token=auth_token, acknowledge=acknowledge,
            signature_settings=request.headers.get(SIGNATURE_SETTINGS_HEADER))
        if status != 200:
            return web.Response(status=status, text="forbidden" if status == 403 else "bad request")
        return web.Response(status=200, text=body, content_type="text/xml")

    return handler


def mount_twilio(rt: Any) -> None:
    """Mounted when voice is configured for real (an auth token to check Twilio's signature with)."""
    voice = rt.cfg.channels.voice
    if voice.outbox or voice.auth_token is None:
        return
    service = rt.ctx.service

    async def acknowledge(delivery_id: int) -> str:
        return await service.acknowledge_by_delivery(delivery_id, source="twilio voice")

    rt.app.router.add_post(VOICE_CALLBACK_PATH, twilio_voice_handler(
        auth_token=voice.auth_token.get_secret_value(), public_url=rt.cfg.server.public_url,
        acknowledge=acknowledge))
