"""config.yaml: pydantic models, ${ENV} interpolation, and errors that name file, line and key path."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

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

SEVERITIES = ("sev1", "sev2", "sev3", "sev4")
SEVERITY_ALIASES = {"critical": "sev1", "high": "sev2", "medium": "sev3", "low": "sev4"}
CHANNELS = ("email", "sms", "voice", "slack_webhook", "teams_webhook", "telegram", "webhook", "outbox")
ROLES = ("admin", "manager", "operator", "viewer")


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
        raise ValueError("must be one of admin, manager, operator, viewer")
    return str(v)


def _check_identity(value: Any) -> str:
    ident = str(value)
    platform, sep, user = ident.partition(":")
    if not sep or not user or platform not in ("slack", "teams", "telegram", "cli", "api", "web"):
        raise ValueError(f"identity {ident!r} must look like platform:user_id "
                         "(slack, teams, telegram, cli, api, web; user may be * for everyone)")
    return ident


Severity = Annotated[str, BeforeValidator(_check_severity)]
Identity = Annotated[str, BeforeValidator(_check_identity)]
Role = Annotated[str, BeforeValidator(_check_role)]
Channel = Literal["email", "sms", "voice", "slack_webhook", "teams_webhook", "telegram", "webhook", "outbox"]


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


class DatabaseConfig(Model):
    url: str = "sqlite+aiosqlite:///tocsin.db"
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
    telegram: str | None = None


class QuietHours(Model):
    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")
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


class Contact(Model):
    name: str = Field(min_length=1)
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str | None = Field(None, pattern=r"^\+[1-9]\d{6,14}$", description="E.164")
    chat: ChatIds = Field(default_factory=ChatIds)
    preferences: dict[str, list[Channel]] = Field(default_factory=lambda: {"default": ["email"]})
    """Channels in order, per severity (sev1..sev4) with a `default` fallback."""
    quiet_hours: QuietHours | None = None

    @field_validator("preferences")
    @classmethod
    def _prefs(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, chans in v.items():
            k = normalize_severity(key)
            if k not in SEVERITIES and k != "default":
                raise ValueError(f"preference key {key!r} must be sev1..sev4 or default")
            out[k] = chans
        return out


class ContactList(Model):
    name: str = Field(min_length=1)
    members: list[str] = Field(default_factory=list)
    lists: list[str] = Field(default_factory=list)
    """Other contact lists included in this one (cycles are rejected)."""


class Destination(Model):
    """A channel destination that is not a person: a Slack/Teams webhook, a Telegram chat, a webhook."""

    name: str = Field(min_length=1)
    channel: Literal["slack_webhook", "teams_webhook", "telegram", "webhook", "email", "outbox"]
    url: SecretStr | None = None
    chat_id: str | None = None
    address: str | None = None
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    hmac_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _needs_address(self) -> Destination:
        if self.channel in ("slack_webhook", "teams_webhook", "webhook") and not self.url:
            raise ValueError(f"a {self.channel} destination needs url")
        if self.channel == "telegram" and not self.chat_id:
            raise ValueError("a telegram destination needs chat_id")
        if self.channel == "email" and not self.address:
            raise ValueError("an email destination needs address")
        return self


# --- routing and escalation ----------------------------------------------------------------


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
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"bad regex {self.value!r}: {exc}") from exc
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

    def empty(self) -> bool:
        return not (self.lists or self.contacts or self.destinations)


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
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    sender_id: str | None = None
    max_segments: int = Field(3, ge=1, le=10)


class VoiceChannel(ChannelBase):
    account_sid: str | None = None
    auth_token: SecretStr | None = None
    from_number: str | None = None
    api_url: str = "https://api.twilio.com"


class WebhookChannel(ChannelBase):
    pass


class TelegramChannel(ChannelBase):
    pass


class ChannelsConfig(Model):
    email: EmailChannel = Field(default_factory=EmailChannel)
    sms: SmsChannel = Field(default_factory=SmsChannel)
    voice: VoiceChannel = Field(default_factory=VoiceChannel)
    slack_webhook: WebhookChannel = Field(default_factory=WebhookChannel)
    teams_webhook: WebhookChannel = Field(default_factory=WebhookChannel)
    webhook: WebhookChannel = Field(default_factory=WebhookChannel)
    telegram: TelegramChannel = Field(default_factory=TelegramChannel)
    outbox: ChannelBase = Field(default_factory=ChannelBase)


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
    incident_chat_id: str | None = None
    topic_id: int | None = None
    mode: Literal["webhook", "polling"] = "webhook"
    webhook_secret: SecretStr | None = None
    api_url: str = "https://api.telegram.org/bot"


class ApiKey(Model):
    name: str = Field(min_length=1)
    key: SecretStr
    role: Role = "operator"


class ApiConfig(Model):
    keys: list[ApiKey] = Field(default_factory=list)
    correlation_key: str = "metadata.correlation_id"
    """Dotted path into an inbound event whose value ties it to an open incident (update/resolve)."""
    severity_field: str = "payload.severity"
    """Dotted path into an inbound event for the severity of the incident it opens (a rule's wins)."""
    default_severity: Severity = "sev3"


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


class ConsoleConfig(Model):
    enabled: bool = True
    session_secret: SecretStr | None = None
    session_hours: float = Field(12.0, gt=0)


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
    channels: ChannelsConfig = Field(default_factory=ChannelsConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    slack: SlackConfig = Field(default_factory=SlackConfig)
    teams: TeamsConfig = Field(default_factory=TeamsConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    alertmanager: AlertmanagerConfig = Field(default_factory=AlertmanagerConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)

    @model_validator(mode="after")
    def _references(self) -> Config:
        """Cross-references: names exist, are unique, and contact lists have no cycles."""
        contacts = _unique("contacts", [c.name for c in self.contacts])
        lists = _unique("contact_lists", [c.name for c in self.contact_lists])
        dests = _unique("destinations", [d.name for d in self.destinations])
        policies = _unique("escalation_policies", [p.name for p in self.escalation_policies])
        _unique("routing.rules", [r.name for r in self.routing.rules])
        _unique("api.keys", [k.name for k in self.api.keys])
        for cl in self.contact_lists:
            for m in cl.members:
                if m not in contacts:
                    raise ValueError(f"contact list {cl.name!r} names unknown contact {m!r}")
            for sub in cl.lists:
                if sub not in lists:
                    raise ValueError(f"contact list {cl.name!r} includes unknown list {sub!r}")
        _reject_cycles(self.contact_lists)

        def check_targets(where: str, t: Targets) -> None:
            for n in t.lists:
                if n not in lists:
                    raise ValueError(f"{where} names unknown contact list {n!r}")
            for n in t.contacts:
                if n not in contacts:
                    raise ValueError(f"{where} names unknown contact {n!r}")
            for n in t.destinations:
                if n not in dests:
                    raise ValueError(f"{where} names unknown destination {n!r}")

        check_targets("routing.default_targets", self.routing.default_targets)
        for rule in self.routing.rules:
            check_targets(f"routing rule {rule.name!r}", rule.targets)
            if rule.escalation_policy and rule.escalation_policy not in policies:
                raise ValueError(f"routing rule {rule.name!r} names unknown escalation policy "
                                 f"{rule.escalation_policy!r}")
        for pol in self.escalation_policies:
            for i, level in enumerate(pol.levels):
                check_targets(f"escalation policy {pol.name!r} level {i + 1}", level.targets)
        return self

    # Lookups used across the core.
    def contact(self, name: str) -> Contact | None:
        return next((c for c in self.contacts if c.name == name), None)

    def contact_list(self, name: str) -> ContactList | None:
        return next((c for c in self.contact_lists if c.name == name), None)

    _destination_index: tuple[int, int, dict[str, Destination]] | None = PrivateAttr(default=None)

    def destination(self, name: str) -> Destination | None:
        # Indexed (rebuilt if the list is replaced or grows): every webhook page looks its destination up,
        # and a fan-out to thousands of destinations made this scan a tenth of the sending CPU.
        idx = self._destination_index
        if idx is None or idx[0] != id(self.destinations) or idx[1] != len(self.destinations):
            idx = self._destination_index = (id(self.destinations), len(self.destinations),
                                             {d.name: d for d in self.destinations})
        return idx[2].get(name)

    def policy(self, name: str) -> EscalationPolicy | None:
        return next((p for p in self.escalation_policies if p.name == name), None)


def _unique(where: str, names: list[str]) -> set[str]:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{where}: name {n!r} is used twice")
        seen.add(n)
    return seen


def _reject_cycles(lists: list[ContactList]) -> None:
    graph = {cl.name: cl.lists for cl in lists}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise ValueError(f"contact lists form a cycle: {cycle}")
        state[name] = 1
        for sub in graph.get(name, []):
            visit(sub, path + [name])
        state[name] = 2

    for n in graph:
        visit(n, [])


# --- loading ------------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
PathKey = tuple[str | int, ...]


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


def loads(text: str, *, filename: str = "config.yaml", env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{filename}{line}: invalid YAML: {problem}"]) from exc
    if node is None:
        data: Any = {}
        lines: dict[PathKey, int] = {}
    else:
        lines = {}
        _index_lines(node, (), lines)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # pragma: no cover - compose already parsed it
            raise ConfigError([f"{filename}: invalid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{filename}:1: the top level must be a mapping of sections"])
    problems: list[str] = []
    data = _interpolate(data, (), env, problems, lines, filename)
    if problems:
        raise ConfigError(problems)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(err, lines, filename) for err in exc.errors()]) from None


def _index_lines(node: yaml.Node, path: PathKey, out: dict[PathKey, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (str(key.value),)
            out[sub] = key.start_mark.line + 1
            _index_lines(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _index_lines(item, path + (i,), out)


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


def _describe(err: Any, lines: dict[PathKey, int], filename: str) -> str:
    loc: PathKey = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # pydantic names aliased fields by alias already; strip union/validator tags it may add.
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p and "]" in p)))
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "literal_error":
        msg = "must be " + msg.removeprefix("Input should be ")
    return f"{filename}:{_line_for(loc, lines)} {_fmt_path(loc)}: {msg}"


def dump_redacted(cfg: Config) -> dict[str, Any]:
    """JSON-able view of the config with every secret replaced, for audit diffs and logs."""
    return cfg.model_dump(mode="json", by_alias=True)  # SecretStr dumps as '**********'
