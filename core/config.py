"""config.yaml: pydantic models, ${ENV} interpolation, and errors that name file, line and key path."""
from __future__ import annotations

import os
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo
from functools import lru_cache
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import re2
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from core.errors import ConfigError
from core.roles import ROLES

SEVERITIES = ("sev1", "sev2", "sev3", "sev4")
SEVERITY_ALIASES = {"critical": "sev1", "high": "sev2", "medium": "sev3", "low": "sev4"}
CHANNELS = ("email", "sms", "voice", "slack_webhook", "teams_webhook", "telegram", "webhook", "ntfy", "pagerduty",
            "webpush", "outbox")
DM_CHANNELS = ("slack_dm", "teams_dm", "telegram_dm")
"""Pages as a direct chat message from the bot to the contact's `chat` id; their senders come from the chat
adapters (bot/surface.py DirectMessageSender), not from core/delivery/registry.py."""


def normalize_severity(value: Any) -> Any:
    """Accept sev1..sev4 and the aliases critical/high/medium/low, any case."""
    if isinstance(value, str):
        v = value.strip().lower()
        return SEVERITY_ALIASES.get(v, v)
    return value


def _check_severity(value: Any) -> str:
    value = normalize_severity(value)
    if value not in SEVERITIES:
        raise ValueError("must be one of sev1..sev4 (or critical, high, medium, low)")
    return str(value)


def _check_role(value: Any) -> str:
    v = str(value).strip().lower() if isinstance(value, str) else value
    if v not in ROLES:
        raise ValueError(f"must be one of {', '.join(ROLES)}")
    return str(v)


def _check_identity(value: Any) -> str:
    ident = str(value)
    platform, sep, user = ident.partition(":")
    if not sep or not user or platform not in ("slack", "teams", "telegram", "cli", "api", "web", "sms"):
        raise ValueError(f"identity {ident!r} must look like platform:user_id "
                         "(slack, teams, telegram, cli, api, web, sms; user may be * for everyone)")
    return ident


_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_NTFY_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_time(value: Any) -> str:
    """HH:MM from 00:00 to 23:59 (a page at a time like 24:00 would fail when it is evaluated)."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 22:00 as the number 1320.
        raise ValueError('must be a time in quotes, like "22:00"')
    m = _TIME.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(f'must be a time from 00:00 to 23:59, like "22:00" (got {value!r})')
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def _check_phone(value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, str) or not _E164.match(value):
        hint = " (in quotes)" if isinstance(value, int) and not isinstance(value, bool) else ""
        raise ValueError(f"phone must be E.164, like +15550100001{hint}")
    return value


def _check_email(value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or not _EMAIL.match(value)):
        raise ValueError("email must look like name@example.com")
    return value


def _chat_id(value: Any) -> Any:
    """Chat ids are text, but Telegram's are copied as numbers (-1001234567890): take those as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Severity = Annotated[str, BeforeValidator(_check_severity)]
TimeOfDay = Annotated[str, BeforeValidator(_check_time)]
Phone = Annotated[str | None, BeforeValidator(_check_phone)]
Email = Annotated[str | None, BeforeValidator(_check_email)]
ChatId = Annotated[str, BeforeValidator(_chat_id)]
Identity = Annotated[str, BeforeValidator(_check_identity)]
Role = Annotated[str, BeforeValidator(_check_role)]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """`90s`, `10m`, `2h`, `7d`, `1w` (also a plain number of seconds) -> timedelta; ValueError otherwise.
    The one duration grammar of the config, the chat command and the CLI."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(value) if isinstance(value, str) else None
        if not m:
            raise ValueError(f"must be a duration like 90s, 10m, 2h or 7d (got {value!r})")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds < 0:
        raise ValueError("must not be negative")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    """The shortest exact form parse_duration reads back (2h, 90s, 1d)."""
    secs = int(td.total_seconds())
    for unit in ("w", "d", "h", "m"):
        n = _UNIT_SECONDS[unit]
        if secs and secs % n == 0:
            return f"{secs // n}{unit}"
    return f"{secs}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Channel = Literal["email", "sms", "voice", "slack_webhook", "teams_webhook", "telegram", "webhook", "ntfy", "webpush",
                  "outbox", "slack_dm", "teams_dm", "telegram_dm"]
"""Channels a contact can prefer (pagerduty is a destination only: it pages its own people)."""


class Model(BaseModel):
    """Base for every config section: unknown keys are an error, not a silent typo."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- server, storage, logging -------------------------------------------------------------


