"""`tocsin channel test` and `/incident test`: one clearly marked test message through the channel's real
sender (or into the outbox when the channel is in outbox mode, saying so), the provider's answer worded for
the admin, and an audit entry. Nothing is queued: the admin waits for the answer."""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from core.appearance.terminal import render_text
from core.config import CHANNELS, Config, ConfigHolder
from core.delivery.message import DeliveryResult, Envelope, Notification
from core.delivery.policy import retry_policy
from core.delivery.registry import make_sender
from core.delivery.transport import destination_secrets, mask_address, redact
from core.errors import InvalidInput, NotFound
from core.logs import redact_secrets
from core.models import OutboxMessage
from core.rbac import Actor, Permission, require
from core.routing import person_address

if TYPE_CHECKING:
    from core.audit.log import AuditLog
    from core.clock import Clock
    from core.db import Database

log = logging.getLogger("tocsin.channel_test")

TEST_CHANNELS = tuple(c for c in CHANNELS if c != "outbox")


@dataclass(frozen=True)
class ChannelTestResult:
    channel: str
    target: str
    address: str
    """Masked like every log line (phones keep their last 4 digits)."""
    outcome: str
    """delivered | retry | permanent | outbox."""
    summary: str
    status_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("delivered", "outbox")

    def text(self) -> str:
        where = f"{self.channel} test to {self.target} ({self.address})"
        if self.outcome == "outbox":
            return (f"{where}: stored in the outbox, NOT sent: channels.{self.channel}.outbox is true "
                    f"(`tocsin outbox` shows it). {self.summary}")
        if self.outcome == "delivered":
            return f"{where}: accepted by the provider: {self.summary}"
        verdict = "failed, would be retried" if self.outcome == "retry" else "failed"
        return f"{where}: {verdict}: {self.summary}"


def test_notification(channel: str, actor: Actor) -> Notification:
    """Says on every line that it is a test, so nobody mistakes it for a page."""
    who = actor.display or actor.identity
    return Notification(kind="TEST", title=f"TEST message from Tocsin ({channel}) - no action needed",
                        body=f"This is a test of the {channel} channel, sent by {who}. It is not an incident "
                             "and needs no action.", severity="sev4", incident=None,
                        fields={"Channel": channel, "Requested by": who})


def resolve_target(cfg: Config, channel: str, target: str) -> tuple[str, list[str]]:
    """The address the channel sends to for this contact or destination, and secrets to mask."""
    if channel not in TEST_CHANNELS:
        raise InvalidInput(f"unknown channel {channel!r}; channels: {', '.join(TEST_CHANNELS)}")
    dest = cfg.destination(target)
    if dest is not None:
        if dest.channel != channel:
            raise InvalidInput(f"destination {target!r} is a {dest.channel} destination, not {channel}")
        address = {"telegram": dest.chat_id, "email": dest.address}.get(dest.channel) or dest.name
        return address, destination_secrets(dest)
    contact = cfg.contact(target)
    if contact is None:
        raise NotFound(f"no contact or destination named {target!r}")
    address = person_address(contact, channel)
    if not address:
        raise InvalidInput(f"contact {target!r} has no address for {channel}")
    return address, []


class ChannelTests:
    """Sends test messages with a fresh instance of the channel's real sender (the same class the worker
    uses, reading the live config), so a test proves exactly what a page would do."""

    def __init__(self, db: Database, config: ConfigHolder, *, audit: AuditLog, clock: Clock,
                 http: aiohttp.ClientSession) -> None:
        self.db = db
        self.config = config
        self.audit = audit
        self.clock = clock
        self.http = http

    async def run(self, *, actor: Actor, channel: str, target: str) -> ChannelTestResult:
        cfg = self.config.cfg
        require(cfg, actor, Permission.MANAGE_SETTINGS)
        channel = channel.strip().lower()
        address, secrets = resolve_target(cfg, channel, target)
        note = test_notification(channel, actor)
        envelope = Envelope(delivery_id=0, channel=channel, recipient=target, address=address,
                            idempotency_key=f"tocsin-test-{uuid.uuid4().hex}", attempt=1, notification=note)
        outbox = getattr(cfg.channels, channel).outbox
        if outbox:
            result = DeliveryResult("delivered", "")
        else:
            result = await self._send(cfg, envelope)
        summary = redact_secrets(redact(result.summary, secrets))
        masked = mask_address(channel, address) if address != target else address
        out = ChannelTestResult(channel, target, masked, "outbox" if outbox else result.outcome, summary,
                                result.status_code)
        now = self.clock.now()
        async with self.db.transaction() as s:
            if outbox:
                subject, body = render_text(channel, note)
                s.add(OutboxMessage(delivery_id=None, channel=channel, recipient=target, address=address,
                                    subject=subject, body=body, created_at=now))
            await self.audit.append(s, actor=actor.identity, source=actor.source, action="channel.test",
                                    resource=f"{channel}:{target}", now=now,
                                    details={"outcome": out.outcome, "summary": summary,
                                             "status_code": result.status_code, "to": masked})
        log.info("channel.test", extra={"event": "channel.test", "channel": channel, "to": masked,
                                        "outcome": out.outcome, "status_code": result.status_code,
                                        "actor": actor.identity})
        return out

    async def _send(self, cfg: Config, envelope: Envelope) -> DeliveryResult:
        sender = make_sender(envelope.channel, self.config, http=self.http, db=self.db)
        limit = retry_policy(cfg, envelope.channel).timeout_seconds
        try:
            return await asyncio.wait_for(sender.send(envelope), limit)
        except TimeoutError:
            return DeliveryResult.retry(f"no answer within {limit:g}s")
        finally:
            await sender.aclose()
