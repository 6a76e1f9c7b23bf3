"""The incident rows: the reads every adapter uses, and the write primitives IncidentService's rules go
through (load under lock, compare-and-set on `version`, thread append, a borrowed caller transaction).
No rules live here: IncidentService (core/incidents.py) decides what may change and what it pages."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from core.clock import Clock, SystemClock
from core.config import Config, ConfigHolder
from core.db import Database
from core.errors import InvalidInput, InvalidTransition, NotFound
from core.explain import explain_incident
from core.models import Delivery, Incident, IncidentMessage, IncidentStateChange
from core.rbac import Actor, Permission, require
from core.validation import parse_ref

OPEN, MONITORING, RESOLVED = "open", "monitoring", "resolved"
STATES = (OPEN, MONITORING, RESOLVED)


@dataclass
class IncidentDetail:
    incident: Incident
    thread: list[IncidentMessage]
    state_changes: list[IncidentStateChange]
    deliveries: list[Delivery] = field(default_factory=list)


@dataclass
class IncidentPage:
    """One page of a list, newest first, and how many more match beyond it (lists never stop silently)."""

    incidents: list[Incident]
    more: int
    offset: int = 0

    @property
    def next_cursor(self) -> int | None:
        """The id to continue from (`cursor` of the API): the page's oldest, when there are more."""
        return self.incidents[-1].id if self.more and self.incidents else None