class ServerConfig(Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    """Base URL people and providers reach us at (ack links, Twilio callbacks)."""
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    ack_link_secret: SecretStr | None = None
    """HMAC key of the signed, single-use `/ack/<token>` links in pages (at least 32 characters). Unset: pages
    link to the console incident page instead, which needs a console account."""
    ack_link_hours: float = Field(24.0, gt=0, le=24 * 30)
    """How long an ack link works after the page was queued."""

    @field_validator("ack_link_secret")
    @classmethod
    def _ack_secret_long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        """A short key makes links guessable offline; refuse it at load, not at the first page."""
        if v is not None and v.get_secret_value() and len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return v


SUPPORTED_DATABASES = ("sqlite+aiosqlite:///path/to/tocsin.db", "postgresql+asyncpg://user@host:5432/tocsin")


class DatabaseConfig(Model):
    url: str = "sqlite+aiosqlite:///tocsin.db"

    @field_validator("url")
    @classmethod
    def _supported(cls, v: str) -> str:
        """Only the async drivers we ship; anything else would fail at `run` with a driver traceback."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        supported = " or ".join(SUPPORTED_DATABASES)
        try:
            driver = make_url(v).drivername
        except (ArgumentError, ValueError):
            raise ValueError(f"not a database URL; use {supported}") from None
        if driver not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            # Name the scheme only: the rest of the URL may hold a password.
            raise ValueError(f"unsupported database {driver!r}; use {supported}")
        return v
    busy_timeout_ms: int = Field(10_000, ge=0)
    pool_size: int = Field(10, ge=1)


class LoggingConfig(Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class AuditConfig(Model):
    checkpoint_key: SecretStr = SecretStr("")
    """HMAC key for signed checkpoints of chain length and head (detects a truncated tail)."""
    checkpoint_every: int = Field(100, ge=1)


# --- contacts, lists, destinations ---------------------------------------------------------


class ChatIds(Model):
    slack: str | None = None
    teams: str | None = None
    telegram: ChatId | None = None
    cli: str | None = None
    """CLI login (`cli:NAME`) when it is not the contact's name; used to know who acted, never for roles."""
    web: str | None = None
    """Web console user (`web:NAME`) when it is not the contact's name; likewise only to know who acted."""
    telegram_username: str | None = None
    """Telegram @username (with or without the @), so `/incident role INC-1 comms @name` finds this contact:
    Telegram's @mentions carry the name only, not the numeric id."""

    @field_validator("telegram_username")
    @classmethod
    def _username(cls, v: str | None) -> str | None:
        if v is None:
            return v
        name = v.removeprefix("@")
        if not re.fullmatch(r"[A-Za-z0-9_]{3,32}", name):
            raise ValueError(f"Telegram username {v!r} must be 3-32 letters, digits or _ (like @alice_ops)")
        return name


class QuietHours(Model):
    start: TimeOfDay
    end: TimeOfDay
    timezone: str = "UTC"
    allow_severities: list[Severity] = Field(default_factory=lambda: ["sev1"])
    """Severities that still reach every preferred channel during quiet hours."""
    quiet_channels: list[Channel] = Field(default_factory=lambda: ["sms", "voice"])
    """Channels suppressed during quiet hours for other severities."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {v!r}") from exc
        return v


INTERRUPTING_CHANNELS = ("voice", "sms", "ntfy", "webpush")
"""Channels that ring or buzz a phone (an ntfy push included). News (updates, acks, resolutions) uses them only when the person
lists them under `preferences.updates`; pages (new incident, escalation, urgent notify) use any channel."""


def _severity_keys(v: Any) -> Any:
    """`critical:` and `SEV1:` are the same key as `sev1:`; unknown keys are left for `extra=forbid`."""
    if not isinstance(v, dict):
        return v
    out: dict[Any, Any] = {}
    for key, chans in v.items():
        k = normalize_severity(key) if isinstance(key, str) else key
        out[k if k in SEVERITIES else key] = chans
    return out


class NewsPreferences(Model):
    """`preferences.updates`: channels for news (UPDATE, BRIDGE, MONITOR, ACK, RESOLVED and plain
    notifications), per severity with a `default`; a plain list means the same list for every severity."""

    default: list[Channel] | None = None
    sev1: list[Channel] | None = None
    sev2: list[Channel] | None = None
    sev3: list[Channel] | None = None
    sev4: list[Channel] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, v: Any) -> Any:
        if isinstance(v, list):
            return {"default": v}
        if v is not None and not isinstance(v, dict):
            raise ValueError("must be a list of channels, like [email], or one list per severity, "
                             "like {default: [email], sev1: [email, sms]}")
        return _severity_keys(v)


class Preferences(Model):
    """Channels in order per severity (sev1..sev4, `default` for the rest) for pages, and `updates` for news."""

    default: list[Channel] | None = None
    sev1: list[Channel] | None = None
    sev2: list[Channel] | None = None
    sev3: list[Channel] | None = None
    sev4: list[Channel] | None = None
    updates: NewsPreferences | None = None
    """Absent: news goes to the non-interrupting channels of the severity list (never voice, SMS or ntfy)."""

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        return _severity_keys(v)

    def lists(self) -> list[tuple[tuple[str, ...], list[str]]]:
        """Every configured list with its key path (`("sev1",)`, `("updates", "default")`), for checks."""
        out: list[tuple[tuple[str, ...], list[str]]] = []
        for key in ("default", *SEVERITIES):
            if getattr(self, key) is not None:
                out.append(((key,), list(getattr(self, key))))
            if self.updates is not None and getattr(self.updates, key) is not None:
                out.append((("updates", key), list(getattr(self.updates, key))))
        return out

    def pages(self, severity: str | None) -> tuple[list[str], str]:
        """The page list for a severity and the key it came from (`preferences.sev1`)."""
        own = getattr(self, severity, None) if severity in SEVERITIES else None
        if own is not None:
            return list(own), f"preferences.{severity}"
        if self.default is not None:
            return list(self.default), "preferences.default"
        return ["email"], "built-in default [email]"

    def news(self, severity: str | None) -> tuple[list[str], str]:
        """The news list for a severity and where it came from; without `updates`, the page list minus
        interrupting channels (voice, sms, ntfy), or email when nothing else is left."""
        u = self.updates
        if u is not None:
            own = getattr(u, severity, None) if severity in SEVERITIES else None
            if own is not None:
                return list(own), f"preferences.updates.{severity}"
            if u.default is not None:
                return list(u.default), "preferences.updates.default"
        chans, key = self.pages(severity)
        quiet = [c for c in chans if c not in INTERRUPTING_CHANNELS]
        if not quiet:
            return ["email"], f"{key} has only voice/sms: email for news"
        return quiet, f"{key} without voice/sms"


_TENANT = re.compile(r"\S{1,64}")
"""A tenant name: what `tenant:<name>` can say in a chat command (no spaces), as long as an events API tenant_id."""


class Contact(Model):
    name: str = Field(min_length=1)
    email: Email = None
    phone: Phone = None
    """E.164."""
    chat: ChatIds = Field(default_factory=ChatIds)
    ntfy_topic: str | None = None
    console_user: str | None = None
    """The console user this contact signs in as: the bell shows their pages, `webpush` reaches their browsers."""
    """A topic on channels.ntfy.server (`alice-pages`) or a full topic URL (`https://ntfy.example/alice`)."""
    preferences: Preferences = Field(default_factory=lambda: Preferences(default=["email"]))
    """Channels in order, per severity (sev1..sev4) with a `default` fallback; `updates` for news."""
    quiet_hours: QuietHours | None = None
    tenants: list[str] = Field(default_factory=list)
    """Tenants (the events API's `tenant_id`) this person belongs to: only they may subscribe to a tenant's
    incidents (`/incident subscribe tenant:<name>`)."""

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str]) -> list[str]:
        for t in v:
            if not _TENANT.fullmatch(t):
                raise ValueError(f"tenant {t!r} must be 1-64 characters without spaces (an events API tenant_id)")
        dup = sorted({t for t in v if v.count(t) > 1})
        if dup:
            raise ValueError(f"tenant {dup[0]!r} is listed twice")
        return v

    @field_validator("ntfy_topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is None or v.startswith(("http://", "https://")):
            if v is not None:
                _check_http_url(v, f"topic URL {v!r} needs a host and a topic, like https://ntfy.sh/alice",
                                topic=True)
            return v
        if not _NTFY_TOPIC.match(v):
            raise ValueError(f"ntfy topic {v!r} must be 1-64 characters of A-Z, a-z, 0-9, _ and - (or a full "
                             "topic URL)")
        return v


class ContactList(Model):
    name: str = Field(min_length=1)
    members: list[str] = Field(default_factory=list)
    lists: list[str] = Field(default_factory=list)
    """Other contact lists included in this one (cycles are rejected)."""


PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


def _check_http_url(url: str, what: str, *, topic: bool = False) -> None:
    """An http(s) URL with a host (and, for a ntfy topic URL, a topic path): fail at load, not at page time."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or (topic and parts.path.strip("/") == ""):
        raise ValueError(what)


class Destination(Model):
    """A channel destination that is not a person: a Slack/Teams webhook, a Telegram chat, a webhook."""

    name: str = Field(min_length=1)
    channel: Literal["slack_webhook", "teams_webhook", "telegram", "webhook", "email", "ntfy", "pagerduty", "outbox"]
    url: SecretStr | None = None
    """The webhook URL; for ntfy the topic URL (`https://ntfy.sh/ops-pages`); for pagerduty the Events API
    v2 URL (default https://events.pagerduty.com/v2/enqueue)."""
    chat_id: ChatId | None = None
    address: str | None = None
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    hmac_secret: SecretStr | None = None
    token: SecretStr | None = None
    """ntfy access token (sent as `Authorization: Bearer`)."""
    routing_key: SecretStr | None = None
    """PagerDuty integration key (Events API v2) of the service to page."""

    @model_validator(mode="after")
    def _needs_address(self) -> Destination:
        if self.channel == "pagerduty":
            if not self.routing_key or not self.routing_key.get_secret_value():
                raise ValueError("a pagerduty destination needs routing_key")
            if self.url is None:
                self.url = SecretStr(PAGERDUTY_EVENTS_URL)
            _check_http_url(self.url.get_secret_value(), "a pagerduty url must be the http(s) Events API v2 URL")
        if self.channel == "ntfy":
            _check_http_url(self.url.get_secret_value() if self.url else "", "a ntfy destination needs url, "
                            "the topic URL (https://ntfy.sh/TOPIC)", topic=True)
        if self.channel in ("slack_webhook", "teams_webhook", "webhook") and not self.url:
            raise ValueError(f"a {self.channel} destination needs url")
        if self.channel == "telegram" and not self.chat_id:
            raise ValueError("a telegram destination needs chat_id")
        if self.channel == "email" and not self.address:
            raise ValueError("an email destination needs address")
        return self


# --- routing and escalation ----------------------------------------------------------------


@lru_cache(maxsize=1024)
def user_regex(pattern: str) -> Any:
    """A routing `regex` compiled with RE2: linear time in the input, so no event field can stall the event
    loop (Python's `re` backtracks for seconds on some patterns). Raises re2.error for what RE2 does not
    support (backreferences, lookarounds); RE2's own stderr logging is off."""
    opts = re2.Options()
    opts.log_errors = False
    return re2.compile(pattern, opts)


def _re2_reason(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else exc
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


class Condition(Model):
    field: str = Field(min_length=1)
    operator: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "regex", "exists"] = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _check(self) -> Condition:
        if self.operator == "regex":
            if not isinstance(self.value, str):
                raise ValueError("regex needs a string value")
            try:
                user_regex(self.value)
            except re2.error as exc:
                raise ValueError(f"bad regex {self.value!r}: {_re2_reason(exc)} (RE2 syntax: no "
                                 "backreferences or lookarounds)") from exc
        if self.operator in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"{self.operator} needs a list value")
        if self.operator == "exists" and self.value not in (None, True, False):
            raise ValueError("exists takes true, false or no value")
        if self.operator in ("gt", "gte", "lt", "lte"):
            try:
                if isinstance(self.value, bool):
                    raise ValueError
                float(self.value)
            except (TypeError, ValueError):
                raise ValueError(f"{self.operator} needs a number, not {self.value!r}") from None
        return self


class Targets(Model):
    lists: list[str] = Field(default_factory=list)
    contacts: list[str] = Field(default_factory=list)
    destinations: list[str] = Field(default_factory=list)
    schedules: list[str] = Field(default_factory=list)
    """On-call schedules: whoever is on call when the page is queued (core/schedules)."""

    def empty(self) -> bool:
        return not (self.lists or self.contacts or self.destinations or self.schedules)


class Flapping(Model):
    """An incident whose correlation key resolved and reopened more than `reopens` times `within` T is
    held open and marked flapping (one page) until no state change came for T (core/flapping.py)."""

    reopens: int = Field(ge=1)
    within: Duration

    @field_validator("within")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("within must be longer than 0, e.g. within: 30m")
        return v


class RoutingRule(Model):
    name: str = Field(min_length=1)
    description: str = ""
    event_types: list[str] = Field(default_factory=list)
    """Event types this rule matches (declare, update, bridge, monitor, ack, resolve, escalate, notify,
    or an inbound event type); empty matches all."""
    min_severity: Severity | None = None
    sources: list[str] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    targets: Targets = Field(default_factory=Targets)
    escalation_policy: str | None = None
    severity: Severity | None = None
    """Severity for an incident opened by an inbound event matched by this rule."""
    action: Literal["auto", "open", "update", "resolve", "notify"] = "auto"
    """What an inbound event does; `auto` opens on first sight and updates after."""
    continue_: bool = Field(False, alias="continue")
    min_occurrences: int = Field(1, ge=1)
    """Storms page once: an inbound event this rule matches opens an incident only once this many matching
    events (same rule and correlation key, else same title) came `within` the window."""
    within: Duration | None = None
    flapping: Flapping | None = None
    """Flapping detection for incidents this rule opens (overrides the global `flapping`)."""

    @model_validator(mode="after")
    def _occurrences(self) -> RoutingRule:
        if self.min_occurrences > 1 and self.within is None:
            raise ValueError("min_occurrences needs `within`, e.g. within: 10m")
        return self


class RoutingConfig(Model):
    default_targets: Targets = Field(default_factory=Targets)
    rules: list[RoutingRule] = Field(default_factory=list)


class EscalationLevel(Model):
    wait_minutes: float = Field(gt=0)
    targets: Targets


class EscalationPolicy(Model):
    name: str = Field(min_length=1)
    levels: list[EscalationLevel] = Field(min_length=1)
    repeat: int = Field(0, ge=0)
    """How many more times the whole policy runs after its last level."""


# --- on-call schedules --------------------------------------------------------------------

_DAY_NAMES = {"monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
              "saturday": "sat", "sunday": "sun"}


def _check_day(value: Any) -> str:
    v = value.strip().lower() if isinstance(value, str) else value
    v = _DAY_NAMES.get(v, v)
    if v not in _DAY_NAMES.values():
        raise ValueError(f"{value!r} is not a day: use mon..sun (or monday..sunday)")
    return str(v)


def _check_zone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r} (use an IANA name like Europe/Berlin)") from exc
    return str(value)


