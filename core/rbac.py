"""Roles, permissions and identity -> role. Checked inside the core so no adapter can skip it."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from core.config import Config
from core.errors import Forbidden
from core.roles import Role


class Permission(str, Enum):
    SEND_INCIDENTS = "send incidents"
    MANAGE_CONTACTS = "manage contacts"
    MANAGE_SETTINGS = "manage settings"
    VIEW_AUDIT = "view the audit log"
    ACKNOWLEDGE = "acknowledge incidents"
    VIEW = "view incidents"
    MANAGE_MAINTENANCE = "start and end maintenance windows"
    ASSIGN_ROLES = "assign incident roles to others"
    """Anyone may take an empty role themselves (`/incident role INC-1 scribe me`); naming others needs this."""
    ADD_NOTES = "add notes to incident timelines"
    """Whoever holds a role on the incident may add notes to it without this."""


MATRIX: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MANAGER: frozenset({Permission.SEND_INCIDENTS, Permission.MANAGE_CONTACTS, Permission.VIEW_AUDIT,
                             Permission.ACKNOWLEDGE, Permission.VIEW, Permission.MANAGE_MAINTENANCE,
                             Permission.ASSIGN_ROLES, Permission.ADD_NOTES}),
    Role.OPERATOR: frozenset({Permission.SEND_INCIDENTS, Permission.ACKNOWLEDGE, Permission.VIEW,
                              Permission.ASSIGN_ROLES, Permission.ADD_NOTES}),
    Role.VIEWER: frozenset({Permission.VIEW}),
}


@dataclass(frozen=True)
class Actor:
    """Who is acting: `platform:user_id`, plus where the request came from (IP or platform) for audit."""

    identity: str
    source: str = ""
    display: str | None = None
    role: Role | None = None
    """Set only by an entry point that authenticates against its own user store (the web console's
    users table); everyone else's role comes from config `access`."""

    @property
    def platform(self) -> str:
        return self.identity.partition(":")[0]

    @property
    def user_id(self) -> str:
        return self.identity.partition(":")[2]

    def __str__(self) -> str:
        return self.identity


SYSTEM = Actor("system:tocsin", "internal")


def role_of(cfg: Config, identity: str) -> Role:
    """Mapped role from config (exact identity, else an API key's own role, else `platform:*`); unknown
    identities get default_role (VIEWER unless configured)."""
    if identity.startswith("system:"):
        return Role.ADMIN
    if identity in cfg.access:
        return Role(cfg.access[identity])
    if identity.startswith("api:"):
        # An API key carries its own role; the Alertmanager receiver's own credentials act as operator.
        name = identity.partition(":")[2]
        key = next((k for k in cfg.api.keys if k.name == name), None)
        if key is not None:
            return Role(key.role)
        if name == "alertmanager":
            return Role.OPERATOR
    wildcard = identity.partition(":")[0] + ":*"
    return Role(cfg.access.get(wildcard, cfg.default_role))


def role_for(cfg: Config, actor: Actor) -> Role:
    return actor.role if actor.role is not None else role_of(cfg, actor.identity)


def allows(role: Role | str, perm: Permission) -> bool:
    """Whether the permission table gives `role` the permission (for showing or hiding a control)."""
    return perm in MATRIX[Role(role)]


def require(cfg: Config, actor: Actor, perm: Permission) -> Role:
    """Raise Forbidden with a message that says who, which role, and what was refused."""
    role = role_for(cfg, actor)
    if perm not in MATRIX[role]:
        allowed = ", ".join(r.value.upper() for r, p in MATRIX.items() if perm in p)
        raise Forbidden(f"{actor.identity} has role {role.value.upper()}, which may not {perm.value} "
                        f"(allowed: {allowed})")
    return role


def acting_contacts(cfg: Config, identity: str) -> set[str]:
    """The contacts an acting identity is, to leave them out of the news of their own action: chat ids
    (`slack:U1`, `teams:..`, `telegram:..`), `contact:NAME` (voice keypress, ack link), a phone number
    (`sms:+1..`, `voice:+1..`, two-way SMS), `cli:NAME`/`web:NAME` when NAME is the contact's name or
    its `chat.cli`/`chat.web` (or, for `web:`, its `console_user`), and `api:KEY` for a key whose `contact`
    is that person. Only for telling people, whose subscriptions and bell they are (core/subscriptions.py,
    core/bell.py); roles never come from this."""
    platform, _, uid = identity.partition(":")
    if not uid:
        return set()
    out: set[str] = set()
    for c in cfg.contacts:
        if platform == "contact":
            hit = uid == c.name
        elif platform in ("slack", "teams", "telegram"):
            hit = uid == getattr(c.chat, platform)
        elif platform in ("sms", "voice", "phone"):
            hit = c.phone is not None and uid == c.phone
        elif platform in ("cli", "web"):
            hit = uid in (c.name, getattr(c.chat, platform)) or (platform == "web" and uid == c.console_user)
        elif platform == "api":
            hit = any(k.name == uid and k.contact == c.name for k in cfg.api.keys)
        else:
            hit = False
        if hit:
            out.add(c.name)
    return out


def contact_identities(cfg: Config, contact_name: str) -> set[str]:
    """Chat identities of a contact, as platform:user_id strings."""
    c = cfg.contact(contact_name)
    if not c:
        return set()
    out = {f"contact:{c.name}"}
    if c.phone:
        out.add(f"sms:{c.phone}")  # an SMS reply acts as the number it came from
    for platform in ("slack", "teams", "telegram"):
        uid = getattr(c.chat, platform)
        if uid:
            out.add(f"{platform}:{uid}")
    return out
