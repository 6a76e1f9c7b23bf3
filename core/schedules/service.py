"""ScheduleService: overrides (stored, audited, permission-checked) and who is on call, for chat, CLI,
console and routing. Overrides live in the database so they survive restarts and config reloads; the
layers live in the config."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.log import AuditLog
from core.clock import Clock, SystemClock, utc
from core.config import Config, ConfigHolder, Schedule, parse_duration
from core.db import Database
from core.errors import Forbidden, InvalidInput, NotFound
from core.models import ScheduleOverride
from core.rbac import MATRIX, Actor, Permission, contact_identities, require, role_for
from core.schedules.rotation import Override, Segment, timeline

log = logging.getLogger("tocsin.schedules")

SLACK_SECONDS = 60
"""A start this far in the past still counts as `now` (the time it took to type the command)."""
MAX_OVERRIDE = timedelta(days=90)


def as_override(row: ScheduleOverride) -> Override:
    return Override(int(row.id), row.contact, utc(row.starts_at), utc(row.ends_at))  # type: ignore[arg-type]


async def overrides_in_force(s: AsyncSession, cfg: Config, now: datetime) -> dict[str, list[Override]]:
    """schedule -> overrides covering `now` (what routing needs at the moment a page is queued). No query
    when no schedule is configured, so configs without schedules pay nothing."""
    if not cfg.schedules:
        return {}
    now = utc(now)  # type: ignore[assignment]  # SQLite compares the stored text: always UTC
    rows = (await s.execute(select(ScheduleOverride).where(
        ScheduleOverride.cancelled_at.is_(None), ScheduleOverride.starts_at <= now,
        ScheduleOverride.ends_at > now))).scalars().all()
    out: dict[str, list[Override]] = {}
    for r in rows:
        out.setdefault(r.schedule, []).append(as_override(r))
    return out


def parse_time(text: str, *, tz: str, what: str) -> datetime:
    """ISO 8601; without an offset it is read in the schedule's zone."""
    from zoneinfo import ZoneInfo

    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not a time: use ISO 8601 like 2026-12-24T18:00 "
                           f"(read in {tz} without an offset)") from None
    return utc(dt if dt.tzinfo else dt.replace(tzinfo=ZoneInfo(tz)))  # type: ignore[return-value]


def duration(text: str) -> timedelta:
    try:
        d = parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"duration {exc}") from None
    if d <= timedelta(0):
        raise InvalidInput("the override would last zero time: give a duration like 2h")
    return d


