"""Plain text for people reading a terminal or a chat reply: incident lines, status, `incident show`, outbox.

Two views of the same answers, chosen by the adapter that runs the one dispatcher (bot/dispatch.py):
`CHAT` (one line per incident, the compact status) and `TERMINAL` (the CLI: aligned tables fitted to the
terminal's width, 80 columns when piped, and the full `incident show`). Tables are drawn by rich.

Everything that came from outside (titles, bodies, names) goes through `escape_terminal`, so printing an
incident never prints raw control characters, ANSI escapes or bidi overrides (issue 14 section 6).
"""
from __future__ import annotations

import io
import json
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from core.appearance.email import email_subject, render_text_part
from core.appearance.sms import render_sms
from core.appearance.vocabulary import escape_terminal as clean
from core.appearance.vocabulary import ROLE_LABELS, fmt_duration, holder_name, role_label
from core.appearance.voice import render_voice
from core.clock import utc
from core.delivery.message import Notification
from core.models import Incident

if TYPE_CHECKING:
    from core.incident_store import IncidentDetail, IncidentPage
    from core.reports import Report


def incident_line(inc: Incident, now: datetime | None = None) -> str:
    """`INC-3 [sev2] open 5m00s, acked by cli:bob: Checkout slow` (chat lists and status)."""
    now = now or datetime.now(timezone.utc)
    age = fmt_duration(inc.time_open(now))
    ack = f", acked by {clean(inc.acknowledged_by)}" if inc.acknowledged_by else ""
    return f"{inc.ref} [{inc.severity}] {inc.state} {age}{ack}: {clean(inc.title)}"


def roles_line(inc: Incident) -> str:
    """`Commander: alice · Comms: bob`: every role held, commander first."""
    held = [(role, holder_name(getattr(inc, role), inc.role_names, role)) for role in ROLE_LABELS]
    return " \u00b7 ".join(f"{role_label(role)}: {clean(name)}" for role, name in held if name)


def describe(detail: IncidentDetail, now: datetime | None = None) -> str:
    """A compact status: state, who acked, time to ack/resolve, last messages, delivery counts."""
    inc = detail.incident
    lines = [incident_line(inc, now), roles_line(inc)]
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


def width() -> int:
    """The terminal's columns ($COLUMNS first); 80 when output is not a terminal."""
    return shutil.get_terminal_size((80, 24)).columns


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, wrap: Sequence[str] = (),
          cols: int | None = None) -> str:
    """Aligned columns within `cols` (default: the terminal's width). Columns named in `wrap` fold long
    text onto more lines; the others keep their width. Cells are plain text (no markup is interpreted).
    rich is imported here: chat replies and the server use this module without ever drawing a table."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False, padding=(0, 1, 0, 0))
    for h in headers:  # wrapped columns take the room left; the others keep their width (or end in ...)
        wide = h in wrap
        t.add_column(h, overflow="fold" if wide else "ellipsis", no_wrap=not wide, ratio=1 if wide else None)
    for r in rows:
        t.add_row(*(Text(str(c)) for c in r))
    buf = io.StringIO()
    Console(file=buf, width=cols or width(), color_system=None, force_terminal=False, highlight=False,
            emoji=False, markup=False).print(t)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


def more_line(page: IncidentPage, *, option: str) -> str:
    """`12 more; next page: --offset 25` (the list never stops silently)."""
    nxt = page.offset + len(page.incidents)
    return f"{page.more} more; next page: {option} {nxt}"


def show(detail: IncidentDetail) -> str:
    """`tocsin incident show`: facts, time in each state, the thread and the delivery counts."""
    inc = detail.incident
    out = [f"{inc.ref} [{inc.severity}] {clean(inc.title)}",
           f"  state: {inc.state}   source: {clean(inc.source)}",
           f"  {roles_line(inc)}",
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
    problems = [dl for dl in detail.deliveries if dl.status in ("dead", "failed")]
    if problems:
        out.append("  not delivered:")
        rows = [(dl.status, clean(dl.recipient), dl.channel, str(dl.attempts), clean(dl.last_error or "-"))
                for dl in problems]
        out.extend("    " + line for line in table(("status", "recipient", "channel", "tries", "last error"),
                                                    rows, wrap=("last error",), cols=width() - 4).splitlines())
    return "\n".join(out)


class View(Protocol):
    """How the dispatcher's list and status answers read on one kind of surface."""

    def incident_list(self, page: IncidentPage, now: datetime, *, state: str) -> str: ...

    def status(self, detail: IncidentDetail, now: datetime) -> str: ...


