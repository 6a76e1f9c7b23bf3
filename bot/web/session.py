"""Signed session cookies with a per-session CSRF token (no server-side session store needed)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "tocsin_session"
LOGIN_COOKIE = "tocsin_login"
"""Holds a random nonce before sign-in; the login form carries its HMAC (a signed double-submit token), so
another site cannot sign a browser in to the attacker's account."""


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    csrf: str
    expires: float


class SessionCodec:
    """value = base64(json) + "." + HMAC-SHA256; tampering or expiry makes it None."""

    def __init__(self, key: bytes, *, hours: float) -> None:
        self.key = key
        self.ttl = hours * 3600

    def issue(self, user: str, role: str) -> tuple[str, Session]:
        sess = Session(user, role, secrets.token_urlsafe(24), time.time() + self.ttl)
        raw = base64.urlsafe_b64encode(json.dumps(sess.__dict__, separators=(",", ":")).encode()).decode()
        return f"{raw}.{self._sign(raw)}", sess

    def read(self, value: str | None) -> Session | None:
        if not value or "." not in value:
            return None
        raw, sig = value.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sign(raw)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(raw.encode()))
            sess = Session(str(data["user"]), str(data["role"]), str(data["csrf"]), float(data["expires"]))
        except (ValueError, KeyError, TypeError):
            return None
        return sess if sess.expires > time.time() else None

    def login_nonce(self) -> str:
        return secrets.token_urlsafe(24)

    def login_csrf(self, nonce: str) -> str:
        """The login form's CSRF token for the nonce in LOGIN_COOKIE."""
        return self._sign("login:" + nonce)

    def login_csrf_ok(self, nonce: str | None, token: str) -> bool:
        return bool(nonce) and hmac.compare_digest(token, self.login_csrf(nonce or ""))

    def _sign(self, raw: str) -> str:
        return hmac.new(self.key, raw.encode(), hashlib.sha256).hexdigest()
