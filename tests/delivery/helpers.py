"""Builders shared by the delivery tests: a notification, an envelope, a config with loopback endpoints."""
from __future__ import annotations

import itertools
from typing import Any

from core.config import Config
from core.delivery.message import Envelope, Notification

_ids = itertools.count(1)


def notification(**over: Any) -> Notification:
    data: dict[str, Any] = {
        "kind": "INITIAL",
        "title": "Database <primary> down & out",
        "body": "Writes fail since 10:02.\nFailover is *running*.",
        "severity": "sev1",
        "state": "investigating",
        "incident": "INC-12",
        "fields": {"service": "db", "region": "eu-west-1"},
        "links": {"runbook": "https://runbooks.example/db", "evil": "javascript:alert(1)"},
        "ack_url": "https://tocsin.example/ack/tok123",
        "event": {"source": "alertmanager", "labels": {"alertname": "DBDown"}},
    }
    data.update(over)
    return Notification(**data)


def envelope(channel: str, address: str, n: Notification | None = None, *, attempt: int = 1,
             key: str | None = None, recipient: str = "alice") -> Envelope:
    did = next(_ids)
    return Envelope(delivery_id=did, channel=channel, recipient=recipient, address=address,
                    idempotency_key=key or f"inc-12:msg-1:alice:{channel}:{did}", attempt=attempt,
                    notification=n or notification())


def config(**sections: Any) -> Config:
    """A validated Config with a public_url for ack links and Twilio callbacks."""
    data: dict[str, Any] = {"server": {"public_url": "https://tocsin.example"}}
    data.update(sections)
    return Config.model_validate(data)


def retry(timeout: float) -> dict[str, Any]:
    """A channel section with this attempt timeout: short only where a test makes a peer hang, generous
    elsewhere so a busy machine does not turn a healthy answer into a timeout."""
    return {"retry": {"timeout_seconds": timeout}}


HANG_TIMEOUT = 0.4
NORMAL_TIMEOUT = 5.0
