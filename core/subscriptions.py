"""Subscriptions: a person follows one incident (`INC-3`), or every new incident matching a filter (`sev1`,
`tenant:acme`, `source:alertmanager`, or several terms that must all hold), and hears its news through
their own news channels (contacts[].preferences.updates, core/routing.py).

Who subscribes is a contact, found from the acting identity by the one identity -> contact mapping
(core.rbac.acting_contacts: chat ids, cli/web names, console_user), so a subscription made in Slack is the
same person's in Telegram and on the console. Anyone who may VIEW incidents may follow one; a tenant's
incidents only those config maps to that tenant (`contacts[].tenants`), checked again at fan-out so a
config change takes effect at once. Followers get news, never pages, and never a second copy of a message
routing already sends them (FanOut drops followers who are routed for that message)."""
from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from datetime import datetime

from sqlalchemy import and_, bindparam, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.audit.log import AuditLog
from core.clock import Clock, utc
from core.config import SEVERITIES, Config, ConfigHolder, Contact, Targets, normalize_severity
from core.db import Database, connection, per_transaction
from core.errors import Forbidden, InvalidInput, InvalidTransition, NotFound
from core.models import Incident, Subscription
from core.rbac import Actor, Permission, acting_contacts, require
from core.routing import PlannedDelivery, resolve_targets
from core.validation import is_ref, parse_ref

log = logging.getLogger("tocsin.subscriptions")

FILTER_HELP = ("an incident id (INC-12), or a filter of one or more terms that must all match: a severity "
               "(sev1..sev4, or critical, high, medium, low), tenant:<name>, source:<name>")
TENANT_LABELS = ("tenant_id", "tenant")
"""Incident labels that name its tenant: the events API sets `tenant_id`; an Alertmanager label `tenant` too."""
_NAME = re.compile(r"\S{1,64}")


@dataclass(frozen=True)
class Filter:
    """What a filter subscription matches; every term that is set must hold."""

    severity: str | None = None
    tenant: str | None = None
    source: str | None = None

    @property
    def key(self) -> str:
        """The canonical spelling, stored and shown: `sev1 tenant:acme source:alertmanager`."""
        return " ".join([*([self.severity] if self.severity else []),
                         *([f"tenant:{self.tenant}"] if self.tenant else []),
                         *([f"source:{self.source}"] if self.source else [])])

    def matches(self, inc: Incident) -> bool:
        return ((self.severity is None or inc.severity == self.severity)
                and (self.source is None or inc.source == self.source)
                and (self.tenant is None or incident_tenant(inc) == self.tenant))


def incident_tenant(inc: Incident) -> str | None:
    labels = inc.labels or {}
    for key in TENANT_LABELS:
        if labels.get(key):
            return str(labels[key])
    return None


def parse_filter(text: str) -> Filter:
    """`sev1`, `tenant:acme`, `source:alertmanager` or several of them; InvalidInput naming the bad term."""
    words = text.split()
    if not words:
        raise InvalidInput(f"say what to follow: {FILTER_HELP}")
    found: dict[str, str] = {}
    for word in words:
        kind, sep, value = word.partition(":")
        kind = kind.lower()
        if sep and kind in ("tenant", "source"):
            limit = 64 if kind == "tenant" else 32
            if not value or len(value) > limit or not _NAME.fullmatch(value):
                raise InvalidInput(f"{word[:80]!r}: a {kind} name is 1-{limit} characters without spaces")
        elif not sep and normalize_severity(word) in SEVERITIES:
            kind, value = "severity", normalize_severity(word)
        elif is_ref(word):
            raise InvalidInput(f"{word!r}: follow one incident on its own (subscribe {word}), not inside a filter")
        else:
            raise InvalidInput(f"{word[:80]!r} is not something to follow: use {FILTER_HELP}")
        if kind in found:
            raise InvalidInput(f"two {kind} terms ({found[kind]} and {value}): a filter names each at most once")
        found[kind] = value
    return Filter(severity=found.get("severity"), tenant=found.get("tenant"), source=found.get("source"))


