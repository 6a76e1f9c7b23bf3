"""/api/v1/schedules/{name}.ics: a schedule's on-call shifts as iCalendar, for calendar apps to subscribe to.

Calendar apps cannot send an API key, so each feed has its own secret in the URL (`schedules[].feed_token`),
compared in constant time and never logged; no token configured means no feed (403)."""
from __future__ import annotations

import logging

from aiohttp import web

from bot.api.auth import same_secret
from bot.api.http import ApiError, api_handler, context, parse_query
from bot.api.schemas import ScheduleFeedQuery
from core.rbac import Actor
from core.schedules.calendar import feed

log = logging.getLogger("tocsin.api.schedules")

FEED = Actor("system:calendar-feed", source="ics")


@api_handler
async def get_schedule_ics(request: web.Request) -> web.StreamResponse:
    """404 unknown schedule, 403 wrong token, else text/calendar."""
    ctx = context(request)
    name = request.match_info["name"]
    sc = ctx.cfg.schedule(name)
    if sc is None:
        raise ApiError(404, "not_found", f"no schedule named {name!r} (config `schedules`)")
    query = parse_query(request, ScheduleFeedQuery)
    configured = sc.feed_token.get_secret_value() if sc.feed_token else ""
    if not same_secret(query.token, configured):
        log.warning("schedule.feed.rejected", extra={"schedule": name})
        raise ApiError(403, "forbidden", f"the token is not schedule {name!r}'s feed token"
                       + ("" if configured else " (it has none: set schedules[].feed_token)"))
    if query.contact is not None and ctx.cfg.contact(query.contact) is None:
        raise ApiError(404, "not_found", f"no contact named {query.contact!r}")
    body = await feed(ctx.service.schedules, name, actor=FEED, weeks=query.weeks, contact=query.contact)
    return web.Response(body=body, content_type="text/calendar", charset="utf-8",
                        headers={"Content-Disposition": f'inline; filename="{name}.ics"'})
