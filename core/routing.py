"""Rules -> targets -> (recipient, channel, address) plan, with a human explanation of every decision."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from core.config import SEVERITIES, Condition, Config, Contact, RoutingRule, Targets

PERSON_CHANNELS = ("email", "sms", "voice", "telegram", "outbox")
_MISSING = object()


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

    def as_dict(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "severity": self.severity, "source": self.source,
                "incident": self.incident, "payload": self.payload, "labels": self.labels,
                "metadata": self.metadata}


@dataclass(frozen=True)
class PlannedDelivery:
    recipient: str
    channel: str
    address: str
    reason: str


@dataclass
class RulePick:
    rule: str
    matched: bool
    why: str


@dataclass
class Plan:
    deliveries: list[PlannedDelivery]
    rules: list[RulePick]
    matched_rules: list[RoutingRule]
    skipped: list[str]
    """Recipients that could not be reached on a channel (missing address, quiet hours), with why."""
    used_default: bool = False

    @property
    def escalation_policy(self) -> str | None:
        return next((r.escalation_policy for r in self.matched_rules if r.escalation_policy), None)

    @property
    def severity(self) -> str | None:
        return next((r.severity for r in self.matched_rules if r.severity), None)

    @property
    def action(self) -> str:
        return next((r.action for r in self.matched_rules if r.action != "auto"), "auto")

    def explain(self) -> str:
        lines = []
        for pick in self.rules:
            lines.append(f"  {'MATCH' if pick.matched else 'skip '} {pick.rule}: {pick.why}")
        if self.used_default:
            lines.append("  -> no rule matched: routed to default_targets")
        lines.append(f"{len(self.deliveries)} deliveries would be queued:")
        for d in self.deliveries:
            lines.append(f"  {d.recipient:<24} {d.channel:<14} {d.address:<32} ({d.reason})")
        for s in self.skipped:
            lines.append(f"  not sent: {s}")
        return "\n".join(["Rules:"] + lines)


def sev_rank(sev: str | None) -> int:
    """sev1 is the most severe (rank 1)."""
    return SEVERITIES.index(sev) + 1 if sev in SEVERITIES else len(SEVERITIES) + 1


def lookup(data: Any, path: str) -> Any:
    """Dotted path into nested dicts/lists; _MISSING when any step is absent."""
    cur = data
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
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


def check_condition(cond: Condition, event: dict[str, Any]) -> tuple[bool, str]:
    """Evaluate one condition; a missing field or a type mismatch is a non-match, never an error."""
    actual = lookup(event, cond.field)
    op, want = cond.operator, cond.value
    if op == "exists":
        present = actual is not _MISSING and actual is not None
        ok = present if want in (None, True) else not present
        return ok, f"{cond.field} {'exists' if present else 'is missing'}"
    if actual is _MISSING:
        return False, f"{cond.field} is missing"
    desc = f"{cond.field}={actual!r} {op} {want!r}"
    if op == "eq":
        return actual == want or (str(actual) == str(want) and not isinstance(actual, (dict, list))), desc
    if op == "ne":
        return not (actual == want or str(actual) == str(want)), desc
    if op in ("gt", "gte", "lt", "lte"):
        a, b = _num(actual), _num(want)
        if a is None or b is None:
            return False, desc + " (not comparable as numbers)"
        return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op], desc
    if op == "in":
        return actual in want or str(actual) in [str(w) for w in want], desc
    if op == "not_in":
        return not (actual in want or str(actual) in [str(w) for w in want]), desc
    if op == "contains":
        if isinstance(actual, str):
            return str(want) in actual, desc
        if isinstance(actual, (list, tuple, dict)):
            return want in actual, desc
        return False, desc + " (not a string or list)"
    if op == "regex":
        if not isinstance(actual, (str, int, float)):
            return False, desc + " (not a string)"
        return re.search(want, str(actual)) is not None, desc
    return False, f"unknown operator {op}"  # pragma: no cover - pydantic restricts operators


def match_rule(rule: RoutingRule, ev: RouteEvent) -> tuple[bool, str]:
    """Why a rule matches or not, in words an admin can act on."""
    if rule.event_types and ev.event_type not in rule.event_types:
        return False, f"event type {ev.event_type!r} not in {rule.event_types}"
    if rule.min_severity:
        if ev.severity is None:
            return False, f"no severity (needs {rule.min_severity} or worse)"
        if sev_rank(ev.severity) > sev_rank(rule.min_severity):
            return False, f"severity {ev.severity} is below {rule.min_severity}"
    if rule.sources and ev.source not in rule.sources:
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
    local = now.astimezone(ZoneInfo(qh.timezone)).time()
    start = time.fromisoformat(qh.start)
    end = time.fromisoformat(qh.end)
    if start <= end:
        return start <= local < end
    return local >= start or local < end  # spans midnight


def contact_channels(contact: Contact, severity: str | None, now: datetime) -> tuple[list[str], list[str]]:
    """Preferred channels for this severity, minus those quiet hours suppress; returns (channels, notes)."""
    prefs = contact.preferences
    chans = list(prefs.get(severity or "", prefs.get("default", ["email"])))
    notes = []
    qh = contact.quiet_hours
    if qh and in_quiet_hours(contact, now) and (severity not in qh.allow_severities):
        kept = [c for c in chans if c not in qh.quiet_channels]
        for c in chans:
            if c not in kept:
                notes.append(f"{contact.name}/{c}: quiet hours ({qh.start}-{qh.end} {qh.timezone})")
        chans = kept
    return chans, notes


def person_address(contact: Contact, channel: str) -> str | None:
    if channel == "email":
        return contact.email
    if channel in ("sms", "voice"):
        return contact.phone
    if channel == "telegram":
        return contact.chat.telegram
    if channel == "outbox":
        return contact.email or contact.phone or contact.name
    return None


def expand_lists(cfg: Config, names: list[str]) -> list[str]:
    """Contacts of the named lists, nested lists included, in order, each once."""
    out: list[str] = []
    seen_lists: set[str] = set()

    def walk(name: str) -> None:
        if name in seen_lists:
            return
        seen_lists.add(name)
        cl = cfg.contact_list(name)
        if not cl:
            return
        for m in cl.members:
            if m not in out:
                out.append(m)
        for sub in cl.lists:
            walk(sub)

    for n in names:
        walk(n)
    return out


def resolve_targets(cfg: Config, targets: Targets, *, severity: str | None, now: datetime,
                    reason: str) -> tuple[list[PlannedDelivery], list[str]]:
    deliveries: list[PlannedDelivery] = []
    skipped: list[str] = []
    people = expand_lists(cfg, targets.lists)
    for c in targets.contacts:
        if c not in people:
            people.append(c)
    for name in people:
        contact = cfg.contact(name)
        if contact is None:
            skipped.append(f"{name}: unknown contact")
            continue
        chans, notes = contact_channels(contact, severity, now)
        skipped.extend(notes)
        for ch in chans:
            addr = person_address(contact, ch)
            if not addr:
                skipped.append(f"{name}/{ch}: contact has no address for {ch}")
                continue
            deliveries.append(PlannedDelivery(name, ch, addr, reason))
    for dname in targets.destinations:
        dest = cfg.destination(dname)
        if dest is None:
            skipped.append(f"{dname}: unknown destination")
            continue
        addr = dest.chat_id if dest.channel == "telegram" else (dest.address if dest.channel == "email" else dname)
        deliveries.append(PlannedDelivery(dname, dest.channel, addr or dname, reason))
    return deliveries, skipped


def dedupe(items: list[PlannedDelivery]) -> list[PlannedDelivery]:
    """One page per recipient per channel per message."""
    seen: set[tuple[str, str]] = set()
    out = []
    for d in items:
        key = (d.recipient, d.channel)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def plan(cfg: Config, ev: RouteEvent, *, now: datetime, extra: Targets | None = None) -> Plan:
    """Match rules in order (first match wins unless the rule says `continue`); unrouted events go to
    default_targets. `extra` targets (a contact list named on declare, a one-time notify) are added."""
    picks: list[RulePick] = []
    matched: list[RoutingRule] = []
    deliveries: list[PlannedDelivery] = []
    skipped: list[str] = []
    stopped = False
    for rule in cfg.routing.rules:
        if stopped:
            picks.append(RulePick(rule.name, False, "not evaluated: an earlier rule matched without continue"))
            continue
        ok, why = match_rule(rule, ev)
        picks.append(RulePick(rule.name, ok, why))
        if ok:
            matched.append(rule)
            d, s = resolve_targets(cfg, rule.targets, severity=ev.severity, now=now, reason=f"rule {rule.name}")
            deliveries += d
            skipped += s
            if not rule.continue_:
                stopped = True
    if extra and not extra.empty():
        d, s = resolve_targets(cfg, extra, severity=ev.severity, now=now, reason="named on the command")
        deliveries += d
        skipped += s
    used_default = False
    if not matched and not deliveries:
        used_default = True
        d, s = resolve_targets(cfg, cfg.routing.default_targets, severity=ev.severity, now=now,
                               reason="default_targets")
        deliveries += d
        skipped += s
    return Plan(dedupe(deliveries), picks, matched, skipped, used_default)
