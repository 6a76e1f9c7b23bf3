"""Rules -> targets -> (recipient, channel, address) plan, with a human explanation of every decision.

Pure functions over the config: the service calls `plan()` inside its transaction, `tocsin route explain`
and `/incident route` (core/explain.py) call the same code and print `Plan.explain()`, so what you read is
what is queued. Routing imports only config, clock and models.
"""
from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from datetime import datetime, time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from core.appearance.oncall import fallback_reason, shift_reason

from core.config import (
    SEVERITIES,
    Condition,
    Config,
    Contact,
    ContactList,
    RoutingRule,
    Targets,
    normalize_severity,
    user_regex,
)
from core.schedules.rotation import Override, who_at

if TYPE_CHECKING:
    from core.models import Incident

PERSON_CHANNELS = ("email", "sms", "voice", "telegram", "ntfy", "webpush", "outbox", "slack_dm", "teams_dm",
                   "telegram_dm")
_MISSING = object()
NEWS_EVENTS = frozenset({"update", "bridge", "monitor", "ack", "resolve", "reminder"})
"""Event types that are news (tell people, do not wake them): UPDATE, BRIDGE, MONITORING, ACK, RESOLVED,
REMINDER.
A ONE-TIME notification is news unless marked urgent; everything else (declare, escalate) is a page:
when unsure, we ring rather than stay silent."""
NEWS_KINDS = frozenset({"UPDATE", "BRIDGE", "MONITORING", "ACK", "RESOLVED", "DIGEST", "REMINDER", "ROLE", "NOTE"})
"""Message kinds that are news (ONE_TIME depends on `urgent`)."""
EVENT_ALIASES = {"escalation": "escalate", "acknowledge": "ack", "acknowledged": "ack",
                 "monitoring": "monitor", "resolved": "resolve", "declared": "declare"}
"""Spellings people write in `event_types` for the event names the service emits."""


def canonical_event_type(name: str) -> str:
    n = name.strip().lower()
    return EVENT_ALIASES.get(n, n)


def is_news(event_type: str, *, urgent: bool | None = None) -> bool:
    """Whether a message goes on people's news channels (else it is a page). A ONE-TIME message says so
    itself (`urgent` True or False, whatever its event type); otherwise the event type decides."""
    if urgent is not None:
        return not urgent
    return canonical_event_type(event_type) in NEWS_EVENTS