class ScheduleService:
    """See module docstring."""

    def __init__(self, db: Database, config: ConfigHolder, *, audit: AuditLog, clock: Clock | None = None) -> None:
        self.db = db
        self.config = config
        self.audit = audit
        self.clock = clock or SystemClock()

    @property
    def cfg(self) -> Config:
        return self.config.cfg

    def schedule(self, name: str) -> Schedule:
        sc = self.cfg.schedule(name)
        if sc is None:
            known = ", ".join(s.name for s in self.cfg.schedules) or "none configured"
            raise NotFound(f"unknown schedule {name!r} (schedules: {known})")
        return sc

    def contact_of(self, actor: Actor) -> str | None:
        """The contact this actor is: by chat id (contacts[].chat), or `cli:<name>` / `web:<name>`."""
        for c in self.cfg.contacts:
            if actor.identity in contact_identities(self.cfg, c.name) or actor.identity in (
                    f"cli:{c.name}", f"web:{c.name}"):
                return c.name
        return None

    # --- reads --------------------------------------------------------------------------------

    async def overrides(self, name: str | None, *, actor: Actor, include_past: bool = False,
                        start: datetime | None = None, end: datetime | None = None) -> list[ScheduleOverride]:
        require(self.cfg, actor, Permission.VIEW)
        now: datetime = utc(self.clock.now())  # type: ignore[assignment]
        q = select(ScheduleOverride).where(ScheduleOverride.cancelled_at.is_(None))
        if name is not None:
            self.schedule(name)
            q = q.where(ScheduleOverride.schedule == name)
        if not include_past:
            q = q.where(ScheduleOverride.ends_at > (start or now))
        if end is not None:
            q = q.where(ScheduleOverride.starts_at < end)
        async with self.db.sessions() as s:
            return list((await s.execute(q.order_by(ScheduleOverride.starts_at, ScheduleOverride.id)))
                        .scalars().all())

    async def timeline(self, name: str, *, actor: Actor, start: datetime | None = None,
                       days: float = 7) -> tuple[Schedule, list[Segment], list[ScheduleOverride]]:
        """The schedule, its final timeline from `start` (default now) for `days`, and the overrides in it."""
        sc = self.schedule(name)
        start = utc(start or self.clock.now())  # type: ignore[assignment]
        end = start + timedelta(days=days)
        rows = await self.overrides(name, actor=actor, start=start, end=end)
        return sc, timeline(sc, start, end, [as_override(r) for r in rows]), rows

    # --- writes -------------------------------------------------------------------------------

    async def override(self, name: str, contact: str, *, actor: Actor, start: datetime | None = None,
                       end: datetime | None = None, length: timedelta | None = None,
                       take: bool = False) -> ScheduleOverride:
        """`contact` covers `name` from `start` (default now) to `end` (or for `length`). MANAGER/ADMIN
        may set any override; a schedule member may cover for themselves (`take`)."""
        sc = self.schedule(name)
        cfg = self.cfg
        if cfg.contact(contact) is None:
            raise NotFound(f"unknown contact {contact!r}")
        roster = set(members(sc))
        role = role_for(cfg, actor)
        if Permission.MANAGE_CONTACTS not in MATRIX[role]:
            me = self.contact_of(actor)
            if me != contact or me not in roster:
                who = f"{actor.identity} (contact {me})" if me else actor.identity
                raise Forbidden(f"{who} has role {role.value.upper()}: only MANAGER or ADMIN may set an override "
                                f"for someone else; a member of {name!r} may take a shift for themselves")
            require(cfg, actor, Permission.ACKNOWLEDGE)  # whoever is on call must be able to acknowledge
        elif take and contact not in roster:
            raise InvalidInput(f"{contact} is not a member of schedule {name!r}, so cannot take a shift")
        now: datetime = utc(self.clock.now())  # type: ignore[assignment]
        start = utc(start) or now  # type: ignore[assignment]
        if start < now - timedelta(seconds=SLACK_SECONDS):
            raise InvalidInput(f"the override would start in the past ({start.isoformat(timespec='minutes')}); "
                               "overrides cover now or later")
        start = max(start, now)
        if end is None:
            end = start + (length if length is not None else timedelta(0))
        end = utc(end)  # type: ignore[assignment]
        if end <= start:
            raise InvalidInput("the override would last zero time or end before it starts")
        if end - start > MAX_OVERRIDE:
            raise InvalidInput(f"an override lasts at most {MAX_OVERRIDE.days} days; change the layers instead")
        async with self.db.transaction() as s:
            clash = (await s.execute(select(ScheduleOverride).where(
                ScheduleOverride.schedule == name, ScheduleOverride.cancelled_at.is_(None),
                ScheduleOverride.starts_at < end, ScheduleOverride.ends_at > start)
                .order_by(ScheduleOverride.starts_at).with_for_update())).scalars().first()
            if clash is not None:
                raise InvalidInput(f"overlaps override #{clash.id} ({clash.contact}, {utc(clash.starts_at):%Y-%m-%d %H:%M}"
                                   f" to {utc(clash.ends_at):%Y-%m-%d %H:%M} UTC); cancel it first")
            row = ScheduleOverride(schedule=name, contact=contact, starts_at=start, ends_at=end,
                                   created_by=actor.identity, created_at=now)
            s.add(row)
            await s.flush()
            await self.audit.append(s, actor=actor.identity, source=actor.source,
                                    action="schedule.take" if take else "schedule.override",
                                    resource=f"schedule:{name}", now=now, details={
                                        "override": row.id, "contact": contact, "from": start.isoformat(),
                                        "to": end.isoformat()})
        log.info("schedule.override", extra={"schedule": name, "override": row.id, "contact": contact,
                                             "actor": actor.identity, "take": take})
        return row

    async def take(self, name: str, *, actor: Actor, length: timedelta) -> ScheduleOverride:
        """A member covers the next `length` themselves."""
        sc = self.schedule(name)
        me = self.contact_of(actor)
        roster = members(sc)
        if me is None or me not in roster:
            raise Forbidden(f"{actor.identity} is not a member of schedule {name!r}"
                            + (f" (you are contact {me})" if me else " (no contact has this chat id)")
                            + f"; members: {', '.join(roster)}")
        return await self.override(name, me, actor=actor, length=length, take=True)

    async def cancel(self, oid: int, *, actor: Actor) -> ScheduleOverride:
        """MANAGER/ADMIN cancel any override; a member cancels one that covers themselves."""
        now: datetime = utc(self.clock.now())  # type: ignore[assignment]
        async with self.db.transaction() as s:
            row = (await s.execute(select(ScheduleOverride).where(ScheduleOverride.id == oid)
                                   .with_for_update())).scalars().first()
            if row is None:
                raise NotFound(f"no override #{oid}")
            if Permission.MANAGE_CONTACTS not in MATRIX[role_for(self.cfg, actor)] and \
                    self.contact_of(actor) != row.contact:
                require(self.cfg, actor, Permission.MANAGE_CONTACTS)
            if row.cancelled_at is not None:
                raise InvalidInput(f"override #{oid} was already cancelled by {row.cancelled_by}")
            if utc(row.ends_at) <= now:  # type: ignore[operator]
                raise InvalidInput(f"override #{oid} has already ended")
            row.cancelled_at, row.cancelled_by = now, actor.identity
            await self.audit.append(s, actor=actor.identity, source=actor.source, action="schedule.cancel",
                                    resource=f"schedule:{row.schedule}", now=now,
                                    details={"override": oid, "contact": row.contact})
        return row


def members(sc: Schedule) -> list[str]:
    """Everyone in any layer of the schedule (who may take shifts for themselves)."""
    return sorted({m for layer in sc.layers for m in layer.members})
