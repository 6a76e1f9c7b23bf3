"""Voice sender: a Twilio call that reads the page and gathers "press 1 to acknowledge".

The keypress comes back to POST /twilio/voice, an aiohttp handler in bot/twilio_mount.py."""
from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp

from core.appearance.common import headline, wants_ack
from core.appearance.voice import render_voice, speakable
from core.config import ConfigHolder
from core.delivery.base import Wire
from core.delivery.message import DeliveryResult, Envelope, Notification
from core.delivery.transport import attempt_timeout, log_result
from core.delivery.twilio_rest import TwilioClients, load_twilio, twilio_attempt

if TYPE_CHECKING:
    from twilio.rest import Client

log = logging.getLogger(__name__)

VOICE_CALLBACK_PATH = "/twilio/voice"
TWIML_MAX = 4000
"""Twilio's limit for the inline `Twiml` parameter of a call."""
RING_SECONDS = 45
E164 = re.compile(r"^\+[1-9]\d{6,14}$")

def voice_action_url(public_url: str, delivery_id: int) -> str:
    """Where Twilio posts the pressed digit; the same string Twilio signs."""
    return f"{public_url.rstrip('/')}{VOICE_CALLBACK_PATH}?delivery={delivery_id}"


def build_twiml(n: Notification, *, action_url: str) -> str:
    """<Say> the page inside a <Gather numDigits=1> so pressing 1 works mid-sentence; ask once more."""
    from twilio.twiml.voice_response import VoiceResponse  # small; the REST client stays unloaded

    script = render_voice(n)
    vr = VoiceResponse()
    if not wants_ack(n):
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
        self._clients = TwilioClients(http)

    def _twilio(self) -> Client | None:
        c = self._config.cfg.channels.voice
        return self._clients.get(account_sid=c.account_sid,
                                 auth_token=c.auth_token.get_secret_value() if c.auth_token else "",
                                 api_url=c.api_url, timeout=attempt_timeout(self._config.cfg, self.channel))

    def call_args(self, envelope: Envelope) -> dict[str, Any]:
        """The Calls.create arguments `send` passes (Twilio posts them as To, From, Twiml, Timeout)."""
        cfg = self._config.cfg
        twiml = build_twiml(envelope.notification,
                            action_url=voice_action_url(cfg.server.public_url, envelope.delivery_id))
        return {"to": envelope.address, "from_": cfg.channels.voice.from_number, "twiml": twiml,
                "timeout": RING_SECONDS}

    def wire(self, envelope: Envelope) -> Wire:
        args = self.call_args(envelope)
        return Wire(headline(envelope.notification), {
            "To": args["to"], "From": args["from_"], "Timeout": args["timeout"], "Twiml": args["twiml"]})

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        cfg = self._config.cfg
        await load_twilio()
        client, from_number = self._twilio(), cfg.channels.voice.from_number
        if client is None or not from_number:
            result = DeliveryResult.permanent(
                "voice is not configured (channels.voice.account_sid, auth_token, from_number)")
            return log_result(log, envelope, result, started=started)
        if not E164.match(envelope.address):
            return log_result(log, envelope, DeliveryResult.permanent("not an E.164 phone number"),
                              started=started)
        call_args = self.call_args(envelope)
        result = await twilio_attempt(
            lambda: client.calls.create_async(**call_args),
            timeout=attempt_timeout(cfg, self.channel),
            done=lambda call: DeliveryResult.ok(f"call {call.sid} {call.status}", 201))
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""


# --- inbound: the digit the person pressed --------------------------------------------------------------
