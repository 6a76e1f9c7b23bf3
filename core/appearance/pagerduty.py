"""PagerDuty Events API v2: which event action a page is, and the event body (summary, severity, details)."""
from __future__ import annotations

from typing import Any

from core.appearance.common import headline, page_fields, page_links
from core.appearance.vocabulary import truncate
from core.delivery.message import Notification

PD_SEVERITY: dict[str, str] = {"sev1": "critical", "sev2": "error", "sev3": "warning", "sev4": "info"}
SUMMARY_MAX = 1024
"""PagerDuty rejects a summary longer than 1024 characters."""


def pagerduty_action(n: Notification) -> str:
    """Resolve and ack map to PagerDuty's actions; every other page (declare, update, escalation) is a
    `trigger`, which PagerDuty de-duplicates into the open alert's log by dedup_key."""
    return {"RESOLVED": "resolve", "ACK": "acknowledge"}.get(n.kind.upper(), "trigger")


def pagerduty_dedup_key(n: Notification, fallback: str) -> str:
    """The incident id ties trigger, acknowledge and resolve together; a notice without one uses its key."""
    return n.incident or fallback


def render_pagerduty(n: Notification, *, routing_key: str, dedup_key: str) -> dict[str, Any]:
    action = pagerduty_action(n)
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key}
    if action != "trigger":
        return event  # acknowledge and resolve carry no payload
    links = page_links(n)
    details: dict[str, Any] = {k: v for k, v in page_fields(n)}
    if n.body.strip():
        details["message"] = n.body.strip()
    thread = dict(links).get("Incident")
    if thread:
        details["thread"] = thread
    source = str(n.event.get("source") or "") or "tocsin"
    event["payload"] = {
        "summary": truncate(headline(n), SUMMARY_MAX),
        "source": source,
        "severity": PD_SEVERITY.get(n.severity or "", "warning"),
        "component": n.incident or "",
        "custom_details": details,
    }
    event["client"] = "Tocsin"
    if thread:
        event["client_url"] = thread
    event["links"] = [{"href": url, "text": name} for name, url in links]
    return event
