"""Two-way SMS: a paged person answers the page ("4", "ACK 12", "ACK ALL", "6 12") and we act as them.

Provider-neutral: bot/twilio_mount.py (/twilio/sms) and bot/sns_mount.py (/sns/sms) verify the request
and hand over (number, text, provider message id). The number must be a contact's phone that was paged
(SMS or voice) for the incident; anything else is logged and ignored. The dedup key, the incident
change (through IncidentService, which cancels queued escalation pages) and the one confirmation SMS
commit in one transaction, so a redelivered reply acts once and is answered once."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.appearance.sms import REPLY_KIND
from core.config import Contact
from core.delivery.message import Notification
from core.delivery.queue import NewDelivery, enqueue
from core.delivery.transport import mask_address
from core.errors import TocsinError
from core.incident_store import RESOLVED
from core.incidents import IncidentService
from core.models import Delivery, Incident, IncidentMessage
from core.rbac import Actor
from core.seen import SeenKeys, bounded_key

log = logging.getLogger("tocsin.sms_replies")

PROVIDER_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "START", "YES",
                               "UNSTOP", "HELP", "INFO", "SUBSCRIBE", "OPTOUT", "REVOKE"})
"""Opt-out and help keywords: the provider answers them; they never act on incidents."""

HELP_TEXT = "Reply 4 to ack your newest page, 4 12 to ack INC-12, ACK ALL for all, 6 12 to resolve INC-12."

_REF = r"(?:#|INC-?)?(\d{1,12})"
_GRAMMAR: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:4|ACK)$"), "ack"),
    (re.compile(r"^(?:4|ACK) ALL$"), "ack_all"),
    (re.compile(rf"^(?:4|ACK) {_REF}$"), "ack"),
    (re.compile(rf"^(?:6|RESOLVE) {_REF}$"), "resolve"),
)


@dataclass(frozen=True)
class SmsReply:
    action: Literal["ack", "ack_all", "resolve", "keyword", "unknown"]
    incident: int | None = None


def parse_reply(text: str) -> SmsReply:
    """Case and spacing do not matter, nor a trailing full stop: `ack inc-12.` is `ACK INC-12`."""
    words = " ".join(text.upper().replace("INC- ", "INC-").split()).rstrip(".!")
    if words in PROVIDER_KEYWORDS:
        return SmsReply("keyword")
    for pattern, action in _GRAMMAR:
        m = pattern.match(words)
        if m:
            return SmsReply(action, int(m.group(1)) if m.groups() else None)  # type: ignore[arg-type]
    return SmsReply("unknown")


@dataclass(frozen=True)
class Handled:
    """What a reply did: the confirmation sent back (None: ignored, nothing sent) and why, for logs/tests."""

    confirmation: str | None
    outcome: str


class SmsReplies:
    """Acts on SMS replies; one instance per process (the server builds it for the inbound routes)."""

    def __init__(self, service: IncidentService, seen: SeenKeys) -> None:
        self.service = service
        self.seen = seen

    async def handle(self, *, number: str, text: str, provider: str, message_id: str) -> Handled:
        reply = parse_reply(text)
        extra = {"event": "sms.reply", "provider": provider, "from": mask_address("sms", number),
                 "action": reply.action, "incident": reply.incident}
        if reply.action == "keyword":
            log.info("sms.reply.keyword", extra={**extra, "event": "sms.reply.keyword"})
            return Handled(None, "keyword")
        contact = next((c for c in self.service.cfg.contacts if c.phone == number), None)
        if contact is None:
            log.warning("sms.reply.ignored", extra={**extra, "event": "sms.reply.ignored", "why": "unknown number"})
            return Handled(None, "unknown number")
        db = self.service.db
        try:
            async with db.transaction() as s:
                await self.seen.claim(s, bounded_key("sms", f"{provider}:{message_id}"))
                answer, outcome = await self._act(s, reply, contact, number, source=f"{provider} sms")
                if answer is not None:
                    await self._confirm(s, contact, number, answer)
        except IntegrityError:
            log.info("sms.reply.duplicate", extra={**extra, "event": "sms.reply.duplicate",
                                                   "message_id": message_id})
            return Handled(None, "duplicate")
        await self.service.events.publish_pending(s)
        log.info("sms.reply.handled", extra={**extra, "event": "sms.reply.handled", "outcome": outcome,
                                             "contact": contact.name})
        return Handled(answer, outcome)

    async def _paged_open(self, s: AsyncSession, number: str) -> tuple[list[Incident], bool]:
        """Open incidents paged to this number, newest first; and whether it was ever paged at all."""
        ids = set((await s.execute(select(Delivery.incident_id).where(
            Delivery.address == number, Delivery.channel.in_(("sms", "voice")),
            Delivery.incident_id.is_not(None), Delivery.purpose.in_(("page", "escalation"))).distinct()))
            .scalars().all())
        if not ids:
            return [], False
        rows = (await s.execute(select(Incident).where(Incident.id.in_(ids), Incident.state != RESOLVED)
                                .order_by(Incident.id.desc()))).scalars().all()
        return list(rows), True

    async def _paged_ever(self, s: AsyncSession, number: str, incident_id: int) -> bool:
        return (await s.execute(select(Delivery.id).where(
            Delivery.address == number, Delivery.channel.in_(("sms", "voice")),
            Delivery.incident_id == incident_id, Delivery.purpose.in_(("page", "escalation"))).limit(1))
            ).first() is not None

    async def _act(self, s: AsyncSession, reply: SmsReply, contact: Contact, number: str, *,
                   source: str) -> tuple[str | None, str]:
        actor = Actor(f"sms:{number}", source, contact.name)
        open_paged, ever = await self._paged_open(s, number)
        if not ever:
            return None, "never paged"
        if reply.action == "unknown":
            return HELP_TEXT, "help"
        if reply.incident is not None and not await self._paged_ever(s, number, reply.incident):
            return None, "not paged for that incident"
        if reply.action == "resolve":
            assert reply.incident is not None
            return await self._resolve(s, reply.incident, actor)
        if reply.action == "ack_all":
            targets = [i.id for i in open_paged if i.acknowledged_at is None]
            if not targets:
                return "No unacknowledged incident was paged to this number.", "nothing to ack"
            done = [await self._ack(s, iid, actor) for iid in targets]
            return " ".join(text for text, _ in done), "ack_all"
        iid = reply.incident if reply.incident is not None else (open_paged[0].id if open_paged else None)
        if iid is None:
            return "No open incident was paged to this number.", "nothing to ack"
        return await self._ack(s, iid, actor)

    async def _ack(self, s: AsyncSession, iid: int, actor: Actor) -> tuple[str, str]:
        try:
            out = await self.service.acknowledge(iid, actor=actor, session=s)
        except TocsinError as exc:  # already resolved, forbidden: say why, change nothing
            return f"INC-{iid} not acknowledged: {exc}", exc.code
        if not out.changed:
            return f"INC-{iid} was already acknowledged by {out.incident.acknowledged_by if out.incident else '?'}.", \
                "already acknowledged"
        return f"INC-{iid} acknowledged. Paging stopped.", "acknowledged"

    async def _resolve(self, s: AsyncSession, iid: int, actor: Actor) -> tuple[str, str]:
        try:
            await self.service.resolve(iid, actor=actor, text=f"Resolved by SMS reply from {actor.display}",
                                       session=s)
        except TocsinError as exc:
            return f"INC-{iid} not resolved: {exc}", exc.code
        return f"INC-{iid} resolved. Paging stopped.", "resolved"

    async def _confirm(self, s: AsyncSession, contact: Contact, number: str, answer: str) -> None:
        """The one confirmation SMS, queued with the change (retries, audit, outbox like every SMS)."""
        now = self.service.clock.now()
        msg = IncidentMessage(incident_id=None, kind=REPLY_KIND, body=answer, author="system:tocsin",
                              created_at=now, extra={"to_contact": contact.name})
        s.add(msg)
        await s.flush()
        note = Notification(kind=REPLY_KIND, title=answer)
        await enqueue(s, self.service.cfg, incident_id=None, message_id=msg.id, now=now,
                      items=[NewDelivery(contact.name, "sms", number, note, "reply")])
