"""`tocsin oncall show|override|overrides|cancel|take|export`: the chat command `/incident oncall`, run from the
terminal through the same Command and dispatcher (the iCalendar export is terminal-only)."""
from __future__ import annotations

import argparse
import sys

from bot.commands import Command
from bot.context import Context


async def cmd_oncall(args: argparse.Namespace) -> int:
    from bot.cli import _with_ctx, actor_of
    from bot.dispatch import execute

    op = args.oncall_op
    if op == "export":
        return await cmd_export(args)
    cmd = Command("oncall", target=op, schedule=getattr(args, "schedule", None),
                  contact=getattr(args, "contact", None), duration=getattr(args, "for_", None),
                  start=getattr(args, "from_", None) or getattr(args, "at", None),
                  until=getattr(args, "until", None), week=bool(getattr(args, "week", False)),
                  text=str(getattr(args, "id", "") or "").lstrip("#"))

    async def run(ctx: Context) -> int:
        reply = await execute(ctx.service, actor_of(args), cmd)
        print(reply.text, file=sys.stdout if reply.ok else sys.stderr)
        return 0 if reply.ok else 1

    return await _with_ctx(args, run)


async def cmd_export(args: argparse.Namespace) -> int:
    from bot.cli import _with_ctx, actor_of
    from core.schedules.calendar import feed

    async def run(ctx: Context) -> int:
        body = await feed(ctx.service.schedules, args.schedule, actor=actor_of(args), weeks=args.weeks,
                          contact=args.contact)
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return 0

    return await _with_ctx(args, run)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from bot.cli import positive_int

    p = sub.add_parser("oncall", help="on-call schedules: who is on call, overrides, calendar export")
    p.set_defaults(func=cmd_oncall)
    o = p.add_subparsers(dest="oncall_op", required=True, metavar="OP")
    sh = o.add_parser("show", help="who is on call now and next (or --week), and what decided it")
    sh.add_argument("schedule", nargs="?")
    sh.add_argument("--at", help="ISO time (read in the schedule's zone without an offset); default now")
    sh.add_argument("--week", action="store_true", help="a table of the next 7 days")
    ov = o.add_parser("override", help="someone covers a schedule for a while (manager, admin; a member for "
                                       "themselves)")
    ov.add_argument("schedule")
    ov.add_argument("contact")
    length = ov.add_mutually_exclusive_group(required=True)
    length.add_argument("--for", dest="for_", metavar="DURATION", help="e.g. 2h, 90m, 1d")
    length.add_argument("--until", metavar="ISO-TIME")
    ov.add_argument("--from", dest="from_", metavar="ISO-TIME", help="default now")
    tk = o.add_parser("take", help="cover a schedule you are a member of yourself")
    tk.add_argument("schedule")
    tk.add_argument("--for", dest="for_", metavar="DURATION", required=True)
    ls = o.add_parser("overrides", help="current and future overrides")
    ls.add_argument("schedule", nargs="?")
    cn = o.add_parser("cancel", help="cancel an override")
    cn.add_argument("id", help="override id, e.g. 12")
    ex = o.add_parser("export", help="iCalendar (.ics) of a schedule's shifts, to stdout")
    ex.add_argument("schedule")
    ex.add_argument("--weeks", type=positive_int, default=4)
    ex.add_argument("--contact", help="only this contact's shifts")
