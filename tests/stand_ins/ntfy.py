"""A loopback ntfy server: JSON publishing (`POST /` with a topic) and header publishing (`POST /<topic>`),
optional access token per topic, answers like ntfy (200 message JSON, 400/401/403 `{"error": ...}`)."""
from __future__ import annotations

import itertools
import json
import time
from typing import Any

from tests.stand_ins.http import HttpStandIn, Recorded, Reply

_ids = itertools.count(1)


class NtfyStandIn:
    """Wraps an HttpStandIn; `messages` holds what ntfy would have shown, per topic, in order."""

    def __init__(self, peer: HttpStandIn, *, tokens: dict[str, str] | None = None, base: str = "") -> None:
        self.peer = peer
        self.base = base.rstrip("/")
        self.tokens = tokens or {}
        """topic -> the bearer token it requires (topics not listed are open)."""
        self.messages: list[dict[str, Any]] = []
        peer.on(f"{self.base}/*", self._handle)

    @property
    def url(self) -> str:
        return self.peer.url + self.base

    def _error(self, status: int, code: int, text: str) -> Reply:
        return Reply(status, {"code": code, "http": status, "error": text})

    def _handle(self, req: Recorded) -> Reply:
        if req.method != "POST":
            return self._error(405, 40500, "method not allowed")
        sub = req.path[len(self.base):].strip("/")
        if sub:  # header publishing: POST /<topic>, body is the message
            msg: dict[str, Any] = {"topic": sub, "message": req.text, "title": req.headers.get("Title"),
                                   "priority": int(req.headers.get("Priority", "3")),
                                   "tags": [t for t in req.headers.get("Tags", "").split(",") if t]}
        else:
            try:
                msg = json.loads(req.body)
            except ValueError:
                return self._error(400, 40024, "invalid request: body must be JSON")
            if not isinstance(msg, dict) or not isinstance(msg.get("topic"), str) or not msg["topic"]:
                return self._error(400, 40009, "invalid request: topic missing")
        prio = msg.get("priority", 3)
        if not isinstance(prio, int) or not 1 <= prio <= 5:
            return self._error(400, 40007, "invalid priority")
        actions = msg.get("actions") or []
        if len(actions) > 3 or any(a.get("action") not in ("view", "http", "broadcast") for a in actions):
            return self._error(400, 40018, "invalid request: actions invalid")
        want = self.tokens.get(msg["topic"])
        if want is not None:
            auth = req.headers.get("Authorization", "")
            if not auth:
                return self._error(403, 40301, "forbidden")
            if auth != f"Bearer {want}":
                return self._error(401, 40101, "unauthorized")
        mid = f"msg{next(_ids)}"
        self.messages.append({**msg, "id": mid})
        return Reply(200, {"id": mid, "time": int(time.time()), "event": "message", "topic": msg["topic"],
                           "message": msg.get("message", "")})
