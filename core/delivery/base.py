"""The Sender protocol and the one shared classifier of HTTP outcomes."""
from __future__ import annotations

import email.utils
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from core.delivery.message import DeliveryResult, Envelope


@dataclass(frozen=True)
class Wire:
    """What a sender would put on the wire for one envelope, secrets masked: built by the same code that
    sends (each sender's `wire()`), stored by the outbox and shown by `tocsin outbox`."""

    subject: str
    """One line saying what it is (the email subject, or the page headline)."""
    data: dict[str, Any] = field(default_factory=dict)
    """JSON-ready request: method, url, headers, body (webhooks, chat); subject and parts (email); ..."""


class Sender(Protocol):
    """One channel. Channel limits are data on the class; `send` classifies, the worker retries."""

    channel: ClassVar[str]
    rate_per_second: ClassVar[float | None]

    async def send(self, envelope: Envelope) -> DeliveryResult: ...

    async def aclose(self) -> None: ...


class Delegating(ABC):
    """A channel whose real sender is chosen at every send from the live config (outbox switch, SMS
    provider): subclasses say which one is `current`."""

    @property
    @abstractmethod
    def current(self) -> Sender:
        """The sender this send goes through."""

    @property
    def rate_per_second(self) -> float | None:
        return getattr(self.current, "rate_per_second", None)

    async def send(self, envelope: Envelope) -> DeliveryResult:
        return await self.current.send(envelope)

    def wire(self, envelope: Envelope) -> Wire | DeliveryResult | None:
        """What the current sender would send (None if it cannot say)."""
        current = self.current
        return current.wire(envelope) if hasattr(current, "wire") else None  # type: ignore[no-any-return]


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date; return seconds to wait, or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def classify_http(status: int, *, retry_after: str | None = None, summary: str = "") -> DeliveryResult:
    """2xx delivered; 408, 429 and 5xx retry (honouring Retry-After); any other 4xx is permanent."""
    text = f"HTTP {status}" + (f": {summary[:300]}" if summary else "")
    if 200 <= status < 300:
        return DeliveryResult.ok(text, status)
    if status in (408, 429) or status >= 500:
        return DeliveryResult.retry(text, status, parse_retry_after(retry_after))
    return DeliveryResult.permanent(text, status)
