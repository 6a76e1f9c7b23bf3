"""The one parser of `/incident ...` for every platform: text -> Command, or UsageError with help."""
from __future__ import annotations

import re
from dataclasses import dataclass

from core.config import SEVERITIES, SEVERITY_ALIASES, parse_duration, parse_match
from core.errors import InvalidInput
from core.subscriptions import key_of, parse_target
from core.validation import is_ref

USAGE: dict[str, str] = {
    "declare": "/incident declare <sev1..sev4> <title> [--commander <person>]",
    "update": "/incident update <INC-n> <text>",
    "monitor": "/incident monitor <INC-n> [text]",
    "ack": "/incident ack <INC-n>",
    "resolve": "/incident resolve <INC-n> [text]",
    "bridge": "/incident bridge <INC-n> <url or dial-in> [text]",
    "escalate": "/incident escalate <INC-n>",
    "snooze": "/incident snooze <INC-n> [duration, e.g. 30m]",
    "role": "/incident role <INC-n> <commander|comms|scribe> <person|me>",
    "note": "/incident note <INC-n> <text>",
    "notify": "/incident notify [--urgent] <contact list> <text>",
    "status": "/incident status <INC-n>",
    "list": "/incident list [open|all]",
    "route": "/incident route <INC-n> [declare|update|ack|resolve|...]",
    "test": "/incident test <channel> <contact or destination>",
    "oncall": "/incident oncall [schedule] | oncall override <schedule> <contact> <duration> | "
              "oncall take <schedule> <duration> | oncall cancel <override id>",
    "maintenance": "/incident maintenance start <duration> [key=value,...] [reason] | end <M-n> | list",
    "subscribe": "/incident subscribe <INC-n> | subscribe <filter: sev1..sev4 tenant:<name> source:<name>, "
                 "one or more, all must match>",
    "unsubscribe": "/incident unsubscribe <INC-n or the filter you subscribed>",
    "subscriptions": "/incident subscriptions",
    "help": "/incident help",
}
ALIASES = {"new": "declare", "open": "declare", "acknowledge": "ack", "close": "resolve", "show": "status",
           "ls": "list", "monitoring": "monitor", "?": "help", "follow": "subscribe", "unfollow": "unsubscribe",
           "following": "subscriptions"}
HELP = "Incident commands:\n" + "\n".join(f"  {u}" for u in USAGE.values()) + \
       "\nSeverities: sev1..sev4 (or critical, high, medium, low). `/incident` alone opens the declare form."

