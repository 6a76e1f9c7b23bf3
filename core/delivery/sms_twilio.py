"""SMS sender, Twilio provider: one Messages.json request per attempt (`api_url` points tests at a stand-in)."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp

from core.appearance.common import headline
from core.appearance.sms import render_sms, sms_info
from core.config import ConfigHolder, SmsChannel
from core.delivery.base import Wire
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.sms_sns import E164
from core.delivery.transport import attempt_timeout, log_result
from core.delivery.twilio_rest import TwilioClients, load_twilio, twilio_attempt

if TYPE_CHECKING:
    from twilio.rest import Client

log = logging.getLogger(__name__)


class TwilioSmsSender:
    """Twilio Messaging; the text fits `max_segments` like every SMS page (same renderer as SNS)."""

    channel: ClassVar[str] = "sms"
    rate_per_second: ClassVar[float | None] = 1.0
    """Twilio's default for a long code (a Messaging Service or short code sends faster)."""

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession) -> None:
        self._config = config
        """channels.sms is read at send time; the client is rebuilt when a reload changes its credentials."""
        self._clients = TwilioClients(http)

    @property
    def _c(self) -> SmsChannel:
        return self._config.cfg.channels.sms

    def _twilio(self) -> Client | None:
        c = self._c
        return self._clients.get(account_sid=c.account_sid,
                                 auth_token=c.auth_token.get_secret_value() if c.auth_token else "",
                                 api_url=c.api_url, timeout=attempt_timeout(self._config.cfg, self.channel))

    def create_args(self, envelope: Envelope) -> dict[str, Any]:
        """The Messages.create arguments `send` passes (Twilio posts them as To, Body, From or
        MessagingServiceSid)."""
        c = self._c
        sender = ({"messaging_service_sid": c.messaging_service_sid} if c.messaging_service_sid
                  else {"from_": c.from_number})
        return {"to": envelope.address, "body": render_sms(envelope.notification, max_segments=c.max_segments),
                **sender}

    def wire(self, envelope: Envelope) -> Wire:
        """What the outbox shows: the form Twilio receives, with the text's encoding and segments."""
        args = self.create_args(envelope)
        info = sms_info(args["body"])
        sender = ({"MessagingServiceSid": args["messaging_service_sid"]} if "messaging_service_sid" in args
                  else {"From": args["from_"]})
        return Wire(headline(envelope.notification), {
            "To": args["to"], **sender, "Body": args["body"], "encoding": info.encoding,
            "segments": info.segments, "units": info.units, "max_segments": self._c.max_segments})

    async def send(self, envelope: Envelope) -> DeliveryResult:
        started = time.monotonic()
        await load_twilio()
        c, client = self._c, self._twilio()
        if client is None or not (c.from_number or c.messaging_service_sid):
            return log_result(log, envelope, DeliveryResult.permanent(
                "Twilio SMS is not configured (channels.sms.account_sid, auth_token, from_number)"),
                started=started)
        if not E164.match(envelope.address):
            return log_result(log, envelope, DeliveryResult.permanent("not an E.164 phone number"),
                              started=started)
        args = self.create_args(envelope)
        result = await twilio_attempt(
            lambda: client.messages.create_async(**args),
            timeout=attempt_timeout(self._config.cfg, self.channel),
            done=lambda msg: DeliveryResult.ok(f"MessageSid={msg.sid} {msg.status}", 201))
        return log_result(log, envelope, result, started=started)

    async def aclose(self) -> None:
        """Nothing to close: the aiohttp session belongs to the server."""
