"""The console bell: a signed-in user's recent pages (to the contacts whose `console_user` they are) and the
incidents those pages were about, with an unread count since the user last opened the bell."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from core.clock import utc
from core.config import Config
from core.db import Database
from core.models import BellRead, Delivery

RECENT = 20


def contacts_of(cfg: Config, user: str) -> list[str]:
    return [c.name for c in cfg.contacts if c.console_user == user]


@dataclass(frozen=True)
class Bell:
    unread: int
    items: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"unread": self.unread, "items": self.items}


async def bell(db: Database, cfg: Config, user: str) -> Bell:
    """One entry per message (a page sent by email and SMS is one page), newest first."""
    names = contacts_of(cfg, user)
    if not names:
        return Bell(0, [])
    async with db.transaction() as s:
        seen = await s.get(BellRead, user)
        rows = (await s.execute(select(Delivery).where(Delivery.recipient.in_(names), Delivery.purpose == "page")
                                .order_by(Delivery.id.desc()).limit(RECENT * 4))).scalars().all()
    seen_at = utc(seen.seen_at) if seen else None
    items: list[dict[str, Any]] = []
    by_message: dict[int | None, dict[str, Any]] = {}
    for r in rows:
        key = r.message_id if r.message_id is not None else -r.id
        if key in by_message:
            by_message[key]["channels"].append(r.channel)
            continue
        payload = r.payload or {}
        at = utc(r.created_at)
        ref = f"INC-{r.incident_id}" if r.incident_id else None
        title = str(payload.get("title", ""))
        if ref and not title.startswith(ref):
            title = f"{ref}: {title}"
        item = {"id": r.id, "incident": ref, "incident_id": r.incident_id, "title": title[:200],
                "kind": payload.get("kind"), "severity": payload.get("severity"), "channels": [r.channel],
                "at": at.isoformat() if at else None,
                "unread": seen_at is None or (at is not None and at > seen_at)}
        by_message[key] = item
        items.append(item)
        if len(items) >= RECENT:
            break
    return Bell(sum(1 for i in items if i["unread"]), items)


async def mark_read(db: Database, user: str, *, now: datetime) -> None:
    async with db.transaction() as s:
        row = await s.get(BellRead, user)
        if row is None:
            s.add(BellRead(user=user, seen_at=now))
        else:
            row.seen_at = now
