"""`tocsin report` and the console's metrics page: incidents, time to acknowledge and to resolve (median and
p90), escalations, pages per person (night pages apart) and delivery success per channel over a period.

Every figure is read from the database (incidents, thread entries, deliveries, delivery attempts), never
from logs, so it survives restarts and agrees across processes. The SQL is plain SELECT/GROUP BY that
SQLite and PostgreSQL both run; medians, percentiles and time zones are done here in Python because the
two databases share no percentile function and SQLite has no time zones.
"""
from __future__ import annotations

import csv
import io
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import utc
from core.config import SEVERITIES, Config, parse_duration
from core.db import Database
from core.errors import InvalidInput
from core.models import Delivery, DeliveryAttempt, Incident, IncidentMessage, ScheduleOverride
from core.rbac import acting_contacts
from core.routing import in_daily_window
from core.schedules.rotation import timeline
from core.schedules.service import as_override

GROUPINGS = ("severity", "source", "schedule", "contact")
"""What `--by` may name: how the incident table is split."""
PAGE_KINDS = ("INITIAL", "ESCALATION")
"""Thread entries whose deliveries are pages (updates, acks and resolutions are news, not load)."""
NO_GROUP = {"schedule": "(no schedule)", "contact": "(nobody paged)"}
FINISHED = ("delivered", "failed", "dead")
_SCHEDULE_REASON = re.compile(r"^schedule (.+?): ")
_SINCE = re.compile(r"^\s*\d+(?:\.\d+)?\s*[smhdw]\s*$")


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (a value that really occurred: p90 is the time 90% stayed within); None for
    no data."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(pct / 100 * len(s)) - 1))]


def median(values: Sequence[float]) -> float | None:
    """The middle value (the mean of the two middle ones for an even count); None for no data."""
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Durations:
    """Median and p90 of some durations, in seconds, and how many there were."""

    median: float | None
    p90: float | None
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Durations:
        return cls(median(values), percentile(values, 90), len(values))


@dataclass
class IncidentGroup:
    """One row of the incident table: the incidents declared in the period that share a key."""

    key: str
    incidents: int = 0
    acknowledged: int = 0
    resolved: int = 0
    escalations: int = 0
    """Escalation records (ESCALATION thread entries), manual ones included."""
    escalated: int = 0
    """Incidents escalated at least once."""
    tta: Durations = Durations(None, None, 0)
    ttr: Durations = Durations(None, None, 0)


@dataclass
class PersonLoad:
    """On-call load: pages a contact got in the period (one page per incident message, however many
    channels carried it), how many at night, how many were escalations, over how many incidents; the
    incidents they acknowledged, and their hours on call in the configured schedules."""

    contact: str
    night_window: str
    pages: int = 0
    night: int = 0
    escalation_pages: int = 0
    incidents: int = 0
    acknowledged: int = 0
    oncall_hours: float = 0.0


@dataclass
class ChannelSuccess:
    """Deliveries of the period that reached an end state, per channel, and the tries it took."""

    channel: str
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    attempts: int = 0
    """Tries the delivery log (delivery_attempts) recorded."""
    retries: int = 0
    """Tries after each delivery's first."""

    @property
    def finished(self) -> int:
        return self.delivered + self.failed + self.dead

    @property
    def success(self) -> float | None:
        """Share delivered (0..1) of those finished; None when none finished."""
        return self.delivered / self.finished if self.finished else None


@dataclass
class Report:
    start: datetime
    end: datetime
    by: str
    total: IncidentGroup
    groups: list[IncidentGroup]
    people: list[PersonLoad]
    channels: list[ChannelSuccess]
    night: str = ""
    """The default night window, described (contacts with quiet hours use theirs)."""
    notes: list[str] = field(default_factory=list)


def parse_since(text: str) -> timedelta:
    """`--since` / `?since=`: a positive duration with a unit (`30d`, `12h`, `2w`); InvalidInput otherwise."""
    raw = str(text)
    if not _SINCE.match(raw):
        raise InvalidInput(f"since must be a duration with a unit, like 30d, 12h or 2w (got {raw[:40]!r})")
    span = parse_duration(raw)
    if span <= timedelta(0):
        raise InvalidInput(f"since must be longer than zero (got {raw!r})")
    if span > timedelta(days=3660):
        raise InvalidInput(f"since is at most 3660d, about ten years (got {raw!r})")
    return span


def check_by(by: str) -> str:
    if by not in GROUPINGS:
        raise InvalidInput(f"by must be one of {', '.join(GROUPINGS)} (got {str(by)[:40]!r})")
    return by


@dataclass
class _Page:
    incident_id: int | None
    recipient: str
    kind: str
    at: datetime
    reason: str


