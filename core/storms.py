"""Storms page once: a routing rule with `min_occurrences: N` and `within: 10m` lets an inbound event open
an incident only when it is the N-th matching one in the window; the ones before are counted, not paged."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.config import Config, format_duration
from core.models import EventOccurrence
from core.routing import RouteEvent, plan


@dataclass(frozen=True)
class Count:
    rule: str
    seen: int
    needed: int
    within: timedelta

    @property
    def held(self) -> bool:
        return self.seen < self.needed

    def text(self) -> str:
        if self.held:
            return (f"held by rule {self.rule}: {self.seen} of {self.needed} matching events within "
                    f"{format_duration(self.within)}")
        return f"Opened after {self.seen} matching events within {format_duration(self.within)} (rule {self.rule})."


async def occurrence(session: AsyncSession, cfg: Config, event: RouteEvent, *, key: str,
                     now: datetime) -> Count | None:
    """Count this event for the first matched rule with min_occurrences > 1 (None if no such rule). When
    the count is reached, the counted rows go: the next storm starts from zero."""
    if not any(r.min_occurrences > 1 for r in cfg.routing.rules):
        return None
    rule = next((r for r in plan(cfg, event, now=now).matched_rules if r.min_occurrences > 1), None)
    if rule is None or rule.within is None:
        return None
    full = f"{rule.name}:{key}"[:300]
    session.add(EventOccurrence(key=full, at=now))
    await session.flush()
    seen = int((await session.execute(select(func.count()).select_from(EventOccurrence).where(
        EventOccurrence.key == full, EventOccurrence.at > now - rule.within))).scalar_one())
    if seen >= rule.min_occurrences:
        await session.execute(delete(EventOccurrence).where(EventOccurrence.key == full))
    else:
        await session.execute(delete(EventOccurrence).where(EventOccurrence.key == full,
                                                            EventOccurrence.at <= now - rule.within))
    return Count(rule.name, seen, rule.min_occurrences, rule.within)
