"""Security test kit: one app with every inbound entry point mounted (Slack, Telegram, Teams, HTTP API,
Alertmanager, web console) on loopback stand-ins, identities of every role on each, and readers of what
an inbound request may have changed. (No tests here.)

The stand-ins and request builders are the adapters' own (tests/slack, tests/telegram, tests/teams), so a
request here is the same request their tests send.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot import server
from bot.context import Context
from bot.server import Runtime
from bot.teams.app import ROUTE as TEAMS_ROUTE
from core.models import AuditEntry, Delivery, Incident, IncidentMessage
from core.rbac import SYSTEM
from tests.conftest import deep_merge
from tests.slack.standin import SIGNING_SECRET, SlackApi, sign, slash_body
from tests.stand_ins.http import HttpStandIn
from tests.teams.helpers import Connector, bot_connector, mention_message, plain
from tests.telegram.botapi import TOKEN as TG_TOKEN
from tests.telegram.botapi import BotApi
from tests.telegram.botapi import command as tg_command

ROLES = ("admin", "manager", "operator", "viewer", "unknown")
"""`unknown` is an identity config does not mention: it gets default_role (viewer)."""

TG_SECRET = "sec-tg-webhook-secret"
TELEGRAM_GROUP = -100555

# Who each role is on each entry point.
SLACK_USER = {r: f"USEC{r.upper()}" for r in ROLES}
TELEGRAM_USER = {r: 9000 + i for i, r in enumerate(ROLES)}
TEAMS_USER = {r: f"aad-sec-{r}" for r in ROLES}
CLI_USER = {r: f"cli:sec-{r}" for r in ROLES}
API_KEY = {r: f"tk-sec-{r}-5d41402abc4b2a76" for r in ROLES}
"""The `unknown` key is configured nowhere: to the API it is no credential at all."""
CONSOLE_USER = {r: f"sec{r}" for r in ROLES if r != "unknown"}
"""Console users live in the users table; `unknown` has no account."""

AM_TOKEN = "sec-am-bearer-77e1"
AM_USER, AM_PASSWORD = "alertmanager", "sec-am-password-31c9"
CONSOLE_SECRET = "sec-console-session-secret-0c4d"


def security_config(*, slack_url: str, telegram_url: str, teams_url: str | None) -> dict[str, Any]:
    """Config overrides: every role mapped on every platform, API keys per role, a routing rule with an
    escalation policy (so manual escalation has a level to go to) and API rules for update/resolve/notify."""
    known = [r for r in ROLES if r != "unknown"]
    access: dict[str, str] = {}
    for r in known:
        access[f"slack:{SLACK_USER[r]}"] = r
        access[f"telegram:{TELEGRAM_USER[r]}"] = r
        access[f"teams:{TEAMS_USER[r]}"] = r
        access[CLI_USER[r]] = r
    over: dict[str, Any] = {
        "access": access,
        "default_role": "viewer",
        "worker": {"enabled": False},
        "server": {"public_url": "https://tocsin.example.com"},
        "api": {"keys": [{"name": f"sec-{r}", "key": API_KEY[r], "role": r} for r in known]},
        "alertmanager": {"bearer_token": AM_TOKEN, "username": AM_USER, "password": AM_PASSWORD},
        "console": {"session_secret": CONSOLE_SECRET},
        "routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
            {"name": "api-update", "event_types": ["sec.update"], "action": "update"},
            {"name": "api-resolve", "event_types": ["sec.resolve"], "action": "resolve"},
            {"name": "api-notify", "event_types": ["sec.notify"], "action": "notify",
             "targets": {"lists": ["oncall"]}},
            {"name": "escalating", "event_types": ["declare"], "targets": {"lists": ["oncall"]},
             "escalation_policy": "sec-policy"},
        ]},
        "escalation_policies": [{"name": "sec-policy", "repeat": 0, "levels": [
            {"wait_minutes": 600, "targets": {"lists": ["oncall"]}},
            {"wait_minutes": 600, "targets": {"lists": ["leads"]}}]}],
        "slack": {"enabled": True, "bot_token": "xoxb-sec-bot-token-9f2b", "signing_secret": SIGNING_SECRET,
                  "incident_channel": "CSECINC", "api_url": slack_url},
        "telegram": {"enabled": True, "bot_token": TG_TOKEN, "incident_chat_id": str(TELEGRAM_GROUP),
                     "mode": "webhook", "webhook_secret": TG_SECRET, "api_url": telegram_url},
    }
    if teams_url is not None:
        over["teams"] = {"enabled": True, "allow_unauthenticated": True, "service_url": teams_url}
    return over


def entry_mounts() -> list[server.Mount]:
    """Only the inbound entry points (no worker, timer or reloader racing the assertions)."""
    from bot.api import mount as mount_api
    from bot.slack.app import mount as mount_slack
    from bot.teams.app import mount_teams
    from bot.telegram.bot import mount as mount_telegram
    from bot.web.app import mount_console

    return [mount_api, mount_console, mount_telegram, mount_slack, mount_teams]


# --- what an inbound request may have changed ------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Everything a refused request must leave as it was (seen-keys excluded: de-duplication records a
    request before deciding about it, by design)."""

    incidents: int
    messages: int
    deliveries: int
    audit: int
    incident_rows: tuple[tuple[Any, ...], ...]
    users: int


