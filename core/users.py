"""Local console users: argon2 password hashes in the database, every sign-in attempt audited."""
from __future__ import annotations

import asyncio
import logging
import re
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from core.audit.log import AuditLog
from core.clock import Clock
from core.config import ConfigHolder
from core.roles import ROLES
from core.db import Database
from core.errors import InvalidInput
from core.models import User
from core.rbac import Actor, Permission, require

log = logging.getLogger("tocsin.users")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")
_hasher = PasswordHasher()


@cache
def _dummy() -> str:
    """Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
    Made at the first sign-in, not at import: hashing costs 150 ms, and every CLI command imports this."""
    return _hasher.hash("not a real password")


def _verify(password_hash: str | None, password: str) -> bool:
    """In a worker thread: argon2 (and the first dummy hash, 150 ms) never runs on the event loop."""
    return _hasher.verify(password_hash if password_hash is not None else _dummy(), password)


class UserService:
    """Create users and check passwords. Identities of console users are `web:<name>`."""

    def __init__(self, db: Database, audit: AuditLog, clock: Clock, config: ConfigHolder) -> None:
        self.db = db
        self.audit = audit
        self.clock = clock
        self.config = config

    async def add(self, *, name: str, role: str, password: str, actor: Actor) -> User:
        """A console user; only who may manage settings may add one (checked here, for every adapter)."""
        require(self.config.cfg, actor, Permission.MANAGE_SETTINGS)
        if not _NAME.match(name):
            raise InvalidInput("user names are 1-100 letters, digits, or _ . @ -")
        role = role.lower()
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise InvalidInput("passwords need at least 8 characters")
        now = self.clock.now()
        async with self.db.transaction() as s:
            if (await s.execute(select(User).where(User.name == name))).scalars().first():
                raise InvalidInput(f"user {name!r} already exists")
            # argon2 is deliberately slow (tens of ms): keep it off the event loop.
            user = User(name=name, role=role, password_hash=await asyncio.to_thread(_hasher.hash, password),
                        created_at=now)
            s.add(user)
            await s.flush()
            await self.audit.append(s, actor=actor.identity, source=actor.source or "cli", action="user.add",
                                    resource=f"web:{name}",
                                    details={"role": role}, now=now)
        return user

    async def authenticate(self, *, name: str, password: str, source: str) -> User | None:
        """The user when the password matches, else None. Both outcomes are audited."""
        async with self.db.sessions() as s:
            user = (await s.execute(select(User).where(User.name == name))).scalars().first()
        ok = False
        try:
            ok = await asyncio.to_thread(_verify, user.password_hash if user else None, password)
            ok = ok and user is not None
        except (VerificationError, InvalidHashError):
            ok = False
        now = self.clock.now()
        async with self.db.transaction() as s:
            await self.audit.append(s, actor=f"web:{name[:100]}", source=source,
                                    action="login.success" if ok else "login.failure", resource="console",
                                    details={} if ok else {"reason": "bad name or password"}, now=now)
        log.info("console.login", extra={"user": name[:100], "ok": ok, "source": source})
        return user if ok else None

    async def role_of(self, name: str) -> str | None:
        async with self.db.sessions() as s:
            return (await s.execute(select(User.role).where(User.name == name))).scalars().first()
