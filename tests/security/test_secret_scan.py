"""No secret leaves through a side door: a config with a distinctive value in every secret field, a busy
scenario through every entry point with the worker paging real (loopback) providers that fail before they
succeed, then a scan of everything an operator or a caller can read for those values:

- every log line, root logger at DEBUG, through both the JSON and the console formatter, and anything
  printed to stdout/stderr;
- every audit entry (all columns);
- every HTTP answer: the API (incl. errors and delivery status with `last_error`), the console pages,
  /metrics, the chat answers;
- `tocsin config check` (a good and a broken file), `audit show`, `audit verify`, `incident show` and
  `route explain` run as the real CLI, at DEBUG.

The values are looked for raw and in the encodings they travel in (URL-quoted, JSON-escaped, base64 of a
basic-auth pair), so a header or a form field that logged them would be caught too.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from bot import server
from bot.context import Context, open_context
from core.clock import SystemClock
from core.logs import ConsoleFormatter, set_secret_values, setup
from core.models import Delivery
from core.rbac import Actor
from core.users import UserService
from tests.security.kit import FixedTokenFactory, console_login, login_form
from tests.slack.standin import SlackApi, sign, slash_body
from tests.stand_ins.http import HttpStandIn, Reply, retry_after
from tests.stand_ins.smtp import smtp_stand_in
from tests.teams.helpers import Connector, TokenIssuer, bot_connector, mention_message
from tests.telegram.botapi import BotApi
from tests.telegram.botapi import command as tg_command

ROOT = Path(__file__).resolve().parents[2]
FAST = {"max_retries": 3, "base_seconds": 0.1, "factor": 2.0, "max_seconds": 0.5, "jitter": 0.0,
        "timeout_seconds": 3.0}
PUBLIC_URL = "https://tocsin.example.com"
TEAMS_APP_ID = "33333333-4444-5555-6666-777777777777"
TWILIO_SID = "ACscan0000000000000000000000000000"
SMTP_USER = "pager"
AM_USER = "alertmanager"

# Every secret field of the config, with a value nobody could produce by accident.
SECRETS: dict[str, str] = {
    "slack.bot_token": "xoxb-SCAN-slackbot-7c1f0e9d",
    "slack.signing_secret": "SCANslacksigning4d2a9b",
    "slack.app_token": "xapp-SCAN-slackapp-19bd77",
    "telegram.bot_token": "555666:SCAN-telegram-bot-token_0123456789abcdef",
    "telegram.webhook_secret": "SCANtgwebhook5e1b",
    "teams.app_password": "SCANteamspassword93c",
    "api.keys.admin": "SCANapikeyadmin01",
    "api.keys.operator": "SCANapikeyoperator01",
    "api.keys.operator.rotated": "SCANapikeyoperator02",
    "api.keys.viewer": "SCANapikeyviewer01",
    "alertmanager.bearer_token": "SCANambearer77q",
    "alertmanager.password": "SCANampassword31",
    "channels.email.password": "SCANsmtppassword6a",
    "channels.sms.access_key_id": "AKIASCANSNSKEYID0001",
    "channels.sms.secret_access_key": "SCANsns/secret+access=key",
    "channels.voice.auth_token": "SCANtwilioauthtoken8e",
    "destinations.hook.headers": "SCANwebhookheader44",
    "destinations.hook.hmac_secret": "SCANwebhookhmac55",
    "audit.checkpoint_key": "SCANauditcheckpointkey",
    "console.session_secret": "SCANconsolesession0f",
    "console user password": "SCANconsoleuserpw9",
}
# Webhook URLs are secrets too (a Slack incoming-webhook URL is a credential): their distinctive path
# segment must not show either, even without the scheme and host around it.
URL_TOKENS: dict[str, str] = {
    "destinations.hook.url": "SCANwebhookpath",
    "destinations.slackhook.url": "SCANslackhookpath",
    "destinations.teamshook.url": "SCANteamshookpath",
    "destinations.badhook.url": "SCANbadhookpath",
}


def variants(name: str, value: str) -> set[str]:
    """How a value may appear: as is, URL-quoted, JSON-escaped."""
    return {value, quote(value, safe=""), json.dumps(value)[1:-1]}


def encoded_pairs() -> dict[str, str]:
    """Basic-auth and SMTP AUTH PLAIN forms of the credentials that travel as pairs."""
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    return {
        "alertmanager basic auth": b64(f"{AM_USER}:{SECRETS['alertmanager.password']}"),
        "twilio basic auth": b64(f"{TWILIO_SID}:{SECRETS['channels.voice.auth_token']}"),
        "smtp auth plain": b64(f"\0{SMTP_USER}\0{SECRETS['channels.email.password']}"),
        "smtp auth login password": b64(SECRETS["channels.email.password"]),
    }


@dataclass
class Peers:
    slack: SlackApi
    telegram: BotApi
    providers: HttpStandIn
    """Webhook destinations, Slack/Teams incoming webhooks, SNS and Twilio, by path."""
    smtp: Any
    teams: Connector
    issuer: TokenIssuer


@dataclass
class Captured:
    """Everything readable, by where it came from."""

    texts: dict[str, list[str]] = field(default_factory=dict)

    def add(self, where: str, text: str) -> None:
        self.texts.setdefault(where, []).append(text)


def config_data(peers: Peers, db: Path, *, operator_key: str) -> dict[str, Any]:
    p = peers.providers.url
    people = [
        {"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
         "chat": {"slack": "UALICE", "telegram": "4242"},
         "preferences": {"sev1": ["voice", "sms", "email"], "default": ["email"]}},
        {"name": "bob", "email": "bob@example.com", "phone": "+15550100002",
         "preferences": {"sev1": ["sms", "email"], "default": ["email"]}},
    ]
    data: dict[str, Any] = {
        "server": {"public_url": PUBLIC_URL},
        "database": {"url": f"sqlite+aiosqlite:///{db}"},
        "logging": {"level": "DEBUG", "format": "json"},
        "audit": {"checkpoint_key": SECRETS["audit.checkpoint_key"], "checkpoint_every": 5},
        "access": {"slack:USCANADMIN": "admin", "telegram:7001": "admin", "teams:aad-scan-admin": "admin",
                   "cli:*": "admin"},
        "contacts": people,
        "contact_lists": [{"name": "oncall", "members": ["alice", "bob"]}],
        "destinations": [
            {"name": "hook", "channel": "webhook", "url": f"{p}/hook/{URL_TOKENS['destinations.hook.url']}",
             "headers": {"X-Api-Key": SECRETS["destinations.hook.headers"]},
             "hmac_secret": SECRETS["destinations.hook.hmac_secret"]},
            {"name": "slackhook", "channel": "slack_webhook",
             "url": f"{p}/services/T0/B0/{URL_TOKENS['destinations.slackhook.url']}"},
            {"name": "teamshook", "channel": "teams_webhook",
             "url": f"{p}/webhookb2/{URL_TOKENS['destinations.teamshook.url']}"},
            {"name": "badhook", "channel": "webhook",
             "url": f"{p}/bad/{URL_TOKENS['destinations.badhook.url']}"},
            {"name": "tgroom", "channel": "telegram", "chat_id": "-100999"},
        ],
        "routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
            {"name": "everything", "targets": {"lists": ["oncall"], "destinations": [
                "hook", "slackhook", "teamshook", "badhook", "tgroom"]}, "escalation_policy": "pol"}]},
        "escalation_policies": [{"name": "pol", "levels": [{"wait_minutes": 60,
                                                             "targets": {"lists": ["oncall"]}}]}],
        "channels": {
            "email": {"outbox": False, "host": peers.smtp.host, "port": peers.smtp.port,
                      "username": SMTP_USER, "password": SECRETS["channels.email.password"],
                      "from_address": "tocsin@example.com", "retry": FAST},
            "sms": {"outbox": False, "endpoint_url": f"{p}/sns", "region": "us-east-1",
                    "access_key_id": SECRETS["channels.sms.access_key_id"],
                    "secret_access_key": SECRETS["channels.sms.secret_access_key"], "retry": FAST},
            "voice": {"outbox": False, "account_sid": TWILIO_SID,
                      "auth_token": SECRETS["channels.voice.auth_token"], "from_number": "+15550000000",
                      "api_url": f"{p}/twilio", "retry": FAST},
            **{ch: {"outbox": False, "retry": FAST} for ch in ("webhook", "slack_webhook", "teams_webhook",
                                                             "telegram")},
        },
        "worker": {"poll_seconds": 0.2, "lease_seconds": 10},
        "slack": {"enabled": True, "bot_token": SECRETS["slack.bot_token"],
                  "signing_secret": SECRETS["slack.signing_secret"], "app_token": SECRETS["slack.app_token"],
                  "incident_channel": "CSCAN", "api_url": peers.slack.base_url},
        "telegram": {"enabled": True, "bot_token": SECRETS["telegram.bot_token"],
                     "incident_chat_id": "-100777", "mode": "webhook",
                     "webhook_secret": SECRETS["telegram.webhook_secret"], "api_url": peers.telegram.api_url},
        "api": {"keys": [{"name": "scan-admin", "key": SECRETS["api.keys.admin"], "role": "admin"},
                         {"name": "scan-operator", "key": operator_key, "role": "operator"},
                         {"name": "scan-viewer", "key": SECRETS["api.keys.viewer"], "role": "viewer"}]},
        "alertmanager": {"bearer_token": SECRETS["alertmanager.bearer_token"], "username": AM_USER,
                         "password": SECRETS["alertmanager.password"]},
        "console": {"session_secret": SECRETS["console.session_secret"]},
        "teams": {"enabled": True, "app_id": TEAMS_APP_ID, "app_password": SECRETS["teams.app_password"],
                  "incident_conversation": "19:incidents@thread.tacv2", "service_url": peers.teams.url},
    }
    return data


def program_providers(peer: HttpStandIn) -> None:
    """Each provider fails first (5xx, 429 with Retry-After), then accepts; one webhook always refuses
    with an Express-style 404 that echoes the request path."""
    sns_ok = ('<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
              '<MessageId>m-1</MessageId></PublishResult><ResponseMetadata><RequestId>r-1</RequestId>'
              '</ResponseMetadata></PublishResponse>')
    sns_err = ('<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>'
               '<Message>try again</Message></Error><RequestId>r-0</RequestId></ErrorResponse>')
    peer.script("/sns*", Reply(500, sns_err, {"Content-Type": "text/xml"}))
    peer.on("/sns*", Reply(200, sns_ok, {"Content-Type": "text/xml"}))
    calls = f"/twilio/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"
    peer.script(calls, Reply(500, {"code": 20500, "message": "Internal Server Error", "status": 500}))
    peer.on(calls, Reply(201, {"sid": "CAscan", "status": "queued", "account_sid": TWILIO_SID}))
    peer.script("/hook/*", (503, "busy"))
    peer.on("/hook/*", (200, "ok"))
    peer.script("/services/*", retry_after("0.2", body="rate_limited"))
    peer.on("/services/*", (200, "ok"))
    peer.on("/webhookb2/*", (200, "1"))
    peer.on("/bad/*", lambda r: (404, f"Cannot POST {r.path}"))


@asynccontextmanager
async def peers_up() -> AsyncIterator[Peers]:
    async with AsyncExitStack() as stack:
        slack = SlackApi()
        await slack.start()
        stack.push_async_callback(slack.close)
        slack.on("/api/apps.connections.open", (200, {"ok": False, "error": "invalid_auth"}))
        tg_peer = await stack.enter_async_context(HttpStandIn())
        telegram = BotApi(tg_peer, token=SECRETS["telegram.bot_token"])
        tg_peer.script("*/sendMessage", Reply(502, {"ok": False, "error_code": 502,
                                                    "description": "Bad Gateway"}))
        providers = await stack.enter_async_context(HttpStandIn())
        program_providers(providers)
        smtp = await stack.enter_async_context(
            smtp_stand_in(auth=(SMTP_USER, SECRETS["channels.email.password"])))
        teams = await stack.enter_async_context(bot_connector())
        keys = await stack.enter_async_context(HttpStandIn())
        yield Peers(slack, telegram, providers, smtp, teams, TokenIssuer(keys))


@asynccontextmanager
async def logs_at_debug() -> AsyncIterator[tuple[io.StringIO, io.StringIO]]:
    """The product's own logging set up at DEBUG (JSON), plus a console-format handler on the same root."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in logging.Logger.manager.loggerDict}
    as_json, as_console = io.StringIO(), io.StringIO()
    setup("DEBUG", "json", stream=as_json)
    console = logging.StreamHandler(as_console)
    console.setFormatter(ConsoleFormatter())
    root.addHandler(console)
    try:
        yield as_json, as_console
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in noisy.items():
            logging.getLogger(name).setLevel(level)
        set_secret_values([])


