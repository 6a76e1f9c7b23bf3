"""The incident event bus: who hears about a committed incident change (chat surfaces, the console's live
board, the worker's wake-up, the escalation timer, metrics). Nobody hears of a change that may still roll
back, and a failing subscriber never undoes or hides a committed one."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("tocsin.incidents")

_PENDING = "tocsin.pending_events"


@dataclass(frozen=True)
class IncidentEvent:
    """One committed incident change (or one-time notification)."""

    kind: str
    incident_id: int | None
    message_id: int | None
    actor: str
    deliveries: int = 0
    state: str | None = None
    previous_state: str | None = None
    stop_paging: bool = False
    """The change cancelled the incident's queued escalation pages: whoever holds claimed, unsent ones
    (the delivery worker) must not send them either."""
    fresh: bool = False
    """A declare: nobody could have changed the new incident before this event, so `state` and
    `next_escalation_at` are its committed row (unacknowledged) and the escalation schedule takes them as
    they are instead of re-reading the row."""
    next_escalation_at: datetime | None = None


Listener = Callable[[IncidentEvent], Awaitable[None] | None]


class EventBus:
    """Subscribe/unsubscribe plus publish-after-commit. Listeners may be sync or async."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Idempotent: subscribing the same listener twice still calls it once per event."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Idempotent: unsubscribing a listener that is not subscribed is fine (shutdown paths)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def subscribed(self, listener: Listener) -> bool:
        return listener in self._listeners

    async def emit(self, session: AsyncSession | None, event: IncidentEvent) -> None:
        """Publish now, or, inside a caller's transaction, hold the event until the caller has committed
        and calls publish_pending()."""
        if session is None:
            await self.publish(event)
        else:
            session.info.setdefault(_PENDING, []).append(event)

    async def publish_pending(self, session: AsyncSession) -> None:
        """After committing a session passed to the service as `session=`: tell listeners what it changed."""
        for event in session.info.pop(_PENDING, []):
            await self.publish(event)

    async def publish(self, event: IncidentEvent) -> None:
        for listener in list(self._listeners):
            try:
                res = listener(event)
                if res is not None:
                    await res
            except Exception:  # a listener must never undo or hide a committed change
                log.exception("incident.listener.failed", extra={"event": event.kind})
