"""POST /api/messages on the `tocsin run` server: botbuilder's CloudAdapter behind a thin aiohttp edge.

The edge reads the request into an Activity (malformed -> 400), authenticates it with botbuilder's Bot
Framework JWT validation (no or bad token -> 401 whenever teams.app_id is set), and hands it to the adapter
and TeamsBot. We call `CloudAdapter.process_activity` ourselves instead of `CloudAdapter.process`, which
answers 500 for a missing Content-Type, bad JSON or a malformed token.

Two blocking calls inside botbuilder 4.17 are moved off the event loop here: OpenID key refresh during JWT
validation (`requests.get`) and AAD token acquisition for outgoing calls (MSAL).
"""
from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import requests
from aiohttp import web
from botbuilder.core import InvokeResponse, serializer_helper
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import Activity, ActivityTypes
from botframework.connector.auth import (
    AuthenticateRequestResult,
    AuthenticationConstants,
    ServiceClientCredentialsFactory,
)
from msrest.exceptions import DeserializationError
from msrest.pipeline.async_abc import AsyncHTTPPolicy

from bot.server import Provided
from bot.surface import DirectMessageSender, SurfaceSender
from bot.teams.bot import TeamsBot
from bot.teams.surface import NO_PERSONAL_CHAT, TeamsDirectSurface, TeamsSurface, incident_reference
from core.config import TeamsConfig
from core.conversations import ConversationStore

if TYPE_CHECKING:
    from bot.context import Context
    from bot.server import Runtime

log = logging.getLogger("tocsin.teams")

ROUTE = "/api/messages"


# --- configuration ----------------------------------------------------------------------------------------


def bot_settings(teams: TeamsConfig, *, openid_metadata_url: str | None = None) -> SimpleNamespace:
    """The attribute-style configuration botbuilder reads (APP_ID, APP_PASSWORD, APP_TYPE, ...).

    `openid_metadata_url` replaces where signing keys are fetched from (tests point it at a loopback
    stand-in); the other endpoints stay the public cloud's."""
    settings = SimpleNamespace(
        APP_ID=teams.app_id,
        APP_PASSWORD=teams.app_password.get_secret_value() if teams.app_password else "",
        APP_TYPE="SingleTenant" if teams.tenant_id and teams.app_id else "MultiTenant",
        APP_TENANTID=teams.tenant_id,
    )
    if openid_metadata_url:
        settings.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = openid_metadata_url
        settings.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL = openid_metadata_url
        settings.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER
        settings.TO_CHANNEL_FROM_BOT_LOGIN_URL = AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL
        settings.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
        settings.OAUTH_URL = AuthenticationConstants.OAUTH_URL
    return settings


# --- outgoing tokens off the event loop ---------------------------------------------------------------------


class OffLoopToken(AsyncHTTPPolicy[Any, Any]):
    """Bearer token for one connector's requests, acquired in a worker thread.

    msrest puts an AsyncHTTPPolicy credential straight into the pipeline (instead of calling the
    synchronous `signed_session`), so MSAL's network call never runs on the loop. One per connector: a
    policy is linked into exactly one pipeline."""

    def __init__(self, creds: Any) -> None:
        super().__init__()
        self._creds = creds
        self.microsoft_app_id = getattr(creds, "microsoft_app_id", None)

    async def send(self, request: Any, **kwargs: Any) -> Any:
        token = await asyncio.to_thread(self._creds.get_access_token)
        request.http_request.headers["Authorization"] = f"Bearer {token}"
        assert self.next is not None, "msrest links every policy into its pipeline"
        return await self.next.send(request, **kwargs)


