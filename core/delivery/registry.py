"""The explicit channel → sender map, default retry policies, and building the senders from config."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from core.config import CHANNELS, Config
from core.delivery.base import Sender
from core.delivery.email import EmailSender
from core.delivery.policy import DEFAULT_RETRY, retry_policy
from core.delivery.slack_webhook import SlackWebhookSender
from core.delivery.sms_sns import SnsSmsSender
from core.delivery.teams_webhook import TeamsWebhookSender
from core.delivery.telegram import TelegramSender
from core.delivery.voice_twilio import TwilioVoiceSender
from core.delivery.webhook import WebhookSender
from core.errors import ConfigError

SENDERS: dict[str, type[Any]] = {
    "email": EmailSender,
    "sms": SnsSmsSender,
    "voice": TwilioVoiceSender,
    "slack_webhook": SlackWebhookSender,
    "teams_webhook": TeamsWebhookSender,
    "webhook": WebhookSender,
    "telegram": TelegramSender,
}
"""Every real channel; "outbox" comes from the outbox_factory given to build_senders."""

__all__ = ["DEFAULT_RETRY", "SENDERS", "build_senders", "close_senders", "retry_policy"]
# DEFAULT_RETRY and retry_policy live in core.delivery.policy (the worker's single source of truth) and are
# re-exported here.


def build_senders(cfg: Config, *, http: aiohttp.ClientSession,
                  outbox_factory: Callable[[str], Sender] | None = None) -> dict[str, Sender]:
    """One sender per channel. A channel with `outbox: true` gets `outbox_factory(channel)` instead.

    Unconfigured real channels are still built: their sends come back `permanent` with a message that
    names the missing setting, so a page is never silently dropped.
    """
    senders: dict[str, Sender] = {}
    missing: list[str] = []
    for channel in CHANNELS:
        section = getattr(cfg.channels, channel)
        if channel == "outbox" or section.outbox:
            if outbox_factory is None:
                if channel != "outbox":
                    missing.append(f"channels.{channel}.outbox is true but no outbox sender is available")
                continue
            senders[channel] = outbox_factory(channel)
            continue
        senders[channel] = SENDERS[channel](cfg, http=http)
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