def parse_rotation(rotation: str) -> tuple[str, int]:
    """('daily', 1) | ('weekly', 1) | ('hours', n); raises ValueError with a clear reason."""
    r = rotation.strip().lower()
    if r in ("daily", "weekly"):
        return r, 1
    if r.startswith("hours:"):
        n = r.partition(":")[2]
        if n.isdigit() and 1 <= int(n) <= 24 * 366:
            return "hours", int(n)
        raise ValueError(f"rotation {rotation!r}: hours:<n> needs a whole number of hours from 1 to 8784")
    raise ValueError(f"rotation {rotation!r} must be daily, weekly or hours:<n>")


def _check_rotation(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be daily, weekly or hours:<n>")
    parse_rotation(value)
    return value.strip().lower()


Weekday = Annotated[str, BeforeValidator(_check_day)]
Zone = Annotated[str, BeforeValidator(_check_zone)]
Rotation = Annotated[str, BeforeValidator(_check_rotation)]


class Restrict(Model):
    """When a layer may cover: these days, from..to local time (from after to runs past midnight)."""

    days: list[Weekday] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                min_length=1)
    from_: TimeOfDay | None = Field(None, alias="from")
    to: TimeOfDay | None = None


class ScheduleLayer(Model):
    name: str = Field(min_length=1)
    members: list[str] = Field(min_length=1)
    rotation: Rotation = "weekly"
    handoff: TimeOfDay = "09:00"
    """Local time (in the schedule's zone) at which shifts change."""
    handoff_day: Weekday | None = None
    """Weekly rotations only: the day shifts change (default: the start date's day)."""
    start: date
    """The first member's first shift begins at this date's handoff."""
    restrict: Restrict | None = None

    @model_validator(mode="after")
    def _weekly_only(self) -> ScheduleLayer:
        if self.handoff_day and self.rotation != "weekly":
            raise ValueError(f"handoff_day applies to weekly rotations only (this one is {self.rotation})")
        if self.restrict and self.restrict.from_ and self.restrict.from_ == self.restrict.to:
            raise ValueError("restrict.from and restrict.to are equal: the layer would never cover")
        return self


class Schedule(Model):
    name: str = Field(min_length=1)
    timezone: Zone = "UTC"
    layers: list[ScheduleLayer] = Field(min_length=1)
    """Later layers win where they cover."""
    fallback: Targets = Field(default_factory=Targets)
    """Paged when nobody is on call (an internal alert is raised too)."""
    announce: Targets = Field(default_factory=Targets)
    """Where each handoff is also announced (e.g. a Slack/Teams webhook or Telegram chat destination)."""
    announce_handoffs: bool = False
    """Also post each handoff in the incident channel of every chat platform that has one (Slack
    incident_channel, Teams incident_conversation, Telegram incident_chat_id), through the delivery queue."""
    feed_token: SecretStr | None = None
    """Secret in the iCalendar feed URL (`/api/v1/schedules/<name>.ics?token=...`); no token, no feed."""