async def snapshot(ctx: Context) -> Snapshot:
    from core.models import User

    async with ctx.db.sessions() as s:
        def count(model: Any) -> Any:
            return select(func.count()).select_from(model)

        rows = (await s.execute(select(Incident.id, Incident.state, Incident.version,
                                       Incident.acknowledged_by, Incident.escalation_level)
                                .order_by(Incident.id))).all()
        return Snapshot(
            incidents=int((await s.execute(count(Incident))).scalar_one()),
            messages=int((await s.execute(count(IncidentMessage))).scalar_one()),
            deliveries=int((await s.execute(count(Delivery))).scalar_one()),
            audit=int((await s.execute(count(AuditEntry)
                                       .where(AuditEntry.action.not_like("delivery.%")))).scalar_one()),
            incident_rows=tuple(tuple(r) for r in rows),
            users=int((await s.execute(count(User))).scalar_one()),
        )


async def seed_incident(ctx: Context, marker: str) -> Incident:
    """An open incident to act on, declared by the system, with an escalation policy and a correlation key
    that API events of tenant `sec` with correlation id `marker` find."""
    out = await ctx.service.declare(actor=SYSTEM, title=f"target {marker}", severity="sev2",
                                    correlation_key=f"evt:sec:{marker}")
    assert out.incident is not None and out.incident.escalation_policy == "sec-policy"
    return out.incident


async def message_kinds(ctx: Context, incident_id: int | None) -> dict[str, int]:
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(IncidentMessage.kind, func.count())
                                .where(IncidentMessage.incident_id == incident_id)
                                .group_by(IncidentMessage.kind))).all()
    return {k: int(n) for k, n in rows}


async def titled(ctx: Context, text: str) -> int:
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(Incident)
                                    .where(Incident.title.contains(text)))).scalar_one())


async def one_time(ctx: Context, text: str) -> int:
    async with ctx.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(IncidentMessage)
                                    .where(IncidentMessage.kind == "ONE_TIME",
                                           IncidentMessage.body.contains(text)))).scalar_one())


