"""A loopback PagerDuty Events API v2: `POST /v2/enqueue` with trigger/acknowledge/resolve, validated as
PagerDuty does (400 `{"status": "invalid event", "message": ..., "errors": [...]}`), 202 on success, and the
alert state per dedup_key so a test can check the whole sequence."""
from __future__ import annotations

import json
from typing import Any

from tests.stand_ins.http import HttpStandIn, Recorded, Reply

PATH = "/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")


class PagerDutyStandIn:
    def __init__(self, peer: HttpStandIn, *, routing_keys: tuple[str, ...] = ("R0UTINGKEY0000000000000000000001",)
                 ) -> None:
        self.peer = peer
        self.routing_keys = set(routing_keys)
        self.alerts: dict[str, str] = {}
        """dedup_key -> triggered | acknowledged | resolved."""
        self.events: list[dict[str, Any]] = []
        peer.on(PATH, self._handle)

    @property
    def url(self) -> str:
        return self.peer.url + PATH

    def _invalid(self, *errors: str) -> Reply:
        return Reply(400, {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)})

    def _handle(self, req: Recorded) -> Reply:
        try:
            ev = json.loads(req.body)
        except ValueError:
            return self._invalid("Malformed JSON")
        if not isinstance(ev, dict):
            return self._invalid("Event must be a JSON object")
        errors = []
        if ev.get("routing_key") not in self.routing_keys:
            errors.append("'routing_key' is invalid")
        action = ev.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        if action in ("acknowledge", "resolve") and not ev.get("dedup_key"):
            errors.append("'dedup_key' is missing")
        if action == "trigger":
            p = ev.get("payload") or {}
            for key in ("summary", "source", "severity"):
                if not p.get(key):
                    errors.append(f"'payload.{key}' is missing or blank")
            if p.get("severity") and p["severity"] not in SEVERITIES:
                errors.append("'payload.severity' is invalid")
            if len(str(p.get("summary", ""))) > 1024:
                errors.append("'payload.summary' is too long")
        if errors:
            return self._invalid(*errors)
        key = ev.get("dedup_key") or f"generated-{len(self.events)}"
        self.events.append(ev)
        state = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}[action]
        if action == "trigger" or key in self.alerts:
            self.alerts[key] = state if not (action == "trigger" and self.alerts.get(key) == "acknowledged") \
                else "acknowledged"
        return Reply(202, {"status": "success", "message": "Event processed", "dedup_key": key})
