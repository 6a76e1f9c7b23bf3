"""`tocsin maintenance start|end|list`: the chat command's Command, run through the one dispatcher."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from bot.commands import Command, UsageError, parse
from core.config import parse_duration, parse_match


def command_of(args: argparse.Namespace) -> Command:
    """The same Command `/incident maintenance ...` parses to (so chat and CLI cannot disagree)."""
    if args.op == "start":
        try:
            parse_duration(args.duration)
        except ValueError as exc:
            raise UsageError(f"--for {args.duration!r}: {exc}", "maintenance") from None
        try:
            parse_match(args.match)
        except ValueError as exc:
            raise UsageError(f"--match: {exc}", "maintenance") from None
        return Command("maintenance", target="start", duration=args.duration, match=args.match,
                       text=args.reason or "")
    if args.op == "end":
        return parse(f"maintenance end {args.id}")
    return Command("maintenance", target="list")


async def cmd_maintenance(args: argparse.Namespace) -> int:
    from bot.cli import _with_ctx, actor_of
    from bot.dispatch import execute

    try:
        cmd = command_of(args)
    except UsageError as exc:
        print(f"error: {exc.problem}", file=sys.stderr)
        return 2

    async def run(ctx: Any) -> int:
        reply = await execute(ctx.service, actor_of(args), cmd)
        print(reply.text, file=sys.stdout if reply.ok else sys.stderr)
        return 0 if reply.ok else 1

    return await _with_ctx(args, run)


def register(sub: Any) -> None:
    m = sub.add_parser("maintenance", help="maintenance windows: matching events open nothing and page nobody")
    m.set_defaults(func=cmd_maintenance)
    ops = m.add_subparsers(dest="op", required=True, metavar="OP")
    s = ops.add_parser("start", help="start a window now (MANAGER and above)")
    s.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                   help="how long, e.g. 2h (at most maintenance.max_duration, default 8h)")
    s.add_argument("--match", default="", metavar="K=V,...",
                   help="e.g. 'source=alertmanager,labels.team=db' (default: every inbound event)")
    s.add_argument("--reason", default="")
    e = ops.add_parser("end", help="end a window early; paused escalations resume")
    e.add_argument("id", help="M-n")
    ops.add_parser("list", help="active windows and what they suppressed")
