"""The `tocsin` command. Acts as `cli:$USER` unless --as is given; the core checks the role."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from bot.commands import Command
from bot.context import Context, open_context
from core import config as config_mod
from core.audit_reads import AuditReads
from core.clock import SystemClock
from core.errors import ConfigError, TocsinError
from core.rbac import Actor

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
    """A progress bar for long work (rich) on a terminal; nothing at all when stderr is not a terminal.
    Called as progress(done, total); finish() removes the bar."""

    def __init__(self, label: str, stream: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        stream = stream or sys.stderr
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                        TimeRemainingColumn(), console=Console(file=stream), transient=True, disable=not self.tty)
        self._task = self._bar.add_task(label, total=None)
        self._started = False

    def __call__(self, done: int, total: int) -> None:
        if not self.tty:
            return
        if not self._started:
            self._bar.start()
            self._started = True
        self._bar.update(self._task, completed=done, total=total or None)

    def finish(self) -> None:
        if self._started:
            self._bar.stop()
            self._started = False


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
    for warning in coverage_warnings(cfg, path, SystemClock().now()):
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


async def _with_ctx(args: argparse.Namespace, fn: Callable[[Context], Awaitable[int]]) -> int:
    ctx = await open_context(args.config, create=False)  # only `run` and `db upgrade` create a database
    try:
        return await fn(ctx)
    finally:
        await ctx.close()


def incident_command(args: argparse.Namespace) -> Command:
    """`tocsin incident ...` and `tocsin notify ...` as the Command every chat platform builds, so one
    dispatcher (bot/dispatch.py) runs them all. argparse is only the CLI's front end."""
    words = " ".join
    if args.command == "notify":
        return Command("notify", target=args.list, text=words(args.text), severity=args.severity,
                       urgent=args.urgent)
    op = {"show": "status"}.get(args.op, args.op)
    if op == "declare":
        return Command("declare", severity=args.severity, title=words(args.title), text=args.description or "",
                       target=args.list, contact=args.commander)
    if op == "list":
        return Command("list", filter=args.state, limit=args.limit, offset=args.offset)
    if op == "bridge":
        return Command("bridge", incident=args.id, target=args.details, text=words(args.text))
    if op == "role":
        return Command("role", incident=args.id, target=args.role, contact=words(args.person))
    if op == "snooze":
        return Command("snooze", incident=args.id, duration=args.duration)
    if op in ("subscribe", "unsubscribe", "subscriptions"):
        from bot.commands import parse

        return parse(words([op, *getattr(args, "what", [])]))  # the chat grammar, so both say the same
    return Command(op, incident=args.id, text=words(getattr(args, "text", None) or []))


async def cmd_incident(args: argparse.Namespace) -> int:
    """Every `incident` verb and `notify`: one Command, the one dispatcher, the terminal view."""
    from bot.commands import UsageError
    from bot.dispatch import run
    from core.appearance.terminal import TERMINAL

    try:
        cmd = incident_command(args)
    except UsageError as exc:
        print(f"error: {exc.problem}", file=sys.stderr)
        return 2
    actor = actor_of(args)

    async def go(ctx: Context) -> int:
        reply = await run(ctx.service, actor, cmd, view=TERMINAL)
        print(reply.text)
        return 0

    return await _with_ctx(args, go)


async def cmd_export(args: argparse.Namespace) -> int:
    """`tocsin incident export INC-n --format md|json [--out FILE]`: the timeline and postmortem skeleton."""
    from core.appearance.export import render
    from core.timeline import incident_timeline

    actor = actor_of(args)

    async def go(ctx: Context) -> int:
        text = render(await incident_timeline(ctx.service, args.id, actor=actor), args.format)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"Wrote {args.out}")
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0

    return await _with_ctx(args, go)


