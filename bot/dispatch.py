"""Runs a parsed Command against the IncidentService and words the answer, the same for every platform."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.commands import USAGE, Command, UsageError, parse
from core.appearance.terminal import describe, incident_line
from core.db import unavailable
from core.errors import Forbidden, InvalidInput, InvalidTransition, NotFound, StorageUnavailable, TocsinError
from core.incidents import IncidentService
from core.models import Incident
from core.rbac import Actor

log = logging.getLogger("tocsin.chat")


@dataclass(frozen=True)
class Reply:
    """What to tell the user. `ephemeral` answers only the asker (errors, usage, lists)."""

    text: str
    ok: bool = True
    ephemeral: bool = True
    incident_id: int | None = None


async def execute(service: IncidentService, actor: Actor, cmd: Command) -> Reply:
    """Do what the command says as `actor`. Errors come back as a Reply, never as an exception."""
    try:
        return await _execute(service, actor, cmd)
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


async def _execute(service: IncidentService, actor: Actor, cmd: Command) -> Reply:
    v = cmd.verb
    if v in ("help", "form"):
        from bot.commands import HELP

        return Reply(HELP)
    if v == "declare":
        out = await service.declare(actor=actor, title=cmd.title, severity=cmd.severity or "sev3",
                                    description=cmd.text, contact_list=cmd.target)
        inc = out.incident
        assert inc is not None
        return Reply(f"Declared {inc.ref} [{inc.severity}] {inc.title}: {out.queued} pages queued.",
                     ephemeral=False, incident_id=inc.id)
    if v == "update":
        out = await service.update(cmd.incident or "", actor=actor, text=cmd.text)
        return _done(out.incident, f"update posted, {out.queued} pages queued")
    if v == "bridge":
        out = await service.bridge(cmd.incident or "", actor=actor, details=cmd.target or "", text=cmd.text)
        return _done(out.incident, f"bridge posted, {out.queued} pages queued")
    if v == "monitor":
        out = await service.monitor(cmd.incident or "", actor=actor, text=cmd.text)
        return _done(out.incident, "now monitoring; escalation stopped")
    if v == "resolve":
        out = await service.resolve(cmd.incident or "", actor=actor, text=cmd.text)
        return _done(out.incident, "resolved")
    if v == "ack":
        out = await service.acknowledge(cmd.incident or "", actor=actor)
        if not out.changed:
            return Reply(out.note, incident_id=out.incident.id if out.incident else None)
        extra = f" ({out.cancelled_pages} escalation pages cancelled)" if out.cancelled_pages else ""
        return _done(out.incident, f"acknowledged by {actor.display or actor.identity}{extra}")
    if v == "escalate":
        out = await service.escalate(cmd.incident or "", actor=actor)
        body = out.message.body if out.message else out.note
        return _done(out.incident, f"{body.lower()}, {out.queued} pages queued")
    if v == "notify":
        out = await service.notify(actor=actor, text=cmd.text, contact_list=cmd.target)
        return Reply(f"One-time message sent to {cmd.target}: {out.queued} pages queued.", ephemeral=False)
    if v == "status":
        detail = await service.detail(cmd.incident or "", actor=actor)
        return Reply(describe(detail, service.clock.now()), incident_id=detail.incident.id)
    if v == "list":
        incidents = await service.list(state=cmd.filter, actor=actor, limit=25)
        if not incidents:
            return Reply("No open incidents." if cmd.filter == "open" else "No incidents yet.")
        now = service.clock.now()
        return Reply("\n".join(incident_line(i, now) for i in incidents))
    if v == "route":
        text = await service.explain_route(cmd.incident or "", actor=actor, event_type=cmd.target or "update")
        return Reply(text)
    if v == "test":
        tests = service.channel_tests
        if tests is None:
            return Reply("Channel tests run in the `tocsin run` server or with `tocsin channel test`.", ok=False)
        result = await tests.run(actor=actor, channel=cmd.target or "", target=cmd.text)
        return Reply(result.text(), ok=result.ok)
    raise UsageError(f"Unknown command {v!r}.")


def _done(inc: Incident | None, what: str) -> Reply:
    assert inc is not None
    return Reply(f"{inc.ref}: {what}.", ephemeral=False, incident_id=inc.id)
