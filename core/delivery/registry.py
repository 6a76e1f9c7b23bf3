"""The explicit channel → sender map, default retry policies, and building the senders from config."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from core.config import CHANNELS, ConfigHolder
from core.delivery.base import Delegating, Sender
from core.delivery.email import EmailSender
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.ntfy import NtfySender
from core.delivery.pagerduty import PagerDutySender
from core.delivery.webpush import WebPushSender
from core.delivery.policy import DEFAULT_RETRY, retry_policy
from core.delivery.slack_webhook import SlackWebhookSender
from core.delivery.sms import SmsSender
from core.delivery.teams_webhook import TeamsWebhookSender
from core.delivery.telegram import TelegramSender
from core.delivery.voice_twilio import TwilioVoiceSender
from core.delivery.webhook import WebhookSender
from core.errors import ConfigError

SENDERS: dict[str, type[Any]] = {
    "email": EmailSender,
    "sms": SmsSender,
    "voice": TwilioVoiceSender,
    "slack_webhook": SlackWebhookSender,
    "teams_webhook": TeamsWebhookSender,
    "webhook": WebhookSender,
    "telegram": TelegramSender,
    "ntfy": NtfySender,
    "pagerduty": PagerDutySender,
    "webpush": WebPushSender,
}
"""Every real channel; "outbox" comes from the outbox_factory given to build_senders."""

__all__ = ["DEFAULT_RETRY", "SENDERS", "OutboxSwitch", "build_senders", "close_senders", "retry_policy"]
# DEFAULT_RETRY and retry_policy live in core.delivery.policy (the worker's single source of truth) and are
# re-exported here.


class OutboxSwitch(Delegating):
    """A real channel that `channels.<channel>.outbox` may point at the outbox: decided at every send from
    the live config, so flipping `outbox: false` after configuring SMTP (or back) applies on reload."""

    def __init__(self, channel: str, *, config: ConfigHolder, real: Sender, outbox: Sender) -> None:
        self.channel = channel
        self.config = config
        self.real = real
        self.outbox = outbox

    @property
    def current(self) -> Sender:
        return self.outbox if getattr(self.config.cfg.channels, self.channel).outbox else self.real

    async def send(self, envelope: Envelope) -> DeliveryResult:
        current = self.current
        if current is self.real:
            return await current.send(envelope)
        # The outbox stores what the real sender would send, built by the real sender's own code; where the
        # real sender would refuse the page (unknown destination), the outbox refuses it the same way.
        wire = self.real.wire(envelope) if hasattr(self.real, "wire") else None
        if isinstance(wire, DeliveryResult):
            return wire
        return await current.send(envelope, wire=wire)  # type: ignore[call-arg]

    async def aclose(self) -> None:
        await self.real.aclose()
        await self.outbox.aclose()


def make_sender(channel: str, config: ConfigHolder, *, http: aiohttp.ClientSession, db: Any = None) -> Sender:
    """The real sender of `channel`; the few that keep state in the database (web push) also get `db`."""
    cls = SENDERS[channel]
    return cls(config, http=http, db=db) if getattr(cls, "needs_db", False) else cls(config, http=http)


def build_senders(config: ConfigHolder, *, http: aiohttp.ClientSession, db: Any = None,
                  outbox_factory: Callable[[str], Sender] | None = None) -> dict[str, Sender]:
    """One sender per channel, each reading the live config at send time. With an `outbox_factory`, every
    real channel can switch to the outbox and back on reload (`channels.<ch>.outbox`).

    Unconfigured real channels are still built: their sends come back `permanent` with a message that
    names the missing setting, so a page is never silently dropped.
    """
    senders: dict[str, Sender] = {}
    missing: list[str] = []
    for channel in CHANNELS:
        if channel == "outbox":
            if outbox_factory is not None:
                senders[channel] = outbox_factory(channel)
            continue
        real = make_sender(channel, config, http=http, db=db)
        if outbox_factory is not None:
            senders[channel] = OutboxSwitch(channel, config=config, real=real, outbox=outbox_factory(channel))
        elif getattr(config.cfg.channels, channel).outbox:
            missing.append(f"channels.{channel}.outbox is true but no outbox sender is available")
        else:
            senders[channel] = real
    if missing:
        raise ConfigError(missing)
    return senders


async def close_senders(senders: dict[str, Sender]) -> None:
    """aclose() every distinct sender once (an outbox factory may hand back one shared instance)."""
    seen: set[int] = set()
    for sender in senders.values():
        if id(sender) not in seen:
            seen.add(id(sender))
            await sender.aclose()
