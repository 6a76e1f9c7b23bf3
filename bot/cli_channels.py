"""`tocsin channel test CHANNEL --to NAME` (the chat command `/incident test`, run through the same Command
and dispatcher with this process's own HTTP session) and `tocsin digest send NAME`."""
from __future__ import annotations

import argparse
import sys

import aiohttp

from bot.commands import Command
from bot.context import Context


async def cmd_channel_test(args: argparse.Namespace) -> int:
    from bot.cli import _with_ctx, actor_of
    from bot.dispatch import execute
    from core.channel_test import ChannelTests

    async def run(ctx: Context) -> int:
        async with aiohttp.ClientSession() as http:
            ctx.service.channel_tests = ChannelTests(ctx.db, ctx.holder, audit=ctx.audit, clock=ctx.clock,
                                                     http=http)
            reply = await execute(ctx.service, actor_of(args), Command("test", target=args.channel,
                                                                       text=args.to))
        print(reply.text, file=sys.stdout if reply.ok else sys.stderr)
        return 0 if reply.ok else 1

    return await _with_ctx(args, run)


async def cmd_digest_send(args: argparse.Namespace) -> int:
    from bot.cli import _with_ctx, actor_of
    from core.digests import Digests

    async def run(ctx: Context) -> int:
        out = await Digests(ctx.db, ctx.holder, audit=ctx.audit, clock=ctx.clock).send_now(
            args.name, actor=actor_of(args))
        print(f"digest {out.name}: {out.queued} deliveries queued (the running worker sends them)")
        return 0

    return await _with_ctx(args, run)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ch = sub.add_parser("channel", help="delivery channels").add_subparsers(dest="op", required=True, metavar="OP")
    t = ch.add_parser("test", help="send a marked test message through a channel's real sender (admin)")
    t.add_argument("channel", help="email, sms, voice, slack_webhook, teams_webhook, webhook, telegram, ntfy, "
                                   "pagerduty")
    t.add_argument("--to", required=True, help="a contact or destination name")
    t.set_defaults(func=cmd_channel_test)
    dg = sub.add_parser("digest", help="scheduled digests").add_subparsers(dest="op", required=True, metavar="OP")
    ds = dg.add_parser("send", help="build and queue a digest now (config `digests`)")
    ds.add_argument("name")
    ds.set_defaults(func=cmd_digest_send)