@dataclass
class RouteEvent:
    """What routing looks at: an incident event or an inbound event, as one dict-like shape."""

    event_type: str
    severity: str | None = None
    source: str = ""
    incident: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    urgent: bool | None = None
    """Set for messages about no incident (ONE-TIME notifications, digests): True is a page
    (`notify --urgent`), False news; None lets the event type decide."""

    @property
    def news(self) -> bool:
        return is_news(self.event_type, urgent=self.urgent)

    def as_dict(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "severity": self.severity, "source": self.source,
                "incident": self.incident, "payload": self.payload, "labels": self.labels,
                "metadata": self.metadata}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouteEvent:
        """Build from an event file (`tocsin route explain --event`); `type` is accepted for event_type."""
        known = {"event_type", "type", "severity", "source", "incident", "payload", "labels", "metadata",
                 "urgent"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown event keys {unknown} (known: {sorted(known)})")
        etype = data.get("event_type") or data.get("type")
        if not etype or not isinstance(etype, str):
            raise ValueError("the event needs event_type (or type)")
        for key in ("payload", "labels", "metadata"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"{key} must be an object")
        sev = data.get("severity")
        if sev is not None:
            sev = normalize_severity(sev)
            if sev not in SEVERITIES:
                raise ValueError(f"unknown severity {data.get('severity')!r}")
        if not isinstance(data.get("urgent", False), (bool, type(None))):
            raise ValueError("urgent must be true or false")
        return cls(event_type=etype, severity=sev, source=str(data.get("source") or ""),
                   incident=data.get("incident"), payload=dict(data.get("payload") or {}),
                   labels=dict(data.get("labels") or {}), metadata=dict(data.get("metadata") or {}),
                   urgent=data.get("urgent"))


@dataclass(frozen=True)
class PlannedDelivery:
    recipient: str
    channel: str
    address: str
    reason: str
    chosen_by: str = ""
    """Which list chose the channel: `preferences.sev1`, `preferences.updates.default`, ... for a person,
    `destination` for a destination."""


@dataclass
class RulePick:
    rule: str
    matched: bool
    why: str
    evaluated: bool = True


@dataclass
class Plan:
    deliveries: list[PlannedDelivery]
    rules: list[RulePick]
    matched_rules: list[RoutingRule]
    skipped: list[str]
    """Recipients that could not be reached on a channel (missing address, quiet hours), with why."""
    used_default: bool = False
    event: RouteEvent | None = None

    @property
    def escalation_policy(self) -> str | None:
        return next((r.escalation_policy for r in self.matched_rules if r.escalation_policy), None)

    @property
    def severity(self) -> str | None:
        return next((r.severity for r in self.matched_rules if r.severity), None)

    @property
    def nobody_on_call(self) -> list[str]:
        """Notes of schedules that had nobody on call (their fallback was paged): an internal alert each."""
        return [n for n in self.skipped if n.startswith(NOBODY_ON_CALL)]

    @property
    def action(self) -> str:
        return next((r.action for r in self.matched_rules if r.action != "auto"), "auto")

    def explain(self, *, queued: bool = False, policy: bool = True) -> str:
        """Which rule matched, why each other did not, and the exact recipient x channel list. `queued`:
        the deliveries were queued already (test-event), not just planned. `policy=False` leaves out the
        matched rules' escalation policy (an existing incident keeps the one it opened with)."""
        lines = []
        if self.event is not None:
            ev = self.event
            lines.append(f"Event: {ev.event_type}, severity {ev.severity or '-'}, source {ev.source or '-'}"
                         + (f", incident {ev.incident}" if ev.incident else ""))
        lines.append("Rules: in order, the first match wins unless it says continue")
        if not self.rules:
            lines.append("  (no routing rules configured)")
        for pick in self.rules:
            mark = "MATCH" if pick.matched else ("skip " if pick.evaluated else "-    ")
            lines.append(f"  {mark} {pick.rule}: {pick.why}")
        if self.used_default:
            lines.append("No rule matched: routed to routing.default_targets.")
        if self.escalation_policy and policy:
            lines.append(f"Escalation policy: {self.escalation_policy}")
        if self.event is not None:
            lines.append("Message: " + ("NEWS (people's news channels: preferences.updates, else their list "
                                        "without voice/sms)" if self.event.news else
                                        "PAGE (people's severity list: preferences.<severity>/default)"))
        lines.append(f"{len(self.deliveries)} deliveries {'were' if queued else 'would be'} queued "
                     "(recipient x channel):")
        for d in self.deliveries:
            what = "news" if self.event is not None and self.event.news else "page"
            via = f"; {what} via {d.chosen_by}" if d.chosen_by and d.chosen_by != "destination" else ""
            lines.append(f"  {d.recipient:<20} {d.channel:<14} {d.address:<30} ({d.reason}{via})")
        if self.skipped:
            lines.append("Not sent:")
            lines.extend(f"  {s}" for s in self.skipped)
        return "\n".join(lines)


def sev_rank(sev: str | None) -> int:
    """sev1 is the most severe (rank 1)."""
    return SEVERITIES.index(sev) + 1 if sev in SEVERITIES else len(SEVERITIES) + 1


def lookup(data: Any, path: str) -> Any:
    """Dotted path into nested dicts/lists; _MISSING when any step is absent.

    A dict key that itself contains dots (`labels.app.kubernetes.io/name`) is found too: at each step the
    longest key matching the rest of the path wins, so label names need no escaping."""
    parts = path.split(".")
    cur = data
    i = 0
    while i < len(parts):
        if isinstance(cur, dict):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if key in cur:
                    cur, i = cur[key], j
                    break
            else:
                return _MISSING
        elif isinstance(cur, list) and parts[i].isdigit() and int(parts[i]) < len(cur):
            cur, i = cur[int(parts[i])], i + 1
        else:
            return _MISSING
    return cur


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _scalar_text(v: Any) -> str | None:
    """How a scalar reads in YAML/JSON, so `1`, `1.0` and `"1"` or `true` and `"true"` compare equal;
    None for containers, which only ever equal an identical container."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (int, float, str)):
        return str(v)
    return None


def _eq(actual: Any, want: Any) -> bool:
    if isinstance(actual, bool) != isinstance(want, bool):
        # true is not 1: compare as text so only "true"/"false" strings equal a boolean
        a, b = _scalar_text(actual), _scalar_text(want)
        return a is not None and a == b
    if actual == want:
        return True
    a, b = _scalar_text(actual), _scalar_text(want)
    return a is not None and b is not None and a == b


_SHOW = reprlib.Repr()
"""The field's value in an explanation: a bounded preview, so a megabyte field costs nothing per condition."""
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlist = _SHOW.maxdict = 5
_SHOW.maxlevel = 2


def check_condition(cond: Condition, event: dict[str, Any]) -> tuple[bool, str]:
    """Evaluate one condition; a missing field or a type mismatch is a non-match (with why), never an error.

    Every operator but `exists` fails on a missing field, `ne` and `not_in` included: write
    `exists: false` when absence should match."""
    actual = lookup(event, cond.field)
    op, want = cond.operator, cond.value
    if op == "exists":
        present = actual is not _MISSING and actual is not None
        ok = present if want in (None, True) else not present
        return ok, f"{cond.field} {'exists' if present else 'is missing'}"
    if actual is _MISSING:
        return False, f"{cond.field} is missing"
    desc = f"{cond.field}={_SHOW.repr(actual)} {op} {want!r}"
    if op == "eq":
        return _eq(actual, want), desc
    if op == "ne":
        return not _eq(actual, want), desc
    if op in ("gt", "gte", "lt", "lte"):
        a, b = _num(actual), _num(want)
        if a is None or b is None:
            return False, desc + " (not comparable as numbers)"
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op], desc
    if op in ("in", "not_in"):
        if not isinstance(want, list):
            return False, desc + " (the value must be a list)"
        hit = any(_eq(actual, w) for w in want)
        return (hit if op == "in" else not hit), desc
    if op == "contains":
        if isinstance(actual, str):
            w = _scalar_text(want)
            if w is None:
                return False, desc + " (can only look for a string in a string)"
            return w in actual, desc
        if isinstance(actual, list):
            return any(_eq(item, want) for item in actual), desc
        if isinstance(actual, dict):
            w = _scalar_text(want)
            return (w is not None and w in actual), desc + " (keys)"
        return False, desc + " (not a string, list or object)"
    if op == "regex":
        if isinstance(actual, (dict, list)) or actual is None:
            return False, desc + " (not a string)"
        text = _scalar_text(actual) or ""
        return user_regex(str(want)).search(text) is not None, desc
    return False, f"unknown operator {op}"  # pragma: no cover - pydantic restricts operators


