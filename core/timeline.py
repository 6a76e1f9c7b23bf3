"""An incident's timeline, built once from what the database holds (IncidentStore.detail): thread entries
(declaration, updates, bridges, notes, role changes, acknowledgement, escalations), state changes with the
time spent in the state left, and who was paged on which channel, when it arrived and when they
acknowledged. The console's incident page and the postmortem export (core/appearance/export.py) read the
same entries, so they never disagree."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.clock import utc
from core.config import INCIDENT_ROLES, Config
from core.appearance.vocabulary import fmt_duration, holder_name, kind_label, state_label
from core.incident_store import IncidentDetail
from core.models import Delivery, Incident
from core.rbac import Actor, acting_contacts
from core.routing import NEWS_KINDS

PAGE_PURPOSES = ("page", "escalation", "notice")
"""Deliveries to people and places (not chat card syncs)."""
ENTRY_LABELS = {"STATE": "State", "PAGED": "Paged", "TOLD": "Told"}
"""Timeline lines that are not thread entries: a state change, the pages a thread entry sent (declare,
escalation) and the news or private notices it sent (update, ack, role, ...)."""


@dataclass(frozen=True)
class Entry:
    """One line of the timeline. `kind` is the thread kind (INITIAL, UPDATE, ...), STATE or PAGED."""

    at: datetime
    kind: str
    actor: str
    text: str

    @property
    def label(self) -> str:
        return ENTRY_LABELS.get(self.kind) or kind_label(self.kind)


@dataclass(frozen=True)
class Page:
    """One delivery to a person or destination, and when that person acknowledged the incident."""

    recipient: str
    channel: str
    purpose: str
    """page (wakes people: declare, escalation), news (update, ack, resolve...) or notice (a role's holder)."""
    reason: str
    queued_at: datetime
    delivered_at: datetime | None
    status: str
    attempts: int
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class StateSpan:
    state: str
    start: datetime
    end: datetime | None
    """None while the incident is still in this state (then `spent` runs to `now`)."""
    spent: timedelta


@dataclass
class Timeline:
    incident: Incident
    roles: list[tuple[str, str | None, str | None]]
    """(role, holder identity, holder name) for commander, comms and scribe, None when nobody holds it."""
    entries: list[Entry]
    pages: list[Page]
    states: list[StateSpan]
    now: datetime

    @property
    def time_to_ack(self) -> timedelta | None:
        return self.incident.time_to_ack

    @property
    def time_to_resolve(self) -> timedelta | None:
        return self.incident.time_to_resolve


def _acked_at(cfg: Config, inc: Incident, d: Delivery) -> datetime | None:
    """When this recipient acknowledged: the incident's ack, if the acknowledger is this contact."""
    if not inc.acknowledged_by or not inc.acknowledged_at:
        return None
    if d.recipient in acting_contacts(cfg, inc.acknowledged_by):
        return utc(inc.acknowledged_at)
    return None


def build(cfg: Config, detail: IncidentDetail, now: datetime) -> Timeline:
    """The timeline of `detail`, ordered by time; at equal times a state change comes before the thread
    entry written with it, and the pages after the entry that caused them."""
    inc = detail.incident
    ordered: list[tuple[tuple[datetime, int, int, int], Entry]] = []
    for ch in detail.state_changes:
        spent = (f" after {fmt_duration(ch.seconds_in_previous)} {state_label(ch.from_state).lower()}"
                 if ch.from_state and ch.seconds_in_previous is not None else "")
        text = (f"{state_label(ch.from_state)} -> {state_label(ch.to_state)}{spent}" if ch.from_state
                else state_label(ch.to_state))
        at = utc(ch.at)
        assert at is not None
        ordered.append(((at, 0, ch.id, 0), Entry(at, "STATE", ch.actor, text)))
    pages_by_message: dict[int | None, list[Delivery]] = {}
    for d in detail.deliveries:
        if d.purpose in PAGE_PURPOSES:
            pages_by_message.setdefault(d.message_id, []).append(d)
    for m in detail.thread:
        at = utc(m.created_at)
        assert at is not None
        ordered.append(((at, 1, m.id, 0), Entry(at, m.kind, m.author, m.body)))
        paged = pages_by_message.get(m.id) or []
        if paged:
            who: dict[str, list[str]] = {}
            for d in paged:
                who.setdefault(d.recipient, []).append(d.channel)
            text = ", ".join(f"{r} ({', '.join(chs)})" for r, chs in who.items())
            kind = "TOLD" if m.kind in NEWS_KINDS else "PAGED"
            ordered.append(((at, 1, m.id, 1), Entry(at, kind, "tocsin", text)))
    ordered.sort(key=lambda t: t[0])
    kinds = {m.id: m.kind for m in detail.thread}
    pages = []
    for d in detail.deliveries:
        if d.purpose not in PAGE_PURPOSES:
            continue
        what = d.purpose if d.purpose == "notice" else "news" if kinds.get(d.message_id) in NEWS_KINDS else "page"
        pages.append(Page(d.recipient, d.channel, what, d.reason or "", utc(d.created_at),  # type: ignore[arg-type]
                          utc(d.delivered_at), d.status, d.attempts,
                          _acked_at(cfg, inc, d) if what == "page" else None))
    roles = []
    for role in INCIDENT_ROLES:
        ident = getattr(inc, role)
        roles.append((role, ident, holder_name(ident, inc.role_names, role)))
    return Timeline(inc, roles, [e for _, e in ordered], pages, _spans(detail, now), now)


def _spans(detail: IncidentDetail, now: datetime) -> list[StateSpan]:
    """Each state the incident was in, from its state changes; the last runs to resolve or to `now`."""
    out: list[StateSpan] = []
    changes = detail.state_changes
    for i, ch in enumerate(changes):
        start = utc(ch.at)
        assert start is not None
        end = utc(changes[i + 1].at) if i + 1 < len(changes) else None
        if ch.to_state == "resolved":
            break
        out.append(StateSpan(ch.to_state, start, end, (end or now) - start))
    return out


async def incident_timeline(store: Any, ref: str | int, *, actor: Actor) -> Timeline:
    """The timeline of one incident as `actor` sees it (the VIEW permission, like `status`); `store` is the
    IncidentService (or any IncidentStore)."""
    detail = await store.detail(ref, actor=actor)
    return build(store.cfg, detail, store.clock.now())
