"""Signed, single-use, expiring ack links (`/ack/<token>`): a paged contact acknowledges without an account.

The token names one delivery (message id, channel, recipient: the delivery's idempotency key) and the contact
it was sent to, and carries its expiry; an HMAC-SHA256 tag under `server.ack_link_secret` makes it
unforgeable. Nothing is stored when a link is made; its one use is stored (ack_link_uses, by the token's
hash) in the same transaction as the acknowledgement, so a second click, a replay or a race is refused.
Checking a link (the confirmation page) never writes.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import utc
from core.delivery.queue import idempotency_key
from core.errors import Forbidden, InvalidTransition, NotFound
from core.models import AckLinkUse, Delivery, Incident
from core.rbac import Actor

if TYPE_CHECKING:
    from core.config import Config


class AckService(Protocol):
    """What redeeming a link needs of IncidentService (a protocol: core.incidents imports this module)."""

    cfg: Config
    db: Any
    clock: Any
    events: Any

    async def acknowledge(self, ref: str | int, *, actor: Actor,
                          session: AsyncSession | None = None) -> Any: ...

ACK_PATH = "/ack/"
LINK_CHANNELS = frozenset({"email", "sms", "telegram", "ntfy", "webpush"})
"""Channels a person reads a link in (voice acks by pressing 1; chat webhooks reach whole channels)."""
_TAG = b"tocsin-ack-link-v1|"
_TAG_BYTES = 16
"""A 128-bit tag: unforgeable, and short enough to keep an SMS within its segment budget."""
SOURCE = "ack_link"

Status = Literal["ok", "acknowledged", "already_acknowledged", "used", "expired", "forged", "unknown",
                 "resolved", "refused"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(cfg: Config) -> bytes | None:
    secret = cfg.server.ack_link_secret
    value = secret.get_secret_value() if secret is not None else ""
    return value.encode("utf-8") if value else None


@dataclass(frozen=True)
class AckClaim:
    """What a verified token says: which delivery, which contact, until when."""

    message_id: int
    channel: str
    contact: str
    expires: int
    """Unix seconds."""

    @property
    def delivery_key(self) -> str:
        return idempotency_key(message_id=self.message_id, recipient=self.contact, channel=self.channel)


def make_token(key: bytes, claim: AckClaim) -> str:
    payload = f"{claim.message_id}.{claim.channel}.{claim.expires}.{claim.contact}".encode()
    tag = hmac.new(key, _TAG + payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return f"{_b64(payload)}.{_b64(tag)}"


def read_token(key: bytes, token: str) -> AckClaim | None:
    """The claim of a token we signed, or None (malformed, tampered with, or signed with another key)."""
    if len(token) > 1024:
        return None
    body, _, tag = token.partition(".")
    try:
        payload, got = _unb64(body), _unb64(tag)
    except (ValueError, TypeError):
        return None
    want = hmac.new(key, _TAG + payload, hashlib.sha256).digest()[:_TAG_BYTES]
    if not hmac.compare_digest(want, got):
        return None
    try:
        message_id, channel, expires, contact = payload.decode("utf-8").split(".", 3)
        return AckClaim(int(message_id), channel, contact, int(expires))
    except ValueError:
        return None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def ack_link(cfg: Config, *, message_id: int, channel: str, recipient: str, now: datetime) -> str | None:
    """The signed link for one page to one contact, or None where no such link applies (no secret set, a
    channel without links, a destination rather than a person): the page keeps the console link then."""
    key = _key(cfg)
    # destination() is indexed (contact() is a scan, too slow for a 20,000-person fan-out); a planned
    # recipient that is not a destination is a contact.
    if key is None or channel not in LINK_CHANNELS or cfg.destination(recipient) is not None:
        return None
    expires = int((now + timedelta(hours=cfg.server.ack_link_hours)).timestamp())
    token = make_token(key, AckClaim(message_id, channel, recipient, expires))
    return f"{cfg.server.public_url.rstrip('/')}{ACK_PATH}{token}"


@dataclass(frozen=True)
class AckAnswer:
    """What the link does or did, in words for the person holding the phone, with the HTTP status."""

    status: Status
    message: str
    http: int
    incident: Incident | None = None
    contact: str | None = None


def _answer(status: Status, message: str, http: int, **kw: object) -> AckAnswer:
    return AckAnswer(status, message, http, **kw)  # type: ignore[arg-type]


def _verify(cfg: Config, token: str, now: datetime) -> AckClaim | AckAnswer:
    key = _key(cfg)
    claim = read_token(key, token) if key else None
    if claim is None:
        return _answer("forged", "This acknowledge link is not valid. Use the newest page or the console.", 403)
    if now.timestamp() >= claim.expires:
        return _answer("expired", "This acknowledge link has expired. Use the newest page or the console.", 410)
    return claim


async def _target(s: AsyncSession, claim: AckClaim, token: str) -> tuple[Delivery, Incident] | AckAnswer:
    d = (await s.execute(select(Delivery).where(Delivery.idempotency_key == claim.delivery_key))).scalars().first()
    if d is None or d.recipient != claim.contact or d.incident_id is None:
        return _answer("unknown", "This acknowledge link belongs to no page.", 404)
    used = (await s.execute(select(AckLinkUse).where(AckLinkUse.token_hash == token_hash(token)))).scalars().first()
    inc = await s.get(Incident, d.incident_id)
    assert inc is not None
    if used is not None:
        return _answer("used", f"This link was already used at {utc(used.used_at):%Y-%m-%d %H:%M} UTC. "
                               f"{_state_sentence(inc)}", 409, incident=inc, contact=d.recipient)
    return d, inc


def _state_sentence(inc: Incident) -> str:
    if inc.state == "resolved":
        return f"{inc.ref} is resolved."
    if inc.acknowledged_at is not None:
        return f"{inc.ref} was acknowledged by {inc.acknowledged_by}."
    return f"{inc.ref} is not acknowledged yet."


async def check(service: AckService, token: str) -> AckAnswer:
    """What a click on the link would do (the confirmation page). Reads only: a GET never acknowledges."""
    now = service.clock.now()
    claim = _verify(service.cfg, token, now)
    if isinstance(claim, AckAnswer):
        return claim
    async with service.db.sessions() as s:
        found = await _target(s, claim, token)
    if isinstance(found, AckAnswer):
        return found
    _, inc = found
    if inc.state == "resolved":
        return _answer("resolved", f"{inc.ref} is already resolved; nothing to acknowledge.", 409, incident=inc)
    if inc.acknowledged_at is not None:
        return _answer("already_acknowledged", _state_sentence(inc), 200, incident=inc, contact=claim.contact)
    return _answer("ok", f"Acknowledge {inc.ref} as {claim.contact}?", 200, incident=inc, contact=claim.contact)


async def redeem(service: AckService, token: str) -> AckAnswer:
    """Use the link: acknowledge as its contact (audited as `contact:<name>`, source ack_link) and record
    the use, in one transaction. A second use, an expired or forged link, or a resolved incident is refused."""
    now = service.clock.now()
    claim = _verify(service.cfg, token, now)
    if isinstance(claim, AckAnswer):
        return claim
    session = None
    try:
        async with service.db.transaction() as s:
            session = s
            found = await _target(s, claim, token)
            if isinstance(found, AckAnswer):
                return found
            d, inc = found
            actor = Actor(f"contact:{claim.contact}", SOURCE, claim.contact)
            out = await service.acknowledge(inc.id, actor=actor, session=s)
            s.add(AckLinkUse(token_hash=token_hash(token), delivery_id=d.id, contact=claim.contact,
                             incident_id=inc.id, used_at=now,
                             outcome="acknowledged" if out.changed else "already_acknowledged"))
            await s.flush()
    except IntegrityError:  # the same link clicked twice at once: the other click won
        return _answer("used", "This link was already used.", 409)
    except InvalidTransition as exc:
        return _answer("resolved", str(exc), 409)
    except (Forbidden, NotFound) as exc:
        return _answer("refused", str(exc), 403)
    await service.events.publish_pending(session)
    inc = out.incident
    assert inc is not None
    if not out.changed:
        return _answer("already_acknowledged", _state_sentence(inc), 200, incident=inc, contact=claim.contact)
    return _answer("acknowledged", f"{inc.ref} is acknowledged by {claim.contact}. Thank you.", 200,
                   incident=inc, contact=claim.contact)
