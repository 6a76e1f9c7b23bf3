"""One role x action table, run through every entry point: Slack, Telegram, Teams, the CLI, the HTTP API and
the web console must all allow exactly what the table allows, and a refusal must change nothing.

Each cell acts on a fresh open incident (declared by the system), sends the real request (a signed slash
command, a webhook update with the secret, a Bot Framework activity, `tocsin ...` argv, an API key, a
console session), then checks the database: did the incident change, was a message, page or audit entry
written? A refused cell must leave every table as it was and say why (role, credentials, or "no such
command here").
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from sqlalchemy import select

from bot import cli
from bot.context import Context
from core.models import Incident, User
from tests.conftest import BASE_CONFIG, deep_merge
from tests.security.kit import (
    API_KEY,
    CLI_USER,
    CONSOLE_USER,
    ROLES,
    SLACK_USER,
    TEAMS_USER,
    TELEGRAM_USER,
    Stack,
    add_console_users,
    console_login,
    message_kinds,
    one_time,
    running_stack,
    security_config,
    seed_incident,
    snapshot,
    titled,
)

# The rule, written down once. Y = allowed, - = refused. `read` is status/list, `route` is route explain
# (a settings view: it shows every contact's address), `settings` is a settings change (a console user),
# `assign` gives someone else an incident role, `note` adds a timeline note, `export` is the postmortem export.
TABLE = """
            declare  update  ack  resolve  escalate  notify  read  route  audit  settings  assign  note  export
