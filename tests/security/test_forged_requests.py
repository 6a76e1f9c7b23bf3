"""Forged, replayed and malformed requests on every inbound endpoint: each is refused with 401, 403 or 400
(the Slack request signature, the Telegram secret token, the Bot Framework JWT, API keys, Alertmanager's
credentials, Twilio's signature, the console session and CSRF token), and changes nothing: no incident,
message, page, audit entry or user is written, and nobody is answered. A control request per endpoint then
shows the same route does act when the request is genuine, so "nothing changed" is not vacuous.
"""
from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from bot.slack.app import EVENTS_PATH, SlackAdapter
from bot.teams.app import TeamsComponent, mount_teams
from bot.telegram.bot import WEBHOOK_PATH
from core.models import Delivery
from tests.security.kit import (
    FixedTokenFactory,
    AM_PASSWORD,
    AM_TOKEN,
    AM_USER,
    API_KEY,
    SLACK_USER,
    TEAMS_ROUTE,
    TEAMS_USER,
    TELEGRAM_GROUP,
    TELEGRAM_USER,
    TG_SECRET,
    Stack,
    add_console_users,
    console_login,
    entry_mounts,
    running_stack,
    seed_incident,
    snapshot,
    titled,
)
from tests.slack.standin import sign, slash_body
from tests.stand_ins.http import HttpStandIn
from tests.teams.helpers import TokenIssuer, mention_message
from tests.telegram.botapi import command as tg_command

TWILIO_TOKEN = "sec-twilio-auth-token-4be1"
PUBLIC_URL = "https://tocsin.example.com"
TEAMS_APP_ID = "22222222-3333-4444-5555-666666666666"



@dataclass
class Env:
    """What an attempt needs: the stack, the Teams token issuer, and (when the attempt itself had to do
    something audited first, like signing in) the snapshot to compare against."""

    stack: Stack
    issuer: Any
    baseline: Any = None


Send = Callable[[Env], Awaitable[tuple[int, str]]]


@dataclass(frozen=True)
class Attempt:
    endpoint: str
    what: str
    send: Send
    expect: int


def contacts_with_voice() -> list[dict[str, Any]]:
    """alice is called for sev2, so an incident has a voice page whose callback can be forged."""
    return [{"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
             "chat": {"slack": "UALICE", "telegram": "4242"},
             "preferences": {"sev2": ["voice", "email"], "default": ["email"]}},
            {"name": "bob", "email": "bob@example.com", "preferences": {"default": ["email"]}},
            {"name": "carol", "email": "carol@example.com", "preferences": {"default": ["email"]}}]


@asynccontextmanager
async def guarded_stack(make_ctx: Callable[..., Any]) -> Any:
    """Every entry point with its real authentication on: Teams with an app id (JWTs checked against a
    loopback key set), Twilio's callback with an auth token, console users."""
    from bot.twilio_mount import mount_twilio

    async with HttpStandIn() as keys:
        issuer = TokenIssuer(keys)

        def teams_mount(rt: Any) -> Any:
            return mount_teams(rt, openid_metadata_url=issuer.metadata_url)

        mounts = [m for m in entry_mounts() if m is not mount_teams] + [teams_mount, mount_twilio]
        async with running_stack(
                make_ctx, mounts=mounts, server={"public_url": PUBLIC_URL}, contacts=contacts_with_voice(),
                channels={"voice": {"outbox": False, "account_sid": "AC0sec", "auth_token": TWILIO_TOKEN,
                                    "from_number": "+15550000000"}},
                teams={"app_id": TEAMS_APP_ID, "app_password": "sec-teams-app-password-aa01",
                       "allow_unauthenticated": False}) as stack:
            await add_console_users(stack.ctx)
            edge = next(c.edge for c in stack.rt.components if isinstance(c, TeamsComponent))
            edge.credentials.inner = FixedTokenFactory(TEAMS_APP_ID)
            yield stack, issuer


# --- request builders ---------------------------------------------------------------------------------------


def slack_cmd(stack: Stack, text: str = "declare sev1 forged", **sign_kw: Any) -> tuple[str, dict[str, str]]:
    n = stack.next_id()
    body = slash_body(text, user=SLACK_USER["admin"], trigger=f"forge-{n}",
                      response_url=stack.slack_api.response_url(f"forge-{n}"))
    return body, sign(body, **sign_kw)