class Scenario:
    """The busy scenario, recording every answer it gets."""

    def __init__(self, ctx: Context, rt: server.Runtime, client: TestClient, peers: Peers,
                 seen: Captured) -> None:
        self.ctx, self.rt, self.client, self.peers, self.seen = ctx, rt, client, peers, seen
        self.n = 0

    async def http(self, where: str, method: str, path: str, **kw: Any) -> tuple[int, str]:
        resp = await self.client.request(method, path, allow_redirects=False, **kw)
        text = await resp.text()
        self.seen.add(where, f"{method} {path} -> {resp.status} {dict(resp.headers)}\n{text}")
        return resp.status, text

    async def slack(self, text: str) -> None:
        from bot.slack.app import SlackAdapter

        self.n += 1
        body = slash_body(text, user="USCANADMIN", trigger=f"scan-{self.n}",
                          response_url=self.peers.slack.response_url(f"scan-{self.n}"))
        status, _ = await self.http("slack", "POST", "/slack/events", data=body.encode(), headers={
            "Content-Type": "application/x-www-form-urlencoded",
            **sign(body, secret=SECRETS["slack.signing_secret"])})
        assert status == 200
        await next(c for c in self.rt.components if isinstance(c, SlackAdapter)).drain()

    async def telegram(self, text: str) -> None:
        self.n += 1
        update = tg_command(80_000 + self.n, text, user_id=7001, chat_id=-100500 - self.n)
        secret = {"X-Telegram-Bot-Api-Secret-Token": SECRETS["telegram.webhook_secret"]}
        status, _ = await self.http("telegram", "POST", "/telegram/webhook", json=update, headers=secret)
        assert status == 200

    async def teams(self, text: str) -> None:
        act = mention_message(text, service_url=self.peers.teams.url, user="aad-scan-admin")
        token = self.peers.issuer.token(audience=TEAMS_APP_ID, service_url=self.peers.teams.url)
        status, body = await self.http("teams", "POST", "/api/messages", json=act,
                                       headers={"Authorization": f"Bearer {token}"})
        assert status == 200, body

    async def api(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if isinstance(body, bytes):
            return await self.http("api", method, path, data=body, headers=headers)
        return await self.http("api", method, path, json=body, headers=headers)

    async def run(self) -> None:
        await self.slack("declare sev1 Scan: payments down")
        await self.slack("status INC-1")
        await self.slack("route INC-1 update")
        await self.telegram("/incident update INC-1 Telegram: failover started")
        ev = {"event_type": "scan.alert", "event_id": "scan-1", "timestamp": "2026-01-01T10:30:00Z",
              "tenant_id": "scan", "payload": {"title": "Scan: API incident", "severity": "sev1"},
              "metadata": {"source_service": "scan", "correlation_id": "scan-corr"}}
        op = SECRETS["api.keys.operator"]
        assert (await self.api("POST", "/api/v1/events", op, ev))[0] == 202
        assert (await self.api("POST", "/api/v1/events", op, {**ev, "event_id": "scan-2"}))[0] == 202
        assert (await self.api("POST", "/api/v1/events", SECRETS["api.keys.viewer"], ev))[0] == 403
        assert (await self.api("POST", "/api/v1/events", "SCANnotakey", ev))[0] == 401
        assert (await self.api("POST", "/api/v1/events", op, b"{broken"))[0] == 400
        alert = {"status": "firing", "labels": {"alertname": "ScanDown", "severity": "critical"},
                 "annotations": {"summary": "Scan: alert fired"}, "startsAt": "2026-01-01T10:00:00Z",
                 "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "fp-scan"}
        hook = {"version": "4", "groupKey": '{}:{alertname="ScanDown"}', "status": "firing", "receiver": "t",
                "alerts": [alert]}
        assert (await self.http("alertmanager", "POST", "/api/v1/alertmanager", json=hook, headers={
            "Authorization": f"Bearer {SECRETS['alertmanager.bearer_token']}"}))[0] == 200
        resolved = {**hook, "status": "resolved", "alerts": [{**alert, "status": "resolved",
                                                              "endsAt": "2026-01-01T10:05:00Z"}]}
        basic = base64.b64encode(f"{AM_USER}:{SECRETS['alertmanager.password']}".encode()).decode()
        assert (await self.http("alertmanager", "POST", "/api/v1/alertmanager", json=resolved,
                                headers={"Authorization": f"Basic {basic}"}))[0] == 200
        wrong = base64.b64encode(f"{AM_USER}:SCANwrongpassword".encode()).decode()
        assert (await self.http("alertmanager", "POST", "/api/v1/alertmanager", json=hook,
                                headers={"Authorization": f"Basic {wrong}"}))[0] == 401
        await self.teams("incident status INC-1")
        await self.teams("incident update INC-2 Teams: looking")
        await self.console()
        await self.voice_keypress()
        await self.api("POST", "/api/v1/events", op, {**ev, "event_id": "scan-3", "event_type": "scan.alert"})
        await self.settle()
        for i in (1, 2, 3):
            await self.api("GET", f"/api/v1/incidents/{i}", SECRETS["api.keys.admin"])
        await self.api("GET", "/api/v1/incidents?state=all", SECRETS["api.keys.viewer"])
        await self.http("metrics", "GET", "/metrics")
        await self.http("health", "GET", "/readyz")

    async def console(self) -> None:
        users = UserService(self.ctx.db, self.ctx.audit, self.ctx.clock, self.ctx.holder)
        await users.add(name="scanadmin", role="admin", password=SECRETS["console user password"],
                        actor=Actor("cli:admin", "cli"))
        session = await console_login(self.client, "scanadmin", SECRETS["console user password"])
        assert session is not None
        cookie = {"Cookie": session["Cookie"]}
        self.seen.add("console", json.dumps(session))
        for path in ("/", "/incidents/1", "/audit", "/stats", "/stats.csv?since=1d&by=contact"):
            await self.http("console", "GET", path, headers=cookie)
        await self.http("console", "POST", "/audit/verify", headers=cookie, data={"csrf": session["X-Csrf"]})
        form_cookie, form_csrf = await login_form(self.client)
        await self.http("console", "POST", "/login", headers=form_cookie,
                        data={"name": "scanadmin", "password": "SCANwrongpw", "csrf": form_csrf})

    async def voice_keypress(self) -> None:
        """alice presses 1 on her call: Twilio's signed callback acknowledges INC-1."""
        voice = await self.wait_for_voice()
        url = f"{PUBLIC_URL}/twilio/voice?delivery={voice}"
        params = {"CallSid": "CAscan", "Digits": "1", "From": "+15550000000", "To": "+15550100001"}
        sig = RequestValidator(SECRETS["channels.voice.auth_token"]).compute_signature(url, params)
        status, text = await self.http("twilio", "POST", f"/twilio/voice?delivery={voice}", data=params,
                                       headers={"X-Twilio-Signature": sig})
        assert status == 200 and "acknowledged" in text
        await self.http("twilio", "POST", f"/twilio/voice?delivery={voice}", data=params,
                        headers={"X-Twilio-Signature": "forged"})

    async def wait_for_voice(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.ctx.db.sessions() as s:
                row = (await s.execute(select(Delivery.id).where(Delivery.channel == "voice",
                                                                 Delivery.status == "delivered"))).first()
            if row:
                return int(row[0])
            await asyncio.sleep(0.1)
        raise AssertionError("the voice page was never placed")

    async def settle(self, timeout: float = 45) -> dict[str, int]:
        """Until no page is queued or being sent (delivered, failed or dead)."""
        deadline = time.monotonic() + timeout
        while True:
            async with self.ctx.db.sessions() as s:
                st = dict((await s.execute(select(Delivery.status, func.count())
                                           .group_by(Delivery.status))).all())
            if not st.get("queued") and not st.get("sending"):
                return st
            assert time.monotonic() < deadline, f"deliveries did not settle: {st}"
            await asyncio.sleep(0.2)


async def reload_with_rotated_key(rt: server.Runtime, path: Path, peers: Peers, db: Path,
                                  scenario: Scenario) -> None:
    """Rotate the operator key (audited as a config.reload diff), try a broken file (refused, problems
    logged), and use the new key."""
    from core.reload import ConfigReloader

    reloader = next(c for c in rt.components if isinstance(c, ConfigReloader))
    rotated = config_data(peers, db, operator_key=SECRETS["api.keys.operator.rotated"])
    rotated["alertmanager"]["password"] = SECRETS["alertmanager.password"]
    path.write_text(yaml.safe_dump(rotated))
    result = await reloader.reload(trigger="test")
    assert not result.problems, result.problems
    broken = yaml.safe_dump(rotated).replace(f"key: {SECRETS['api.keys.admin']}",
                                             f"key: [{SECRETS['api.keys.admin']}]")
    broken = broken.replace("role: viewer", "role: superuser")
    path.write_text(broken)
    refused = await reloader.reload(trigger="test")
    assert refused.problems
    path.write_text(yaml.safe_dump(rotated))
    status, _ = await scenario.api("GET", "/api/v1/incidents", SECRETS["api.keys.operator.rotated"])
    assert status == 200
    status, _ = await scenario.api("GET", "/api/v1/incidents", SECRETS["api.keys.operator"])
    assert status == 401


async def cli_outputs(config: Path, broken: Path, seen: Captured) -> None:
    """The real CLI at DEBUG, as an operator would run it (four processes at once to save time)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOCSIN_LOG_LEVEL="DEBUG")
    runs = [["config", "check", str(config)], ["config", "check", str(broken)],
            ["--config", str(config), "audit", "show"], ["--config", str(config), "audit", "verify"],
            ["--config", str(config), "incident", "show", "INC-1"],
            ["--config", str(config), "route", "explain", "--incident", "INC-1"]]

    async def one(argv: list[str]) -> tuple[list[str], int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *argv, cwd=str(config.parent), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        return argv, proc.returncode or 0, out.decode(errors="replace")

    results = await asyncio.gather(*(one(a) for a in runs))
    for argv, code, out in results:
        seen.add("cli " + " ".join(argv[-3:]), f"exit {code}\n{out}")
    codes = {" ".join(a[-2:]): c for a, c, _ in results}
    assert codes[f"check {config}"] == 0 and codes[f"check {broken}"] == 1, results
    assert codes["audit verify"] == 0 and codes["audit show"] == 0, results


def audit_rows(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [json.dumps(row) for row in con.execute("SELECT * FROM audit_log ORDER BY seq")] + \
               [json.dumps(row) for row in con.execute("SELECT * FROM audit_checkpoints")]


def find_leaks(seen: Captured) -> list[str]:
    needles: dict[str, set[str]] = {name: variants(name, value) for name, value in SECRETS.items()}
    needles.update({name: {token} for name, token in URL_TOKENS.items()})
    needles.update({name: {value} for name, value in encoded_pairs().items()})
    leaks = []
    for where, texts in seen.texts.items():
        for text in texts:
            for name, forms in needles.items():
                for form in forms:
                    at = text.find(form)
                    if at >= 0:
                        around = text[max(0, at - 120):at + len(form) + 40]
                        leaks.append(f"{name} in {where}: ...{around!r}...")
                        break
    return leaks


async def test_no_secret_in_logs_audit_answers_metrics_or_cli_output(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Captured()
    db = tmp_path / "tocsin.db"
    async with peers_up() as peers, logs_at_debug() as (as_json, as_console):
        data = config_data(peers, db, operator_key=SECRETS["api.keys.operator"])
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        # The real mounts, with the Teams JWT keys fetched from the loopback issuer instead of Microsoft.
        import bot.teams.app as teams_app

        monkeypatch.setattr(teams_app, "mount_teams", partial(teams_app.mount_teams,
                                                              openid_metadata_url=peers.issuer.metadata_url))
        ctx = await open_context(path, clock=SystemClock())
        try:
            app, rt = await server.build_app(ctx)
            edge = next(c.edge for c in rt.components if isinstance(c, teams_app.TeamsComponent))
            edge.credentials.inner = FixedTokenFactory(TEAMS_APP_ID)
            client = TestClient(TestServer(app, host="127.0.0.1"))
            await client.start_server()
            try:
                scenario = Scenario(ctx, rt, client, peers, seen)
                await scenario.run()
                await reload_with_rotated_key(rt, path, peers, db, scenario)
                final = await scenario.settle()
            finally:
                await client.close()
        finally:
            await ctx.close()

        # The secrets were live: each provider got its credential, so their absence below means something.
        assert final.get("delivered", 0) >= 8 and final.get("failed", 0) >= 1, final
        assert any(r.headers.get("X-Api-Key") == SECRETS["destinations.hook.headers"]
                   for r in peers.providers.requests_to("/hook/*"))
        assert any(SECRETS["channels.sms.access_key_id"] in r.headers.get("Authorization", "")
                   for r in peers.providers.requests_to("/sns*"))
        assert peers.smtp.messages and all(m.authenticated for m in peers.smtp.messages)
        assert any(r.headers.get("Authorization") == f"Bearer {SECRETS['slack.bot_token']}"
                   for r in peers.slack.requests)
        assert peers.telegram.calls("sendMessage")

    seen.add("log json", as_json.getvalue())
    seen.add("log console", as_console.getvalue())
    assert any(json.loads(line).get("event") == "incident.state.changed"  # the capture really captured
               for line in as_json.getvalue().splitlines() if line.strip())
    assert " DEBUG " in as_console.getvalue()
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data).replace("role: viewer", "role: superuser")
                      .replace(f"password: {SECRETS['alertmanager.password']}",
                               f"password:\n    - {SECRETS['alertmanager.password']}"))
    await cli_outputs(path, broken, seen)
    seen.add("audit", "\n".join(audit_rows(db)))
    out, err = capfd.readouterr()
    seen.add("stdout/stderr", out + err)
    leaks = find_leaks(seen)
    assert not leaks, "secrets found:\n" + "\n".join(leaks)