class Digest(Model):
    """A scheduled summary: an event of `event_type` that routing rules match like any other."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]{1,60}$")
    cron: str
    """Five crontab fields (minute hour day month weekday), e.g. "0 9 * * mon-fri"."""
    timezone: str = "UTC"
    event_type: str = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return QuietHours._tz(v)  # type: ignore[operator]

    @model_validator(mode="after")
    def _cron(self) -> Digest:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(self.cron, timezone=self.timezone)
        except ValueError as exc:
            raise ValueError(f"cron {self.cron!r}: {exc} (five fields: minute hour day month weekday, "
                             'like "0 9 * * mon-fri")') from None
        return self


# --- delivery channels -----------------------------------------------------------------------


class RetryPolicy(Model):
    max_retries: int = Field(3, ge=0)
    base_seconds: float = Field(1.0, gt=0)
    factor: float = Field(2.0, ge=1)
    max_seconds: float = Field(300.0, gt=0)
    jitter: float = Field(0.1, ge=0, le=1)
    timeout_seconds: float = Field(10.0, gt=0)


class ChannelBase(Model):
    outbox: bool = False
    """Render but store in the local outbox instead of sending (the embedded default)."""
    concurrency: int = Field(8, ge=1)
    retry: RetryPolicy | None = None


class EmailChannel(ChannelBase):
    host: str = "127.0.0.1"
    port: int = 25
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = "tocsin@localhost"


class SmsChannel(ChannelBase):
    provider: Literal["sns", "twilio"] = "sns"
    """Who sends the SMS: AWS SNS (region, credentials) or Twilio Messaging (account_sid, auth_token, from)."""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    sender_id: str | None = None
    max_segments: int = Field(3, ge=1, le=10)
    account_sid: str | None = None
    auth_token: SecretStr | None = None
    """Twilio: also the key that checks the X-Twilio-Signature of replies posted to /twilio/sms."""
    from_number: Phone = None
    messaging_service_sid: str | None = None
    """Twilio: send from a Messaging Service instead of from_number."""
    api_url: str = "https://api.twilio.com"
    reply_topic_arn: str | None = None
    """SNS two-way SMS: the topic replies arrive on; /sns/sms confirms and accepts only this topic."""
    sns_cert_hosts: list[str] = Field(default_factory=list)
    """Extra hosts allowed to serve SNS signing certificates (tests only; sns.<region>.amazonaws.com always)."""


class VoiceChannel(ChannelBase):
    account_sid: str | None = None
    auth_token: SecretStr | None = None
    from_number: str | None = None
    api_url: str = "https://api.twilio.com"


class WebhookChannel(ChannelBase):
    pass


class TelegramChannel(ChannelBase):
    pass


class NtfyChannel(ChannelBase):
    server: str = "https://ntfy.sh"
    """Where contacts' `ntfy_topic` names live (a full topic URL in a contact overrides it)."""
    token: SecretStr | None = None
    """Access token for contacts' topics on `server` (destinations carry their own)."""

    @field_validator("server")
    @classmethod
    def _server(cls, v: str) -> str:
        _check_http_url(v, f"must be an http(s) URL like https://ntfy.sh, not {v!r}")
        return v.rstrip("/")


class WebPushChannel(ChannelBase):
    subject: str = "mailto:tocsin@localhost"
    """VAPID `sub` claim: how a push service can reach the operator (mailto: or https:)."""
    ttl_seconds: int = Field(3600, ge=0)
    """How long a push service keeps a page for a browser that is offline."""

    @field_validator("subject")
    @classmethod
    def _sub(cls, v: str) -> str:
        if not v.startswith(("mailto:", "https://")):
            raise ValueError("must start with mailto: or https:// (the VAPID sub claim)")
        return v


class ChannelsConfig(Model):
    email: EmailChannel = Field(default_factory=EmailChannel)
    sms: SmsChannel = Field(default_factory=SmsChannel)
    voice: VoiceChannel = Field(default_factory=VoiceChannel)
    slack_webhook: WebhookChannel = Field(default_factory=WebhookChannel)
    teams_webhook: WebhookChannel = Field(default_factory=WebhookChannel)
    webhook: WebhookChannel = Field(default_factory=WebhookChannel)
    telegram: TelegramChannel = Field(default_factory=TelegramChannel)
    ntfy: NtfyChannel = Field(default_factory=NtfyChannel)
    pagerduty: WebhookChannel = Field(default_factory=WebhookChannel)
    webpush: WebPushChannel = Field(default_factory=WebPushChannel)
    outbox: ChannelBase = Field(default_factory=ChannelBase)
    slack_dm: ChannelBase = Field(default_factory=ChannelBase)
    teams_dm: ChannelBase = Field(default_factory=ChannelBase)
    telegram_dm: ChannelBase = Field(default_factory=ChannelBase)


class WorkerConfig(Model):
    enabled: bool = True
    lease_seconds: float = Field(60.0, gt=0)
    poll_seconds: float = Field(5.0, gt=0)
    """Fallback poll; new work wakes the worker at once."""
    batch_size: int = Field(100, ge=1)


# --- chat platforms and inbound ------------------------------------------------------------


class SlackConfig(Model):
    enabled: bool = False
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    incident_channel: str | None = None
    api_url: str = "https://slack.com/api/"


class TeamsConfig(Model):
    enabled: bool = False
    app_id: str = ""
    app_password: SecretStr | None = None
    tenant_id: str | None = None
    incident_conversation: str | None = None
    service_url: str | None = None
    allow_unauthenticated: bool = False


class TelegramConfig(Model):
    enabled: bool = False
    bot_token: SecretStr | None = None
    incident_chat_id: ChatId | None = None
    topic_id: int | None = None
    mode: Literal["webhook", "polling"] = "webhook"
    webhook_secret: SecretStr | None = None
    api_url: str = "https://api.telegram.org/bot"


class ApiKey(Model):
    name: str = Field(min_length=1)
    key: SecretStr
    role: Role = "operator"
    contact: str | None = None
    """The person this key belongs to (a contact name): what they do through it is not sent back to them."""


class ApiConfig(Model):
    keys: list[ApiKey] = Field(default_factory=list)
    correlation_key: str = "metadata.correlation_id"
    """Dotted path into an inbound event whose value ties it to an open incident (update/resolve)."""
    severity_field: str = "payload.severity"
    """Dotted path into an inbound event for the severity of the incident it opens (a rule's wins)."""
    default_severity: Severity = "sev3"


class WatchdogConfig(Model):
    """Alertmanager's always-firing alert (kube-prometheus calls it Watchdog): each notification carrying it
    counts as a ping of `heartbeat`, so a dead Prometheus pipeline pages. It never opens an incident."""

    alertname: str = Field("Watchdog", min_length=1)
    heartbeat: str | None = None


class AlertmanagerConfig(Model):
    enabled: bool = True
    bearer_token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    severity_label: str = "severity"
    severity_map: dict[str, Severity] = Field(
        default_factory=lambda: {"critical": "sev1", "error": "sev2", "warning": "sev3", "info": "sev4"}
    )
    default_severity: Severity = "sev3"
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)


class ConsoleConfig(Model):
    enabled: bool = True
    session_secret: SecretStr | None = None
    session_hours: float = Field(12.0, gt=0)


class RetentionConfig(Model):
    """How long inbound replay records are kept after their last use; pruned every `prune_every`, by one
    process (core/timers.py)."""

    alertmanager_groups: Duration = Field(default_factory=lambda: timedelta(days=30))
    """An Alertmanager group's record (its incident, its firing set): refreshed by every notification."""
    event_ids: Duration = Field(default_factory=lambda: timedelta(days=7))
    """Event API event_ids remembered against replays."""
    prune_every: Duration = Field(default_factory=lambda: timedelta(hours=1))

    @field_validator("alertmanager_groups", "event_ids", "prune_every")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v.total_seconds() < 60:
            raise ValueError("must be at least 1m")
        return v


class ScheduledMaintenance(Model):
    """A maintenance window from config: once (`start`) or repeating (`cron`, 5 fields, in `timezone`)."""

    name: str = Field(min_length=1, max_length=100)
    start: datetime | None = None
    cron: str | None = None
    timezone: str = "UTC"
    duration: Duration
    match: str = ""
    """`key=value` pairs, comma-separated, e.g. `source=alertmanager,labels.team=db`; empty matches all."""
    reason: str = ""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r} (an IANA name like Europe/Berlin)") from None
        return v

    @field_validator("match")
    @classmethod
    def _match(cls, v: str) -> str:
        parse_match(v)
        return v

    @model_validator(mode="after")
    def _when(self) -> ScheduledMaintenance:
        if (self.start is None) == (self.cron is None):
            raise ValueError("give either start (one-off, e.g. 2026-12-06T02:00:00Z) or cron, not both")
        if self.start is not None and self.start.tzinfo is None:
            self.start = self.start.replace(tzinfo=ZoneInfo(self.timezone))
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))
            except ValueError as exc:
                raise ValueError(f"cron {self.cron!r}: {exc}") from None
        if self.duration.total_seconds() <= 0:
            raise ValueError("duration must be more than 0")
        return self


