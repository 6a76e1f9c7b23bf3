"""/api/v1/heartbeats/{name}: a ping of a configured heartbeat (core/heartbeats.py).

POST with an API key (role operator or above), or GET with the heartbeat's own `?token=` secret so a cron
line can ping with `curl -fsS`. An unknown heartbeat is 404, a wrong token 403; tokens are compared in
constant time and never logged.
"""
from __future__ import annotations

import logging

from aiohttp import web

from bot.api.auth import api_actor, same_secret
from bot.api.http import ApiError, api_handler, context, json_response, parse_query
from bot.api.schemas import HeartbeatPing, HeartbeatQuery
from bot.context import Context
from core.heartbeats import Heartbeats
from core.rbac import Permission, require

log = logging.getLogger("tocsin.api.heartbeats")


async def _ping(ctx: Context, name: str, *, via: str) -> web.Response:
    result = await Heartbeats(ctx.service).ping(name, via=via)
    return json_response(HeartbeatPing(status="ok", heartbeat=result.name, deadline_at=result.deadline_at,
                                       recovered=result.recovered))


def _known(ctx: Context, name: str) -> None:
    if ctx.cfg.heartbeat(name) is None:
        raise ApiError(404, "not_found", f"no heartbeat named {name!r} (config `heartbeats`)")


@api_handler
async def post_heartbeat(request: web.Request) -> web.StreamResponse:
    """Authenticate (401) and authorize (403), then record the ping."""
    ctx = context(request)
    actor = api_actor(request, ctx.cfg)
    require(ctx.cfg, actor, Permission.SEND_INCIDENTS)
    name = request.match_info["name"]
    _known(ctx, name)
    return await _ping(ctx, name, via=actor.identity)


@api_handler
async def get_heartbeat(request: web.Request) -> web.StreamResponse:
    """The cron-friendly ping: `?token=` must be the heartbeat's own secret (403 otherwise)."""
    ctx = context(request)
    name = request.match_info["name"]
    query = parse_query(request, HeartbeatQuery)
    _known(ctx, name)
    hb = ctx.cfg.heartbeat(name)
    configured = hb.token.get_secret_value() if hb is not None and hb.token else ""
    if not same_secret(query.token, configured):
        log.warning("heartbeat.token.rejected", extra={"heartbeat": name})
        raise ApiError(403, "forbidden", f"the token is not heartbeat {name!r}'s token"
                       + ("" if configured else " (it has none: set heartbeats[].token, or POST with an API key)"))
    return await _ping(ctx, name, via="token")
