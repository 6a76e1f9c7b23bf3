"""GET /api/v1/incidents and /api/v1/incidents/{id}: the read API, for the same API keys (any role may
view). Answers come from IncidentService, which checks the VIEW permission itself."""
from __future__ import annotations

from aiohttp import web

from bot.api.auth import api_actor
from bot.api.http import api_handler, context, json_response, parse_query
from bot.api.schemas import (
    DeliveryOut,
    IncidentDetailOut,
    IncidentList,
    IncidentOut,
    IncidentQuery,
    MessageOut,
    StateChangeOut,
)
from core.delivery.queue import summarize


@api_handler
async def list_incidents(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    actor = api_actor(request, ctx.cfg)
    query = parse_query(request, IncidentQuery)
    page = await ctx.service.page(state=query.state, actor=actor, limit=query.limit, before_id=query.cursor)
    items = [IncidentOut.model_validate(r) for r in page.incidents]
    return json_response(IncidentList(count=len(items), incidents=items, more=page.more,
                                      next_cursor=page.next_cursor))


@api_handler
async def get_incident(request: web.Request) -> web.StreamResponse:
    """One incident with its thread, state changes and the status of every delivery (address left out)."""
    ctx = context(request)
    actor = api_actor(request, ctx.cfg)
    detail = await ctx.service.detail(request.match_info["id"], actor=actor)
    base = IncidentOut.model_validate(detail.incident).model_dump()
    out = IncidentDetailOut(
        **base,
        thread=[MessageOut.model_validate(m) for m in detail.thread],
        state_changes=[StateChangeOut.model_validate(c) for c in detail.state_changes],
        deliveries=[DeliveryOut.model_validate(d) for d in detail.deliveries],
        delivery_summary=summarize(detail.deliveries))
    return json_response(out)