def parse_target(text: str) -> int | Filter:
    """An incident id (its number) or a filter: the one reading of what people type after subscribe."""
    words = text.split()
    if len(words) == 1 and is_ref(words[0]):
        return parse_ref(words[0])
    return parse_filter(text)


def key_of(target: int | Filter) -> str:
    return f"INC-{target}" if isinstance(target, int) else target.key


def row_filter(row: Any) -> Filter:
    """`row`: a Subscription, or a row with its severity, tenant and source columns."""
    return Filter(severity=row.severity, tenant=row.tenant, source=row.source)


# --- fan-out ---------------------------------------------------------------------------------------


_S = Subscription.__table__
_FOLLOWING = (select(_S.c.contact, _S.c.key, _S.c.incident_id, _S.c.severity, _S.c.tenant, _S.c.source)
              .where(or_(_S.c.incident_id == bindparam("incident_id", type_=_S.c.incident_id.type),
                         and_(_S.c.incident_id.is_(None),
                              _S.c.created_at <= bindparam("created_at", type_=_S.c.created_at.type))))
              .order_by(_S.c.id))


_FILTERS = (select(_S.c.contact, _S.c.key, _S.c.incident_id, _S.c.severity, _S.c.tenant, _S.c.source,
                   _S.c.created_at).where(_S.c.incident_id.is_(None)).order_by(_S.c.id))


async def _filters(conn: AsyncConnection) -> list[Any]:
    return list((await conn.execute(_FILTERS)).all())


async def followers(s: AsyncSession, cfg: Config, inc: Incident, *, fresh: bool = False) -> dict[str, str]:
    """Contact -> why, for everyone following `inc`: its own subscribers, and those whose filter matches
    it and was made before it was declared ("every new incident"). A tenant filter counts only while the
    contact is still mapped to that tenant. `fresh`: `inc` was just declared in this transaction, so nobody
    follows it by id yet (a subscription names an incident that exists) and only filters count; those are
    read once per transaction (a storm's declares share a group commit)."""
    if fresh:
        made = utc(inc.created_at)
        rows = [r for r in await per_transaction(s, "subscriptions.filters", _filters)
                if utc(r.created_at) <= made]  # type: ignore[operator]
    else:
        conn = await connection(s)  # every incident message asks: one small Core statement, built once
        rows = (await conn.execute(_FOLLOWING, {"incident_id": inc.id, "created_at": inc.created_at})).all()
    return _followers(cfg, inc, rows)


async def followers_of(s: AsyncSession, cfg: Config, incs: Collection[Incident]) -> dict[int, dict[str, str]]:
    """`followers` of several incidents (incident id -> contact -> why) with one query: the escalation
    timer's groups fan out hundreds of incidents at once."""
    if not incs:
        return {}
    latest = max(utc(inc.created_at) for inc in incs)  # type: ignore[type-var]
    rows = (await s.execute(select(Subscription).where(or_(
        Subscription.incident_id.in_(sorted({inc.id for inc in incs})),
        and_(Subscription.incident_id.is_(None), Subscription.created_at <= latest)))
        .order_by(Subscription.id))).scalars().all()
    own: dict[int, list[Subscription]] = {}
    filters: list[Subscription] = []
    for r in rows:
        if r.incident_id is None:
            filters.append(r)
        else:
            own.setdefault(r.incident_id, []).append(r)
    out: dict[int, dict[str, str]] = {}
    for inc in incs:
        opened = utc(inc.created_at)
        mine = own.get(inc.id, []) + [r for r in filters if utc(r.created_at) <= opened]  # type: ignore[operator]
        out[inc.id] = _followers(cfg, inc, sorted(mine, key=lambda r: r.id))
    return out