def parse_match(text: str) -> dict[str, str]:
    """`source=alertmanager,labels.team=db` -> {"source": "alertmanager", "labels.team": "db"} (ValueError
    naming the bad part). The one grammar of maintenance matches: config, chat and CLI."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{part!r} is not key=value (e.g. source=alertmanager,labels.team=db)")
        out[key.strip()] = value.strip()
    return out


class MaintenanceConfig(Model):
    max_duration: Duration = Field(default_factory=lambda: timedelta(hours=8))
    """No window may last longer: a forgotten window must not silence paging for days."""
    windows: list[ScheduledMaintenance] = Field(default_factory=list)


class PerSeverity(Model):
    """A duration per severity (`sev1: 10m`, or `critical: 10m`); a severity left out is off."""

    sev1: Duration | None = None
    sev2: Duration | None = None
    sev3: Duration | None = None
    sev4: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {SEVERITY_ALIASES.get(str(k).strip().lower(), k): v for k, v in value.items()}
        return value

    @field_validator("sev1", "sev2", "sev3", "sev4")
    @classmethod
    def _at_least_a_minute(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v < timedelta(minutes=1):
            raise ValueError("must be at least 1m (a reminder more often than that is a page)")
        return v

    def get(self, severity: str) -> timedelta | None:
        return getattr(self, severity, None) if severity in SEVERITIES else None

    def __bool__(self) -> bool:
        return any(getattr(self, s) is not None for s in SEVERITIES)


class RemindersConfig(Model):
    """Reminders to the incident's commander (and comms), in its thread and through their news channels,
    per severity; a severity left out gets no such reminder. Each repeats at its interval until the
    condition ends (acknowledged, an update posted, monitoring left); resolving an incident stops them all."""

    unacknowledged: PerSeverity = Field(default_factory=PerSeverity)
    """Still open and unacknowledged this long after declared (then again every as long)."""
    update_every: PerSeverity = Field(default_factory=PerSeverity)
    """Open with no UPDATE for this long (counted from the last update, else from declared)."""
    monitoring: PerSeverity = Field(default_factory=PerSeverity)
    """In Monitoring this long: "Resolve or reopen?"."""
    snooze: Duration = Field(default_factory=lambda: timedelta(minutes=30))
    """What the Snooze button on a reminder postpones them by."""
    max_snooze: Duration = Field(default_factory=lambda: timedelta(days=1))
    """The longest `/incident snooze` accepted: a forgotten snooze must not silence an incident for days."""

    def interval(self, kind: str, severity: str) -> timedelta | None:
        """The configured interval of one reminder kind for a severity (None: off)."""
        table = {"unacknowledged": self.unacknowledged, "update": self.update_every,
                 "monitoring": self.monitoring}[kind]
        return table.get(severity)


class ReportsConfig(Model):
    """`tocsin report` and the console's metrics page."""

    night: str = "22:00-07:00"
    """When a page counts as a night page (on-call load): HH:MM-HH:MM in `timezone`, may span midnight.
    A contact with quiet_hours has that window as their night instead."""
    timezone: str = "UTC"

    @field_validator("night")
    @classmethod
    def _night(cls, v: str) -> str:
        start, sep, end = str(v).partition("-")
        if not sep:
            raise ValueError(f'must be a window like "22:00-07:00" (got {v!r})')
        start, end = _check_time(start), _check_time(end)
        if start == end:
            raise ValueError(f"night {v!r} starts and ends at the same time: it would be empty")
        return f"{start}-{end}"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return QuietHours._tz(v)

    @property
    def window(self) -> tuple[str, str]:
        start, _, end = self.night.partition("-")
        return start, end


_HEARTBEAT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class Heartbeat(Model):
    """A dead man's switch: no ping for interval + grace opens an incident (event type heartbeat.missed,
    source heartbeat) through routing; the next ping resolves it (heartbeat.recovered)."""

    name: str
    interval: Duration
    grace: Duration = Field(default_factory=timedelta)
    severity: Severity = "sev2"
    token: SecretStr | None = None
    """Secret for `GET /api/v1/heartbeats/<name>?token=...` (a cron line with curl); unset: API key only."""
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _HEARTBEAT_NAME.match(v):
            raise ValueError("must be letters, digits, '.', '_' or '-' (it is part of a URL), at most 100")
        return v

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: timedelta) -> timedelta:
        if v.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return v

    @property
    def allowed(self) -> timedelta:
        """How long after a ping the next one may come before the heartbeat counts as missed."""
        return self.interval + self.grace


# --- incident roles ---------------------------------------------------------------------------

INCIDENT_ROLES = ("commander", "comms", "scribe")
"""The roles `/incident role` assigns; the declarer is commander unless someone else is named."""
DEFAULT_ROLE_DESCRIPTIONS: dict[str, str] = {
    "commander": "You are the incident commander: you own the incident until it is resolved. Decide what "
                 "happens next, assign comms and scribe, keep people on task, and call Monitoring and Resolved.",
    "comms": "You run communications: post regular updates (/incident update) for people outside the "
             "response, answer stakeholders, and keep the status page in line with what we know.",
    "scribe": "You are the scribe: keep the timeline. Add what is decided and found with /incident note "
              "(or a pushpin reaction in Slack) so the postmortem writes itself.",
}
"""What the new holder of a role is told when `roles:` in config.yaml does not say otherwise."""


class RoleText(Model):
    description: str = Field(min_length=1, max_length=2000)
    """Sent privately to the new holder of the role."""

    @field_validator("description")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank: the new holder is told this")
        return v.strip()


class RolesConfig(Model):
    """`roles:` what each incident role does, told privately to whoever takes it. Unknown roles are refused."""

    commander: RoleText = Field(default_factory=lambda: RoleText(
        description=DEFAULT_ROLE_DESCRIPTIONS["commander"]))
    comms: RoleText = Field(default_factory=lambda: RoleText(description=DEFAULT_ROLE_DESCRIPTIONS["comms"]))
    scribe: RoleText = Field(default_factory=lambda: RoleText(description=DEFAULT_ROLE_DESCRIPTIONS["scribe"]))

    def description(self, role: str) -> str:
        text: RoleText = getattr(self, role)
        return text.description


# --- the whole file ---------------------------------------------------------------------------


