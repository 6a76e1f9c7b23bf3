"""The `tocsin` command. Acts as `cli:$USER` unless --as is given; the core checks the role."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from bot.context import Context, open_context
from core import config as config_mod
from core.appearance import terminal
from core.audit.log import AuditLog, verify
from core.errors import ConfigError, TocsinError
from core.rbac import Actor, Permission, require

Handler = Callable[[argparse.Namespace], Awaitable[int]]


def _default_identity() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = os.environ.get("USER", "unknown")
    return f"cli:{user}"


def actor_of(args: argparse.Namespace) -> Actor:
    ident = args.as_identity or _default_identity()
    if ":" not in ident:
        ident = f"cli:{ident}"
    return Actor(ident, source="cli")


class Progress:
    """A one-line progress display on a terminal; silent when output is not a terminal."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def __call__(self, done: int, total: int) -> None:
        if self.tty and total:
            pct = 100 * done / total
            self.stream.write(f"\r{self.label}: {done:,}/{total:,} ({pct:5.1f}%)")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


# --- commands -------------------------------------------------------------------------------


async def cmd_config_check(args: argparse.Namespace) -> int:
    path = config_mod.resolve_path(args.path or args.config)
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1
    print(f"OK: {path} ({len(cfg.contacts)} contacts, {len(cfg.contact_lists)} lists, "
          f"{len(cfg.routing.rules)} rules, {len(cfg.escalation_policies)} escalation policies"
          + (f", {len(cfg.schedules)} schedules" if cfg.schedules else "") + ")")
    for warning in coverage_warnings(cfg, path, _now()):
        print(warning, file=sys.stderr)
    return 0


def coverage_warnings(cfg: config_mod.Config, path: Any, now: Any, days: int = 14) -> list[str]:
    """`file:line schedules[i]: warning: nobody on call ...` for every gap in the next `days` days (layers
    only: overrides live in the database). A gap is not an error: the fallback is paged then."""
    from datetime import timedelta

    from core.appearance.oncall import when
    from core.schedules.rotation import gaps

    if not cfg.schedules:
        return []
    lines = config_mod.key_lines(path.read_text(encoding="utf-8"), str(path))
    out = []
    for i, sc in enumerate(cfg.schedules):
        found = gaps(sc, now, now + timedelta(days=days))
        fallback = ", ".join(sc.fallback.lists + sc.fallback.contacts + sc.fallback.destinations) or "none"
        for g in found[:10]:
            out.append(f"{path}:{config_mod.line_of(lines, ('schedules', i))} schedules[{i}]: warning: nobody "
                       f"on call in schedule {sc.name!r} from {when(g.start, sc.timezone)} to "
                       f"{when(g.end, sc.timezone)} (fallback: {fallback})")
        if len(found) > 10:
            out.append(f"{path}: schedules[{i}]: warning: ... and {len(found) - 10} more gaps in {days} days")
    return out


async def cmd_db_upgrade(args: argparse.Namespace) -> int:
    ctx = await open_context(args.config, upgrade=False)
    try:
        from core import migrate

        before = await migrate.current_revision(ctx.db.engine)
        await migrate.upgrade(ctx.db.engine)
        after = await migrate.current_revision(ctx.db.engine)
        print(f"database at revision {after}" + (f" (was {before or 'empty'})" if before != after else
                                                 " (already current)"))
    finally:
        await ctx.close()
    return 0


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


async def _with_ctx(args: argparse.Namespace, fn: Callable[[Context], Awaitable[int]]) -> int:
    ctx = await open_context(args.config, create=False)  # only `run` and `db upgrade` create a database
    try:
        return await fn(ctx)
    finally:
        await ctx.close()