@dataclass(frozen=True, slots=True)
class RuleTests:
    """A rule's event-type, severity and source tests as sets and a rank (empty: any)."""

    event_types: frozenset[str]
    """Canonical event types (EVENT_ALIASES applied)."""
    min_rank: int | None
    sources: frozenset[str]

    @classmethod
    def of(cls, rule: RoutingRule) -> RuleTests:
        return cls(frozenset(canonical_event_type(t) for t in rule.event_types),
                   sev_rank(rule.min_severity) if rule.min_severity else None, frozenset(rule.sources))


# --- compiled once per config version (Config.derive): per event, only conditions, schedules and quiet
# hours are left to evaluate.


def rule_tests(cfg: Config) -> tuple[RuleTests, ...]:
    """Each routing rule's tests, parallel to cfg.routing.rules."""
    return cfg.derive("routing.rule_tests", cfg.routing.rules, _rule_tests)


def _rule_tests(rules: list[RoutingRule]) -> tuple[RuleTests, ...]:
    return tuple(RuleTests.of(r) for r in rules)


def rules_may_match(cfg: Config, event_type: str) -> bool:
    """Whether any rule's event types admit `event_type` (its other tests aside)."""
    kind = canonical_event_type(event_type)
    return any(not t.event_types or kind in t.event_types for t in rule_tests(cfg))


def list_members(cfg: Config) -> Mapping[str, tuple[str, ...]]:
    """Contact list name -> its contacts, nested lists included, in order, each once."""
    return cfg.derive("routing.list_members", cfg.contact_lists, _expand_each)


def _expand_each(lists: list[ContactList]) -> dict[str, tuple[str, ...]]:
    by_name: dict[str, ContactList] = {}
    for cl in lists:
        by_name.setdefault(cl.name, cl)

    def walk(name: str, out: list[str], seen_lists: set[str]) -> None:
        if name in seen_lists or name not in by_name:
            return  # cycles are rejected at load; this would end one anyway
        seen_lists.add(name)
        cl = by_name[name]
        for m in cl.members:
            if m not in out:
                out.append(m)
        for sub in cl.lists:
            walk(sub, out, seen_lists)

    expanded: dict[str, tuple[str, ...]] = {}
    for name in by_name:
        out: list[str] = []
        walk(name, out, set())
        expanded[name] = tuple(out)
    return expanded


