"""`tocsin heartbeat list`: each configured heartbeat's last ping, next deadline and open miss."""
from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from typing import Any

from core.config import format_duration
from core.heartbeats import HeartbeatView, Heartbeats
from core.rbac import Permission, require


def _when(dt: datetime | None, now: datetime) -> str:
    if dt is None:
        return "never"
    secs = int((dt - now).total_seconds())
    if not secs:
        return f"{dt:%Y-%m-%d %H:%M:%S} UTC (now)"
    rel = format_duration(timedelta(seconds=abs(secs)))
    return f"{dt:%Y-%m-%d %H:%M:%S} UTC ({'in ' + rel if secs > 0 else rel + ' ago'})"


def rows(views: list[HeartbeatView], now: datetime) -> list[tuple[str, ...]]:
    """Name, interval + grace, last ping, next deadline, state: one tuple per heartbeat (tested)."""
    return [(v.name, f"{format_duration(v.interval)} + {format_duration(v.grace)}",
             _when(v.last_ping_at, now), _when(v.deadline_at, now),
             f"MISSED (INC-{v.incident_id})" if v.missed else "ok") for v in views]


async def cmd_heartbeat_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bot.cli import _with_ctx, actor_of

    actor = actor_of(args)

    async def run(ctx: Any) -> int:
        require(ctx.cfg, actor, Permission.VIEW)
        views = await Heartbeats(ctx.service).list()
        if not views:
            print("no heartbeats configured (config `heartbeats`)")
            return 0
        table = Table("heartbeat", "interval + grace", "last ping", "next deadline", "state")
        for row in rows(views, ctx.clock.now()):
            table.add_row(*row)
        Console(soft_wrap=True).print(table)
        return 0

    return await _with_ctx(args, run)


def register(sub: Any) -> None:
    h = sub.add_parser("heartbeat", help="heartbeats (dead man's switches)").add_subparsers(
        dest="op", required=True, metavar="OP")
    h.add_parser("list", help="last ping and next deadline of each heartbeat").set_defaults(
        func=cmd_heartbeat_list)