async def cmd_incident(args: argparse.Namespace) -> int:
    actor = actor_of(args)

    async def run(ctx: Context) -> int:
        svc = ctx.service
        op = args.op
        if op == "declare":
            out = await svc.declare(actor=actor, title=" ".join(args.title), severity=args.severity,
                                    description=args.description or "", contact_list=args.list)
            print(f"declared {out.incident.ref} [{out.incident.severity}] {out.incident.title}: "
                  f"{out.queued} notifications queued")
        elif op == "update":
            out = await svc.update(args.id, actor=actor, text=" ".join(args.text))
            print(f"{out.incident.ref}: update posted, {out.queued} notifications queued")
        elif op == "bridge":
            out = await svc.bridge(args.id, actor=actor, details=args.details, text=" ".join(args.text))
            print(f"{out.incident.ref}: bridge posted, {out.queued} notifications queued")
        elif op == "monitor":
            out = await svc.monitor(args.id, actor=actor, text=" ".join(args.text))
            print(f"{out.incident.ref}: now monitoring, {out.queued} notifications queued")
        elif op == "ack":
            out = await svc.acknowledge(args.id, actor=actor)
            if not out.changed:
                print(out.note)
            else:
                extra = f", {out.cancelled_pages} escalation pages cancelled" if out.cancelled_pages else ""
                print(f"{out.incident.ref}: acknowledged by {actor.identity}{extra}")
        elif op == "resolve":
            out = await svc.resolve(args.id, actor=actor, text=" ".join(args.text))
            print(f"{out.incident.ref}: resolved, {out.queued} notifications queued")
        elif op == "escalate":
            out = await svc.escalate(args.id, actor=actor)
            print(f"{out.incident.ref}: {out.message.body if out.message else out.note}, {out.queued} pages queued")
        elif op == "list":
            incidents = await svc.list(state=args.state, actor=actor)
            if not incidents:
                print("no incidents" if args.state == "all" else f"no {args.state} incidents")
            for inc in incidents:
                print(terminal.table_row(inc, _now()))
        elif op == "show":
            print(terminal.show(await svc.detail(args.id, actor=actor)))
        return 0

    return await _with_ctx(args, run)


async def cmd_notify(args: argparse.Namespace) -> int:
    actor = actor_of(args)

    async def run(ctx: Context) -> int:
        out = await ctx.service.notify(actor=actor, text=" ".join(args.text), contact_list=args.list,
                                       severity=args.severity)
        print(f"one-time message {out.message.id}: {out.queued} notifications queued")
        return 0

    return await _with_ctx(args, run)


async def cmd_audit(args: argparse.Namespace) -> int:
    actor = actor_of(args)

    async def run(ctx: Context) -> int:
        require(ctx.cfg, actor, Permission.VIEW_AUDIT)
        if args.op == "verify":
            prog = Progress("verifying audit chain")
            res = await verify(ctx.db.engine, checkpoint_key=ctx.cfg.audit.checkpoint_key.get_secret_value().encode(),
                               progress=prog)
            prog.finish()
            print(res.describe(), file=sys.stdout if res.ok else sys.stderr)
            return 0 if res.ok else 1
        async with ctx.db.sessions() as s:
            resource = None
            if args.incident:
                from core.incidents import parse_ref

                resource = f"INC-{parse_ref(args.incident)}"
            entries = await AuditLog.entries(s, resource=resource, limit=args.limit or None)
        for e in entries:
            print(f"{e.seq:>6} {e.ts} {e.actor:<22} {e.action:<20} {e.resource:<10} {e.details}")
        return 0

    return await _with_ctx(args, run)


async def cmd_run(args: argparse.Namespace) -> int:
    from bot.server import serve

    return await serve(args.config, host=args.host, port=args.port)


