"""When a direct-message page cannot reach a person (they never opened a DM with the bot), page them on the
next channel of their preferences instead, in the transaction that records the failure."""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.config import DM_CHANNELS, Config
from core.delivery.queue import Claimed, NewDelivery, enqueue
from core.models import Delivery
from core.routing import NEWS_KINDS, contact_channels, person_address

log = logging.getLogger("tocsin.worker")


async def page_next_channel(s: AsyncSession, cfg: Config, c: Claimed, *, now: datetime) -> str | None:
    """Queue the page on the first channel after `c.channel` in the contact's preferences that has an
    address; returns that channel, or None (not a DM page, no contact, nothing left). A channel already
    paged for this message counts as used: nothing is queued twice."""
    if c.channel not in DM_CHANNELS or c.purpose not in ("page", "escalation", "notice") or c.message_id is None:
        return None
    contact = cfg.contact(c.recipient)
    if contact is None:
        return None
    news = c.notification.kind in NEWS_KINDS  # a news message falls back along the news list
    chans, _, _ = contact_channels(contact, c.notification.severity, now, news=news)
    after = chans[chans.index(c.channel) + 1:] if c.channel in chans else chans
    for channel in after:
        address = person_address(contact, channel)
        if not address:
            continue
        exists = (await s.execute(select(Delivery.id).where(
            Delivery.message_id == c.message_id, Delivery.recipient == c.recipient,
            Delivery.channel == channel).limit(1))).first()
        if exists is None:
            await enqueue(s, cfg, incident_id=c.incident_id, message_id=c.message_id, now=now,
                          items=[NewDelivery(c.recipient, channel, address, c.notification, c.purpose)])
        log.warning("notify.delivery.fallback", extra={"delivery_id": c.id, "recipient": c.recipient,
                                                      "failed_channel": c.channel, "next_channel": channel,
                                                      "already_paged": exists is not None})
        return channel
    return None