async def build(db: Database, cfg: Config, *, now: datetime, since: timedelta, by: str = "severity") -> Report:
    """The report for [now - since, now], incidents split by `by`."""
    check_by(by)
    end = utc(now)
    assert end is not None
    start = end - since
    async with db.sessions() as s:
        incidents = (await s.execute(
            select(Incident.id, Incident.severity, Incident.source, Incident.created_at, Incident.acknowledged_at,
                   Incident.resolved_at, Incident.acknowledged_by)
            .where(Incident.created_at >= start, Incident.created_at <= end).order_by(Incident.id))).all()
        escalations = dict((await s.execute(
            select(IncidentMessage.incident_id, func.count()).join(Incident, Incident.id == IncidentMessage.incident_id)
            .where(IncidentMessage.kind == "ESCALATION", Incident.created_at >= start, Incident.created_at <= end)
            .group_by(IncidentMessage.incident_id))).all())
        pages = await _pages(s, cfg, start, end)
        channels = await channel_success(s, start, end)
        hours = await oncall_hours(s, cfg, start, end)
    keys = _keys(by, pages)
    total = IncidentGroup("all")
    groups: dict[str, IncidentGroup] = {}
    tta: dict[str, list[float]] = {}
    ttr: dict[str, list[float]] = {}
    for iid, sev, source, created, acked, resolved, _ in incidents:
        names = {"severity": [sev], "source": [source]}.get(by) or sorted(keys.get(iid, ())) or [NO_GROUP[by]]
        for g in [total] + [groups.setdefault(k, IncidentGroup(k)) for k in names]:
            g.incidents += 1
            n = int(escalations.get(iid, 0))
            g.escalations += n
            g.escalated += 1 if n else 0
            if acked is not None:
                g.acknowledged += 1
                tta.setdefault(g.key, []).append(_seconds(created, acked))
            if resolved is not None:
                g.resolved += 1
                ttr.setdefault(g.key, []).append(_seconds(created, resolved))
    for g in [total, *groups.values()]:
        g.tta, g.ttr = Durations.of(tta.get(g.key, [])), Durations.of(ttr.get(g.key, []))
    order = list(SEVERITIES) if by == "severity" else []
    ranked = sorted(groups.values(), key=lambda g: (order.index(g.key) if g.key in order else len(order),
                                                    -g.incidents if not order else 0, g.key))
    start_night, end_night = cfg.reports.window
    acks: dict[str, int] = {}
    for *_, who in incidents:
        for name in acting_contacts(cfg, who) if who else ():
            acks[name] = acks.get(name, 0) + 1
    return Report(start, end, by, total, ranked, _load(cfg, pages, acks, hours), channels,
                  night=f"{start_night}-{end_night} {cfg.reports.timezone}")


def _seconds(a: datetime, b: datetime) -> float:
    return (utc(b) - utc(a)).total_seconds()  # type: ignore[operator]


async def _pages(s: AsyncSession, cfg: Config, start: datetime, end: datetime) -> list[_Page]:
    """One row per page: a person (not a destination or a chat card) x an INITIAL or ESCALATION entry,
    whatever number of channels carried it. Escalation pages an ack cancelled before they went out are
    not pages."""
    rows = (await s.execute(
        select(Delivery.incident_id, Delivery.recipient, IncidentMessage.kind, func.min(Delivery.created_at),
               func.min(Delivery.reason))
        .join(IncidentMessage, IncidentMessage.id == Delivery.message_id)
        .where(IncidentMessage.kind.in_(PAGE_KINDS), Delivery.purpose != "surface", Delivery.status != "cancelled",
               Delivery.created_at >= start, Delivery.created_at <= end)
        .group_by(Delivery.incident_id, Delivery.recipient, Delivery.message_id, IncidentMessage.kind))).all()
    return [_Page(iid, who, kind, utc(at), reason or "") for iid, who, kind, at, reason in rows  # type: ignore[arg-type]
            if cfg.destination(who) is None and not who.startswith("surface:")]


def _keys(by: str, pages: Iterable[_Page]) -> dict[int, set[str]]:
    """incident id -> the schedules that paged for it (read from each delivery's reason), or the contacts."""
    out: dict[int, set[str]] = {}
    if by not in ("schedule", "contact"):
        return out
    for p in pages:
        if p.incident_id is None:
            continue
        if by == "contact":
            out.setdefault(p.incident_id, set()).add(p.recipient)
        elif m := _SCHEDULE_REASON.match(p.reason):
            out.setdefault(p.incident_id, set()).add(m.group(1))
    return out


def night_window(cfg: Config, contact: str) -> tuple[str, str, str]:
    """(start, end, zone) of a contact's night: their quiet hours, else `reports.night`."""
    c = cfg.contact(contact)
    if c is not None and c.quiet_hours is not None:
        return c.quiet_hours.start, c.quiet_hours.end, c.quiet_hours.timezone
    start, end = cfg.reports.window
    return start, end, cfg.reports.timezone


def _load(cfg: Config, pages: Iterable[_Page], acks: dict[str, int], hours: dict[str, float]) -> list[PersonLoad]:
    people: dict[str, PersonLoad] = {}
    seen: dict[str, set[int]] = {}

    def person(name: str) -> PersonLoad:
        if name not in people:
            start, end, tz = night_window(cfg, name)
            people[name] = PersonLoad(name, f"{start}-{end} {tz}", acknowledged=acks.get(name, 0),
                                      oncall_hours=hours.get(name, 0.0))
        return people[name]

    for name in [*hours, *acks]:  # on call or acknowledging without a page of their own still shows
        person(name)
    for p in pages:
        start, end, tz = night_window(cfg, p.recipient)
        who = person(p.recipient)
        who.pages += 1
        who.night += 1 if in_daily_window(start, end, tz, p.at) else 0
        who.escalation_pages += 1 if p.kind == "ESCALATION" else 0
        if p.incident_id is not None:
            seen.setdefault(p.recipient, set()).add(p.incident_id)
    for name, who in people.items():
        who.incidents = len(seen.get(name, ()))
    return sorted(people.values(), key=lambda w: (-w.pages, -w.oncall_hours, w.contact))