# --- parser ---------------------------------------------------------------------------------


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("tocsin")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def positive_int(text: str) -> int:
    """argparse type for counts (--limit, -n): 1 or more; 0, negatives and words are usage errors."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number (1 or more), not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tocsin", description="Incident chat-ops: declare, page, escalate, audit.")
    p.add_argument("--version", action="version", version=f"tocsin {version()}")
    p.add_argument("--config", help="config file (default: $TOCSIN_CONFIG, else ./config.yaml)")
    p.add_argument("--as", dest="as_identity", metavar="IDENTITY",
                   help="act as this identity (e.g. cli:alice, slack:U123); default cli:$USER")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="start the bot server, worker and escalation timer")
    r.add_argument("--host")
    r.add_argument("--port", type=int, help="listen on this port (default: server.port in the config)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("config", help="configuration").add_subparsers(dest="op", required=True, metavar="OP")
    cc = c.add_parser("check", help="validate a config file")
    cc.add_argument("path", nargs="?")
    cc.set_defaults(func=cmd_config_check)

    d = sub.add_parser("db", help="database").add_subparsers(dest="op", required=True, metavar="OP")
    d.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    ip = sub.add_parser("incident", help="declare and work incidents")
    ip.set_defaults(func=cmd_incident)
    i = ip.add_subparsers(dest="op", required=True, metavar="OP")
    x = i.add_parser("declare", help="open an incident")
    x.add_argument("severity", help="sev1..sev4 (or critical, high, medium, low)")
    x.add_argument("title", nargs="+")
    x.add_argument("--list", help="contact list to page in addition to routing")
    x.add_argument("--description", "-d")
    for name, hlp in (("update", "post an update"), ("monitor", "move to Monitoring"),
                      ("resolve", "resolve and close the thread")):
        y = i.add_parser(name, help=hlp)
        y.add_argument("id", help="INC-n")
        y.add_argument("text", nargs="+" if name == "update" else "*")
    b = i.add_parser("bridge", help="post conference bridge details")
    b.add_argument("id")
    b.add_argument("details", help="URL or dial-in")
    b.add_argument("text", nargs="*")
    for name, hlp in (("ack", "acknowledge"), ("escalate", "escalate to the next level now"),
                      ("show", "show an incident with its thread")):
        y = i.add_parser(name, help=hlp)
        y.add_argument("id")
    ls = i.add_parser("list", help="list incidents")
    ls.add_argument("state", nargs="?", default="open", choices=["open", "all", "monitoring", "resolved"])

    n = sub.add_parser("notify", help="send a one-time message (no incident)")
    n.add_argument("list", help="contact list")
    n.add_argument("text", nargs="+")
    n.add_argument("--severity", default="sev4")
    n.set_defaults(func=cmd_notify)

    a = sub.add_parser("audit", help="audit trail").add_subparsers(dest="op", required=True, metavar="OP")
    a.add_parser("verify", help="prove the hash chain is intact").set_defaults(func=cmd_audit)
    sh = a.add_parser("show", help="print audit entries")
    sh.add_argument("--incident")
    sh.add_argument("--limit", "-n", type=positive_int, help="only the latest N entries")
    sh.set_defaults(func=cmd_audit)

    for module in EXTRA_COMMANDS:
        importlib.import_module(module).register(sub)
    return p


# Modules that add subcommands, each with register(subparsers); an explicit list, no discovery. They are
# imported only when the parser is built, so `tocsin --help` stays quick and import cycles cannot form.
EXTRA_COMMANDS = ("bot.cli_route", "bot.cli_outbox", "bot.cli_users", "bot.cli_ops", "bot.cli_heartbeat",
                  "bot.cli_channels", "bot.cli_oncall")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from core.logs import setup

    setup(os.environ.get("TOCSIN_LOG_LEVEL", "WARNING") if args.command != "run" else "INFO")
    try:
        return asyncio.run(args.func(args))
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1
    except TocsinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, exit 1, never a traceback (TOCSIN_LOG_LEVEL=DEBUG logs it)
        print(f"error: {startup_problem(exc)}", file=sys.stderr)
        logging.getLogger("tocsin.cli").debug("cli.failed", exc_info=True)
        return 1


def startup_problem(exc: BaseException) -> str:
    """One line naming what went wrong outside the core's own errors: a module that cannot be imported,
    a database that cannot be reached, or an unexpected failure (named by type)."""
    from core.db import unavailable

    if isinstance(exc, ImportError):
        return (f"cannot import {exc.name or 'a module'}: {exc} (is tocsin installed with its dependencies, "
                "e.g. `pip install -e .`?)")
    if unavailable(exc):
        orig = getattr(exc, "orig", None) or exc
        return f"database unavailable: {type(orig).__name__}: {_first_line(orig)}"
    return f"unexpected {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "(no message)"


class _ReaderGone(SystemExit):
    """stdout's reader went away. A SystemExit, so no `except Exception` on the way up turns it into an
    error message: the command just ends."""


class _PipeGuard:
    """sys.stdout as it was, except that a closed pipe raises _ReaderGone instead of BrokenPipeError."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        try:
            return int(self._inner.write(text))
        except BrokenPipeError:
            raise _ReaderGone(141) from None

    def flush(self) -> None:
        try:
            self._inner.flush()
        except BrokenPipeError:
            raise _ReaderGone(141) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def entry() -> int:
    """The `tocsin` console script and `python -m bot`: main(), and a reader that went away early
    (`tocsin audit show | head`) ends the command quietly, as other Unix tools do, without a traceback."""
    stdout = sys.stdout
    sys.stdout = _PipeGuard(stdout)  # type: ignore[assignment]
    try:
        code = main()
        sys.stdout.flush()  # inside the try: a pipe closed meanwhile fails here, not at interpreter exit
        return code
    except (BrokenPipeError, _ReaderGone):
        # Python flushes stdout again at exit and would print "Exception ignored ...": give it /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command ended by a closed pipe
    finally:
        sys.stdout = stdout
