"""Runs a parsed Command against the IncidentService and words the answer, the same for every platform."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.commands import USAGE, Command, UsageError, parse
from core.appearance.reminders import snoozed
from core.appearance.terminal import CHAT, View
from core.db import unavailable
from core.errors import Forbidden, InvalidInput, InvalidTransition, NotFound, StorageUnavailable, TocsinError
from core.config import parse_duration
from core.incident_roles import IncidentRoles
from core.incidents import IncidentService
from core.notes import Notes
from core.maintenance import Maintenance, describe_match, summary
from core.models import Incident
from core.rbac import Actor
from core.subscriptions import Subscriptions, describe

log = logging.getLogger("tocsin.chat")


@dataclass(frozen=True)
class Reply:
    """What to tell the user. `ephemeral` answers only the asker (errors, usage, lists)."""

    text: str
    ok: bool = True
    ephemeral: bool = True
    incident_id: int | None = None


async def execute(service: IncidentService, actor: Actor, cmd: Command, *, view: View = CHAT) -> Reply:
    """Do what the command says as `actor`. Errors come back as a Reply, never as an exception."""
    try:
        return await run(service, actor, cmd, view=view)
    except UsageError as exc:
        return Reply(exc.text, ok=False)
    except Forbidden as exc:
        return Reply(f"Not allowed: {exc}", ok=False)
    except (NotFound, InvalidInput, InvalidTransition) as exc:
        usage = USAGE.get(cmd.verb)
        return Reply(f"{exc}" + (f"\nUsage: {usage}" if usage and isinstance(exc, InvalidInput) else ""), ok=False)
    except StorageUnavailable as exc:
        return Reply(_unavailable_text(str(exc)), ok=False)
    except TocsinError as exc:
        return Reply(f"Error: {exc}", ok=False)
    except Exception as exc:
        if not unavailable(exc):
            raise
        return Reply(_unavailable_text(str(service.db.unavailable_error(exc))), ok=False)


def _unavailable_text(reason: str) -> str:
    return (f"The database is unavailable, so nothing was done or stored ({reason}). Try again in a minute; "
            "if it is urgent, page people another way.")


async def run_text(service: IncidentService, actor: Actor, text: str) -> tuple[Command | None, Reply]:
    """Parse and execute in one step (the `form` verb is left to the platform: it opens a dialog)."""
    try:
        cmd = parse(text)
    except UsageError as exc:
        return None, Reply(exc.text, ok=False)
    if cmd.verb == "form":
        return cmd, Reply("", ok=True)
    return cmd, await execute(service, actor, cmd)


async def run(service: IncidentService, actor: Actor, cmd: Command, *, view: View = CHAT) -> Reply:
    """The one dispatch table of every surface (chat platforms and the CLI). Raises the core's errors;
    `view` words lists and status for the surface (core/appearance/terminal.py)."""
    v = cmd.verb
    if v in ("help", "form"):
        from bot.commands import HELP

        return Reply(HELP)
    if v == "declare":
        named = None
        if cmd.contact:
            out, named = await IncidentRoles(service).declare(
                commander=cmd.contact, actor=actor, title=cmd.title, severity=cmd.severity or "sev3",
                description=cmd.text, contact_list=cmd.target)
        else:
            out = await service.declare(actor=actor, title=cmd.title, severity=cmd.severity or "sev3",
                                        description=cmd.text, contact_list=cmd.target)
        inc = out.incident
        assert inc is not None
        lead = f" Commander: {(inc.role_names or {}).get('commander')}." if named is not None and named.changed \
            else ""
        return Reply(f"Declared {inc.ref} [{inc.severity}] {inc.title}: {out.queued} pages queued.{lead}",
                     ephemeral=False, incident_id=inc.id)
    if v == "update":
        out = await service.update(cmd.incident or "", actor=actor, text=cmd.text)
        return _done(out.incident, f"update posted, {out.queued} pages queued")
    if v == "bridge":
        out = await service.bridge(cmd.incident or "", actor=actor, details=cmd.target or "", text=cmd.text)
        return _done(out.incident, f"bridge posted, {out.queued} pages queued")
    if v == "monitor":
        out = await service.monitor(cmd.incident or "", actor=actor, text=cmd.text)
        return _done(out.incident, f"now monitoring, escalation stopped, {out.queued} pages queued")
    if v == "resolve":
        out = await service.resolve(cmd.incident or "", actor=actor, text=cmd.text)
        return _done(out.incident, f"resolved, {out.queued} pages queued")
    if v == "ack":
        out = await service.acknowledge(cmd.incident or "", actor=actor)
        if not out.changed:
            return Reply(out.note, incident_id=out.incident.id if out.incident else None)
        extra = f", {out.cancelled_pages} escalation pages cancelled" if out.cancelled_pages else ""
        return _done(out.incident, f"acknowledged by {actor.display or actor.identity}, "
                                   f"{out.queued} pages queued{extra}")
    if v == "escalate":
        out = await service.escalate(cmd.incident or "", actor=actor)
        body = out.message.body if out.message else out.note
        return _done(out.incident, f"{body.lower()}, {out.queued} pages queued")
    if v == "role":
        out = await IncidentRoles(service).assign(cmd.incident or "", role=cmd.target or "", person=cmd.contact or "",
                                                  actor=actor)
        if not out.changed:
            return Reply(out.note, incident_id=out.incident.id if out.incident else None)
        assert out.message is not None
        told = f"; {out.note}" if out.note else f"; {out.queued} private message(s) queued"
        return _done(out.incident, f"{out.message.body}{told}")
    if v == "note":
        out = await Notes(service).add(cmd.incident or "", actor=actor, text=cmd.text)
        return _done(out.incident, "note added to the timeline")
    if v == "notify":
        out = await service.notify(actor=actor, text=cmd.text, contact_list=cmd.target,
                                   severity=cmd.severity or "sev4", urgent=cmd.urgent)
        how = "" if cmd.urgent else " (as news: no voice or SMS unless listed under updates)"
        return Reply(f"One-time message sent to {cmd.target}: {out.queued} pages queued{how}.", ephemeral=False)
    if v == "status":
        detail = await service.detail(cmd.incident or "", actor=actor)
        return Reply(view.status(detail, service.clock.now()), incident_id=detail.incident.id)
    if v == "list":
        page = await service.page(state=cmd.filter, actor=actor, limit=cmd.limit, offset=cmd.offset)
        return Reply(view.incident_list(page, service.clock.now(), state=cmd.filter))
    if v == "route":
        text = await service.explain_route(cmd.incident or "", actor=actor, event_type=cmd.target or "update")
        return Reply(text)
    if v == "oncall":
        return await oncall(service, actor, cmd)
    if v == "test":
        tests = service.channel_tests
        if tests is None:
            return Reply("Channel tests run in the `tocsin run` server or with `tocsin channel test`.", ok=False)
        result = await tests.run(actor=actor, channel=cmd.target or "", target=cmd.text)
        return Reply(result.text(), ok=result.ok)
    if v == "maintenance":
        return await _maintenance(service, actor, cmd)
    if v == "snooze":
        from core.reminders import Reminders

        try:  # the chat parser checked it; the CLI and other builders of a Command may not have
            length = parse_duration(cmd.duration) if cmd.duration else None
        except ValueError as exc:
            raise UsageError(f"Duration {cmd.duration!r}: {exc}.", "snooze") from None
        done = await Reminders(service).snooze(cmd.incident or "", actor=actor, length=length)
        return Reply(snoozed(done.incident.ref, done.until, done.length, actor.display or actor.identity),
                     incident_id=done.incident.id)
    if v in ("subscribe", "unsubscribe", "subscriptions"):
        return await _subscriptions(service, actor, cmd)
    raise UsageError(f"Unknown command {v!r}.")


async def _maintenance(service: IncidentService, actor: Actor, cmd: Command) -> Reply:
    windows = Maintenance(service)
    now = service.clock.now()
    if cmd.target == "list":
        return Reply(summary(await windows.list(actor=actor), now))
    if cmd.target == "end":
        win = await windows.end(cmd.window or "", actor=actor)
        return Reply(f"Maintenance {win.ref} ended by {actor.display or actor.identity}; it suppressed "
                     f"{win.suppressed} event(s); paused escalations resume.", ephemeral=False)
    win = await windows.start(actor=actor, duration=parse_duration(cmd.duration or ""), match=cmd.match,
                              reason=cmd.text)
    return Reply(f"Maintenance {win.ref} started by {actor.display or actor.identity} for {cmd.duration} "
                 f"(until {win.ends_at:%Y-%m-%d %H:%M} UTC), matching {describe_match(win.match)}: matching "
                 f"events open nothing and page nobody; {len(win.paused)} escalation(s) paused."
                 + (f" Reason: {win.reason}" if win.reason else ""), ephemeral=False)


async def _subscriptions(service: IncidentService, actor: Actor, cmd: Command) -> Reply:
    subs = Subscriptions(service.db, service.config, audit=service.audit, clock=service.clock)
    if cmd.verb == "subscriptions":
        contact, rows = await subs.mine(actor=actor)
        return Reply(describe(rows, contact.name))
    if cmd.verb == "unsubscribe":
        row = await subs.unsubscribe(actor=actor, what=cmd.target or "")
        return Reply(f"{row.contact} no longer follows {row.key}.")
    row, new = await subs.subscribe(actor=actor, what=cmd.target or "")
    if not new:
        return Reply(f"{row.contact} already follows {row.key}; nothing changed.")
    what = "its updates" if row.incident_id else "every new incident matching it"
    return Reply(f"{row.contact} now follows {row.key}: {what} as news on your news channels "
                 f"(preferences.updates). Stop with /incident unsubscribe {row.key}.")


def _done(inc: Incident | None, what: str) -> Reply:
    assert inc is not None
    return Reply(f"{inc.ref}: {what}.", ephemeral=False, incident_id=inc.id)


async def oncall(service: IncidentService, actor: Actor, cmd: Command) -> Reply:
    """Who is on call (now and next, or a week), and overrides: set, take, cancel, list."""
    from core.appearance import oncall as words
    from core.schedules.service import duration, parse_time

    sched = service.schedules
    op = cmd.target or "show"
    if op == "show":
        names = [cmd.schedule] if cmd.schedule else [s.name for s in service.cfg.schedules]
        if not names:
            return Reply("No on-call schedules are configured (see `schedules:` in config.yaml).")
        out = []
        for name in names:
            sc = sched.schedule(name)
            at = parse_time(cmd.start, tz=sc.timezone, what="--at") if cmd.start else None
            sc, segs, _ = await sched.timeline(name, actor=actor, start=at, days=7 if cmd.week else 30)
            out.append(words.week_table(name, sc.timezone, segs) if cmd.week
                       else words.now_and_next(name, sc.timezone, segs))
        return Reply("\n\n".join(out))
    if op == "overrides":
        rows = await sched.overrides(cmd.schedule, actor=actor)
        if not rows:
            return Reply(f"No current or future overrides{' for ' + cmd.schedule if cmd.schedule else ''}.")
        return Reply("\n".join(words.override_line(r.id, r.schedule, r.contact, r.starts_at, r.ends_at,
                                                    _tz(service, r.schedule), r.created_by) for r in rows))
    if op == "cancel":
        row = await sched.cancel(int(cmd.text), actor=actor)
        return Reply(f"Cancelled override #{row.id} ({row.contact} on {row.schedule}).", ephemeral=False)
    sc = sched.schedule(cmd.schedule or "")
    start = parse_time(cmd.start, tz=sc.timezone, what="--from") if cmd.start else None
    until = parse_time(cmd.until, tz=sc.timezone, what="--until") if cmd.until else None
    length = duration(cmd.duration) if cmd.duration else None
    if length is None and until is None:
        raise UsageError("give a duration like 2h (or --until).", "oncall")
    if op == "take":
        row = await sched.take(sc.name, actor=actor, length=length)  # type: ignore[arg-type]
    else:
        row = await sched.override(sc.name, cmd.contact or "", actor=actor, start=start, end=until, length=length)
    return Reply(words.override_line(row.id, row.schedule, row.contact, row.starts_at, row.ends_at, sc.timezone,
                                     row.created_by), ephemeral=False)


def _tz(service: IncidentService, name: str) -> str:
    sc = service.cfg.schedule(name)
    return sc.timezone if sc else "UTC"
