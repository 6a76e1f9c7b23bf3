"""A loopback Web Push service: decrypts what it receives (RFC 8291 aes128gcm, with the http-ece library and
the subscription keys the test created, as a browser would), checks the VAPID Authorization header, and
answers 201 Created, or 404/410 for subscriptions the test marked gone."""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.stand_ins.http import HttpStandIn, Recorded, Reply


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Browser:
    """One subscribed browser: its keys (only it can decrypt) and what it received."""

    name: str
    endpoint: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))
    received: list[dict[str, Any]] = field(default_factory=list)
    gone: int | None = None
    """404 or 410: the push service says this subscription no longer exists."""

    def subscription(self) -> dict[str, Any]:
        public = self.key.public_key().public_bytes(serialization.Encoding.X962,
                                                    serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "keys": {"p256dh": _b64(public), "auth": _b64(self.auth)}}


class PushService:
    def __init__(self, peer: HttpStandIn) -> None:
        self.peer = peer
        self.browsers: dict[str, Browser] = {}
        peer.on("/push/*", self._handle)

    def browser(self, name: str) -> Browser:
        b = Browser(name, f"{self.peer.url}/push/{name}")
        self.browsers[name] = b
        return b

    def _handle(self, req: Recorded) -> Reply:
        b = self.browsers.get(req.path.rsplit("/", 1)[-1])
        if b is None:
            return Reply(404, "no such subscription")
        if b.gone:
            return Reply(b.gone, "push subscription has unsubscribed or expired.")
        auth = req.headers.get("Authorization", "")
        if not auth.startswith("vapid t=") or ",k=" not in auth.replace(", k=", ",k="):
            return Reply(401, "missing VAPID authorization")
        if req.headers.get("Content-Encoding") != "aes128gcm" or "TTL" not in req.headers:
            return Reply(400, "need Content-Encoding aes128gcm and TTL")
        plain = http_ece.decrypt(req.body, private_key=b.key, auth_secret=b.auth, version="aes128gcm")
        b.received.append(json.loads(plain))
        return Reply(201, None, {"Location": f"{self.peer.url}/msg/{len(b.received)}"})