def match_rule(rule: RoutingRule, ev: RouteEvent, tests: RuleTests | None = None) -> tuple[bool, str]:
    """Why a rule matches or not, in words an admin can act on. `tests`: the rule's, compiled (plan passes
    them from `rule_tests`; without, they are worked out here)."""
    t = tests or RuleTests.of(rule)
    if t.event_types and canonical_event_type(ev.event_type) not in t.event_types:
        return False, f"event type {ev.event_type!r} not in {rule.event_types}"
    if t.min_rank is not None:
        if ev.severity is None:
            return False, f"no severity (needs {rule.min_severity} or worse)"
        if sev_rank(ev.severity) > t.min_rank:
            return False, f"severity {ev.severity} is below {rule.min_severity}"
    if t.sources and ev.source not in t.sources:
        return False, f"source {ev.source!r} not in {rule.sources}"
    data = ev.as_dict()
    reasons = []
    for cond in rule.conditions:
        ok, why = check_condition(cond, data)
        if not ok:
            return False, f"condition failed: {why}"
        reasons.append(why)
    return True, "all conditions hold" + (f" ({'; '.join(reasons)})" if reasons else "")


def in_quiet_hours(contact: Contact, now: datetime) -> bool:
    qh = contact.quiet_hours
    if not qh:
        return False
    return in_daily_window(qh.start, qh.end, qh.timezone, now)


def in_daily_window(start: str, end: str, tz: str, at: datetime) -> bool:
    """Whether `at` falls in the daily window [start, end) (HH:MM, read in `tz`; it may span midnight).
    Quiet hours and the reports' night pages both ask this."""
    local = at.astimezone(ZoneInfo(tz)).time()
    t0, t1 = time.fromisoformat(start), time.fromisoformat(end)
    if t0 <= t1:
        return t0 <= local < t1
    return local >= t0 or local < t1  # spans midnight


def contact_channels(contact: Contact, severity: str | None, now: datetime, *,
                     news: bool = False) -> tuple[list[str], list[str], str]:
    """Preferred channels for this severity (the news list for news), minus those quiet hours suppress;
    returns (channels, notes, which list chose them)."""
    chans, chosen_by = contact.preferences.news(severity) if news else contact.preferences.pages(severity)
    notes = []
    qh = contact.quiet_hours
    if qh and in_quiet_hours(contact, now) and (severity not in qh.allow_severities):
        kept = [c for c in chans if c not in qh.quiet_channels]
        for c in chans:
            if c not in kept:
                notes.append(f"{contact.name}/{c}: quiet hours ({qh.start}-{qh.end} {qh.timezone})")
        chans = kept
    return chans, notes, chosen_by


def person_address(contact: Contact, channel: str) -> str | None:
    if channel == "email":
        return contact.email
    if channel in ("sms", "voice"):
        return contact.phone
    if channel == "telegram":
        return contact.chat.telegram
    if channel.endswith("_dm"):  # slack_dm, teams_dm, telegram_dm: the person's id on that platform
        return getattr(contact.chat, channel[:-3], None)
    if channel == "ntfy":
        return contact.ntfy_topic
    if channel == "webpush":
        return contact.console_user
    if channel == "outbox":
        return contact.email or contact.phone or contact.name
    return None


def expand_lists(cfg: Config, names: Sequence[str]) -> list[str]:
    """Contacts of the named lists, nested lists included, in order, each once (from the compiled lists:
    a list reached again through another adds only contacts not seen yet, as one walk over all would)."""
    members = list_members(cfg)
    if len(names) == 1:
        return list(members.get(names[0], ()))
    return list(dict.fromkeys(m for n in names for m in members.get(n, ())))


NOBODY_ON_CALL = "nobody on call in schedule "
"""Prefix of the `skipped` note a schedule with nobody on call leaves (Plan.nobody_on_call reads it)."""

Overrides = Mapping[str, Sequence[Override]]
"""schedule name -> its overrides in force (read from the database by the caller, core/schedules/store.py)."""


