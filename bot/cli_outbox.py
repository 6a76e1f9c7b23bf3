"""`tocsin outbox [--limit N] [--follow] [--json]`: what each channel would really have sent.

The outbox stores, per message, the request the real sender builds (core.delivery.base.Wire): webhooks' method,
masked URL, headers and JSON body; Slack Block Kit; Teams Adaptive Card; Telegram HTML; email subject and both
parts; SMS text with encoding and segments; voice TwiML. `--json` prints one JSON object per message.
"""
from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any, TextIO

from core.clock import utc
from core.models import OutboxMessage
from core.outbox_reads import OutboxReads


def message_json(m: OutboxMessage) -> str:
    """One line of `--json`: the row's addressing plus the payload the real sender would send."""
    return json.dumps({
        "id": m.id, "created_at": utc(m.created_at).isoformat(), "channel": m.channel, "recipient": m.recipient,
        "address": m.address, "delivery_id": m.delivery_id, "subject": m.subject,
        "payload": m.payload, **({} if m.payload is not None else {"text": m.body}),
    }, ensure_ascii=False)


def format_message(m: OutboxMessage) -> str:
    """One message: a header line, the subject, and the body indented."""
    when = utc(m.created_at)
    head = (f"#{m.id} {when:%Y-%m-%d %H:%M:%S} UTC  {m.channel} -> {m.recipient}"
            + (f" <{m.address}>" if m.address and m.address != m.recipient else "")
            + (f"  (delivery {m.delivery_id})" if m.delivery_id is not None else ""))
    lines = [head, f"  Subject: {m.subject}"]
    lines += ["  | " + line for line in (m.body or "").splitlines()] or ["  | "]
    return "\n".join(lines)


async def cmd_outbox(args: argparse.Namespace, *, out: TextIO | None = None, status: TextIO | None = None) -> int:
    """Print the latest messages; with --follow keep printing new ones, with a live count on a terminal
    (stderr, or `status`) and nothing extra off one."""
    from bot.cli import Progress, _with_ctx, actor_of

    actor = actor_of(args)

    async def run(ctx: Any) -> int:
        reads = OutboxReads(ctx.db, ctx.holder)
        stream = out
        rows = await reads.latest(actor=actor, limit=args.limit)
        last = rows[-1].id if rows else 0
        show = message_json if args.json else (lambda m: format_message(m) + "\n")
        if not rows and not args.follow and not args.json:
            print("the outbox is empty", file=stream)
        for m in rows:
            print(show(m), file=stream, flush=True)
        if not args.follow:
            return 0
        prog, shown = Progress("following the outbox, Ctrl-C stops; new messages", status), 0
        prog(shown, 0)
        try:
            while True:
                await asyncio.sleep(args.interval)
                for m in await reads.after(actor=actor, last=last):
                    print(show(m), file=stream, flush=True)
                    last, shown = m.id, shown + 1
                prog(shown, 0)
        finally:
            prog.finish()

    return await _with_ctx(args, run)


def register(sub: Any) -> None:
    """Adds the `outbox` subcommand (listed in bot.cli.EXTRA_COMMANDS)."""
    from bot.cli import positive_int

    p = sub.add_parser("outbox", help="show what the outbox channel stored (the embedded default)")
    p.add_argument("--limit", "-n", type=positive_int, default=20, help="how many of the latest messages (default 20)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new messages as they arrive")
    p.add_argument("--json", action="store_true", help="one JSON object per message (for scripts)")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_outbox)