class OffLoopCredentials(ServiceClientCredentialsFactory):  # type: ignore[misc]
    """botbuilder makes new MSAL credentials per connector, so every outgoing message fetched a token
    synchronously. This keeps one MSAL credential (and its token cache) per app and audience, and hands
    out OffLoopToken policies that read it from a thread."""

    def __init__(self, inner: ServiceClientCredentialsFactory) -> None:
        self.inner = inner
        self._creds: dict[tuple[Any, ...], Any] = {}

    async def is_valid_app_id(self, app_id: str) -> bool:
        return bool(await self.inner.is_valid_app_id(app_id))

    async def is_authentication_disabled(self) -> bool:
        return bool(await self.inner.is_authentication_disabled())

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> Any:
        if await self.is_authentication_disabled():
            return await self.inner.create_credentials(app_id, oauth_scope, login_endpoint, validate_authority)
        key = (app_id, oauth_scope, login_endpoint, validate_authority)
        creds = self._creds.get(key)
        if creds is None:
            creds = await self.inner.create_credentials(app_id, oauth_scope, login_endpoint, validate_authority)
            self._creds[key] = creds
        return OffLoopToken(creds)


# --- the HTTP edge ------------------------------------------------------------------------------------------


class BadActivity(Exception):
    """The request is not a Bot Framework activity we can act on (answered 400)."""