class ChatView:
    """Chat replies: one line per incident and the compact status."""

    def incident_list(self, page: IncidentPage, now: datetime, *, state: str) -> str:
        if not page.incidents:
            return "No open incidents." if state == "open" else "No incidents yet."
        lines = [incident_line(i, now) for i in page.incidents]
        if page.more:
            lines.append(f"... and {page.more} more (the CLI and the console list them all).")
        return "\n".join(lines)

    def status(self, detail: IncidentDetail, now: datetime) -> str:
        return describe(detail, now)


class TerminalView:
    """The CLI: an aligned table fitted to the terminal and the full `incident show`."""

    def incident_list(self, page: IncidentPage, now: datetime, *, state: str) -> str:
        if not page.incidents:
            return "no incidents" if state == "all" else f"no {state} incidents"
        rows = [(i.ref, i.severity, i.state, fmt_duration(i.time_open(now)), clean(i.acknowledged_by or "-"),
                 clean(i.title)) for i in page.incidents]
        out = table(("ID", "SEV", "STATE", "AGE", "ACKED BY", "TITLE"), rows, wrap=("TITLE",))
        return out + ("\n" + more_line(page, option="--offset") if page.more else "")

    def status(self, detail: IncidentDetail, now: datetime) -> str:
        return show(detail)


CHAT = ChatView()
TERMINAL = TerminalView()


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
    request line, headers and JSON body; email headers and both parts; SMS text (SNS `Message`, Twilio `Body`)
    with its encoding and segments; the voice call's TwiML. Values from outside are cleaned of terminal control sequences."""
    if channel == "email":
        head = [f"{k}: {clean(str(v))}" for k, v in data.get("headers", {}).items()]
        return "\n".join([*head, "", "--- text/plain ---", clean(data.get("text", ""), lines=True).rstrip("\n"),
                          "--- text/html ---", clean(data.get("html", ""), lines=True).rstrip("\n")])
    if channel == "sms":
        return "\n".join([
            f"To: {clean(str(data.get('PhoneNumber') or data.get('To') or ''))}",
            f"{data.get('encoding')}, {data.get('segments')} of {data.get('max_segments')} segments, "
            f"{data.get('units')} {'septets' if data.get('encoding') == 'GSM-7' else 'UTF-16 units'}",
            "", clean(str(data.get("Message") or data.get("Body") or ""), lines=True)])
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


def report(r: Report, *, cols: int | None = None) -> str:
    """`tocsin report`: the period, then three tables (incidents by the chosen key with MTTA/MTTR, pages per
    person, delivery success per channel). The console's metrics page shows the same Report."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    out = [f"Report {r.start:%Y-%m-%d %H:%M} to {r.end:%Y-%m-%d %H:%M} UTC, incidents by {r.by}", "",
           "Incidents (MTTA: time to acknowledge, MTTR: to resolve; ESC: escalations)"]
    rows = [(clean(g.key), str(g.incidents), str(g.acknowledged), str(g.resolved), fmt_duration(g.tta.median),
             fmt_duration(g.tta.p90), fmt_duration(g.ttr.median), fmt_duration(g.ttr.p90), str(g.escalations))
            for g in [*r.groups, r.total]]
    out.append(table((r.by.upper(), "OPENED", "ACKED", "RESOLVED", "MTTA MED", "MTTA P90", "MTTR MED",
                      "MTTR P90", "ESC"), rows, wrap=(r.by.upper(),), cols=cols))
    out += ["", f"Pages per person (night: {r.night}, or the contact's quiet hours)",
            "ESC: escalation pages; ON CALL: hours on call by the schedules as configured now",
            "and the period's overrides"]
    if r.people:
        out.append(table(("CONTACT", "PAGES", "NIGHT", "ESC", "INCIDENTS", "ACKED", "ON CALL", "NIGHT WINDOW"),
                         [(clean(p.contact), str(p.pages), str(p.night), str(p.escalation_pages), str(p.incidents),
                           str(p.acknowledged), f"{p.oncall_hours:.0f}h", p.night_window) for p in r.people],
                         wrap=("NIGHT WINDOW",), cols=cols))
    else:
        out.append("  nobody was paged or on call")
    out += ["", "Delivery success per channel"]
    if r.channels:
        out.append(table(("CHANNEL", "DELIVERED", "FAILED", "DEAD", "SUCCESS", "ATTEMPTS", "RETRIES"),
                         [(c.channel, str(c.delivered), str(c.failed), str(c.dead), pct(c.success), str(c.attempts),
                           str(c.retries)) for c in r.channels], cols=cols))
    else:
        out.append("  no deliveries finished")
    return "\n".join(out)