class IncidentStore:
    """Reads and row primitives over the incidents tables, reading the live config at the moment of use."""

    def __init__(self, db: Database, config: ConfigHolder, *, clock: Clock | None = None) -> None:
        self.db = db
        self.config = config
        self.clock = clock or SystemClock()

    @property
    def cfg(self) -> Config:
        return self.config.cfg

    # --- reads --------------------------------------------------------------------------------

    async def get(self, ref: str | int, *, actor: Actor | None = None) -> Incident:
        if actor:
            require(self.cfg, actor, Permission.VIEW)
        async with self.db.sessions() as s:
            inc = await s.get(Incident, parse_ref(ref))
        if inc is None:
            raise NotFound(f"no incident {_fmt_ref(ref)}")
        return inc

    async def detail(self, ref: str | int, *, actor: Actor | None = None) -> IncidentDetail:
        if actor:
            require(self.cfg, actor, Permission.VIEW)
        iid = parse_ref(ref)
        async with self.db.sessions() as s:
            inc = await s.get(Incident, iid)
            if inc is None:
                raise NotFound(f"no incident {_fmt_ref(ref)}")
            thread = (await s.execute(select(IncidentMessage).where(IncidentMessage.incident_id == iid)
                                      .order_by(IncidentMessage.id))).scalars().all()
            changes = (await s.execute(select(IncidentStateChange).where(IncidentStateChange.incident_id == iid)
                                       .order_by(IncidentStateChange.id))).scalars().all()
            dels = (await s.execute(select(Delivery).where(Delivery.incident_id == iid)
                                    .order_by(Delivery.id))).scalars().all()
        return IncidentDetail(inc, list(thread), list(changes), list(dels))

    async def list(self, *, state: str = "open", actor: Actor | None = None, limit: int = 200) -> list[Incident]:
        """state: 'open' (open + monitoring), 'all', or one state name."""
        return (await self.page(state=state, actor=actor, limit=limit)).incidents

    async def page(self, *, state: str = "open", actor: Actor | None = None, limit: int = 200, offset: int = 0,
                   before_id: int | None = None) -> IncidentPage:
        """Newest first: `limit` incidents after skipping `offset` (CLI) or older than `before_id` (the API's
        cursor, stable while new incidents arrive), and the count of those beyond the page."""
        if actor:
            require(self.cfg, actor, Permission.VIEW)
        if limit < 1 or offset < 0:
            raise InvalidInput("limit must be 1 or more and offset 0 or more")
        cond = []
        if state == "open":
            cond.append(Incident.state != RESOLVED)
        elif state in STATES:
            cond.append(Incident.state == state)
        elif state != "all":
            raise InvalidInput(f"unknown filter {state!r}: use open, all, or one of {', '.join(STATES)}")
        if before_id is not None:
            cond.append(Incident.id < before_id)
        q = select(Incident).where(*cond).order_by(Incident.id.desc()).offset(offset).limit(limit)
        async with self.db.sessions() as s:
            rows = list((await s.execute(q)).scalars().all())
            total = int((await s.execute(select(func.count()).select_from(Incident).where(*cond))).scalar_one())
        return IncidentPage(rows, more=max(0, total - offset - len(rows)), offset=offset)

    async def explain_route(self, ref: str | int, *, actor: Actor, event_type: str = "update") -> str:
        """Which rule would route `event_type` for this incident, why the others would not, and the exact
        recipient x channel list. Admins only: it reveals every contact's addresses."""
        return await explain_incident(self, ref, event_type, actor=actor)

    async def find_by_correlation(self, key: str, *, include_resolved: bool = False,
                                  session: AsyncSession | None = None) -> Incident | None:
        q = select(Incident).where(Incident.correlation_key == key).order_by(Incident.id.desc()).limit(1)
        if not include_resolved:
            q = q.where(Incident.state != RESOLVED)
        if session is not None:
            return (await session.execute(q)).scalars().first()
        async with self.db.sessions() as s:
            return (await s.execute(q)).scalars().first()

    async def counts(self) -> dict[str, int]:
        async with self.db.sessions() as s:
            rows = (await s.execute(select(Incident.state, func.count()).group_by(Incident.state))).all()
        return {state: int(n) for state, n in rows}


    # --- write primitives (in the caller's transaction) ---------------------------------------------

    def _tx(self, session: AsyncSession | None) -> Any:
        """Use the caller's transaction when given (inbound events batch dedup + change), else one shared
        with the operations arriving together (group commit, core/db.py: own savepoint, answered after the
        commit). With the caller's session, listeners are told only when the caller calls
        events.publish_pending()."""
        if session is not None:
            return _Borrowed(session)
        return self.db.grouped()

    async def _load(self, s: AsyncSession, iid: int, ref: str | int) -> Incident:
        inc = (await s.execute(select(Incident).where(Incident.id == iid).with_for_update())).scalars().first()
        if inc is None:
            raise NotFound(f"no incident {_fmt_ref(ref)}")
        return inc

    async def _cas(self, s: AsyncSession, inc: Incident, **values: Any) -> None:
        """Compare-and-set on `version`: the loser of a race gets a clear error, never a silent overwrite."""
        now = self.clock.now()
        values = {"updated_at": now, **values, "version": inc.version + 1}
        res = await s.execute(update(Incident).where(Incident.id == inc.id, Incident.version == inc.version)
                              .values(**values).execution_options(synchronize_session=False))
        if res.rowcount != 1:
            await s.refresh(inc)
            raise InvalidTransition(f"{inc.ref} changed while you were acting (it is now {inc.state}); try again")
        for k, v in values.items():  # already written above: no second UPDATE at the next flush
            set_committed_value(inc, k, v)

    async def _message(self, s: AsyncSession, inc: Incident, kind: str, body: str, actor: Actor, now: datetime,
                       extra: dict[str, Any] | None = None) -> IncidentMessage:
        msg = IncidentMessage(incident_id=inc.id, kind=kind, body=body, author=actor.identity, created_at=now,
                              extra=extra or {})
        s.add(msg)
        await s.flush()
        return msg


class _Borrowed:
    """Async context manager that yields a caller-owned session without committing it."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def __aenter__(self) -> AsyncSession:
        return self.session

    async def __aexit__(self, *exc: object) -> None:
        return None


def _fmt_ref(ref: str | int) -> str:
    try:
        return f"INC-{parse_ref(ref)}"
    except InvalidInput:
        return str(ref)
