"""Incident roles (commander, comms, scribe): who holds them, who may change them, and telling the new holder.

A role holder is an identity, the same strings `access` and audit use (`slack:U1`, `teams:<aad id>`,
`telegram:42`, `contact:alice`, `cli:bob`), so the reminders and the news rules can find the person's
contact with `rbac.acting_contacts`. A change is a ROLE thread entry, an audit entry, the card sync and
one private message to the new holder (their news channels, or their chat DM when they are no contact),
all in one transaction.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.appearance.vocabulary import holder_name, role_label
from core.config import INCIDENT_ROLES, Config, Targets
from core.errors import Forbidden, InvalidInput, InvalidTransition
from core.events import IncidentEvent
from core.incident_store import RESOLVED
from core.outcome import Outcome
from core.rbac import Actor, Permission, acting_contacts, require
from core.routing import PlannedDelivery, resolve_targets
from core.validation import parse_ref

log = logging.getLogger("tocsin.incidents")

ROLE_ALIASES = {"ic": "commander", "incident_commander": "commander", "lead": "commander",
                "communications": "comms", "comm": "comms", "notes": "scribe", "notetaker": "scribe"}
PERSON_HELP = ("name a contact from config, mention a chat user (Slack @user, Teams @mention, Telegram "
               "@username), or say `me`")
_SLACK_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,20})(?:\|([^>]*))?>")
_TAGGED = re.compile(r"<(slack|teams|telegram):([^|>\s]+)(?:\|([^>]*))?>")
"""`<teams:<id>|Name>`: how the Teams adapter passes on a person's @mention (bot/teams/bot.py)."""
_IDENTITY = re.compile(r"(slack|teams|telegram):(\S+)")
_DM = {"slack": "slack_dm", "teams": "teams_dm", "telegram": "telegram_dm"}


def check_role(role: str) -> str:
    """`comms`, `Comms`, `communications` -> `comms`; anything else is bad input naming the choices."""
    r = (role or "").strip().lower()
    r = ROLE_ALIASES.get(r, r)
    if r not in INCIDENT_ROLES:
        raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(INCIDENT_ROLES)}")
    return r


@dataclass(frozen=True)
class Person:
    """Who a role goes to: their identity, how to call them, and their contact in config if any."""

    identity: str
    name: str
    contact: str | None = None


def _sole(names: set[str]) -> str | None:
    return next(iter(names)) if len(names) == 1 else None


def resolve_person(cfg: Config, who: str, actor: Actor) -> Person:
    """The person `who` names; InvalidInput naming the problem when nobody matches."""
    w = " ".join((who or "").split())
    if not w:
        raise InvalidInput(f"whom? {PERSON_HELP}")
    if w.lower() == "me":
        contact = _sole(acting_contacts(cfg, actor.identity))
        return Person(actor.identity, contact or actor.display or actor.identity, contact)
    m = _SLACK_MENTION.fullmatch(w)
    tagged = _TAGGED.fullmatch(w)
    plain = _IDENTITY.fullmatch(w)
    if m or tagged or plain:
        platform, uid, shown = (("slack", m.group(1), m.group(2)) if m else
                                tagged.groups() if tagged else (*plain.groups(), None))  # type: ignore[union-attr]
        if platform == "telegram" and not uid.lstrip("-").isdigit():
            raise InvalidInput(f"{w!r} is not a Telegram user id (a number); use @username or a contact name")
        identity = f"{platform}:{uid}"
        contact = _sole(acting_contacts(cfg, identity))
        return Person(identity, contact or (shown or "").strip() or identity, contact)
    if w.startswith("@"):
        handle = w[1:].lower()
        for c in cfg.contacts:
            if (c.chat.telegram_username or "").lower() == handle or c.name.lower() == handle:
                return Person(f"contact:{c.name}", c.name, c.name)
        raise InvalidInput(f"unknown person {w!r}: no contact has telegram_username {w[1:]!r} or that name; "
                           f"{PERSON_HELP}")
    c = cfg.contact(w) or next((c for c in cfg.contacts if c.name.lower() == w.lower()), None)
    if c is None:
        raise InvalidInput(f"unknown person {w!r}: {PERSON_HELP}")
    return Person(f"contact:{c.name}", c.name, c.name)


def holder_contacts(cfg: Config, identity: str | None) -> set[str]:
    """The contacts a role holder is (for reminders and private messages): none for an unknown identity."""
    return acting_contacts(cfg, identity) if identity else set()


def holder_targets(cfg: Config, identity: str, *, severity: str, now: Any, reason: str) -> list[PlannedDelivery]:
    """Where a role holder is told something privately (what a new role does, a reminder): their contact's
    news channels (quiet hours kept; no phone rings unless listed under `preferences.updates`), else a DM
    on the chat platform of their identity, when that platform is on."""
    names = sorted(holder_contacts(cfg, identity))
    if names:
        found, skipped = resolve_targets(cfg, Targets(contacts=names), severity=severity, now=now, reason=reason,
                                         news=True)
        for why in skipped:
            log.info("role.holder.skipped", extra={"holder": identity, "why": why})
        return found
    platform, _, uid = identity.partition(":")
    channel = _DM.get(platform)
    if channel and getattr(cfg, platform).enabled:
        return [PlannedDelivery(identity, channel, uid, reason, "chat DM")]
    return []