def _followers(cfg: Config, inc: Incident, rows: Iterable[Any]) -> dict[str, str]:
    """Who of these subscriptions (the incident's own, and filters made before it was declared, in id
    order; Subscription rows or Core rows of its columns) follows `inc`."""
    out: dict[str, str] = {}
    for r in rows:
        if r.incident_id is None:
            f = row_filter(r)
            if not f.matches(inc):
                continue
            contact = cfg.contact(r.contact)
            if f.tenant and (contact is None or f.tenant not in contact.tenants):
                log.warning("subscription.out_of_scope", extra={"contact": r.contact, "subscription": r.key,
                                                               "incident": inc.ref})
                continue
        out.setdefault(r.contact, f"follows {r.key}")
    return out


async def follower_news(s: AsyncSession, cfg: Config, inc: Incident, *, routed: Collection[str],
                        actors: Collection[str], now: datetime,
                        people: Mapping[str, str] | None = None, fresh: bool = False) -> list[PlannedDelivery]:
    """The news deliveries for an incident message's followers: nobody routing already reaches with this
    message (they get it once), nobody who did what it reports; each on their own news channels.
    `people`: the followers when the caller read them already (`followers_of`, for a group). `fresh`:
    see `followers`."""
    if people is None:
        people = await followers(s, cfg, inc, fresh=fresh)
    out: list[PlannedDelivery] = []
    for name, why in people.items():
        if name in routed or name in actors:
            continue
        found, skipped = resolve_targets(cfg, Targets(contacts=[name]), severity=inc.severity, now=now,
                                         reason=why, news=True)
        out += found
        for note in skipped:
            log.info("subscription.not_sent", extra={"incident": inc.ref, "why": note})
    return out


# --- the service --------------------------------------------------------------------------------


