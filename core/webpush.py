"""Web Push storage: the VAPID key pair (generated on first use, kept in the database, never in config) and
browser subscriptions per console user (added from the console, removed on unsubscribe or a 404/410)."""
from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from core.db import Database
from core.errors import InvalidInput
from core.models import PushSubscription, WebPushKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class VapidKeys:
    private_key: str
    """Raw 32-byte private scalar, base64url (py_vapid's Vapid.from_string reads it)."""
    public_key: str
    """Uncompressed P-256 point, base64url: the browser's applicationServerKey."""


def generate_keys() -> VapidKeys:
    from cryptography.hazmat.primitives import serialization  # only the first start with web push needs it
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)
    return VapidKeys(b64url(raw), b64url(public))


async def vapid_keys(db: Database, *, now: datetime) -> VapidKeys:
    """The one key pair: read it, or create it on first use (two processes racing: the first insert wins)."""
    async with db.transaction() as s:
        row = await s.get(WebPushKey, 1)
        if row is not None:
            return VapidKeys(row.private_key, row.public_key)
    fresh = generate_keys()
    try:
        async with db.transaction() as s:
            s.add(WebPushKey(id=1, private_key=fresh.private_key, public_key=fresh.public_key, created_at=now))
        return fresh
    except IntegrityError:
        async with db.transaction() as s:
            row = await s.get(WebPushKey, 1)
            assert row is not None
            return VapidKeys(row.private_key, row.public_key)


def _check_key(value: object, name: str, size: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"keys.{name} is missing")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise InvalidInput(f"keys.{name} is not base64url") from None
    if len(raw) != size:
        raise InvalidInput(f"keys.{name} must be {size} bytes")
    return value


async def subscribe(db: Database, *, user: str, subscription: dict[str, object], user_agent: str,
                    now: datetime) -> int:
    """Store a browser's PushSubscription JSON for `user` (the same endpoint again moves it to `user`)."""
    endpoint = subscription.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")) or len(endpoint) > 1000:
        raise InvalidInput("endpoint must be the push service's URL")
    keys = subscription.get("keys")
    if not isinstance(keys, dict):
        raise InvalidInput("keys is missing")
    p256dh = _check_key(keys.get("p256dh"), "p256dh", 65)
    auth = _check_key(keys.get("auth"), "auth", 16)
    async with db.transaction() as s:
        await s.execute(delete(PushSubscription).where(PushSubscription.endpoint == endpoint))
        row = PushSubscription(user=user, endpoint=endpoint, p256dh=p256dh, auth=auth,
                               user_agent=user_agent[:300], created_at=now)
        s.add(row)
        await s.flush()
        return row.id


async def unsubscribe(db: Database, *, user: str, endpoint: str) -> bool:
    async with db.transaction() as s:
        res = await s.execute(delete(PushSubscription).where(PushSubscription.user == user,
                                                             PushSubscription.endpoint == endpoint))
        return bool(getattr(res, "rowcount", 0))


async def subscriptions(db: Database, user: str) -> list[PushSubscription]:
    async with db.transaction() as s:
        return list((await s.execute(select(PushSubscription).where(PushSubscription.user == user)
                                     .order_by(PushSubscription.id))).scalars().all())


async def forget(db: Database, sub_id: int) -> None:
    """The push service said the subscription is gone (404/410): never send to it again."""
    async with db.transaction() as s:
        await s.execute(delete(PushSubscription).where(PushSubscription.id == sub_id))
