"""`tocsin route explain` and `tocsin test-event`: see who an event would reach, or send a synthetic one.

Both run the same routing code the service runs (core.routing), so the explanation is what gets queued.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core import config as config_mod
from core.clock import SystemClock
from core.errors import InvalidInput, TocsinError
from core.explain import explain_event, explain_incident
from core.rbac import Permission, require
from core.routing import RouteEvent
from core.schedules.service import overrides_in_force


async def cmd_route_explain(args: argparse.Namespace) -> int:
    from bot.cli import _with_ctx, actor_of

    actor = actor_of(args)
    if args.event:
        ev = await _read_event(args.event, event_type=args.event_type)
        cfg = config_mod.load(config_mod.resolve_path(args.config))
        require(cfg, actor, Permission.MANAGE_SETTINGS)  # before touching the database
        now = SystemClock().now()
        overrides, where = await _overrides_now(args, now)
        print(explain_event(cfg, ev, now=now, actor=actor, overrides=overrides, database=where))
        return 0

    async def run(ctx: Any) -> int:
        etype = args.event_type or "update"
        print(await explain_incident(ctx.service, args.incident, etype, actor=actor))
        return 0

    return await _with_ctx(args, run)


async def _overrides_now(args: argparse.Namespace, now: datetime) -> tuple[dict[str, Any] | None, str]:
    """The on-call overrides in force now from the configured database, opened for reading only (no
    migration, nothing written), or None and why when it cannot be reached: an explanation still helps."""
    from bot.context import open_context

    try:
        ctx = await open_context(args.config, create=False, upgrade=False)
    except (TocsinError, OSError, SQLAlchemyError) as exc:
        return None, f"database unavailable: {exc}"
    try:
        async with ctx.db.sessions() as s:
            return await overrides_in_force(s, ctx.cfg, now), f"database {ctx.db.name}"
    except (TocsinError, OSError, SQLAlchemyError) as exc:
        return None, f"database {ctx.db.name} could not be read: {type(exc).__name__}"
    finally:
        await ctx.close()


async def _read_event(path: str, *, event_type: str | None) -> RouteEvent:
    """An event file: {"event_type" (or "type"), "severity", "source", "payload", "labels", "metadata"}."""
    try:
        if path == "-":
            raw = sys.stdin.read()
        else:
            raw = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: the event must be a JSON object")
    if event_type:
        data = {**data, "event_type": event_type}
        data.pop("type", None)
    try:
        return RouteEvent.from_dict(data)
    except ValueError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc


async def cmd_test_event(args: argparse.Namespace) -> int:
    """Route a synthetic event end to end: queued for real (as a one-time message) and audited."""
    from bot.cli import _with_ctx, actor_of

    actor = actor_of(args)
    try:
        payload = json.loads(args.payload) if args.payload else {}
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--payload is not valid JSON: {exc.msg}") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("--payload must be a JSON object")
    text = args.text or f"Test event: {args.event_type} ({args.severity}) sent with tocsin test-event"

    async def run(ctx: Any) -> int:
        out = await ctx.service.notify(actor=actor, text=text, severity=args.severity,
                                       event_type=args.event_type, source=args.source or "test",
                                       payload=payload)
        print(f"test event {args.event_type} ({args.severity}) queued as one-time message "
              f"{out.message.id}: {out.queued} deliveries")
        if out.plan is not None:
            print(out.plan.explain(queued=True))
            if out.plan.escalation_policy:
                print("(a one-time message has no incident, so nothing escalates)")
        return 0

    return await _with_ctx(args, run)


def register(sub: Any) -> None:
    """Add `route explain` and `test-event` to the `tocsin` parser (bot.cli EXTRA_COMMANDS)."""
    r = sub.add_parser("route", help="routing: explain who an event would reach")
    rs = r.add_subparsers(dest="op", required=True, metavar="OP")
    e = rs.add_parser("explain", help="which rule matches, why the others do not, and the exact recipients "
                                      "(admins only: shows addresses)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--event", metavar="FILE.json",
                     help='event file ("-" for stdin) with event_type, severity, source, payload, labels')
    src.add_argument("--incident", metavar="INC-n", help="explain an event of an existing incident")
    e.add_argument("--type", dest="event_type", metavar="TYPE",
                   help="event type (declare, update, bridge, monitor, ack, resolve, escalate, or an inbound "
                        "type); with --incident the default is update")
    e.set_defaults(func=cmd_route_explain)

    t = sub.add_parser("test-event", help="send a synthetic event through routing for real and show what was "
                                          "queued")
    t.add_argument("--type", dest="event_type", required=True, metavar="TYPE")
    t.add_argument("--severity", required=True, help="sev1..sev4 (or critical, high, medium, low)")
    t.add_argument("--payload", metavar="JSON",
                   help="event payload, a JSON object (rule conditions see it as payload.*)")
    t.add_argument("--source", help="event source (default: test)")
    t.add_argument("--text", help="message text (default: says it is a test)")
    t.set_defaults(func=cmd_test_event)
