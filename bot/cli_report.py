"""`tocsin report`: incidents, MTTA/MTTR, escalations, pages per person and delivery success over a period,
as tables (rich) or CSV on stdout. The figures are core/reports.py's, the ones the console's metrics page
shows."""
from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from bot.context import Context
from core.errors import InvalidInput
from core.reports import GROUPINGS, parse_since


def since_arg(text: str) -> timedelta:
    """argparse type for --since: a bad value is a usage error (exit 2) that says what is wanted."""
    try:
        return parse_since(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def cmd_report(args: argparse.Namespace) -> int:
    from bot.cli import _with_ctx, actor_of
    from core.appearance.terminal import report
    from core.reports import to_csv
    from core.stats import StatsReads

    async def run(ctx: Context) -> int:
        r = await StatsReads(ctx.db, ctx.holder).report(actor=actor_of(args), now=ctx.clock.now(),
                                                        since=args.since, by=args.by)
        sys.stdout.write(to_csv(r) if args.csv else report(r) + "\n")
        return 0

    return await _with_ctx(args, run)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="incidents, MTTA/MTTR, escalations, pages per person, delivery success",
                       description="Figures over a period, from the database: incidents with time to "
                                   "acknowledge and to resolve (median, p90) and escalations, split --by a key; "
                                   "pages per person (night pages apart); delivery success per channel.")
    p.add_argument("--since", type=since_arg, default=parse_since("30d"), metavar="DURATION",
                   help="how far back: 30d (default), 12h, 2w")
    p.add_argument("--by", choices=GROUPINGS, default="severity",
                   help="split incidents by severity (default), source, the schedule that paged, or contact paged")
    p.add_argument("--csv", action="store_true", help="CSV on stdout (section,group,metric,value) instead of tables")
    p.set_defaults(func=cmd_report)