def resolve_targets(cfg: Config, targets: Targets, *, severity: str | None, now: datetime,
                    reason: str, overrides: Overrides | None = None,
                    news: bool = False) -> tuple[list[PlannedDelivery], list[str]]:
    deliveries: list[PlannedDelivery] = []
    skipped: list[str] = []
    listed = expand_lists(cfg, targets.lists)
    named = set(listed)
    people = [(n, reason) for n in listed] + [(c, reason) for c in dict.fromkeys(targets.contacts) if c not in named]
    for sname in targets.schedules:  # whoever is on call at `now`, else the schedule's fallback
        sc = cfg.schedule(sname)
        if sc is None:
            skipped.append(f"{sname}: unknown schedule")
            continue
        who = who_at(sc, now, (overrides or {}).get(sname, ()))
        if who.contact is not None:
            people.append((who.contact, shift_reason(sname, sc.timezone, who)))
            continue
        skipped.append(f"{NOBODY_ON_CALL}{sname} at {now.isoformat(timespec='seconds')}; fallback paged")
        d, s = resolve_targets(cfg, sc.fallback, severity=severity, now=now, reason=fallback_reason(sname),
                               news=news)
        deliveries += d
        skipped += s
    for lname in targets.lists:
        if cfg.contact_list(lname) is None:  # possible for a snapshot taken before a reload removed it
            skipped.append(f"{lname}: unknown contact list")
    for name, why in people:
        contact = cfg.contact(name)
        if contact is None:
            skipped.append(f"{name}: unknown contact")
            continue
        chans, notes, chosen_by = contact_channels(contact, severity, now, news=news)
        skipped.extend(notes)
        for ch in chans:
            addr = person_address(contact, ch)
            if not addr:
                skipped.append(f"{name}/{ch}: contact has no address for {ch}")
                continue
            deliveries.append(PlannedDelivery(name, ch, addr, why, chosen_by))
    for dname in targets.destinations:
        dest = cfg.destination(dname)
        if dest is None:
            skipped.append(f"{dname}: unknown destination")
            continue
        addr = {"telegram": dest.chat_id, "email": dest.address}.get(dest.channel, dname)
        deliveries.append(PlannedDelivery(dname, dest.channel, addr or dname, reason, "destination"))
    return deliveries, skipped