async def oncall_hours(s: AsyncSession, cfg: Config, start: datetime, end: datetime) -> dict[str, float]:
    """Hours each contact was on call in [start, end], summed over the configured schedules: their layers as
    the config has them now, and the overrides the database holds for the period (cancelled ones aside)."""
    if not cfg.schedules:
        return {}
    rows = (await s.execute(select(ScheduleOverride).where(
        ScheduleOverride.cancelled_at.is_(None), ScheduleOverride.ends_at > start, ScheduleOverride.starts_at < end)
        .order_by(ScheduleOverride.starts_at, ScheduleOverride.id))).scalars().all()
    out: dict[str, float] = {}
    for sc in cfg.schedules:
        mine = [as_override(r) for r in rows if r.schedule == sc.name]
        for seg in timeline(sc, start, end, mine):
            if seg.contact is not None:
                out[seg.contact] = out.get(seg.contact, 0.0) + (seg.end - seg.start).total_seconds() / 3600
    return out


async def channel_success(s: AsyncSession, start: datetime, end: datetime) -> list[ChannelSuccess]:
    """Per channel: deliveries created in [start, end] that finished (delivered / failed / dead), and the
    attempts the delivery log recorded for them. Chat card syncs are not pages and are left out."""
    window = (Delivery.created_at >= start, Delivery.created_at <= end, Delivery.purpose != "surface")
    out: dict[str, ChannelSuccess] = {}
    for channel, status, n in (await s.execute(
            select(Delivery.channel, Delivery.status, func.count()).where(*window, Delivery.status.in_(FINISHED))
            .group_by(Delivery.channel, Delivery.status))).all():
        row = out.setdefault(channel, ChannelSuccess(channel))
        setattr(row, status, getattr(row, status) + int(n))
    for channel, n, tried in (await s.execute(
            select(Delivery.channel, func.count(), func.count(func.distinct(DeliveryAttempt.delivery_id)))
            .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id).where(*window)
            .group_by(Delivery.channel))).all():
        row = out.setdefault(channel, ChannelSuccess(channel))
        row.attempts, row.retries = int(n), int(n) - int(tried)  # every try after a delivery's first
    return [out[k] for k in sorted(out)]


# --- CSV --------------------------------------------------------------------------------------


CSV_HEADER = ("section", "group", "metric", "value")


def csv_rows(r: Report) -> list[tuple[str, str, str, str]]:
    """The report as long-form rows (section, group, metric, value): one header whatever the sections
    hold, easy to filter or pivot. Durations are whole seconds; rates are 0..1; no data is empty."""
    def secs(v: float | None) -> str:
        return "" if v is None else str(round(v))

    def rate(v: float | None) -> str:
        return "" if v is None else f"{v:.4f}"

    rows = [("period", "", "start", r.start.isoformat()), ("period", "", "end", r.end.isoformat()),
            ("period", "", "by", r.by)]
    for g in [*r.groups, r.total]:
        rows += [("incidents", g.key, metric, value) for metric, value in (
            ("incidents", str(g.incidents)), ("acknowledged", str(g.acknowledged)), ("resolved", str(g.resolved)),
            ("mtta_median_seconds", secs(g.tta.median)), ("mtta_p90_seconds", secs(g.tta.p90)),
            ("mttr_median_seconds", secs(g.ttr.median)), ("mttr_p90_seconds", secs(g.ttr.p90)),
            ("escalations", str(g.escalations)), ("escalated_incidents", str(g.escalated)))]
    for p in r.people:
        rows += [("pages", p.contact, metric, value) for metric, value in (
            ("pages", str(p.pages)), ("night_pages", str(p.night)), ("escalation_pages", str(p.escalation_pages)),
            ("incidents", str(p.incidents)), ("acknowledged", str(p.acknowledged)),
            ("oncall_hours", f"{p.oncall_hours:.1f}"), ("night_window", p.night_window))]
    for c in r.channels:
        rows += [("deliveries", c.channel, metric, value) for metric, value in (
            ("delivered", str(c.delivered)), ("failed", str(c.failed)), ("dead", str(c.dead)),
            ("success_rate", rate(c.success)), ("attempts", str(c.attempts)), ("retries", str(c.retries)))]
    return rows


def to_csv(r: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    w.writerows([tuple(_cell(c) for c in row) for row in csv_rows(r)])
    return buf.getvalue()


def _cell(text: str) -> str:
    """A name that starts like a formula (=, +, -, @) is quoted so a spreadsheet shows it, never runs it."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _NUMBER.match(text) else text


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