class IncidentRoles:
    """`/incident role INC-n <role> <person>` on every entry point."""

    def __init__(self, service: Any) -> None:
        # an IncidentService (typed Any, like core.maintenance.Maintenance: its internals write the rows)
        self.service = service

    @property
    def cfg(self) -> Config:
        return self.service.cfg  # type: ignore[no-any-return]

    async def declare(self, *, commander: str, actor: Actor, **declare: Any) -> tuple[Outcome, Outcome | None]:
        """Declare with someone else named commander (`declare ... --commander @bob`), in ONE transaction: the
        incident opens (INITIAL, pages) and a ROLE entry hands it to the named commander, who is told
        privately what the role does. A bad name stores nothing."""
        svc = self.service
        require(self.cfg, actor, Permission.ASSIGN_ROLES)
        resolve_person(self.cfg, commander, actor)  # bad input is answered before anything is written
        role: Outcome | None = None
        async with svc.db.transaction() as s:
            out = await svc.declare(actor=actor, session=s, **declare)
            if out.incident is not None:
                role = await self.assign(out.incident.id, role="commander", person=commander, actor=actor,
                                         session=s)
        await svc.events.publish_pending(s)
        return out, role

    async def assign(self, ref: str | int, *, role: str, person: str, actor: Actor,
                     session: AsyncSession | None = None) -> Outcome:
        """Give `role` to `person`. OPERATOR and above may name anyone; anyone may take an empty role with
        `me`. The new holder is told privately what the role does (config `roles:`). With `session`, it
        writes in the caller's transaction and tells listeners once the caller publishes."""
        svc, cfg = self.service, self.cfg
        role = check_role(role)
        taking = (person or "").strip().lower() == "me"
        require(cfg, actor, Permission.VIEW)
        if not taking:
            try:
                require(cfg, actor, Permission.ASSIGN_ROLES)
            except Forbidden as exc:
                raise Forbidden(f"{exc}; anyone may take an empty role themselves with "
                                f"`/incident role INC-n {role} me`") from None
        holder = resolve_person(cfg, person, actor)
        iid = parse_ref(ref)
        now = svc.clock.now()
        async with svc._tx(session) as s:
            inc = await svc._load(s, iid, ref)
            if inc.state == RESOLVED:
                raise InvalidTransition(f"{inc.ref} is resolved; its roles stay as they were")
            before: str | None = getattr(inc, role)
            before_name = holder_name(before, inc.role_names, role)
            if before == actor.identity and actor.display and role not in (inc.role_names or {}):
                before_name = actor.display  # the declarer, named as they call themselves
            if before == holder.identity:
                return Outcome(inc, None, 0, changed=False,
                               note=f"{holder.name} already is {role_label(role).lower()} of {inc.ref}.")
            if taking and before:
                raise InvalidTransition(f"{role_label(role)} of {inc.ref} is already {before_name}; `me` only "
                                        "takes an empty role (an operator can reassign it by name)")
            await svc._cas(s, inc, **{role: holder.identity, "role_names": {**(inc.role_names or {}),
                                                                              role: holder.name}})
            by = actor.display or actor.identity
            body = (f"{holder.name} took {role_label(role).lower()}" if taking else
                    f"{holder.name} is now {role_label(role).lower()} (assigned by {by})")
            if before:
                body += f", was {before_name}"
            msg = await svc._message(s, inc, "ROLE", body, actor, now, extra={
                "role": role, "holder": holder.identity, "name": holder.name, "previous": before})
            told = self._private(inc, role, holder, now=now)
            description = cfg.roles.description(role)
            queued = await svc.fanout.role_change(s, inc, msg, told, now, private=(
                f"You are now {role_label(role).lower()} of {inc.ref} ({inc.title}).\n{description}"))
            await svc.audit.append(s, actor=actor.identity, source=actor.source, action="incident.role",
                                   resource=inc.ref, now=now, details={
                                       "role": role, "holder": holder.identity, "previous": before,
                                       "self": taking, "told": [f"{d.recipient}/{d.channel}" for d in told]})
        log.info("incident.role.assigned", extra={"incident": inc.ref, "role": role, "holder": holder.identity,
                                                  "actor": actor.identity, "queued": queued})
        await svc.events.emit(session, IncidentEvent("role", inc.id, msg.id, actor.identity, queued, inc.state,
                                                     inc.state))
        return Outcome(inc, msg, queued, note="" if told else
                       f"{holder.name} has no contact or chat DM to be told privately what the role does")

    def _private(self, inc: Any, role: str, holder: Person, *, now: Any) -> list[PlannedDelivery]:
        """Where the new holder hears what the role does (holder_targets)."""
        identity = f"contact:{holder.contact}" if holder.contact else holder.identity
        return holder_targets(self.cfg, identity, severity=inc.severity, now=now, reason=f"new {role}")