def dedupe(items: list[PlannedDelivery]) -> list[PlannedDelivery]:
    """One page per recipient per channel per message (the first reason is kept)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for d in items:
        key = (d.recipient, d.channel)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def plan(cfg: Config, ev: RouteEvent, *, now: datetime, extra: Targets | None = None,
         extra_reason: str = "named on the command", extra_first: bool = False,
         overrides: Overrides | None = None, actor_contacts: Collection[str] = (),
         acked_by: Collection[str] = (), team_lists: Sequence[str] = ()) -> Plan:
    """Match rules in order (first match wins unless the rule says `continue`); unrouted events go to
    default_targets. `extra` targets (a contact list named on declare, a one-time notify, an escalation
    level) are added; `extra_first` lists them before the rules' so their reason is the one kept.

    Pages use each person's severity list, news their news list (`ev.news`). The contacts who did what the
    message reports (`actor_contacts`) are never told about it. News about an acknowledged incident
    (`acked_by`: the acknowledger's contacts) reaches only the acknowledger's team (see `ack_team`)."""
    picks: list[RulePick] = []
    matched: list[RoutingRule] = []
    deliveries: list[PlannedDelivery] = []
    skipped: list[str] = []
    stopped = False
    for rule, tests in zip(cfg.routing.rules, rule_tests(cfg), strict=True):
        if stopped:
            picks.append(RulePick(rule.name, False, "not evaluated: an earlier rule matched without continue",
                                  evaluated=False))
            continue
        ok, why = match_rule(rule, ev, tests)
        picks.append(RulePick(rule.name, ok, why + (" (continue)" if ok and rule.continue_ else "")))
        if ok:
            matched.append(rule)
            d, s = resolve_targets(cfg, rule.targets, severity=ev.severity, now=now,
                                   reason=f"rule {rule.name}", overrides=overrides, news=ev.news)
            deliveries += d
            skipped += s
            if not rule.continue_:
                stopped = True
    if extra and not extra.empty():
        d, s = resolve_targets(cfg, extra, severity=ev.severity, now=now, reason=extra_reason,
                               overrides=overrides, news=ev.news)
        deliveries = d + deliveries if extra_first else deliveries + d
        skipped += s
    used_default = False
    if not matched and not deliveries:
        used_default = True
        d, s = resolve_targets(cfg, cfg.routing.default_targets, severity=ev.severity, now=now,
                               reason="default_targets", overrides=overrides, news=ev.news)
        deliveries += d
        skipped += s
    if ev.news and acked_by:
        lists = [*team_lists, *(extra.lists if extra else []),
                 *(n for r in matched for n in r.targets.lists)]
        team = ack_team(cfg, acked_by, lists)
        if team:
            skipped += sorted({f"{d.recipient}: not on the acknowledger's team (news after ack)"
                               for d in deliveries if d.chosen_by != "destination" and d.recipient not in team})
            deliveries = [d for d in deliveries if d.chosen_by == "destination" or d.recipient in team]
    if actor_contacts:
        # The actor's own chat DM stays: it carries the card they acted on, which must show the new state.
        def told(d: PlannedDelivery) -> bool:
            return d.chosen_by == "destination" or d.recipient not in actor_contacts or d.channel.endswith("_dm")
        skipped += sorted({f"{d.recipient}: did this, so is not told about it" for d in deliveries if not told(d)})
        deliveries = [d for d in deliveries if told(d)]
    return Plan(dedupe(deliveries), picks, matched, skipped, used_default, ev)


def ack_team(cfg: Config, acked_by: Collection[str], lists: Sequence[str]) -> set[str]:
    """The acknowledger's team: every member of each contact list (nested lists included) among the
    incident's targets that has the acknowledger in it. Empty when the acknowledger is on none of them
    (then news is not narrowed: we prefer telling too many people to telling nobody)."""
    team: set[str] = set()
    for name in dict.fromkeys(lists):
        members = expand_lists(cfg, [name])
        if any(a in members for a in acked_by):
            team.update(members)
    return team


# --- incidents ---------------------------------------------------------------------------------------


def incident_event(inc: Incident, event_type: str) -> RouteEvent:
    """The RouteEvent an incident's `event_type` is routed with (the service and explain share it)."""
    return RouteEvent(event_type=event_type, severity=inc.severity, source=inc.source, incident=inc.ref,
                      payload=inc.payload or {}, labels=inc.labels or {},
                      metadata={"title": inc.title, "state": inc.state})


def incident_lists(cfg: Config, inc: Incident, *, now: datetime) -> list[str]:
    """The contact lists an incident pages: the one named at declare, those the rules route its
    `declare` to, and every level of its escalation policy snapshot (where the acknowledger's team is
    looked for)."""
    out = [inc.contact_list] if inc.contact_list else []
    for rule in plan(cfg, incident_event(inc, "declare"), now=now).matched_rules:
        out += rule.targets.lists
    for level in (inc.escalation_snapshot or {}).get("levels") or []:
        out += list((level.get("targets") or {}).get("lists") or [])
    return list(dict.fromkeys(out))


def incident_extra(inc: Incident) -> Targets | None:
    """A contact list named when the incident was declared is paged on every event, besides the rules."""
    return Targets(lists=[inc.contact_list]) if inc.contact_list else None


def incident_plan(cfg: Config, inc: Incident, event_type: str, *, now: datetime,
                  overrides: Overrides | None = None, actor_contacts: Collection[str] = (),
                  acked_by: Collection[str] = ()) -> Plan:
    """The plan for an incident's message of `event_type` (not escalations): rules plus the contact list
    named at declare; after an ack (`acked_by`: the acknowledger's contacts) news narrows to their team."""
    ev = incident_event(inc, event_type)
    lists = incident_lists(cfg, inc, now=now) if ev.news and acked_by else []
    return plan(cfg, ev, now=now, extra=incident_extra(inc), overrides=overrides, actor_contacts=actor_contacts,
                acked_by=acked_by, team_lists=lists)


def escalation_plan(cfg: Config, inc: Incident, *, level: int, targets: Targets, now: datetime,
                    overrides: Overrides | None = None, actor_contacts: Collection[str] = ()) -> Plan:
    """An escalation pages the level's targets plus whatever rules route `escalate` events to;
    default_targets only when neither reaches anyone."""
    return plan(cfg, incident_event(inc, "escalate"), now=now, extra=targets,
                extra_reason=f"escalation level {level}", extra_first=True, overrides=overrides,
                actor_contacts=actor_contacts)