async def slack_post(stack: Stack, body: str, headers: dict[str, str]) -> tuple[int, str]:
    status, text = await stack.http("POST", EVENTS_PATH, data=body.encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded", **headers})
    adapter = next(c for c in stack.rt.components if isinstance(c, SlackAdapter))
    await adapter.drain()
    return status, text


def slack(what: str, make_headers: Callable[[str, dict[str, str]], dict[str, str]],
          body: str | None = None, expect: int = 401) -> Attempt:
    async def send(env: Env) -> tuple[int, str]:
        real_body, good = slack_cmd(env.stack)
        sent = body if body is not None else real_body
        return await slack_post(env.stack, sent, make_headers(real_body, good))
    return Attempt("slack", what, send, expect)


def telegram(what: str, secret: str | None, raw: bytes | None = None, expect: int = 403) -> Attempt:
    async def send(env: Env) -> tuple[int, str]:
        stack = env.stack
        n = stack.next_id()
        update = tg_command(50_000 + n, "/incident declare sev1 forged", user_id=TELEGRAM_USER["admin"],
                            chat_id=TELEGRAM_GROUP)
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        return await stack.http("POST", WEBHOOK_PATH, data=raw if raw is not None else json.dumps(update),
                                headers=headers)
    return Attempt("telegram", what, send, expect)


def api(what: str, path: str, headers: dict[str, str], body: Any = None, expect: int = 401,
        method: str = "POST") -> Attempt:
    async def send(env: Env) -> tuple[int, str]:
        stack = env.stack
        n = stack.next_id()
        payload = body(n) if callable(body) else body
        data = payload if isinstance(payload, (bytes, str)) else (json.dumps(payload) if payload is not None
                                                                 else None)
        return await stack.http(method, path, data=data,
                                headers={"Content-Type": "application/json", **headers})
    return Attempt("api" if "alertmanager" not in path else "alertmanager", what, send, expect)


def event(n: int) -> dict[str, Any]:
    return {"event_type": "sec.open", "event_id": f"forged-{n}", "timestamp": "2026-01-01T10:30:00Z",
            "tenant_id": "sec", "payload": {"title": "forged event"},
            "metadata": {"source_service": "sec", "correlation_id": f"forged-{n}"}}


def am_body(n: int) -> dict[str, Any]:
    alert = {"status": "firing", "labels": {"alertname": "Forged", "severity": "critical"},
             "annotations": {"summary": "forged alert"}, "startsAt": "2026-01-01T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"fp-forged-{n}"}
    return {"version": "4", "groupKey": f'{{}}:{{alertname="Forged{n}"}}', "status": "firing",
            "receiver": "tocsin", "alerts": [alert]}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def teams(what: str, token: Callable[[Any, str], str | None], raw: bytes | None = None,
          expect: int = 401) -> Attempt:
    async def send(env: Env) -> tuple[int, str]:
        stack = env.stack
        act = mention_message("incident declare sev1 forged", service_url=stack.teams.url,
                              user=TEAMS_USER["admin"])
        tok = token(env.issuer, stack.teams.url)
        headers = {"Content-Type": "application/json", **({"Authorization": tok} if tok else {})}
        return await stack.http("POST", TEAMS_ROUTE, data=raw if raw is not None else json.dumps(act),
                                headers=headers)
    return Attempt("teams", what, send, expect)


def twilio(what: str, forge: Callable[[str, dict[str, str], int], tuple[str, dict[str, str], str]],
           expect: int = 403) -> Attempt:
    """`forge(url, params, delivery_id) -> (path, params, signature)` from a genuine callback."""
    async def send(env: Env) -> tuple[int, str]:
        stack = env.stack
        async with stack.ctx.db.sessions() as s:
            voice = (await s.execute(select(Delivery).where(Delivery.channel == "voice")
                                     .order_by(Delivery.id.desc()))).scalars().first()
        assert voice is not None
        url = f"{PUBLIC_URL}/twilio/voice?delivery={voice.id}"
        params = {"CallSid": "CA1", "Digits": "1", "From": "+15550000000", "To": "+15550100001"}
        path, sent, sig = forge(url, params, voice.id)
        headers = {"X-Twilio-Signature": sig} if sig else {}
        return await stack.http("POST", path, data=sent, headers=headers)
    return Attempt("twilio", what, send, expect)


def twilio_sig(url: str, params: dict[str, str]) -> str:
    return str(RequestValidator(TWILIO_TOKEN).compute_signature(url, params))


def console(what: str, path: str, *, session: str, csrf: str, expect: int) -> Attempt:
    """session: none | forged | real; csrf: none | wrong | real."""
    async def send(env: Env) -> tuple[int, str]:
        from bot.web.session import COOKIE

        stack = env.stack
        real = await console_login(stack.client, "secadmin", "secadmin-pw-0123")
        assert real is not None
        headers = {"none": {}, "forged": {"Cookie": f"{COOKIE}=e30.deadbeef"},
                   "real": {"Cookie": real["Cookie"]}}[session]
        data = {"none": {}, "wrong": {"csrf": "not-the-token"}, "real": {"csrf": real["X-Csrf"]}}[csrf]
        env.baseline = await snapshot(stack.ctx)  # the sign-in above is audited: compare from here
        return await stack.http("POST", path, data=data, headers=headers)
    return Attempt("console", what, send, expect)


def attempts() -> list[Attempt]:
    now = int(time.time())
    return [
        slack("signed with another secret", lambda b, h: sign(b, secret="not-the-signing-secret")),
        slack("no signature", lambda b, h: {"X-Slack-Request-Timestamp": h["X-Slack-Request-Timestamp"]}),
        slack("no headers at all", lambda b, h: {}),
        slack("replayed after 5 minutes", lambda b, h: sign(b, ts=now - 301)),
        slack("timestamp from the future", lambda b, h: sign(b, ts=now + 400)),
        slack("signature of another body", lambda b, h: sign(b.replace("forged", "other"))),
        slack("signature with one digit changed",
              lambda b, h: {**h, "X-Slack-Signature": h["X-Slack-Signature"][:-1]
                            + ("0" if h["X-Slack-Signature"][-1] != "0" else "1")}),
        slack("timestamp not a number", lambda b, h: {**h, "X-Slack-Request-Timestamp": "yesterday"}),
        slack("signed but without user_id", lambda b, h: sign("command=%2Fincident&text=declare+sev1+x"),
              body="command=%2Fincident&text=declare+sev1+x", expect=400),
        slack("signed but the payload is not JSON", lambda b, h: sign("payload=%7Bnot-json"),
              body="payload=%7Bnot-json", expect=400),
        telegram("no secret header", None),
        telegram("empty secret", ""),
        telegram("wrong secret", "guessed-secret"),
        telegram("secret with a suffix", TG_SECRET + "x"),
        telegram("secret truncated", TG_SECRET[:-1]),
        telegram("secret in another case", TG_SECRET.upper()),
        telegram("right secret, body not JSON", TG_SECRET, raw=b"{not json", expect=400),
        telegram("right secret, no update_id", TG_SECRET, raw=b'{"message": {}}', expect=400),
        telegram("right secret, update_id a string", TG_SECRET, raw=b'{"update_id": "1"}', expect=400),
        api("events: no credentials", "/api/v1/events", {}, event),
        api("events: unknown key", "/api/v1/events", bearer("tk-guessed-0000000000"), event),
        api("events: key with a suffix", "/api/v1/events", bearer(API_KEY["admin"] + "0"), event),
        api("events: empty bearer", "/api/v1/events", {"Authorization": "Bearer "}, event),
        api("events: key sent as basic auth", "/api/v1/events", basic("sec-admin", API_KEY["admin"]), event),
        api("events: Alertmanager's token is no API key", "/api/v1/events", bearer(AM_TOKEN), event),
        api("events: viewer key", "/api/v1/events", bearer(API_KEY["viewer"]), event, expect=403),
        api("events: malformed JSON", "/api/v1/events", bearer(API_KEY["admin"]), b"{nope", expect=400),
        api("events: missing fields", "/api/v1/events", bearer(API_KEY["admin"]), {"event_type": "x"},
            expect=400),
        api("alertmanager: no credentials", "/api/v1/alertmanager", {}, am_body),
        api("alertmanager: wrong bearer", "/api/v1/alertmanager", bearer("am-guessed"), am_body),
        api("alertmanager: wrong password", "/api/v1/alertmanager", basic(AM_USER, "wrong"), am_body),
        api("alertmanager: wrong user", "/api/v1/alertmanager", basic("root", AM_PASSWORD), am_body),
        api("alertmanager: password as bearer", "/api/v1/alertmanager", bearer(AM_PASSWORD), am_body),
        api("alertmanager: basic not base64", "/api/v1/alertmanager", {"Authorization": "Basic %%%"},
            am_body),
        api("alertmanager: basic without colon", "/api/v1/alertmanager",
            {"Authorization": "Basic " + base64.b64encode(AM_PASSWORD.encode()).decode()}, am_body),
        api("alertmanager: viewer API key", "/api/v1/alertmanager", bearer(API_KEY["viewer"]), am_body,
            expect=403),
        api("alertmanager: malformed JSON", "/api/v1/alertmanager", bearer(AM_TOKEN), b"[1,", expect=400),
        api("read API: no credentials", "/api/v1/incidents", {}, method="GET"),
        api("read API: unknown key", "/api/v1/incidents/1", bearer("tk-guessed-0000000000"), method="GET"),
        twilio("no signature", lambda u, p, d: (f"/twilio/voice?delivery={d}", p, "")),
        twilio("forged signature", lambda u, p, d: (f"/twilio/voice?delivery={d}", p, "Zm9yZ2Vk")),
        twilio("signed with another token", lambda u, p, d: (
            f"/twilio/voice?delivery={d}", p, str(RequestValidator("other").compute_signature(u, p)))),
        twilio("signature of another delivery", lambda u, p, d: (
            f"/twilio/voice?delivery={d - 1}", p, twilio_sig(u, p))),
        twilio("signature over other digits", lambda u, p, d: (
            f"/twilio/voice?delivery={d}", {**p, "Digits": "1"}, twilio_sig(u, {**p, "Digits": "2"}))),
        console("ack without a session", "/incidents/1/ack", session="none", csrf="none", expect=302),
        console("ack with a forged cookie", "/incidents/1/ack", session="forged", csrf="real", expect=302),
        console("ack without the CSRF token", "/incidents/1/ack", session="real", csrf="none", expect=403),
        console("ack with a wrong CSRF token", "/incidents/1/ack", session="real", csrf="wrong", expect=403),
        console("audit verify without the CSRF token", "/audit/verify", session="real", csrf="none",
                expect=403),
        teams("no Authorization header", lambda i, u: None),
        teams("not a JWT", lambda i, u: "Bearer not.a.jwt"),
        teams("basic auth", lambda i, u: "Basic dXNlcjpwYXNz"),
        teams("signed by an unknown key", lambda i, u: "Bearer " + i.token(
            audience=TEAMS_APP_ID, service_url=u,
            key=rsa.generate_private_key(public_exponent=65537, key_size=2048))),
        teams("for another bot", lambda i, u: "Bearer " + i.token(audience="another-app", service_url=u)),
        teams("expired", lambda i, u: "Bearer " + i.token(audience=TEAMS_APP_ID, service_url=u,
                                                          expires_in=-3600)),
        teams("for another service URL", lambda i, u: "Bearer " + i.token(
            audience=TEAMS_APP_ID, service_url="http://127.0.0.1:1")),
        teams("body not JSON", lambda i, u: None, raw=b"{nope", expect=400),
    ]


async def outbound(stack: Stack) -> dict[str, int]:
    """Answers sent anywhere: Slack response_urls and Web API, Telegram sendMessage, Teams replies."""
    out = {"slack": len(stack.slack_api.requests_to("/response/*")) + len(stack.slack_api.requests_to(
        "/api/chat.*")), "telegram": len(stack.telegram_api.calls("sendMessage"))}
    out["teams"] = len(stack.teams.peer.requests)
    return out


async def test_forged_and_malformed_requests_are_refused_and_change_nothing(
        make_ctx: Callable[..., Any]) -> None:
    async with guarded_stack(make_ctx) as (stack, issuer):
        await seed_incident(stack.ctx, "forgery")  # something to ack, with a voice page
        problems = []
        for att in attempts():
            before, sent_before = await snapshot(stack.ctx), await outbound(stack)
            env = Env(stack, issuer)
            status, text = await att.send(env)
            before = env.baseline or before
            after, sent_after = await snapshot(stack.ctx), await outbound(stack)
            where = f"{att.endpoint}: {att.what}"
            if status != att.expect:
                problems.append(f"{where}: {status} (expected {att.expect}): {text[:200]!r}")
            if after != before:
                problems.append(f"{where}: the database changed: {before} -> {after}")
            if sent_after != sent_before:
                problems.append(f"{where}: somebody was answered: {sent_before} -> {sent_after}")
        assert not problems, "\n".join(problems)
        assert (await stack.ctx.service.get("INC-1")).acknowledged_at is None

        # Controls: the same routes act on a genuine request.
        body, headers = slack_cmd(stack, "declare sev3 genuine slack")
        assert (await slack_post(stack, body, headers))[0] == 200
        update = tg_command(60_001, "/incident declare sev3 genuine telegram", user_id=TELEGRAM_USER["admin"],
                            chat_id=TELEGRAM_GROUP)
        status, _ = await stack.http("POST", WEBHOOK_PATH, json=update,
                                     headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
        assert status == 200
        ev = {**event(1), "payload": {"title": "genuine api"}}
        status, _ = await stack.http("POST", "/api/v1/events", json=ev, headers=bearer(API_KEY["operator"]))
        assert status == 202
        am = am_body(1)
        am["alerts"][0]["annotations"]["summary"] = "genuine alertmanager"
        assert (await stack.http("POST", "/api/v1/alertmanager", json=am, headers=bearer(AM_TOKEN)))[0] == 200
        act = mention_message("incident declare sev3 genuine teams", service_url=stack.teams.url,
                              user=TEAMS_USER["admin"])
        token = issuer.token(audience=TEAMS_APP_ID, service_url=stack.teams.url)
        status, text = await stack.http("POST", TEAMS_ROUTE, json=act, headers=bearer(token))
        assert status == 200, text
        for title in ["genuine slack", "genuine api", "genuine teams"]:
            assert await titled(stack.ctx, title) == 1, title
        await _wait_for_title(stack, "genuine telegram")
        async with stack.ctx.db.sessions() as s:
            voice = (await s.execute(select(Delivery).where(Delivery.channel == "voice"))).scalars().first()
        assert voice is not None
        url = f"{PUBLIC_URL}/twilio/voice?delivery={voice.id}"
        params = {"CallSid": "CA1", "Digits": "1", "From": "+15550000000", "To": "+15550100001"}
        status, text = await stack.http("POST", f"/twilio/voice?delivery={voice.id}", data=params,
                                        headers={"X-Twilio-Signature": twilio_sig(url, params)})
        assert status == 200 and "acknowledged" in text
        assert (await stack.ctx.service.get("INC-1")).acknowledged_by == "contact:alice"


async def _wait_for_title(stack: Stack, title: str, timeout: float = 10) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while await titled(stack.ctx, title) != 1:
        assert time.monotonic() < deadline, f"no incident {title!r}"
        await asyncio.sleep(0.02)


async def test_replayed_genuine_requests_act_once(make_ctx: Callable[..., Any]) -> None:
    """A captured, genuine request sent again (within Slack's five minutes, with Telegram's secret, a
    still-valid JWT, the same event_id, the same Twilio signature) is accepted and does nothing twice."""
    async with guarded_stack(make_ctx) as (stack, issuer):
        await seed_incident(stack.ctx, "replay")
        # Slack: the very same bytes and headers, twice.
        body, headers = slack_cmd(stack, "declare sev3 replayed slack")
        assert [(await slack_post(stack, body, headers))[0] for _ in range(2)] == [200, 200]
        # Telegram: the same update twice.
        update = tg_command(61_000, "/incident declare sev3 replayed telegram",
                            user_id=TELEGRAM_USER["admin"], chat_id=TELEGRAM_GROUP)
        for _ in range(2):
            status, _ = await stack.http("POST", WEBHOOK_PATH, json=update,
                                         headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
            assert status == 200
        await _wait_for_title(stack, "replayed telegram")
        # The API: the same event twice (the second answers with the first result).
        ev = {**event(2), "payload": {"title": "replayed api"}}
        statuses = [(await stack.http("POST", "/api/v1/events", json=ev, headers=bearer(API_KEY["operator"])))
                    for _ in range(2)]
        assert [s for s, _ in statuses] == [202, 200] and json.loads(statuses[1][1])["status"] == "duplicate"
        act = mention_message("incident declare sev3 replayed teams", service_url=stack.teams.url,
                              user=TEAMS_USER["admin"])
        token = issuer.token(audience=TEAMS_APP_ID, service_url=stack.teams.url)
        for _ in range(2):
            assert (await stack.http("POST", TEAMS_ROUTE, json=act, headers=bearer(token)))[0] == 200
        # Twilio: the same signed keypress twice.
        async with stack.ctx.db.sessions() as s:
            voice = (await s.execute(select(Delivery).where(Delivery.channel == "voice"))).scalars().first()
        assert voice is not None
        url = f"{PUBLIC_URL}/twilio/voice?delivery={voice.id}"
        params = {"CallSid": "CA9", "Digits": "1", "From": "+15550000000", "To": "+15550100001"}
        signed = {"X-Twilio-Signature": twilio_sig(url, params)}
        answers = [await stack.http("POST", f"/twilio/voice?delivery={voice.id}", data=params, headers=signed)
                   for _ in range(2)]
        assert [s for s, _ in answers] == [200, 200] and "already acknowledged" in answers[1][1]

        for title in ["replayed slack", "replayed telegram", "replayed api", "replayed teams"]:
            assert await titled(stack.ctx, title) == 1, title
        async with stack.ctx.db.sessions() as s:
            from core.models import AuditEntry

            acks = (await s.execute(select(AuditEntry)
                                    .where(AuditEntry.action == "incident.ack"))).scalars().all()
        assert len(acks) == 1