admin          Y       Y      Y      Y        Y        Y      Y     Y      Y       Y        Y      Y      Y
manager        Y       Y      Y      Y        Y        Y      Y     -      Y       -        Y      Y      Y
operator       Y       Y      Y      Y        Y        Y      Y     -      -       -        Y      Y      Y
viewer         -       -      -      -        -        -      Y     -      -       -        -      -      Y
unknown        -       -      -      -        -        -      Y     -      -       -        -      -      Y
"""


def parse_table(text: str) -> dict[str, dict[str, bool]]:
    lines = [ln.split() for ln in text.strip().splitlines()]
    actions = lines[0]
    table = {row[0]: {a: cell == "Y" for a, cell in zip(actions, row[1:], strict=True)} for row in lines[1:]}
    assert tuple(table) == ROLES
    return table


EXPECTED = parse_table(TABLE)
ACTIONS = tuple(next(iter(EXPECTED.values())))


@dataclass(frozen=True)
class Said:
    """What the entry point answered: `done`, `refused` (the role may not), `unauthenticated` (no such
    caller), or `absent` (this entry point has no such action)."""

    verdict: str
    text: str


@dataclass(frozen=True)
class Cell:
    role: str
    action: str
    target: Incident
    marker: str


class Entry:
    """An entry point: which actions it offers, and how a role performs one."""

    name = ""
    offers: frozenset[str] = frozenset()
    authenticates: bool = False
    """True when an unknown caller cannot be identified at all (API key, console account): it is then
    refused everything, reads included."""

    async def prepare(self, role: str) -> None:
        """Anything the role needs before its cells (e.g. signing in)."""

    async def do(self, cell: Cell) -> Said:
        raise NotImplementedError


def chat_text(action: str, ref: str, marker: str) -> str:
    return {
        "declare": f"declare sev3 declared {marker}",
        "update": f"update {ref} update {marker}",
        "ack": f"ack {ref}",
        "resolve": f"resolve {ref} resolved {marker}",
        "escalate": f"escalate {ref}",
        "notify": f"notify oncall notify {marker}",
        "read": f"status {ref}",
        "route": f"route {ref} update",
        "audit": f"audit {ref}",
        "settings": f"user add u{marker} viewer",
        "assign": f"role {ref} comms bob",
        "note": f"note {ref} note {marker}",
        "export": f"export {ref}",
    }[action]


def chat_verdict(text: str) -> Said:
    if text.startswith("Not allowed:"):
        return Said("refused", text)
    if text.startswith("Unknown command"):
        return Said("absent", text)
    return Said("done", text)


CHAT_ACTIONS = frozenset(ACTIONS) - {"audit", "settings", "export"}


class SlackEntry(Entry):
    name, offers = "slack", CHAT_ACTIONS

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def do(self, cell: Cell) -> Said:
        return chat_verdict(await self.stack.slack(chat_text(cell.action, cell.target.ref, cell.marker),
                                                   user=SLACK_USER[cell.role]))


class TelegramEntry(Entry):
    name, offers = "telegram", CHAT_ACTIONS

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def do(self, cell: Cell) -> Said:
        return chat_verdict(await self.stack.telegram(chat_text(cell.action, cell.target.ref, cell.marker),
                                                      user_id=TELEGRAM_USER[cell.role]))


class TeamsEntry(Entry):
    name, offers = "teams", CHAT_ACTIONS

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def do(self, cell: Cell) -> Said:
        return chat_verdict(await self.stack.teams_say(chat_text(cell.action, cell.target.ref, cell.marker),
                                                       user=TEAMS_USER[cell.role]))


class ApiEntry(Entry):
    """The HTTP API: events (open/update/resolve/notify by routing rule) and the read API. It has no
    ack, escalate, route, audit or settings endpoint; asking for one is a 404 for anybody."""

    name, offers, authenticates = "api", frozenset({"declare", "update", "resolve", "notify", "read"}), True

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def event(self, event_type: str, cell: Cell, correlation: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"event_type": event_type, "event_id": f"{cell.marker}-{cell.action}",
                "timestamp": "2026-01-01T10:30:00Z", "tenant_id": "sec", "payload": payload,
                "metadata": {"source_service": "sec", "correlation_id": correlation}}

    async def do(self, cell: Cell) -> Said:
        iid, m = cell.target.id, cell.marker
        requests: dict[str, tuple[str, str, Any]] = {
            "declare": ("POST", "/api/v1/events", self.event("sec.open", cell, f"new-{m}",
                                                             {"title": f"declared {m}"})),
            "update": ("POST", "/api/v1/events",
                       self.event("sec.update", cell, m, {"message": f"update {m}"})),
            "resolve": ("POST", "/api/v1/events", self.event("sec.resolve", cell, m, {"message": "fixed"})),
            "notify": ("POST", "/api/v1/events", self.event("sec.notify", cell, m, {"title": f"notify {m}"})),
            "read": ("GET", f"/api/v1/incidents/{iid}", None),
            "ack": ("POST", f"/api/v1/incidents/{iid}/ack", {}),
            "escalate": ("POST", f"/api/v1/incidents/{iid}/escalate", {}),
            "route": ("GET", f"/api/v1/incidents/{iid}/route", None),
            "audit": ("GET", "/api/v1/audit", None),
            "settings": ("PUT", "/api/v1/config", {}),
            "assign": ("POST", f"/api/v1/incidents/{iid}/roles", {"role": "comms", "person": "bob"}),
            "note": ("POST", f"/api/v1/incidents/{iid}/notes", {"text": f"note {m}"}),
            "export": ("GET", f"/api/v1/incidents/{iid}/export", None),
        }
        method, path, body = requests[cell.action]
        status, text = await self.stack.http(method, path, json=body,
                                             headers={"Authorization": f"Bearer {API_KEY[cell.role]}"})
        verdict = {401: "unauthenticated", 403: "refused", 404: "absent", 405: "absent"}.get(status)
        if verdict is None:
            verdict = "done" if 200 <= status < 300 else f"error {status}"
        return Said(verdict, text)


class ConsoleEntry(Entry):
    """The web console: read an incident, ack, resolve, the audit page. Signs in once per role (before the
    cell: a sign-in is audited, and that is not the cell's doing)."""

    name, offers, authenticates = "console", frozenset({"read", "ack", "resolve", "audit", "export"}), True

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.role: str | None = None
        self.session: dict[str, str] | None = None

    async def prepare(self, role: str) -> None:
        if self.role != role:
            name = CONSOLE_USER.get(role, f"sec{role}")
            self.session = await console_login(self.stack.client, name, f"{name}-pw-0123")
            self.role = role

    async def request(self, method: str, path: str) -> tuple[int, str, dict[str, str]]:
        headers = {k: v for k, v in (self.session or {}).items() if k == "Cookie"}
        data = {"csrf": self.session["X-Csrf"]} if self.session and method == "POST" else None
        resp = await self.stack.client.request(method, path, headers=headers, data=data,
                                               allow_redirects=False)
        return resp.status, await resp.text(), dict(resp.headers)

    async def do(self, cell: Cell) -> Said:
        iid = cell.target.id
        if cell.action not in self.offers:
            paths = {"declare": "/incidents", "notify": "/notify", "route": f"/incidents/{iid}/route",
                     "settings": "/users", "assign": f"/incidents/{iid}/role", "note": f"/incidents/{iid}/note"}
            path = paths.get(cell.action, f"/incidents/{iid}/{cell.action}")
            status, text, _ = await self.request("POST", path)
            return Said("absent" if status in (404, 405) else f"error {status}", text)
        method, path = {"read": ("GET", f"/incidents/{iid}"), "audit": ("GET", "/audit"),
                        "export": ("GET", f"/incidents/{iid}/export.md"),
                        "ack": ("POST", f"/incidents/{iid}/ack"),
                        "resolve": ("POST", f"/incidents/{iid}/resolve")}[cell.action]
        status, text, headers = await self.request(method, path)
        if self.session is None:  # no account: every page sends us to the sign-in form
            return Said("unauthenticated" if status == 302 and "/login" in headers.get("Location", "")
                        else f"error {status}", text)
        if method == "GET":
            return Said({200: "done", 403: "refused"}.get(status, f"error {status}"), text)
        if status == 403 and "has role" in text:  # said on the answer itself (never through a link)
            return Said("refused", text)
        msg = parse_qs(urlparse(headers.get("Location", "")).query).get("msg", [""])[0]
        if status != 303:
            return Said(f"error {status}", text)
        return Said("done", msg)


class CliEntry(Entry):
    """`tocsin --as <identity> ...` through bot.cli.main (the console script's entry), in a thread of its
    own because it runs its own event loop; stdout, stderr and the exit code are what the user sees."""

    name, offers = "cli", frozenset(ACTIONS)

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path

    def argv(self, cell: Cell) -> list[str]:
        ref, m = cell.target.ref, cell.marker
        return ["--config", str(self.config_path), "--as", CLI_USER[cell.role], *{
            "declare": ["incident", "declare", "sev3", "declared", m],
            "update": ["incident", "update", ref, "update", m],
            "ack": ["incident", "ack", ref],
            "resolve": ["incident", "resolve", ref, "resolved", m],
            "escalate": ["incident", "escalate", ref],
            "notify": ["notify", "oncall", "notify", m],
            "read": ["incident", "show", ref],
            "route": ["route", "explain", "--incident", ref],
            "audit": ["audit", "show", "--incident", ref],
            "settings": ["user", "add", f"u{m}", "--role", "viewer", "--password-stdin"],
            "assign": ["incident", "role", ref, "comms", "bob"],
            "note": ["incident", "note", ref, "note", m],
            "export": ["incident", "export", ref],
        }[cell.action]]

    async def do(self, cell: Cell) -> Said:
        code, out, err = await asyncio.to_thread(run_cli, self.argv(cell), stdin="pw-for-a-new-user\n")
        if code == 0:
            return Said("done", out)
        if code == 1 and "has role" in err:
            return Said("refused", err)
        return Said(f"error {code}", out + err)


def run_cli(argv: list[str], *, stdin: str = "") -> tuple[int, str, str]:
    """bot.cli.main(argv) with its output captured; the logging it sets up is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in list(logging.Logger.manager.loggerDict)}
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                _stdin(io.StringIO(stdin)):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse
                code = int(exc.code or 0)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lvl in levels.items():  # main() quiets some libraries; later tests may want them
            logging.getLogger(name).setLevel(lvl)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _stdin(stream: io.StringIO) -> Any:
    import sys

    old, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = old


# --- the effect of a cell, read from the database ----------------------------------------------------------

async def took_effect(ctx: Context, cell: Cell, kinds_before: dict[str, int], said: Said) -> bool:
    """Did the action happen? Writes are read back from the database, reads from the answer."""
    a, m = cell.action, cell.marker
    if a == "declare":
        return await titled(ctx, f"declared {m}") == 1
    if a in ("update", "escalate"):
        kind = "UPDATE" if a == "update" else "ESCALATION"
        return (await message_kinds(ctx, cell.target.id)).get(kind, 0) == kinds_before.get(kind, 0) + 1
    if a in ("ack", "resolve"):
        inc = await ctx.service.get(cell.target.id)
        return inc.acknowledged_at is not None if a == "ack" else inc.state == "resolved"
    if a == "notify":
        return await one_time(ctx, m) == 1
    if a == "settings":
        async with ctx.db.sessions() as s:
            return (await s.execute(select(User).where(User.name == f"u{m}"))).first() is not None
    if a == "assign":
        return (await ctx.service.get(cell.target.id)).comms == "contact:bob"
    if a == "note":
        return (await message_kinds(ctx, cell.target.id)).get("NOTE", 0) == kinds_before.get("NOTE", 0) + 1
    if a in ("read", "export"):
        return f"target {m}" in said.text
    if a == "route":
        return "deliveries would be queued" in said.text
    if a == "audit":
        return "incident.declare" in said.text and cell.target.ref in said.text
    raise AssertionError(a)


def expected_verdict(entry: Entry, role: str, action: str) -> str:
    if action not in entry.offers:
        return "absent"
    if role == "unknown" and entry.authenticates:
        return "unauthenticated"
    return "done" if EXPECTED[role][action] else "refused"


async def run_table(ctx: Context, entry: Entry) -> None:
    """Every role x action through `entry`; one assertion at the end listing every cell that differs."""
    problems: list[str] = []
    grid: dict[str, list[str]] = {}
    n = 0
    for role in ROLES:
        await entry.prepare(role)
        for action in ACTIONS:
            n += 1
            marker = f"{entry.name[:2]}{n:03d}x"
            target = await seed_incident(ctx, marker)
            cell = Cell(role, action, target, marker)
            kinds = await message_kinds(ctx, target.id)
            before = await snapshot(ctx)
            said = await entry.do(cell)
            after = await snapshot(ctx)
            effect = await took_effect(ctx, cell, kinds, said)
            want = expected_verdict(entry, role, action)
            grid.setdefault(role, []).append("Y" if effect else "-")
            where = f"{entry.name}: {role} {action}"
            if said.verdict != want:
                problems.append(f"{where}: answered {said.verdict!r}, expected {want!r}: {said.text[:300]!r}")
            if effect != (want == "done"):
                problems.append(f"{where}: {'took effect' if effect else 'had no effect'} "
                                f"(answer {said.verdict}: {said.text[:200]!r})")
            if want != "done" and after != before:
                problems.append(f"{where}: refused, yet the database changed: {before} -> {after}")
    if problems:
        header = "           " + " ".join(f"{a[:7]:>7}" for a in ACTIONS)
        rows = [f"{r:<10} " + " ".join(f"{c:>7}" for c in grid[r]) for r in ROLES]
        pytest.fail("\n".join([f"{entry.name} differs from the table:", *problems, "observed:", header,
                               *rows]))


# --- one test per entry point ---------------------------------------------------------------------------

ENTRIES: dict[str, Callable[[Stack], Entry]] = {"slack": SlackEntry, "telegram": TelegramEntry,
                                               "teams": TeamsEntry, "api": ApiEntry, "console": ConsoleEntry}


@pytest.mark.parametrize("name", list(ENTRIES))
async def test_role_table_over_http_entry_points(make_ctx: Callable[..., Any], name: str) -> None:
    async with running_stack(make_ctx) as stack:
        if name == "console":
            await add_console_users(stack.ctx)
        await run_table(stack.ctx, ENTRIES[name](stack))


async def test_role_table_over_the_cli(make_ctx: Callable[..., Any], db_url: str, tmp_path: Path) -> None:
    over = security_config(slack_url="http://127.0.0.1:9/api/", telegram_url="http://127.0.0.1:9/bot",
                           teams_url=None)
    for platform in ("slack", "telegram"):
        over[platform]["enabled"] = False
    data = deep_merge(deep_merge(BASE_CONFIG, over), {"database": {"url": db_url}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    ctx = await make_ctx(**over)
    await run_table(ctx, CliEntry(path))


def test_the_table_is_what_the_readme_promises() -> None:
    """The README's role table (send / contacts / settings / audit) agrees with ours, so the docs cannot
    promise what the code does not do."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ("ADMIN", "MANAGER", "OPERATOR", "VIEWER"):
            rows[cells[0].lower()] = [c == "yes" for c in cells[1:]]
    assert set(rows) == {"admin", "manager", "operator", "viewer"}
    for role, (send, _contacts, settings, audit) in rows.items():
        assert EXPECTED[role]["declare"] == send, role
        assert EXPECTED[role]["settings"] == settings == EXPECTED[role]["route"], role
        assert EXPECTED[role]["audit"] == audit, role