class Config(Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    access: dict[Identity, Role] = Field(default_factory=dict)
    """Identity (`slack:U123`, `teams:29:abc`, `telegram:4242`, `cli:alice`, `api:name`) → role."""
    default_role: Role = "viewer"
    contacts: list[Contact] = Field(default_factory=list)
    contact_lists: list[ContactList] = Field(default_factory=list)
    destinations: list[Destination] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    escalation_policies: list[EscalationPolicy] = Field(default_factory=list)
    schedules: list[Schedule] = Field(default_factory=list)
    digests: list[Digest] = Field(default_factory=list)
    channels: ChannelsConfig = Field(default_factory=ChannelsConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    slack: SlackConfig = Field(default_factory=SlackConfig)
    teams: TeamsConfig = Field(default_factory=TeamsConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    alertmanager: AlertmanagerConfig = Field(default_factory=AlertmanagerConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    heartbeats: list[Heartbeat] = Field(default_factory=list)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    flapping: Flapping | None = None
    """Flapping detection for every inbound incident with a correlation key (a rule's own wins)."""
    reminders: RemindersConfig = Field(default_factory=RemindersConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    roles: RolesConfig = Field(default_factory=RolesConfig)
    """What each incident role (commander, comms, scribe) does, told to its new holder."""

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        """Checks across sections, each located at the key that is wrong (see `problems`)."""
        found = problems(self)
        if found:
            raise ConfigProblems(found)
        return self

    # Lookups used across the core.
    def incident_surfaces(self) -> list[str]:
        """Chat platforms whose incident channel follows every incident: the enabled ones with a target."""
        out = []
        if self.slack.enabled and self.slack.incident_channel:
            out.append("slack")
        if self.teams.enabled and self.teams.incident_conversation:
            out.append("teams")
        if self.telegram.enabled and self.telegram.incident_chat_id:
            out.append("telegram")
        return out

    _derived: dict[str, tuple[Any, Any]] | None = PrivateAttr(default=None)
    """See `derive`."""

    def derive(self, key: str, source: T, build: Callable[[T], R]) -> R:
        """`build(source)` for a section of this config, worked out once and kept under `key`: the by-name
        indexes below, core.routing's compiled rules and contact lists. Built again when `source` is another
        object, as in a copy made with `model_copy(update=...)`, which shares this cache with the original.
        A loaded Config is never changed in place; a reload builds a new one, with nothing derived."""
        # Through __pydantic_private__ directly: pydantic's own private-attribute lookup costs a failed
        # hasattr() per read, a fifth of a destination lookup (every page makes one).
        private = self.__pydantic_private__
        derived = private.get("_derived") if private is not None else None
        if derived is None:
            derived = self._derived = {}
        hit = derived.get(key)
        if hit is None or hit[0] is not source:
            hit = derived[key] = (source, build(source))
        return hit[1]  # type: ignore[no-any-return]

    # By name, through an index: every page looks its destination up, a plan every contact it pages;
    # scanning the list made a fan-out to thousands of destinations spend a tenth of its CPU here, and a
    # plan for a 400-person list 4 ms.

    def contact(self, name: str) -> Contact | None:
        return self.derive("contacts", self.contacts, _by_name).get(name)

    def contact_list(self, name: str) -> ContactList | None:
        return self.derive("contact_lists", self.contact_lists, _by_name).get(name)

    def destination(self, name: str) -> Destination | None:
        return self.derive("destinations", self.destinations, _by_name).get(name)

    def digest(self, name: str) -> Digest | None:
        return next((d for d in self.digests if d.name == name), None)

    def policy(self, name: str) -> EscalationPolicy | None:
        return next((p for p in self.escalation_policies if p.name == name), None)

    def heartbeat(self, name: str) -> Heartbeat | None:
        return next((h for h in self.heartbeats if h.name == name), None)

    def schedule(self, name: str) -> Schedule | None:
        return self.derive("schedules", self.schedules, _by_name).get(name)


PathKey = tuple[str | int, ...]
Located = tuple[PathKey, str] | tuple[PathKey, str, PathKey]
"""A problem found after the sections validated: the key path it is about, what is wrong, and (when that
key may be absent from the file) the key whose line to show instead, e.g. `slack.enabled`."""


class ConfigProblems(ConfigError):
    """Raised by Config's own validation with located problems; `loads` turns them into file:line lines."""

    def __init__(self, located: list[Located]) -> None:
        self.located = located
        super().__init__([f"{_fmt_path(p[0])}: {p[1]}" for p in located])


MIN_API_KEY_LENGTH = 16


def problems(cfg: Config) -> list[Located]:
    """Everything a page or `run` would choke on that one section cannot see alone: names exist and are
    unique, contact lists have no cycles, API keys are long and distinct, enabled chat platforms have what
    they need. Each problem points at the item that refers, so the file:line is the line to fix."""
    out: list[Located] = []
    contacts = _unique(out, "contacts", [c.name for c in cfg.contacts])
    lists = _unique(out, "contact_lists", [c.name for c in cfg.contact_lists])
    dests = _unique(out, "destinations", [d.name for d in cfg.destinations])
    policies = _unique(out, "escalation_policies", [p.name for p in cfg.escalation_policies])
    schedules = _unique(out, "schedules", [sc.name for sc in cfg.schedules])
    _unique(out, "routing.rules", [r.name for r in cfg.routing.rules])
    _unique(out, "api.keys", [k.name for k in cfg.api.keys])
    _unique(out, "digests", [d.name for d in cfg.digests])
    _unique(out, "maintenance.windows", [w.name for w in cfg.maintenance.windows])
    for i, w in enumerate(cfg.maintenance.windows):
        if w.duration > cfg.maintenance.max_duration:
            out.append((("maintenance", "windows", i, "duration"),
                        f"window {w.name!r} lasts longer than maintenance.max_duration "
                        f"({format_duration(cfg.maintenance.max_duration)})"))
    beats = _unique(out, "heartbeats", [h.name for h in cfg.heartbeats])
    if cfg.alertmanager.watchdog.heartbeat and cfg.alertmanager.watchdog.heartbeat not in beats:
        out.append((("alertmanager", "watchdog", "heartbeat"),
                    f"names unknown heartbeat {cfg.alertmanager.watchdog.heartbeat!r}"))
    for i, cl in enumerate(cfg.contact_lists):
        for j, m in enumerate(cl.members):
            if m not in contacts:
                out.append((("contact_lists", i, "members", j),
                            f"contact list {cl.name!r} names unknown contact {m!r}"))
        for j, sub in enumerate(cl.lists):
            if sub not in lists:
                out.append((("contact_lists", i, "lists", j),
                            f"contact list {cl.name!r} includes unknown list {sub!r}"))
    out += _cycles(cfg.contact_lists)

    def check_targets(where: str, loc: PathKey, t: Targets) -> None:
        for kind, known, what in (("lists", lists, "contact list"), ("contacts", contacts, "contact"),
                                  ("destinations", dests, "destination"), ("schedules", schedules, "schedule")):
            for j, n in enumerate(getattr(t, kind)):
                if n not in known:
                    out.append((loc + (kind, j), f"{where} names unknown {what} {n!r}"))

    check_targets("routing.default_targets", ("routing", "default_targets"), cfg.routing.default_targets)
    for i, rule in enumerate(cfg.routing.rules):
        check_targets(f"routing rule {rule.name!r}", ("routing", "rules", i, "targets"), rule.targets)
        if rule.escalation_policy and rule.escalation_policy not in policies:
            out.append((("routing", "rules", i, "escalation_policy"),
                        f"routing rule {rule.name!r} names unknown escalation policy {rule.escalation_policy!r}"))
    for i, pol in enumerate(cfg.escalation_policies):
        for k, level in enumerate(pol.levels):
            check_targets(f"escalation policy {pol.name!r} level {k + 1}",
                          ("escalation_policies", i, "levels", k, "targets"), level.targets)
    for i, sc in enumerate(cfg.schedules):
        for k, layer in enumerate(sc.layers):
            for j, m in enumerate(layer.members):
                if m not in contacts:
                    out.append((("schedules", i, "layers", k, "members", j),
                                f"schedule {sc.name!r} layer {layer.name!r} names unknown contact {m!r}"))
        seen_layers: set[str] = set()
        for k, layer in enumerate(sc.layers):
            if layer.name in seen_layers:
                out.append((("schedules", i, "layers", k, "name"),
                            f"schedule {sc.name!r} has two layers named {layer.name!r}"))
            seen_layers.add(layer.name)
        check_targets(f"schedule {sc.name!r} fallback", ("schedules", i, "fallback"), sc.fallback)
        check_targets(f"schedule {sc.name!r} announce", ("schedules", i, "announce"), sc.announce)
        if sc.announce_handoffs and not cfg.incident_surfaces():
            out.append((("schedules", i, "announce_handoffs"), f"schedule {sc.name!r}: announce_handoffs needs "
                        "an incident channel on an enabled chat platform (slack.incident_channel, "
                        "teams.incident_conversation or telegram.incident_chat_id)"))
        if sc.fallback.schedules:
            out.append((("schedules", i, "fallback", "schedules"), f"schedule {sc.name!r}: a fallback "
                        "cannot name schedules (it is who gets paged when a schedule has nobody)"))
    for i, key in enumerate(cfg.api.keys):
        if key.contact is not None and key.contact not in contacts:
            out.append((("api", "keys", i, "contact"), f"API key {key.name!r} names unknown contact {key.contact!r}"))
    r = cfg.reminders
    if r.snooze < timedelta(minutes=1) or r.snooze > r.max_snooze:
        out.append((("reminders", "snooze"), f"must be between 1m and reminders.max_snooze "
                    f"({format_duration(r.max_snooze)}), not {format_duration(r.snooze)}", ("reminders",)))
    out += _api_key_problems(cfg.api)
    out += platform_problems(cfg)
    out += _sms_problems(cfg)
    out += _dm_problems(cfg)
    return out


def _dm_problems(cfg: Config) -> list[Located]:
    """A DM channel in someone's preferences needs its chat platform running, or every such page would fail."""
    out: list[Located] = []
    enabled = {"slack_dm": cfg.slack.enabled, "teams_dm": cfg.teams.enabled, "telegram_dm": cfg.telegram.enabled}
    for i, c in enumerate(cfg.contacts):
        for keys, chans in c.preferences.lists():
            for j, ch in enumerate(chans):
                where: PathKey = ("contacts", i, "preferences", *keys, j)
                if ch in enabled and not enabled[ch]:
                    platform = ch[:-3]
                    out.append((where, f"{ch} needs {platform}.enabled: true (the bot sends the DM)"))
    return out


def _sms_problems(cfg: Config) -> list[Located]:
    """An SMS provider that would fail every page is refused at load, not at 3 a.m."""
    sms = cfg.channels.sms
    out: list[Located] = []
    if sms.provider == "twilio" and not sms.outbox:
        for key, missing in (("account_sid", not sms.account_sid), ("auth_token", not _secret(sms.auth_token))):
            if missing:
                out.append((("channels", "sms", key), "required when channels.sms.provider is twilio",
                            ("channels", "sms", "provider")))
        if not sms.from_number and not sms.messaging_service_sid:
            out.append((("channels", "sms", "from_number"), "Twilio needs from_number or messaging_service_sid",
                        ("channels", "sms", "provider")))
    if sms.reply_topic_arn is not None and not re.match(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}$",
                                                        sms.reply_topic_arn):
        out.append((("channels", "sms", "reply_topic_arn"), "must be an SNS topic ARN like "
                    "arn:aws:sns:us-east-1:123456789012:tocsin-replies"))
    return out


class ConfigHolder:
    """The live config; hot reload swaps it, everyone (service, worker, senders) reads `.cfg` at the moment
    of use instead of keeping the Config they were built with."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def replace(self, cfg: Config) -> Config:
        old, self.cfg = self.cfg, cfg
        return old


T = TypeVar("T")
R = TypeVar("R")


def _by_name(items: list[Any]) -> dict[str, Any]:
    """A named section by name; the first of a name, as a scan finds it."""
    out: dict[str, Any] = {}
    for item in items:
        out.setdefault(item.name, item)
    return out


def _unique(out: list[Located], where: str, names: list[str]) -> set[str]:
    seen: dict[str, int] = {}
    base: PathKey = tuple(where.split("."))
    for i, n in enumerate(names):
        if n in seen:
            out.append((base + (i, "name"), f"name {n!r} is used twice (first at {where}[{seen[n]}])"))
        else:
            seen[n] = i
    return set(seen)


def _cycles(lists: list[ContactList]) -> list[Located]:
    """One problem per cycle, at the `lists:` entry that closes it."""
    graph = {cl.name: cl.lists for cl in lists}
    index = {cl.name: i for i, cl in enumerate(lists)}
    state: dict[str, int] = {}
    out: list[Located] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for j, sub in enumerate(graph.get(name, [])):
            if state.get(sub) == 1:
                cycle = " -> ".join(path[path.index(sub):] + [name, sub]) if sub in path else f"{name} -> {sub}"
                out.append((("contact_lists", index[name], "lists", j), f"contact lists form a cycle: {cycle}"))
            elif sub in graph and state.get(sub) is None:
                visit(sub, path + [name])
        state[name] = 2

    for n in graph:
        if state.get(n) is None:
            visit(n, [])
    return out


def _api_key_problems(api: ApiConfig) -> list[Located]:
    out: list[Located] = []
    first: dict[str, int] = {}
    for i, k in enumerate(api.keys):
        value = k.key.get_secret_value()
        if len(value) < MIN_API_KEY_LENGTH:
            out.append((("api", "keys", i, "key"), f"key of {k.name!r} is {len(value)} characters; use at least "
                        f"{MIN_API_KEY_LENGTH} random ones (e.g. `openssl rand -hex 24`)"))
        if value in first:
            other = api.keys[first[value]].name
            out.append((("api", "keys", i, "key"), f"key of {k.name!r} has the same value as the key of {other!r} "
                        f"(api.keys[{first[value]}]); give each caller its own"))
        else:
            first[value] = i
    return out


_TELEGRAM_SECRET_OK = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def _secret(v: SecretStr | None) -> str:
    return v.get_secret_value() if v is not None else ""


def platform_problems(cfg: Config) -> list[Located]:
    """What an enabled chat platform needs to start; `run` would stop on it, so `config check` says it."""
    out: list[Located] = []
    if cfg.slack.enabled:
        if not _secret(cfg.slack.bot_token):
            out.append((("slack", "bot_token"), "required when slack.enabled is true", ("slack", "enabled")))
        if not _secret(cfg.slack.signing_secret) and not _secret(cfg.slack.app_token):
            out.append((("slack", "signing_secret"), "required to receive Slack requests over HTTP "
                        "(or set slack.app_token for Socket Mode)", ("slack", "enabled")))
    teams = cfg.teams
    if teams.enabled:
        if not teams.app_id and not teams.allow_unauthenticated:
            out.append((("teams", "app_id"), "empty, so requests to /api/messages could not be authenticated: "
                        "set teams.app_id and teams.app_password (the Azure Bot registration), or set "
                        "teams.allow_unauthenticated: true for local testing only", ("teams", "enabled")))
        if teams.app_id and not _secret(teams.app_password):
            out.append((("teams", "app_password"), "required when teams.app_id is set", ("teams", "app_id")))
    tg = cfg.telegram
    if tg.enabled:
        if not _secret(tg.bot_token):
            out.append((("telegram", "bot_token"), "required when telegram.enabled is true",
                        ("telegram", "enabled")))
        if tg.mode == "webhook":
            secret = _secret(tg.webhook_secret)
            if not secret:
                out.append((("telegram", "webhook_secret"), "required in webhook mode (without it anyone can "
                            "post fake updates); or use mode: polling", ("telegram", "enabled")))
            elif not _TELEGRAM_SECRET_OK.match(secret):
                out.append((("telegram", "webhook_secret"), "1-256 characters of A-Z, a-z, 0-9, _ and - "
                            "(Telegram's rule for secret_token)"))
            if not cfg.server.public_url.startswith("https://"):
                out.append((("server", "public_url"), f"Telegram only calls HTTPS webhooks, got "
                            f"{cfg.server.public_url!r}; set an https:// public_url or use telegram.mode: polling",
                            ("telegram", "mode")))
    return out


# --- loading ------------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def resolve_path(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """--config, else TOCSIN_CONFIG, else ./config.yaml."""
    return Path(cli_value or os.environ.get("TOCSIN_CONFIG") or "config.yaml")


def load(path: str | os.PathLike[str] | None = None, *, env: dict[str, str] | None = None) -> Config:
    """Load and validate a config file; raise ConfigError with `file:line path: message` lines."""
    p = resolve_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror or exc}"]) from exc
    return loads(text, filename=str(p), env=env)


MAX_ALIAS_NODES = 10_000
"""YAML aliases may repeat at most this many nodes in all: far more than any real file needs, far too few
for an alias bomb ("billion laughs"), which would otherwise hang the check and eat gigabytes."""


def loads(text: str, *, filename: str = "config.yaml", env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader checks characters up front
        raise ConfigError([_yaml_problem(exc, filename)]) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise ConfigError([_yaml_problem(exc, filename)]) from None
        except RecursionError:
            raise ConfigError([f"{filename}: invalid YAML: nested too deeply"]) from None
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
            # An empty file is never meant: usually an editor's save caught half way. Applying it would wipe
            # contacts, routing, access and API keys from a running server.
            raise ConfigError([f"{filename}:1: {Path(filename).name} is empty (no settings, only comments "
                               "or nothing); refusing it rather than running on defaults"])
        scan = _Scan(filename)
        scan.walk(node, ())
        if scan.problems:
            raise ConfigError(scan.problems)
        lines = scan.lines
        try:
            data: Any = loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise ConfigError([_yaml_problem(exc, filename)]) from None
        except ValueError as exc:  # an impossible date like 2026-13-05: PyYAML raises a bare ValueError
            raise ConfigError([f"{filename}:{_bad_date_line(node)}: invalid date: {exc} (write YYYY-MM-DD)"]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError([f"{filename}:1: the top level must be a mapping of sections"])
    found: list[str] = []
    data = _interpolate(data, (), env, found, lines, filename)
    if found:
        raise ConfigError(found)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(err, lines, filename) for err in exc.errors()]) from None
    except ConfigProblems as exc:
        raise ConfigError([f"{filename}:{_line_for(p[0] if p[0] in lines else p[-1], lines)} "  # type: ignore[misc]
                           f"{_fmt_path(p[0])}: {p[1]}" for p in exc.located]) from None


def key_lines(text: str, filename: str = "config.yaml") -> dict[PathKey, int]:
    """Line of every key path in a config text (for warnings about a file that already loaded)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    scan = _Scan(filename)
    if node is not None:
        scan.walk(node, ())
    return scan.lines


def line_of(lines: dict[PathKey, int], path: PathKey) -> int:
    return _line_for(path, lines)


def _bad_date_line(node: yaml.Node) -> int:
    """Line of the first date-looking scalar that is not a real date."""
    stack = [node]
    while stack:
        n = stack.pop(0)
        if isinstance(n, yaml.ScalarNode) and n.tag == "tag:yaml.org,2002:timestamp":
            try:
                yaml.SafeLoader("").construct_yaml_timestamp(n)
            except ValueError:
                return n.start_mark.line + 1
        elif isinstance(n, yaml.MappingNode):
            stack.extend(v for pair in n.value for v in pair)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return 1


def _yaml_problem(exc: yaml.YAMLError, filename: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = f":{mark.line + 1}" if mark else ""
    return f"{filename}{line}: invalid YAML: {getattr(exc, 'problem', None) or exc}"


class _Scan:
    """One pass over the composed YAML before anything is built from it: the line of every key path,
    duplicate keys (both lines), and a bound on alias expansion (counted, never expanded past the limit)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[PathKey, int] = {}
        self.problems: list[str] = []
        self._seen: set[int] = set()
        self._open: set[int] = set()
        self._repeated = 0

    def _problem(self, path: PathKey, line: int, msg: str) -> None:
        self.problems.append(f"{self.filename}:{line} {_fmt_path(path)}: {msg}")

    def walk(self, node: yaml.Node, path: PathKey) -> bool:
        """False once the document is refused as a whole (alias bomb, recursive alias): stop walking."""
        nid = id(node)
        line = node.start_mark.line + 1
        if nid in self._open:
            self._problem(path, line, "a YAML alias refers to a node that contains it (recursive document)")
            return False
        first_visit = nid not in self._seen
        if first_visit:
            self._seen.add(nid)
        else:
            self._repeated += 1
            if self._repeated > MAX_ALIAS_NODES:
                self._problem(path, line, f"YAML aliases expand to more than {MAX_ALIAS_NODES} repeated nodes "
                              "(an alias bomb?); write the values out instead")
                return False
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode):
            self._open.add(nid)
            keys: dict[str, int] = {}
            for key, value in node.value:
                name = str(key.value)
                sub = path + (name,)
                key_line = key.start_mark.line + 1
                if first_visit and name != "<<" and isinstance(key, yaml.ScalarNode):
                    if name in keys:
                        self._problem(sub, key_line, f"duplicate key (first at line {keys[name]}); the second "
                                      "would silently replace the first")
                    else:
                        keys[name] = key_line
                self.lines[sub] = key_line
                if not self.walk(value, sub):
                    return False
            self._open.discard(nid)
        elif isinstance(node, yaml.SequenceNode):
            self._open.add(nid)
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                if not self.walk(item, path + (i,)):
                    return False
            self._open.discard(nid)
        return True


def _interpolate(value: Any, path: PathKey, env: dict[str, str], problems: list[str],
                 lines: dict[PathKey, int], filename: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, path + (str(k),), env, problems, lines, filename) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path + (i,), env, problems, lines, filename) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{filename}:{_line_for(path, lines)} {_fmt_path(path)}: "
                            f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
            return ""
        if "${" in _ENV.sub("", value):
            problems.append(f"{filename}:{_line_for(path, lines)} {_fmt_path(path)}: malformed ${{...}} "
                            "reference; write ${NAME} or ${NAME:-default}")
            return value
        return _ENV.sub(sub, value)
    return value


def _line_for(path: PathKey, lines: dict[PathKey, int]) -> int:
    p = path
    while p and p not in lines:
        p = p[:-1]
    return lines.get(p, 1)


def _fmt_path(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


_PLAIN_WORDS = {
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be text (put it in quotes)", "list_type": "must be a list, like [a, b]",
    "dict_type": "must be a mapping (key: value lines)", "model_type": "must be a mapping (key: value lines)",
    "model_attributes_type": "must be a mapping (key: value lines)",
}


def _describe(err: Any, lines: dict[PathKey, int], filename: str) -> str:
    loc: PathKey = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # pydantic names aliased fields by alias already; strip union/validator tags it may add.
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p and "]" in p)))
    msg = err["msg"]
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "extra_forbidden":
        msg = "unknown key" + _did_you_mean(loc)
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "literal_error":
        msg = "must be " + msg.removeprefix("Input should be ")
    elif kind in _PLAIN_WORDS:
        msg = _PLAIN_WORDS[kind]
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than") and ctx:
        words = {"greater_than_equal": "at least", "greater_than": "more than",
                 "less_than_equal": "at most", "less_than": "less than"}[kind]
        bound = next(iter(ctx.values()))
        msg = f"must be {words} {bound}"
    elif kind in ("too_short", "string_too_short") and "min_length" in ctx:
        msg = "must not be empty" if ctx["min_length"] == 1 else f"needs at least {ctx['min_length']} entries"
    return f"{filename}:{_line_for(loc, lines)} {_fmt_path(loc)}: {msg}"


def _did_you_mean(loc: PathKey) -> str:
    """A typo'd key names its closest real sibling: `colour` -> nothing, `prot` -> port."""
    import difflib

    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field_ = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        model = _model_in(field_.annotation) if field_ is not None else None
        if model is None:
            return ""
    names = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.7) if loc else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model inside an annotation like `list[Contact]` or `QuietHours | None`."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def dump_redacted(cfg: Config) -> dict[str, Any]:
    """JSON-able view of the config with every secret replaced, for audit diffs and logs."""
    return cfg.model_dump(mode="json", by_alias=True)  # SecretStr dumps as '**********'
