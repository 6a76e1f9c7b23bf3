"""The incident rows: the reads every adapter uses, and the write primitives IncidentService's rules go
through (load under lock, compare-and-set on `version`, thread append, a borrowed caller transaction).
No rules live here: IncidentService (core/incidents.py) decides what may change and what it pages."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class

from core.clock import Clock, SystemClock
from core.config import Config, ConfigHolder
from core.db import Database, Prepared, connection
from core.errors import InvalidInput, InvalidTransition, NotFound
from core.explain import explain_incident
from core.models import Delivery, Incident, IncidentMessage, IncidentStateChange
from core.rbac import Actor, Permission, require
from core.validation import parse_ref

OPEN, MONITORING, RESOLVED = "open", "monitoring", "resolved"
STATES = (OPEN, MONITORING, RESOLVED)
T = TypeVar("T")

# Hot-path statements, built once: building a statement and running it through the ORM unit of work costs
# several times what SQLite spends on it (docs/benchmarks.md, "Profile"). Core statements on the session's
# connection, same transaction and savepoint.
_INC = Incident.__table__
_MSG = IncidentMessage.__table__
_CHG = IncidentStateChange.__table__
INSERT_INCIDENT = Prepared(insert(_INC).returning(_INC.c.id))
INSERT_MESSAGE = Prepared(insert(_MSG).returning(_MSG.c.id))
INSERT_STATE_CHANGE = Prepared(insert(_CHG))
_BY_CORRELATION = (select(_INC.c.id).where(_INC.c.correlation_key == bindparam("key"))
                   .order_by(_INC.c.id.desc()).limit(1))
_OPEN_BY_CORRELATION = (select(_INC.c.id).where(_INC.c.correlation_key == bindparam("key"),
                                                _INC.c.state != RESOLVED)
                        .order_by(_INC.c.id.desc()).limit(1))


def row_object(cls: type[T], values: dict[str, Any]) -> T:
    """An ORM object holding `values` (a row we just wrote with Core), filled the way the ORM's loader fills
    one: without the per-attribute change tracking of the constructor (a tenth of its cost)."""
    manager = manager_of_class(cls)
    manager.mapper._check_configure()  # what the constructor would do first (cheap once configured)
    obj = manager.new_instance()
    instance_state(obj).dict.update(values)
    return obj  # type: ignore[no-any-return]


def attach(s: AsyncSession, obj: T) -> T:
    """Put a row object whose INSERT we just ran (Core, every column set, primary key known) into the
    session exactly as a flush does after its INSERT: persistent (later loads in the same transaction get
    this object, nothing is written twice) and new in the current transaction or savepoint, so rolling
    that back expunges it (SQLite may hand its id to the next insert). `_register_persistent` is the step
    of Session.flush that does this; the object is pending for no longer than this call."""
    sync = s.sync_session
    sync.add(obj)
    sync._register_persistent({instance_state(obj)})
    return obj


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
        """The newest incident with correlation `key` (open or monitoring unless `include_resolved`). The id
        is looked up with one small Core statement; the row is loaded only when there is one (an event storm
        of new alerts mostly finds none)."""
        q = _BY_CORRELATION if include_resolved else _OPEN_BY_CORRELATION
        if session is not None:
            return await _incident_by_key(session, q, key)
        async with self.db.sessions() as s:
            return await _incident_by_key(s, q, key)

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
        """Append a thread entry (one Core INSERT ... RETURNING id, no unit-of-work flush)."""
        values = {"incident_id": inc.id, "kind": kind, "body": body, "author": actor.identity, "created_at": now,
                  "extra": extra or {}}
        values["id"] = (await INSERT_MESSAGE.run(s, values))[0][0]
        return row_object(IncidentMessage, values)

    @staticmethod
    async def _state_change(s: AsyncSession, inc: Incident, *, from_state: str | None, to_state: str,
                            actor: Actor, now: datetime, seconds_in_previous: float | None) -> None:
        """Record a state transition (one Core INSERT)."""
        await INSERT_STATE_CHANGE.run(s, {
            "incident_id": inc.id, "from_state": from_state, "to_state": to_state, "actor": actor.identity,
            "at": now, "seconds_in_previous": seconds_in_previous})


async def _incident_by_key(s: AsyncSession, q: Any, key: str) -> Incident | None:
    conn = await connection(s)
    iid = (await conn.execute(q, {"key": key})).scalar()
    return None if iid is None else await s.get(Incident, iid)


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