async def read_activity(request: web.Request) -> Activity:
    """Request -> Activity, or BadActivity saying what is wrong."""
    if "json" not in request.headers.get("Content-Type", "").lower():
        raise BadActivity("Content-Type must be application/json")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadActivity(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadActivity("body must be a JSON object (an activity)")
    try:
        activity = Activity().deserialize(body)
    except (DeserializationError, TypeError, ValueError, AttributeError) as exc:
        raise BadActivity(f"not an activity: {exc}") from exc
    problem = activity_problem(activity)
    if problem:
        raise BadActivity(problem)
    return activity


def activity_problem(activity: Activity) -> str | None:
    """What the handler needs and would otherwise fail on: a type, where to answer, and who is asking."""
    if not isinstance(activity.type, str) or not activity.type:
        return "activity has no type"
    if not isinstance(activity.service_url, str) or not activity.service_url.startswith(("https://", "http://")):
        return "activity has no http(s) serviceUrl"
    if activity.conversation is None or not isinstance(activity.conversation.id, str) or not activity.conversation.id:
        return "activity has no conversation.id"
    if activity.type in (ActivityTypes.message, ActivityTypes.invoke):
        user = activity.from_property
        if user is None or not isinstance(user.id, str) or not user.id:
            return "activity has no from.id"
    if activity.value is not None and not isinstance(activity.value, (dict, list, str, int, float, bool)):
        return "activity value is not JSON"
    return None


class TeamsEdge:
    """The adapter, its authentication and the bot, plus the aiohttp handler for POST /api/messages."""

    def __init__(self, ctx: Context, *, openid_metadata_url: str | None = None) -> None:
        teams = ctx.cfg.teams
        # What an enabled Teams needs is checked once, when the config loads (core.config.platform_problems).
        self.teams = teams
        settings = bot_settings(teams, openid_metadata_url=openid_metadata_url)
        self.credentials = OffLoopCredentials(ConfigurationServiceClientCredentialFactory(settings))
        self.auth = ConfigurationBotFrameworkAuthentication(settings, credentials_factory=self.credentials)
        self.adapter = CloudAdapter(self.auth)
        self.cards_follow = "teams" in ctx.service.surfaces
        self.conversations = ConversationStore(ctx.db, ctx.clock)
        self.bot = TeamsBot(service=ctx.service, seen=ctx.seen, cards_follow=self.cards_follow,
                            conversations=self.conversations)

    @property
    def authenticated(self) -> bool:
        return bool(self.teams.app_id)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            activity = await read_activity(request)
        except BadActivity as exc:
            log.info("teams.request.rejected", extra={"status": 400, "reason": str(exc)[:200]})
            return web.json_response({"error": "bad_request", "detail": str(exc)[:200]}, status=400)
        header = request.headers.get("Authorization") or None
        try:
            auth = await self._authenticate(activity, header)
        except requests.RequestException as exc:
            # Signing keys could not be fetched: not the caller's fault, and Bot Framework retries a 503.
            log.error("teams.auth.keys_unavailable", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            return web.json_response({"error": "unavailable"}, status=503)
        # botbuilder's validators signal a bad token with PermissionError, PyJWT errors, KeyError/IndexError on
        # missing claims or keys, and a bare Exception for endorsements: each one means "not authenticated".
        except Exception as exc:  # noqa: BLE001
            log.warning("teams.auth.rejected", extra={"status": 401, "reason": f"{type(exc).__name__}: {exc}"[:200],
                                                      "token": "present" if header else "absent"})
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            invoke: InvokeResponse | None = await self.adapter.process_activity(auth, activity, self.bot.on_turn)
        except Exception:
            log.exception("teams.turn.failed", extra={"type": activity.type, "activity_id": activity.id,
                                                      "conversation": activity.conversation.id})
            return web.json_response({"error": "internal"}, status=500)
        if invoke is not None:
            return web.json_response(_json_body(invoke.body), status=int(invoke.status or 200))
        return web.Response(status=200)

    async def _authenticate(self, activity: Activity, header: str | None) -> AuthenticateRequestResult:
        """botbuilder's own validation. With a token it may refresh signing keys with a blocking
        `requests.get`, so it then runs on a private loop in a worker thread."""
        if header is None:
            return await self.auth.authenticate_request(activity, None)
        return await asyncio.to_thread(asyncio.run, self.auth.authenticate_request(activity, header))


def _json_body(body: Any) -> Any:
    """Invoke bodies as JSON. botbuilder's own invoke errors carry an Exception as `value`, which its
    serializer cannot handle; they become the `{code, message}` error object Teams expects."""
    if body is None or isinstance(body, (dict, list, str, int, float, bool)):
        return body
    value = getattr(body, "value", None)
    if isinstance(value, Exception):
        code, message = (list(value.args) + ["Error", ""])[:2]
        return {"statusCode": getattr(body, "status_code", None), "type": getattr(body, "type", None),
                "value": {"code": str(code), "message": str(message)}}
    return serializer_helper(body)


# --- wiring into `tocsin run` ----------------------------------------------------------------------------------


class TeamsComponent:
    """Lifetime hook: says loudly, at every start, when the endpoint accepts unauthenticated requests."""

    name = "teams"

    def __init__(self, edge: TeamsEdge) -> None:
        self.edge = edge

    async def start(self) -> None:
        if not self.edge.authenticated:
            log.warning("teams.auth.disabled", extra={
                "route": ROUTE, "why": "teams.allow_unauthenticated is true and teams.app_id is empty: anyone who "
                "can reach this server can act as any Teams user; use for local testing only"})
        else:
            log.info("teams.started", extra={"route": ROUTE, "app_id": self.edge.teams.app_id,
                                             "cards_follow": self.edge.cards_follow})

    async def close(self) -> None:
        return None


def mount_teams(rt: Runtime, *, openid_metadata_url: str | None = None) -> Provided:
    """Add POST /api/messages, the `teams_dm` page sender and, when an incident conversation is set, the
    `chat:teams` card sender."""
    teams = rt.cfg.teams
    if not teams.enabled:
        return Provided()
    edge = TeamsEdge(rt.ctx, openid_metadata_url=openid_metadata_url)
    rt.app.router.add_post(ROUTE, edge.handle)
    out = Provided(components=[TeamsComponent(edge)])
    if edge.cards_follow:
        surface = TeamsSurface(edge.adapter, app_id=teams.app_id, reference=incident_reference(teams))
        out.chat_senders["chat:teams"] = SurfaceSender(surface, service=rt.ctx.service, cards=rt.ctx.cards)
    # teams_dm pages: a proactive 1:1 message to the person's Teams user id (contacts[].chat.teams).
    out.chat_senders["teams_dm"] = DirectMessageSender(
        "teams", lambda user: TeamsDirectSurface(edge.adapter, teams=teams, user=user,
                                                 conversations=edge.conversations),
        service=rt.ctx.service, cards=rt.ctx.cards, never_opened=frozenset({NO_PERSONAL_CHAT}))
    return out
