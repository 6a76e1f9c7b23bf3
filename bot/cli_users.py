"""`tocsin user add NAME --role ROLE`: local users for the web console (password asked, never echoed)."""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from core.roles import ROLES
from core.users import UserService


async def cmd_user_add(args: argparse.Namespace) -> int:
    from bot.cli import _with_ctx, actor_of

    actor = actor_of(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        print("error: no terminal to ask for the password on; pipe it in with --password-stdin, e.g.\n"
              f"  printf '%s\\n' \"$PASSWORD\" | tocsin user add {args.name} --role {args.role} --password-stdin",
              file=sys.stderr)
        return 1
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 1

    async def run(ctx: Any) -> int:
        users = UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder)
        user = await users.add(name=args.name, role=args.role, password=password, actor=actor)
        print(f"user {user.name} added with role {user.role.upper()}; sign in at {ctx.cfg.server.public_url}/login")
        return 0

    return await _with_ctx(args, run)


def register(sub: Any) -> None:
    u = sub.add_parser("user", help="web console users").add_subparsers(dest="op", required=True, metavar="OP")
    a = u.add_parser("add", help="add a console user (asks for the password)")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    a.set_defaults(func=cmd_user_add)