async def cmd_audit(args: argparse.Namespace) -> int:
    actor = actor_of(args)

    async def run(ctx: Context) -> int:
        reads = AuditReads(ctx.db, ctx.holder)
        if args.op == "verify":
            prog = Progress("verifying audit chain")
            try:
                res = await reads.verify(actor=actor, progress=prog)
            finally:
                prog.finish()
            print(res.describe(), file=sys.stdout if res.ok else sys.stderr)
            return 0 if res.ok else 1
        resource = None
        if args.incident:
            from core.incidents import parse_ref

            resource = f"INC-{parse_ref(args.incident)}"
        entries = await reads.entries(actor=actor, resource=resource, limit=args.limit or None)
        from core.appearance.terminal import table
        from core.appearance.vocabulary import escape_terminal as clean

        if not entries:
            print("no audit entries" + (f" for {resource}" if resource else ""))
            return 0
        print(table(("SEQ", "TIME (UTC)", "ACTOR", "ACTION", "RESOURCE", "DETAILS"),
                    [(str(e.seq), e.ts[:19].replace("T", " "), clean(e.actor), e.action, clean(e.resource),
                      clean(_pairs(e.details)))
                     for e in entries], wrap=("DETAILS",)))
        return 0

    return await _with_ctx(args, run)


def _pairs(details: str) -> str:
    """An audit entry's details as `key=value` words, which wrap in a narrow column (JSON would not)."""
    try:
        data = json.loads(details or "{}")
    except ValueError:
        return details
    if not isinstance(data, dict):
        return details
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v}"
                    for k, v in data.items())


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


def _whole_number(text: str, *, minimum: int, wanted: str) -> int:
    """argparse type: a whole number >= `minimum`; anything else is a usage error naming what was wanted."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, not {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {wanted}, not {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type for counts (--limit, -n): 1 or more; 0, negatives and words are usage errors."""
    return _whole_number(text, minimum=1, wanted="a positive whole number (1 or more)")


def non_negative_int(text: str) -> int:
    """argparse type for offsets: 0 or more."""
    return _whole_number(text, minimum=0, wanted="0 or more (a whole number)")


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
    x.add_argument("--commander", help="who runs it (a contact, an identity like slack:U123); default: you")
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
    ro = i.add_parser("role", help="give an incident role (commander, comms, scribe) to a contact or `me`")
    ro.add_argument("id", help="INC-n")
    ro.add_argument("role", help="commander, comms or scribe")
    ro.add_argument("person", nargs="+", help="a contact name, an identity like slack:U123, or me")
    sn = i.add_parser("snooze", help="postpone the incident's reminders (default: reminders.snooze)")
    sn.add_argument("id", help="INC-n")
    sn.add_argument("duration", nargs="?", help="how long, like 45m or 2h")
    no = i.add_parser("note", help="add a note to the incident's timeline (pages nobody)")
    no.add_argument("id", help="INC-n")
    no.add_argument("text", nargs="+")
    ex = i.add_parser("export", help="the timeline and an empty postmortem, as Markdown or JSON")
    ex.add_argument("id", help="INC-n")
    ex.add_argument("--format", "-f", choices=["md", "json"], default="md")
    ex.add_argument("--out", "-o", help="write to this file instead of the terminal")
    ex.set_defaults(func=cmd_export)
    for name, hlp in (("subscribe", "follow an incident's news, or every new incident matching a filter"),
                      ("unsubscribe", "stop following")):
        y = i.add_parser(name, help=hlp)
        y.add_argument("what", nargs="+", help="INC-n, or sev1..sev4 / tenant:NAME / source:NAME (all must match)")
    i.add_parser("subscriptions", help="what you follow")
    ls = i.add_parser("list", help="list incidents")
    ls.add_argument("state", nargs="?", default="open", choices=["open", "all", "monitoring", "resolved"])
    ls.add_argument("--limit", "-n", type=positive_int, default=25, help="incidents per page (default 25)")
    ls.add_argument("--offset", type=non_negative_int, default=0, help="skip the newest N (next pages)")

    n = sub.add_parser("notify", help="send a one-time message (no incident)")
    n.add_argument("list", help="contact list")
    n.add_argument("text", nargs="+")
    n.add_argument("--severity", default="sev4")
    n.add_argument("--urgent", action="store_true",
                   help="send it as a page (each person's severity list, voice included) instead of news")
    n.set_defaults(func=cmd_incident)

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
                  "bot.cli_channels", "bot.cli_oncall", "bot.cli_maintenance", "bot.cli_report")


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
