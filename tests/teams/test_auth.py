"""Security of /api/messages: Bot Framework JWTs checked by botbuilder whenever teams.app_id is set, and an
open endpoint only by explicit, loudly logged choice. Nothing here reaches the internet:

- no Authorization header, a malformed token, a non-Bearer scheme: rejected before any key fetch;
- well-formed tokens need signing keys: botbuilder's OpenID metadata URL is pointed at a loopback stand-in
  (via its configuration, `TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL`) that serves our test key;
- outgoing calls need an AAD token from MSAL: a stand-in credential hands out a fixed token.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from botbuilder.schema import Activity, ChannelAccount, ConversationAccount
from botframework.connector.aio import ConnectorClient
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.teams.app import OffLoopCredentials, TeamsComponent, TeamsEdge
from core.errors import ConfigError
from tests.stand_ins.http import HttpStandIn
from tests.teams.helpers import (
    TEAMS_CONV,
    TokenIssuer,
    activity,
    bot_connector,
    mention_message,
    plain,
    teams_config,
)
from tests.teams.test_http import post, teams_server

APP_ID = "11111111-2222-3333-4444-555555555555"


def secured(service_url: str) -> dict[str, Any]:
    return teams_config(service_url, app_id=APP_ID, app_password="s3cret", allow_unauthenticated=False)


# --- refusing to run open -----------------------------------------------------------------------------------


async def test_no_app_id_refuses_to_start_unless_explicitly_allowed(make_ctx: Callable[..., Any]) -> None:
    # Checked when the config loads, so `config check` says it and `tocsin run` stops with the same line.
    with pytest.raises(ConfigError, match=r"test-config.yaml:\d+ teams.app_id: empty, .*"
                                          "teams.allow_unauthenticated: true for local testing only"):
        await make_ctx(teams={"enabled": True})
    with pytest.raises(ConfigError, match=r"test-config.yaml:\d+ teams.app_password: required"):
        await make_ctx(teams={"enabled": True, "app_id": APP_ID})


async def test_open_endpoint_warns_at_every_start(make_ctx: Callable[..., Any],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    ctx = await make_ctx(**teams_config("http://127.0.0.1:9"))
    comp = TeamsComponent(TeamsEdge(ctx))
    caplog.set_level(logging.INFO, logger="tocsin.teams")
    await comp.start()
    await comp.start()
    warnings = [r for r in caplog.records if r.getMessage() == "teams.auth.disabled"]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert "local testing only" in warnings[0].__dict__["why"]


# --- rejected before any key is needed ----------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    None,
    "Bearer",
    "Bearer not.a.jwt",
    "Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo",  # HS256, no issuer
    "Basic dXNlcjpwYXNz",
])
async def test_missing_or_malformed_tokens_are_401(make_ctx: Callable[..., Any], header: str | None) -> None:
    async with bot_connector() as bc:
        ctx = await make_ctx(**secured(bc.url))
        async with teams_server(ctx) as (url, _rt):
            headers = {"Authorization": header} if header is not None else {}
            status, body = await post(url, mention_message("incident declare sev1 x", service_url=bc.url),
                                      headers=headers)
            assert status == 401, body
            assert bc.peer.requests == [] and await ctx.service.list(state="all") == []


async def test_token_from_an_unknown_issuer_is_401_without_fetching_keys(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc, HttpStandIn() as keys:
        issuer = TokenIssuer(keys)
        ctx = await make_ctx(**secured(bc.url))
        async with teams_server(ctx) as (url, _rt):
            token = issuer.token(audience=APP_ID, service_url=bc.url, issuer="https://evil.example")
            status, _ = await post(url, activity("typing", service_url=bc.url),
                                   headers={"Authorization": f"Bearer {token}"})
            assert status == 401 and keys.requests == []


# --- real signature checks against loopback signing keys ---------------------------------------------------


async def test_signed_tokens_are_checked(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc, HttpStandIn() as keys:
        issuer = TokenIssuer(keys)
        ctx = await make_ctx(**secured(bc.url))
        async with teams_server(ctx, openid_metadata_url=issuer.metadata_url) as (url, _rt):
            typing = activity("typing", service_url=bc.url)

            async def status_with(token: str) -> int:
                return (await post(url, typing, headers={"Authorization": f"Bearer {token}"}))[0]

            assert await status_with(issuer.token(audience=APP_ID, service_url=bc.url)) == 200
            assert [r.path for r in keys.requests] == [issuer.path, "/keys"]  # fetched off the loop, then cached
            forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            assert await status_with(issuer.token(audience=APP_ID, service_url=bc.url, key=forged)) == 401
            assert await status_with(issuer.token(audience="another-bot", service_url=bc.url)) == 401
            assert await status_with(issuer.token(audience=APP_ID, service_url="http://127.0.0.1:1")) == 401
            assert await status_with(issuer.token(audience=APP_ID, service_url=bc.url, expires_in=-3600)) == 401
            assert bc.peer.requests == []


async def test_signing_keys_unreachable_is_503(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc, HttpStandIn(default=(500, "down")) as keys:
        issuer = TokenIssuer(keys)
        keys.reset()  # the metadata endpoint now answers 500
        ctx = await make_ctx(**secured(bc.url))
        async with teams_server(ctx, openid_metadata_url=issuer.metadata_url) as (url, _rt):
            token = issuer.token(audience=APP_ID, service_url=bc.url)
            status, _ = await post(url, activity("typing", service_url=bc.url),
                                   headers={"Authorization": f"Bearer {token}"})
            assert status == 503


class FixedToken:
    """Stands in for MSAL credentials: a fixed AAD token, recording which thread asked for it."""

    def __init__(self, app_id: str) -> None:
        self.microsoft_app_id = app_id
        self.threads: list[int] = []

    def get_access_token(self, force_refresh: bool = False) -> str:
        self.threads.append(threading.get_ident())
        return "aad-token-1"


class FixedTokenFactory:
    def __init__(self) -> None:
        self.made: list[FixedToken] = []

    async def is_valid_app_id(self, app_id: str) -> bool:
        return app_id == APP_ID

    async def is_authentication_disabled(self) -> bool:
        return False

    async def create_credentials(self, app_id: str, *args: Any) -> FixedToken:
        self.made.append(FixedToken(app_id))
        return self.made[-1]


async def test_authenticated_conversation_end_to_end(make_ctx: Callable[..., Any]) -> None:
    """A signed message is acted on, and the answer carries the bot's own bearer token."""
    async with bot_connector() as bc, HttpStandIn() as keys:
        issuer = TokenIssuer(keys)
        ctx = await make_ctx(**secured(bc.url))
        async with teams_server(ctx, openid_metadata_url=issuer.metadata_url) as (url, rt):
            edge = next(c.edge for c in rt.components if isinstance(c, TeamsComponent))
            edge.credentials.inner = FixedTokenFactory()
            token = issuer.token(audience=APP_ID, service_url=bc.url)
            status, _ = await post(url, mention_message("incident declare sev1 Signed and sealed", service_url=bc.url),
                                   headers={"Authorization": f"Bearer {token}"})
            assert status == 200
            (reply,) = bc.replies(TEAMS_CONV)
            assert plain(reply.json["text"]).startswith("Declared INC-1 [sev1] Signed and sealed")
            assert reply.headers["Authorization"] == "Bearer aad-token-1"


async def test_outgoing_token_is_fetched_off_the_event_loop() -> None:
    """MSAL is synchronous: the token is read in a worker thread, and one credential is reused."""
    factory = FixedTokenFactory()
    creds = OffLoopCredentials(factory)
    async with HttpStandIn(default=(200, {"id": "a-1"})) as connector:
        for _ in range(2):
            policy = await creds.create_credentials(APP_ID, "https://api.botframework.com",
                                                    "https://login.microsoftonline.com/botframework.com", True)
            client = ConnectorClient(policy, base_url=connector.url)
            await client.conversations.send_to_conversation("19:c@thread", Activity(
                type="message", text="hi", from_property=ChannelAccount(id="28:bot"),
                conversation=ConversationAccount(id="19:c@thread")))
        assert [r.headers["Authorization"] for r in connector.requests] == ["Bearer aad-token-1"] * 2
    (made,) = factory.made
    assert made.threads and threading.get_ident() not in made.threads
    assert asyncio.get_running_loop().is_running()