_PREFIX = re.compile(r"^\s*(?:<at>[^<]*</at>\s*|@\S+\s+)*(?:/?incident(?:@\w+)?\b)?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Command:
    """A parsed command. Only the fields its verb uses are set."""

    verb: str
    incident: str | None = None
    severity: str | None = None
    title: str = ""
    text: str = ""
    target: str | None = None
    """Contact list (notify), bridge details (bridge), event type (route), channel (test), role (role), or
    what to (un)subscribe, canonical (`INC-3`, `sev1 tenant:acme`)."""
    filter: str = "open"
    schedule: str | None = None
    """On-call verbs: the schedule, and what the sub-command (in `target`) works on."""
    contact: str | None = None
    duration: str | None = None
    start: str | None = None
    until: str | None = None
    week: bool = False
    limit: int = 25
    """list: how many incidents per page; offset: how many newest to skip (the CLI's --limit/--offset)."""
    offset: int = 0
    match: str = ""
    """maintenance start: key=value pairs, comma-separated (source=alertmanager,labels.team=db)."""
    window: str | None = None
    """maintenance end: the window id (M-n)."""
    urgent: bool = False
    """notify --urgent: a page (people's severity lists) instead of news."""


class UsageError(Exception):
    """What was wrong plus how to use the command; shown to the user as is."""

    def __init__(self, problem: str, verb: str | None = None) -> None:
        self.problem = problem
        self.verb = verb
        usage = USAGE.get(verb or "", None)
        self.text = f"{problem}\nUsage: {usage}" if usage else f"{problem}\n{HELP}"
        super().__init__(self.text)


def strip_prefix(text: str) -> str:
    """Drop mentions (`<at>Tocsin</at>`, `@Tocsin`) and the command word (`/incident`, `/incident@Bot`,
    `incident`), so Slack's bare arguments, Telegram's `/incident@Bot ...` and Teams' `@Tocsin incident ...`
    all parse the same."""
    return _PREFIX.sub("", text or "", count=1).strip()


def _take(text: str, n: int) -> tuple[list[str], str]:
    """The first `n` words, and the rest of the text verbatim (quotes, newlines and spacing kept)."""
    words: list[str] = []
    rest = text.strip()
    for _ in range(n):
        if not rest:
            break
        parts = rest.split(None, 1)
        words.append(parts[0])
        rest = parts[1] if len(parts) > 1 else ""
    return words, rest.strip()


def _ref(word: str | None, verb: str) -> str:
    if not word:
        raise UsageError(f"`{verb}` needs an incident id like INC-12.", verb)
    if not is_ref(word):
        raise UsageError(f"{word!r} is not an incident id (expected INC-<number>).", verb)
    digits = re.sub(r"\D", "", word)
    return f"INC-{int(digits)}"


def parse(text: str) -> Command:
    """Parse what the user typed. Never raises anything but UsageError."""
    body = strip_prefix(text)
    if not body:
        return Command("form")
    (first,), after = _take(body, 1)
    verb = ALIASES.get(first.lower(), first.lower())
    if verb not in USAGE:
        raise UsageError(f"Unknown command {first[:40]!r}.")
    rest = after.split()
    if verb == "help":
        return Command("help")
    if verb == "declare":
        if not rest:
            raise UsageError("`declare` needs a severity and a title.", verb)
        sev = SEVERITY_ALIASES.get(rest[0].lower(), rest[0].lower())
        if sev not in SEVERITIES:
            raise UsageError(f"{rest[0]!r} is not a severity: use sev1..sev4 (or critical, high, medium, low).",
                             verb)
        title, commander = _commander(_take(after, 1)[1])
        if not title:
            raise UsageError("`declare` needs a title after the severity.", verb)
        if commander == "":
            raise UsageError("`--commander` needs a person (a contact, a mention, or me).", verb)
        return Command("declare", severity=sev, title=title, contact=commander)
    if verb == "list":
        flt = rest[0].lower() if rest else "open"
        if flt not in ("open", "all") or len(rest) > 1:
            raise UsageError(f"`list` takes `open` or `all`, not {' '.join(rest)!r}.", verb)
        return Command("list", filter=flt)
    if verb == "oncall":
        return _oncall(rest)
    if verb == "notify":
        urgent = bool(rest) and rest[0].lower() in ("--urgent", "\u2014urgent")  # phones turn -- into a dash
        if urgent:
            rest, after = rest[1:], _take(after, 1)[1]
        if len(rest) < 2:
            raise UsageError("`notify` needs a contact list and the text to send.", verb)
        return Command("notify", target=rest[0], text=_take(after, 1)[1], urgent=urgent)
    if verb == "test":
        if len(rest) != 2:
            raise UsageError("`test` needs a channel and one contact or destination.", verb)
        return Command("test", target=rest[0].lower(), text=rest[1])
    if verb == "maintenance":
        return _maintenance(after)
    if verb == "subscriptions":
        if rest:
            raise UsageError("`subscriptions` takes nothing after it.", verb)
        return Command(verb)
    if verb in ("subscribe", "unsubscribe"):
        try:
            return Command(verb, target=key_of(parse_target(after)))
        except InvalidInput as exc:
            raise UsageError(f"{str(exc)[:1].upper()}{str(exc)[1:]}.", verb) from None
    ref = _ref(rest[0] if rest else None, verb)
    tail = _take(after, 1)[1]
    if verb in ("ack", "escalate", "status"):
        if tail:
            raise UsageError(f"`{verb}` takes only the incident id.", verb)
        return Command(verb, incident=ref)
    if verb == "update":
        if not tail:
            raise UsageError("`update` needs the text of the update.", verb)
        return Command(verb, incident=ref, text=tail)
    if verb == "bridge":
        if len(rest) < 2:
            raise UsageError("`bridge` needs a URL or dial-in.", verb)
        return Command(verb, incident=ref, target=rest[1], text=_take(after, 2)[1])
    if verb == "snooze":
        return _snooze(ref, tail)
    if verb == "role":
        if len(rest) < 3:
            raise UsageError("`role` needs a role (commander, comms or scribe) and a person (a contact, a "
                             "mention, or me).", verb)
        return Command(verb, incident=ref, target=rest[1].lower(), contact=_take(after, 2)[1])
    if verb == "note":
        if not tail:
            raise UsageError("`note` needs the text to add to the timeline.", verb)
        return Command(verb, incident=ref, text=tail)
    if verb == "route":
        kind = rest[1].lower() if len(rest) > 1 else "update"
        return Command(verb, incident=ref, target=kind)
    return Command(verb, incident=ref, text=tail)  # monitor, resolve


def _snooze(ref: str, tail: str) -> Command:
    """`snooze INC-n [duration]`: postpone the incident's reminders (the configured default without one)."""
    words = tail.split()
    if len(words) > 1:
        raise UsageError(f"`snooze` takes the incident id and one duration like 30m, not {tail[:60]!r}.", "snooze")
    if words:
        try:
            length = parse_duration(words[0])
        except ValueError as exc:
            raise UsageError(f"Duration {words[0][:40]!r}: {exc}.", "snooze") from None
        if length.total_seconds() <= 0:
            raise UsageError("A snooze must last longer than nothing, e.g. 30m.", "snooze")
    return Command("snooze", incident=ref, duration=words[0] if words else None)


_COMMANDER = re.compile(r"\s(?:--|\u2014)commander(?:\s+|$)", re.IGNORECASE)


def _commander(text: str) -> tuple[str, str | None]:
    """`DB down --commander @bob` -> ("DB down", "@bob"): the declarer is commander unless someone else is
    named (phones turn -- into a dash). None when not named, "" when named without a person."""
    parts = _COMMANDER.split(" " + text, maxsplit=1)
    title = " ".join(parts[0].split())
    return (title, " ".join(parts[1].split())) if len(parts) == 2 else (title, None)


def _oncall(rest: list[str]) -> Command:
    """`oncall [schedule]`, `oncall override <schedule> <contact> <duration>`, `oncall take <schedule>
    <duration>`, `oncall cancel <id>` (durations like 30m, 2h, 1d)."""
    op = rest[0].lower() if rest else ""
    if op == "override":
        if len(rest) != 4:
            raise UsageError("`oncall override` needs a schedule, a contact and a duration like 2h.", "oncall")
        return Command("oncall", target="override", schedule=rest[1], contact=rest[2], duration=rest[3])
    if op == "take":
        if len(rest) != 3:
            raise UsageError("`oncall take` needs a schedule and a duration like 2h.", "oncall")
        return Command("oncall", target="take", schedule=rest[1], duration=rest[2])
    if op == "cancel":
        if len(rest) != 2 or not rest[1].lstrip("#").isdigit():
            raise UsageError("`oncall cancel` needs an override id like 12.", "oncall")
        return Command("oncall", target="cancel", text=rest[1].lstrip("#"))
    if len(rest) > 1:
        raise UsageError(f"`oncall` takes at most one schedule name, not {' '.join(rest)!r}.", "oncall")
    return Command("oncall", target="show", schedule=rest[0] if rest else None)
def _maintenance(after: str) -> Command:
    verb = "maintenance"
    (op, *_), tail = _take(after, 1) if after.strip() else ([""], "")
    op = op.lower()
    if op == "list":
        return Command(verb, target="list")
    if op == "end":
        words, extra = _take(tail, 1)
        if not words or extra or not re.fullmatch(r"(?i)m-?\d+|\d+", words[0]):
            raise UsageError("`maintenance end` takes the window id, like M-3.", verb)
        number = int(re.sub(r"\D", "", words[0]))
        return Command(verb, target="end", window=f"M-{number}")
    if op == "start":
        words, rest = _take(tail, 1)
        if not words:
            raise UsageError("`maintenance start` needs a duration, like 2h.", verb)
        try:
            parse_duration(words[0])
        except ValueError as exc:
            raise UsageError(f"Duration {words[0]!r}: {exc}.", verb) from None
        match = ""
        nxt, reason = _take(rest, 1)
        if nxt and "=" in nxt[0]:
            match = nxt[0]
            try:
                parse_match(match)
            except ValueError as exc:
                raise UsageError(f"Match: {exc}.", verb) from None
        else:
            reason = rest
        return Command(verb, target="start", duration=words[0], match=match, text=reason)
    raise UsageError("`maintenance` takes start, end or list.", verb)