# --- the running stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The app on loopback plus a way in through every entry point."""

    ctx: Context
    rt: Runtime
    client: TestClient
    slack_api: SlackApi
    telegram_api: BotApi
    teams: Connector
    _n: itertools.count = field(default_factory=lambda: itertools.count(1))

    def next_id(self) -> int:
        return next(self._n)

    # Slack: a signed slash command to /slack/events; the answer arrives at its response_url.
    async def slack(self, text: str, *, user: str) -> str:
        from bot.slack.app import EVENTS_PATH, SlackAdapter

        n = self.next_id()
        body = slash_body(text, user=user, trigger=f"sec-trig-{n}",
                          response_url=self.slack_api.response_url(n))
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
        resp = await self.client.post(EVENTS_PATH, data=body.encode(), headers=headers)
        assert resp.status == 200, (resp.status, await resp.text())
        adapter = next(c for c in self.rt.components if isinstance(c, SlackAdapter))
        await adapter.drain()
        answers = self.slack_api.responses(n)
        assert len(answers) == 1, answers
        return str(answers[0]["text"])

    # Telegram: an update to /telegram/webhook with the secret; the answer is a sendMessage replying to it.
    # Each command comes from a group of its own: answers to one chat are paced at one a second.
    async def telegram(self, text: str, *, user_id: int) -> str:
        from bot.telegram.bot import WEBHOOK_PATH

        n = self.next_id()
        message_id = 70_000 + n
        update = tg_command(n, f"/incident {text}", user_id=user_id, chat_id=TELEGRAM_GROUP - 1000 - n,
                            message_id=message_id)
        resp = await self.client.post(WEBHOOK_PATH, json=update,
                                      headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
        assert resp.status == 200, (resp.status, await resp.text())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for call in self.telegram_api.calls("sendMessage"):
                if (call.params.get("reply_parameters") or {}).get("message_id") == message_id:
                    return str(call.params["text"])
            await asyncio.sleep(0.02)
        raise AssertionError(f"no Telegram answer to {text!r}")

    # Teams: a message activity mentioning the bot to /api/messages (auth off); the answer is a reply.
    async def teams_say(self, text: str, *, user: str) -> str:
        act = mention_message(f"incident {text}", service_url=self.teams.url, user=user)
        resp = await self.client.post(TEAMS_ROUTE, json=act)
        assert resp.status == 200, (resp.status, await resp.text())
        replies = [r for r in self.teams.replies() if r.path.endswith(f"/activities/{act['id']}")]
        assert len(replies) == 1, [r.path for r in self.teams.replies()]
        return plain(replies[0].json.get("text"))

    async def http(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                   json: Any = None, data: Any = None) -> tuple[int, str]:
        resp = await self.client.request(method, path, headers=headers or {}, json=json, data=data,
                                         allow_redirects=False)
        return resp.status, await resp.text()


@asynccontextmanager
async def running_stack(make_ctx: Callable[..., Any], *, mounts: list[server.Mount] | None = None,
                        **overrides: Any) -> AsyncIterator[Stack]:
    """Stand-ins up, app built from `security_config` (+ overrides) and served on 127.0.0.1."""
    async with AsyncExitStack() as stack:
        slack_api = SlackApi()
        await slack_api.start()
        stack.push_async_callback(slack_api.close)
        tg_peer = await stack.enter_async_context(HttpStandIn())
        telegram_api = BotApi(tg_peer)
        teams = await stack.enter_async_context(bot_connector())
        cfg = deep_merge(security_config(slack_url=slack_api.base_url, telegram_url=telegram_api.api_url,
                                         teams_url=teams.url), overrides)
        ctx = await make_ctx(**cfg)
        original = server._mounts
        server._mounts = (lambda: mounts) if mounts is not None else entry_mounts  # type: ignore[assignment]
        try:
            app, rt = await server.build_app(ctx)
        finally:
            server._mounts = original  # type: ignore[assignment]
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        stack.push_async_callback(client.close)
        tg = next((c for c in rt.components if c.name == "telegram"), None)
        if tg is not None:
            await asyncio.wait_for(tg.connected.wait(), 15)  # type: ignore[attr-defined]
        yield Stack(ctx, rt, client, slack_api, telegram_api, teams)


async def add_console_users(ctx: Context) -> None:
    from core.users import UserService

    users = UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder)
    for role, name in CONSOLE_USER.items():
        await users.add(name=name, role=role, password=f"{name}-pw-0123", actor=SYSTEM)


async def login_form(client: TestClient) -> tuple[dict[str, str], str]:
    """Open the sign-in form: the header carrying its CSRF nonce cookie (sent by hand, as it may be
    `Secure`) and the form's CSRF token."""
    import re

    from bot.web.session import LOGIN_COOKIE

    resp = await client.get("/login")
    m = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
    assert m and LOGIN_COOKIE in resp.cookies, resp.headers
    return {"Cookie": f"{LOGIN_COOKIE}={resp.cookies[LOGIN_COOKIE].value}"}, m.group(1)


async def console_login(client: TestClient, name: str, password: str) -> dict[str, str] | None:
    """Sign in; the headers of that session (its cookie, sent by hand because the cookie is `Secure` on
    an https public_url and the test client speaks http) plus its CSRF token, or None when refused."""
    import re

    from bot.web.session import COOKIE

    client.session.cookie_jar.clear()
    headers, csrf = await login_form(client)
    resp = await client.post("/login", data={"name": name, "password": password, "next": "/", "csrf": csrf},
                             headers=headers, allow_redirects=False)
    if resp.status != 302 or COOKIE not in resp.cookies:
        return None
    session = {"Cookie": f"{COOKIE}={resp.cookies[COOKIE].value}"}
    page = await (await client.get("/", headers=session)).text()
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page[:500]
    return {**session, "X-Csrf": m.group(1)}


class FixedTokenFactory:
    """Stands in for MSAL: the bot's own outgoing AAD token (Azure AD is not reachable from tests)."""

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id

    async def is_valid_app_id(self, app_id: str) -> bool:
        return app_id == self.app_id

    async def is_authentication_disabled(self) -> bool:
        return False

    async def create_credentials(self, app_id: str, *args: Any) -> Any:
        class Fixed:
            microsoft_app_id = app_id

            def get_access_token(self, force_refresh: bool = False) -> str:
                return "aad-token-for-tests"

        return Fixed()
