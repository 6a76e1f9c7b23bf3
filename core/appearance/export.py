"""The timeline and postmortem export of one incident, as Markdown (to paste into a postmortem document)
or JSON (for tools): facts, roles, time in each state, time to acknowledge and resolve, the full timeline,
who was paged on which channel and when they acknowledged, and an empty postmortem skeleton.

`tocsin incident export` and the console's download both render a core.timeline.Timeline through here.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core.appearance.vocabulary import (
    escape_markdown,
    escape_markdown_cell,
    escape_terminal,
    fmt_duration,
    one_line,
    role_label,
    severity_long,
    state_label,
)
from core.clock import utc
from core.errors import InvalidInput
from core.timeline import Timeline

FORMATS = ("md", "json")
POSTMORTEM_SECTIONS = (("impact", "Impact"), ("root_cause", "Root cause"), ("what_went_well", "What went well"),
                       ("action_items", "Action items"))
"""The skeleton's headings, left empty for the people who write the postmortem."""


def _t(dt: datetime | None) -> str:
    return f"{utc(dt):%Y-%m-%d %H:%M:%S} UTC" if dt else "-"


def _iso(dt: datetime | None) -> str | None:
    return utc(dt).isoformat() if dt else None  # type: ignore[union-attr]


def _cell(text: str | None) -> str:
    return escape_markdown_cell(escape_terminal(text or "", lines=True)) or "-"


def filename(tl: Timeline, fmt: str) -> str:
    return f"{tl.incident.ref}-timeline.{fmt}"


def render(tl: Timeline, fmt: str) -> str:
    if fmt == "json":
        return render_json(tl)
    if fmt == "md":
        return render_markdown(tl)
    raise InvalidInput(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")


def render_markdown(tl: Timeline) -> str:
    inc = tl.incident
    tta, ttr = tl.time_to_ack, tl.time_to_resolve
    out = [f"# {inc.ref}: {escape_markdown(one_line(escape_terminal(inc.title)))}", "",
           "| | |", "|---|---|",
           f"| Severity | {severity_long(inc.severity)} |",
           f"| State | {state_label(inc.state)} |",
           f"| Source | {_cell(inc.source)} |",
           f"| Declared | {_t(inc.created_at)} |",
           f"| Acknowledged | {_t(inc.acknowledged_at)}"
           + (f" by {_cell(inc.acknowledged_by)}" if inc.acknowledged_by else "") + " |",
           f"| Resolved | {_t(inc.resolved_at)} |",
           f"| Time to acknowledge | {fmt_duration(tta) if tta is not None else 'not acknowledged'} |",
           f"| Time to resolve | {fmt_duration(ttr) if ttr is not None else 'not resolved'} |"]
    if inc.description and inc.description.strip() != inc.title.strip():
        out += ["", escape_markdown(escape_terminal(inc.description, lines=True))]
    out += ["", "## Roles", ""]
    out += [f"- {role_label(role)}: {_cell(name) if name else 'nobody'}" for role, _, name in tl.roles]
    out += ["", "## Time in each state", "", "| State | From | To | Time |", "|---|---|---|---|"]
    out += [f"| {state_label(s.state)} | {_t(s.start)} | {_t(s.end) if s.end else 'still'} | "
            f"{fmt_duration(s.spent)} |" for s in tl.states]
    out += ["", "## Timeline", "", "| Time | What | Who | Details |", "|---|---|---|---|"]
    out += [f"| {_t(e.at)} | {e.label} | {_cell(e.actor)} | {_cell(e.text)} |" for e in tl.entries]
    out += ["", "## Who was paged and told", ""]
    if tl.pages:
        out += ["| Recipient | Channel | As | Why | Queued | Delivered | Status | Acknowledged |",
                "|---|---|---|---|---|---|---|---|"]
        out += [f"| {_cell(p.recipient)} | {p.channel} | {p.purpose} | {_cell(p.reason)} | {_t(p.queued_at)} | "
                f"{_t(p.delivered_at)} | {p.status} | {_t(p.acknowledged_at)} |" for p in tl.pages]
    else:
        out.append("Nobody was paged or told.")
    out += ["", "## Postmortem", ""]
    for key, title in POSTMORTEM_SECTIONS:
        out += [f"### {title}", "", "- [ ] " if key == "action_items" else "_To be written._", ""]
    return "\n".join(out)


def as_dict(tl: Timeline) -> dict[str, Any]:
    inc = tl.incident
    tta, ttr = tl.time_to_ack, tl.time_to_resolve
    return {
        "incident": {"ref": inc.ref, "id": inc.id, "title": inc.title, "description": inc.description or "",
                     "severity": inc.severity, "state": inc.state, "source": inc.source,
                     "declared_at": _iso(inc.created_at), "acknowledged_at": _iso(inc.acknowledged_at),
                     "acknowledged_by": inc.acknowledged_by, "resolved_at": _iso(inc.resolved_at)},
        "roles": {role: ({"identity": ident, "name": name} if ident else None) for role, ident, name in tl.roles},
        "durations": {"time_to_acknowledge_seconds": tta.total_seconds() if tta is not None else None,
                      "time_to_resolve_seconds": ttr.total_seconds() if ttr is not None else None},
        "states": [{"state": s.state, "from": _iso(s.start), "to": _iso(s.end),
                    "seconds": s.spent.total_seconds()} for s in tl.states],
        "timeline": [{"at": _iso(e.at), "kind": e.kind, "label": e.label, "actor": e.actor, "text": e.text}
                     for e in tl.entries],
        "pages": [{"recipient": p.recipient, "channel": p.channel, "purpose": p.purpose, "reason": p.reason,
                   "queued_at": _iso(p.queued_at), "delivered_at": _iso(p.delivered_at), "status": p.status,
                   "attempts": p.attempts, "acknowledged_at": _iso(p.acknowledged_at)} for p in tl.pages],
        "postmortem": {key: ([] if key == "action_items" else "") for key, _ in POSTMORTEM_SECTIONS},
        "exported_at": _iso(tl.now),
    }


def render_json(tl: Timeline) -> str:
    return json.dumps(as_dict(tl), indent=2, ensure_ascii=False) + "\n"
