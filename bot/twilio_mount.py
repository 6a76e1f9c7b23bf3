"""Twilio's callbacks: POST /twilio/voice (the keypress of voice pages, "press 1 to acknowledge") and
POST /twilio/sms (replies to SMS pages, acted on by core/sms_replies.py).

Both check X-Twilio-Signature with the twilio library's validator over the URL we gave Twilio (built from
server.public_url). The voice callback is platform-neutral (`handle_voice_callback`) with a thin aiohttp
handler on top; the senders are core/delivery/voice_twilio.py and core/delivery/sms_twilio.py."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from multidict import MultiDict

from bot.server import Provided, Runtime
from core.appearance.voice import speakable
from core.sms_replies import SmsReplies
from core.delivery.transport import mask_address
from core.delivery.voice_twilio import VOICE_CALLBACK_PATH
from core.errors import TocsinError

# The twilio library is imported inside the functions below, not here: mount_twilio adds its routes only
# when a Twilio channel is configured, and a server without one never loads twilio.
log = logging.getLogger("core.delivery.voice_twilio")
"""The logger name the callback's events have always had (dashboards filter on it)."""

AckCallable = Callable[[int], Awaitable[str]]
"""acknowledge(delivery_id) -> sentence to speak back ("Incident 12 acknowledged.")."""


def _twiml_say(text: str, *, hangup: bool = True) -> str:
    from twilio.twiml.voice_response import VoiceResponse

    vr = VoiceResponse()
    vr.say(speakable(text) or "Done.")
    if hangup:
        vr.hangup()
    return str(vr)


def signed_by_twilio(*, url: str, params: Mapping[str, Any], signature: str, auth_token: str,
                     signature_settings: str | None = None) -> bool:
    """X-Twilio-Signature checked by the twilio library over (url, form fields)."""
    from twilio.request_validator import RequestValidator, get_signature_algorithm

    algorithm = get_signature_algorithm(signature_settings)
    return bool(signature) and RequestValidator(auth_token).validate(url, params, signature, algorithm=algorithm)


async def _form(request: web.Request) -> MultiDict[str]:
    form = await request.post()
    return MultiDict((k, v) for k, v in form.items() if isinstance(v, str))


async def handle_voice_callback(*, url: str, params: Mapping[str, Any], signature: str, auth_token: str,
                                acknowledge: AckCallable,
                                signature_settings: str | None = None) -> tuple[int, str]:
    """Verify Twilio's signature over (url, form), then act on the digit. Returns (HTTP status, TwiML).

    403 for a bad signature, 400 without a usable `delivery` query parameter, else 200 with TwiML.
    """
    if not signed_by_twilio(url=url, params=params, signature=signature, auth_token=auth_token,
                            signature_settings=signature_settings):
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
        from twilio.twiml.voice_response import VoiceResponse

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
    from twilio.request_validator import SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER

    async def handler(request: web.Request) -> web.Response:
        params = await _form(request)
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


SMS_CALLBACK_PATH = "/twilio/sms"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


def twilio_sms_handler(*, auth_token: str, public_url: str,
                       replies: SmsReplies) -> Callable[[web.Request], Awaitable[web.Response]]:
    """aiohttp handler for Twilio's Messaging webhook. The confirmation goes out through the delivery
    queue (retried, audited), so the webhook answers an empty TwiML response."""
    from twilio.request_validator import SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER

    async def handler(request: web.Request) -> web.Response:
        params = await _form(request)
        query = request.rel_url.raw_query_string
        url = f"{public_url.rstrip('/')}{SMS_CALLBACK_PATH}" + (f"?{query}" if query else "")
        if not signed_by_twilio(url=url, params=params, signature=request.headers.get(SIGNATURE_HEADER, ""),
                                auth_token=auth_token,
                                signature_settings=request.headers.get(SIGNATURE_SETTINGS_HEADER)):
            log.warning("sms.reply.rejected", extra={"event": "sms.reply.rejected", "provider": "twilio",
                                                     "reason": "bad signature"})
            return web.json_response({"error": "forbidden", "reason": "bad X-Twilio-Signature"}, status=403)
        sid, number = params.get("MessageSid", ""), params.get("From", "")
        if not sid or not number:
            return web.json_response({"error": "bad_request", "reason": "MessageSid and From are required"},
                                     status=400)
        await replies.handle(number=number, text=params.get("Body", ""), provider="twilio", message_id=sid)
        return web.Response(status=200, text=EMPTY_TWIML, content_type="text/xml")

    return handler


def mount_twilio(rt: Runtime) -> Provided:
    """/twilio/voice when voice is configured for real, /twilio/sms when SMS goes through Twilio: each
    needs an auth token to check Twilio's signature with."""
    voice, sms = rt.cfg.channels.voice, rt.cfg.channels.sms
    service = rt.ctx.service
    if not voice.outbox and voice.auth_token is not None:
        async def acknowledge(delivery_id: int) -> str:
            return await service.acknowledge_by_delivery(delivery_id, source="twilio voice")

        rt.app.router.add_post(VOICE_CALLBACK_PATH, twilio_voice_handler(
            auth_token=voice.auth_token.get_secret_value(), public_url=rt.cfg.server.public_url,
            acknowledge=acknowledge))
    if sms.provider == "twilio" and sms.auth_token is not None:
        rt.app.router.add_post(SMS_CALLBACK_PATH, twilio_sms_handler(
            auth_token=sms.auth_token.get_secret_value(), public_url=rt.cfg.server.public_url,
            replies=SmsReplies(service, rt.ctx.seen)))
    return Provided()
