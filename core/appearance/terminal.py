"""Plain text for people reading a terminal or a chat reply: incident lines, status, `incident show`, outbox.

Everything that came from outside (titles, bodies, names) goes through `escape_terminal`, so printing an
incident never prints raw control characters, ANSI escapes or bidi overrides (issue 14 section 6).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from core.appearance.email import email_subject, render_text_part
from core.appearance.sms import render_sms
from core.appearance.vocabulary import escape_terminal as clean
from core.appearance.vocabulary import fmt_duration
from core.appearance.voice import render_voice
from core.clock import utc
from core.delivery.message import Notification
from core.models import Incident

if TYPE_CHECKING:
    from core.incidents import IncidentDetail


def incident_line(inc: Incident, now: datetime | None = None) -> str:
    """`INC-3 [sev2] open 5m00s, acked by cli:bob: Checkout slow` (chat lists and status)."""
    now = now or datetime.now(timezone.utc)
    age = fmt_duration(inc.time_open(now))
    ack = f", acked by {clean(inc.acknowledged_by)}" if inc.acknowledged_by else ""
    return f"{inc.ref} [{inc.severity}] {inc.state} {age}{ack}: {clean(inc.title)}"


def describe(detail: IncidentDetail, now: datetime | None = None) -> str:
    """A compact status: state, who acked, time to ack/resolve, last messages, delivery counts."""
    inc = detail.incident
    lines = [incident_line(inc, now), f"Commander: {clean(inc.commander)}"]
    if inc.acknowledged_at:
        lines.append(f"Acknowledged by {clean(inc.acknowledged_by or '')} after {fmt_duration(inc.time_to_ack)}")
    if inc.resolved_at:
        lines.append(f"Resolved after {fmt_duration(inc.time_to_resolve)}")
    if inc.escalation_policy and inc.state == "open":
        lines.append(f"Escalation: {clean(inc.escalation_policy)}, level {inc.escalation_level}")
    for m in detail.thread[-5:]:
        lines.append(f"  {utc(m.created_at):%H:%M} {m.kind}: {clean(m.body[:200])}")
    counts: dict[str, int] = {}
    for d in detail.deliveries:
        if d.purpose != "surface":
            counts[d.status] = counts.get(d.status, 0) + 1
    if counts:
        lines.append("Pages: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


def table_row(inc: Incident, now: datetime) -> str:
    """One row of `tocsin incident list`."""
    ack = clean(inc.acknowledged_by or "-")
    age = fmt_duration(inc.time_open(now))
    return f"{inc.ref:<9} {inc.severity:<5} {inc.state:<11} {age:>8}  ack:{ack:<22} {clean(inc.title)}"


def show(detail: IncidentDetail) -> str:
    """`tocsin incident show`: facts, time in each state, the thread and the delivery counts."""
    inc = detail.incident
    out = [f"{inc.ref} [{inc.severity}] {clean(inc.title)}",
           f"  state: {inc.state}   commander: {clean(inc.commander)}   source: {clean(inc.source)}",
           f"  opened: {utc(inc.created_at):%Y-%m-%d %H:%M:%S} UTC"]
    if inc.acknowledged_at:
        out.append(f"  acknowledged by {clean(inc.acknowledged_by or '')} after {fmt_duration(inc.time_to_ack)}")
    if inc.resolved_at:
        out.append(f"  resolved after {fmt_duration(inc.time_to_resolve)}")
    if inc.escalation_policy:
        nxt = utc(inc.next_escalation_at)
        out.append(f"  escalation: {clean(inc.escalation_policy)}, level {inc.escalation_level}"
                   + (f", next at {nxt:%H:%M:%S} UTC" if nxt else ""))
    out.append("  time in state:")
    for ch in detail.state_changes:
        spent = f" after {fmt_duration(ch.seconds_in_previous)} {ch.from_state}" if ch.from_state else ""
        out.append(f"    {utc(ch.at):%H:%M:%S} -> {ch.to_state}{spent} ({clean(ch.actor)})")
    out.append("  thread:")
    for m in detail.thread:
        out.append(f"    {utc(m.created_at):%H:%M:%S} {m.kind:<10} {clean(m.author):<20} {clean(m.body)}")
    counts: dict[str, int] = {}
    for dl in detail.deliveries:
        counts[dl.status] = counts.get(dl.status, 0) + 1
    out.append("  deliveries: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    return "\n".join(out)


def render_text(channel: str, notification: Notification) -> tuple[str, str]:
    """(subject, body) as plain text: what the outbox stores and a person would read for that channel."""
    subject = email_subject(notification)
    if channel == "sms":
        return subject, render_sms(notification)
    if channel == "voice":
        return subject, render_voice(notification)
    return subject, render_text_part(notification)


def wire_text(channel: str, data: dict[str, Any]) -> str:
    """What a real sender would send (core.delivery.base.Wire.data), laid out for `tocsin outbox`: the HTTP
    request line, headers and JSON body; email headers and both parts; SMS text with its encoding and
    segments; the voice call's TwiML. Values from outside are cleaned of terminal control sequences."""
    if channel == "email":
        head = [f"{k}: {clean(str(v))}" for k, v in data.get("headers", {}).items()]
        return "\n".join([*head, "", "--- text/plain ---", clean(data.get("text", ""), lines=True).rstrip("\n"),
                          "--- text/html ---", clean(data.get("html", ""), lines=True).rstrip("\n")])
    if channel == "sms":
        return "\n".join([
            f"To: {clean(str(data.get('PhoneNumber', '')))}",
            f"{data.get('encoding')}, {data.get('segments')} of {data.get('max_segments')} segments, "
            f"{data.get('units')} {'septets' if data.get('encoding') == 'GSM-7' else 'UTF-16 units'}",
            "", clean(str(data.get("Message", "")), lines=True)])
    if channel == "voice":
        return "\n".join([f"To: {clean(str(data.get('To', '')))}", f"From: {clean(str(data.get('From') or '-'))}",
                          f"Timeout: {data.get('Timeout')}", "", clean(str(data.get("Twiml", "")), lines=True)])
    if "method" in data:
        lines = [f"{data['method']} {clean(str(data.get('url', '')))}"]
        lines += [f"{k}: {clean(str(v))}" for k, v in data.get("headers", {}).items()]
        lines += ["", clean(json.dumps(data.get("body"), ensure_ascii=False, indent=2), lines=True)]
        body = data.get("body")
        if channel == "telegram" and isinstance(body, dict) and isinstance(body.get("text"), str):
            lines += ["", "--- text (HTML) ---", clean(body["text"], lines=True)]
        return "\n".join(lines)
    return clean(json.dumps(data, ensure_ascii=False, indent=2), lines=True)
