"""The `sms` channel: SNS or Twilio, chosen at every send from the live `channels.sms.provider`."""
from __future__ import annotations

from typing import ClassVar

import aiohttp

from core.config import ConfigHolder
from core.delivery.base import Delegating, Sender
from core.delivery.sms_sns import SnsSmsSender
from core.delivery.sms_twilio import TwilioSmsSender


class SmsSender(Delegating):
    """Delegates to the configured provider, so switching providers applies on reload."""

    channel: ClassVar[str] = "sms"

    def __init__(self, config: ConfigHolder, *, http: aiohttp.ClientSession) -> None:
        self._config = config
        self.providers: dict[str, Sender] = {"sns": SnsSmsSender(config, http=http),
                                             "twilio": TwilioSmsSender(config, http=http)}

    @property
    def current(self) -> Sender:
        return self.providers[self._config.cfg.channels.sms.provider]

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