class Subscriptions:
    """subscribe / unsubscribe / list for the acting person; every change audited in its transaction."""

    def __init__(self, db: Database, config: ConfigHolder, *, audit: AuditLog, clock: Clock) -> None:
        self.db = db
        self.config = config
        self.audit = audit
        self.clock = clock

    @property
    def cfg(self) -> Config:
        return self.config.cfg

    def subscriber(self, actor: Actor) -> Contact:
        """The contact `actor` is; subscriptions reach a person through a contact's channels."""
        require(self.cfg, actor, Permission.VIEW)
        names = sorted(acting_contacts(self.cfg, actor.identity))
        if not names:
            where = {"web": "console_user"}.get(actor.platform, f"chat.{actor.platform}")
            raise InvalidInput(f"{actor.identity} is not linked to a contact, so there is nowhere to send what "
                               f"you follow: put this id under your contact's `{where}` in config")
        if len(names) > 1:
            raise InvalidInput(f"{actor.identity} is linked to several contacts ({', '.join(names)}); "
                               "link it to one so it is clear whose channels to use")
        contact = self.cfg.contact(names[0])
        assert contact is not None
        return contact

    async def subscribe(self, *, actor: Actor, what: str) -> tuple[Subscription, bool]:
        """Follow `what` (INC-n or a filter); returns the subscription and whether it is new (following
        the same thing twice stores nothing and says so)."""
        contact = self.subscriber(actor)
        target = parse_target(what)
        now = self.clock.now()
        key = key_of(target)
        try:
            async with self.db.transaction() as s:
                row, new = await self._add(s, actor, contact, target, key, now)
        except IntegrityError:  # the same person subscribed the same thing at the same moment elsewhere
            async with self.db.sessions() as s:
                existing = await self._find(s, contact.name, key)
            if existing is None:
                raise
            return existing, False
        if not new:
            return row, False
        log.info("subscription.added", extra={"contact": contact.name, "follows": key, "actor": actor.identity})
        return row, True

    async def _add(self, s: AsyncSession, actor: Actor, contact: Contact, target: int | Filter, key: str,
                   now: datetime) -> tuple[Subscription, bool]:
        if isinstance(target, int):
            inc = await s.get(Incident, target)
            if inc is None:
                raise NotFound(f"no incident INC-{target}")
            if inc.state == "resolved":
                raise InvalidTransition(f"{inc.ref} is resolved: it has no more news to follow")
        elif target.tenant and target.tenant not in contact.tenants:
            raise Forbidden(f"{actor.identity} (contact {contact.name}) may not follow tenant "
                            f"{target.tenant!r}: contacts[{contact.name}].tenants does not list it"
                            + (f" (it lists {', '.join(contact.tenants)})" if contact.tenants else ""))
        existing = await self._find(s, contact.name, key)
        if existing is not None:
            return existing, False
        f = target if isinstance(target, Filter) else Filter()
        row = Subscription(contact=contact.name, key=key, incident_id=target if isinstance(target, int) else None,
                           severity=f.severity, tenant=f.tenant, source=f.source, created_by=actor.identity,
                           created_at=now)
        s.add(row)
        await s.flush()
        await self.audit.append(s, actor=actor.identity, source=actor.source, action="subscription.add",
                                resource=key if isinstance(target, int) else f"subscription:{row.id}",
                                now=now, details={"contact": contact.name, "follows": key})
        return row, True

    async def unsubscribe(self, *, actor: Actor, what: str) -> Subscription:
        contact = self.subscriber(actor)
        key = key_of(parse_target(what))
        now = self.clock.now()
        async with self.db.transaction() as s:
            row = await self._find(s, contact.name, key)
            if row is None:
                raise NotFound(await self._not_following(s, contact.name, key))
            await s.execute(delete(Subscription).where(Subscription.id == row.id))
            await self.audit.append(s, actor=actor.identity, source=actor.source, action="subscription.remove",
                                    resource=key if row.incident_id else f"subscription:{row.id}", now=now,
                                    details={"contact": contact.name, "follows": key})
        log.info("subscription.removed", extra={"contact": contact.name, "follows": key, "actor": actor.identity})
        return row

    async def mine(self, *, actor: Actor) -> tuple[Contact, list[Subscription]]:
        contact = self.subscriber(actor)
        async with self.db.sessions() as s:
            rows = (await s.execute(select(Subscription).where(Subscription.contact == contact.name)
                                    .order_by(Subscription.id))).scalars().all()
        return contact, list(rows)

    async def follows(self, *, actor: Actor, incident_id: int) -> bool | None:
        """Whether the actor follows this incident by its own subscription (None: not linked to a contact)."""
        names = acting_contacts(self.cfg, actor.identity)
        if len(names) != 1:
            return None
        async with self.db.sessions() as s:
            return await self._find(s, next(iter(names)), f"INC-{incident_id}") is not None

    @staticmethod
    async def _find(s: AsyncSession, contact: str, key: str) -> Subscription | None:
        return (await s.execute(select(Subscription).where(Subscription.contact == contact,
                                                           Subscription.key == key))).scalar_one_or_none()

    async def _not_following(self, s: AsyncSession, contact: str, key: str) -> str:
        """Why there is nothing to unsubscribe, with the way out when a filter is what brings the news."""
        text = f"{contact} does not follow {key}"
        if key.startswith("INC-"):
            inc = await s.get(Incident, parse_ref(key))
            if inc is None:
                return f"no incident {key}"
            rows = (await s.execute(select(Subscription).where(Subscription.contact == contact,
                                                               Subscription.incident_id.is_(None)))).scalars()
            via = [r.key for r in rows if row_filter(r).matches(inc) and utc(r.created_at) <= utc(inc.created_at)]
            if via:
                return f"{text} itself; its news comes through {', '.join(via)} (unsubscribe that instead)"
        return text + " (see /incident subscriptions)"


def describe(rows: Iterable[Subscription], contact: str) -> str:
    lines = [f"  {r.key:<40} since {utc(r.created_at):%Y-%m-%d %H:%M} UTC" for r in rows]
    if not lines:
        return (f"{contact} follows nothing. Follow an incident with /incident subscribe INC-12, or every new "
                "one matching a filter with /incident subscribe sev1 (or tenant:<name>, source:<name>).")
    return f"{contact} follows ({len(lines)}), by news channels:\n" + "\n".join(lines)
