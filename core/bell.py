"""The console bell: a signed-in user's recent pages (to the contacts the console user is: console_user, or
the contact's name or chat.web) and the news of the incidents they follow (core/subscriptions.py), one entry
per message, with an unread count since the user last opened the bell."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import utc
from core.config import Config
from core.db import Database
from core.models import BellRead, Delivery, Incident, IncidentMessage, Subscription
from core.rbac import acting_contacts
from core.subscriptions import row_filter

RECENT = 20
NOT_NEWS = ("REMINDER",)
"""Thread entries followers are not sent (reminders nudge the commander), so the bell leaves them out too."""


def contacts_of(cfg: Config, user: str) -> list[str]:
    """The contacts console user `user` is, by the one identity -> contact mapping (core.rbac)."""
    return sorted(acting_contacts(cfg, f"web:{user}"))


@dataclass(frozen=True)
class Bell:
    unread: int
    items: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"unread": self.unread, "items": self.items}


def _title(ref: str | None, title: str) -> str:
    return (f"{ref}: {title}" if ref and not title.startswith(ref) else title)[:200]


async def followed_incidents(s: AsyncSession, names: list[str]) -> set[int]:
    """Ids of the recent incidents `names` follow: their own subscriptions, plus the newest incidents their
    filters match that were declared after the filter was made."""
    subs = (await s.execute(select(Subscription).where(Subscription.contact.in_(names)))).scalars().all()
    ids = {r.incident_id for r in subs if r.incident_id is not None}
    filters = [r for r in subs if r.incident_id is None]
    if filters:
        conds = []
        for r in filters:  # severity and source narrow in SQL; the tenant (a label) is checked below
            c = [Incident.created_at >= r.created_at]
            if r.severity:
                c.append(Incident.severity == r.severity)
            if r.source:
                c.append(Incident.source == r.source)
            conds.append(and_(*c))
        found = (await s.execute(select(Incident).where(or_(*conds)).order_by(Incident.id.desc())
                                 .limit(RECENT * 5))).scalars().all()
        ids |= {i.id for i in found
                if any(row_filter(r).matches(i) and utc(i.created_at) >= utc(r.created_at) for r in filters)}
    return ids


async def bell(db: Database, cfg: Config, user: str) -> Bell:
    """Pages to the user's contacts and messages of the incidents they follow, newest first; a message
    both paged and followed is one entry (a page sent by email and SMS is one too)."""
    names = contacts_of(cfg, user)
    if not names:
        return Bell(0, [])
    async with db.transaction() as s:
        seen = await s.get(BellRead, user)
        rows = (await s.execute(select(Delivery).where(Delivery.recipient.in_(names),
                                                       Delivery.purpose.in_(("page", "escalation")))
                                .order_by(Delivery.id.desc()).limit(RECENT * 4))).scalars().all()
        followed = await followed_incidents(s, names)
        news: list[tuple[IncidentMessage, Incident]] = []
        if followed:
            news = [(m, i) for m, i in (await s.execute(
                select(IncidentMessage, Incident).join(Incident, Incident.id == IncidentMessage.incident_id)
                .where(IncidentMessage.incident_id.in_(followed), IncidentMessage.kind.not_in(NOT_NEWS))
                .order_by(IncidentMessage.id.desc()).limit(RECENT))).all()]
    seen_at = utc(seen.seen_at) if seen else None
    by_message: dict[int, dict[str, Any]] = {}
    for r in rows:
        key = r.message_id if r.message_id is not None else -r.id
        if key in by_message:
            by_message[key]["channels"].append(r.channel)
            continue
        if len(by_message) >= RECENT:
            continue
        payload = r.notification_json
        ref = f"INC-{r.incident_id}" if r.incident_id else None
        by_message[key] = {"id": r.id, "incident": ref, "incident_id": r.incident_id,
                           "title": _title(ref, str(payload.get("title", ""))), "kind": payload.get("kind"),
                           "severity": payload.get("severity"), "channels": [r.channel], "followed": False,
                           "at": utc(r.created_at)}
    for m, inc in news:
        if m.id in by_message:
            by_message[m.id]["followed"] = True
            continue
        by_message[m.id] = {"id": m.id, "incident": inc.ref, "incident_id": inc.id,
                            "title": _title(inc.ref, inc.title), "kind": m.kind, "severity": inc.severity,
                            "text": m.body[:200], "channels": [], "followed": True, "at": utc(m.created_at)}
    items = [v for _, v in sorted(by_message.items(), key=lambda kv: (kv[1]["at"], kv[0]), reverse=True)][:RECENT]
    for item in items:
        at = item["at"]
        item["unread"] = seen_at is None or (at is not None and at > seen_at)
        item["at"] = at.isoformat() if at else None
    return Bell(sum(1 for i in items if i["unread"]), items)


async def mark_read(db: Database, user: str, *, now: datetime) -> None:
    async with db.transaction() as s:
        row = await s.get(BellRead, user)
        if row is None:
            s.add(BellRead(user=user, seen_at=now))
        else:
            row.seen_at = now
