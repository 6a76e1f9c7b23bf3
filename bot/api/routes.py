"""The /api/v1 route table: mounted on the app and described in the OpenAPI document from one list."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.api.alertmanager import post_alertmanager
from bot.api.events import post_event
from bot.api.heartbeats import get_heartbeat, post_heartbeat
from bot.api.http import Route, api_handler, context
from bot.api.incidents import get_incident, list_incidents
from bot.api.openapi import build_document
from bot.api.schedules import get_schedule_ics
from bot.api.schemas import (
    AlertmanagerResponse,
    AlertmanagerWebhook,
    ErrorResponse,
    EventResponse,
    HeartbeatPing,
    HeartbeatQuery,
    InboundEvent,
    IncidentDetailOut,
    IncidentList,
    IncidentQuery,
    ScheduleFeedQuery,
)
from bot.server import Provided

if TYPE_CHECKING:
    from bot.server import Runtime

PREFIX = "/api/v1"

_ERR_400 = (400, ("Malformed JSON, a wrong type or a missing field (`field` names it)", ErrorResponse))
_ERR_401 = (401, ("Missing or wrong credentials", ErrorResponse))
_ERR_403 = (403, ("The key's role may not do this", ErrorResponse))
_ERR_409 = (409, ("The incident changed state meanwhile (e.g. it was resolved); retry", ErrorResponse))
_ERR_413 = (413, ("The body is larger than server.max_body_bytes", ErrorResponse))


@api_handler
async def get_openapi(request: web.Request) -> web.StreamResponse:
    """This document (no authentication needed)."""
    doc = dict(_document())
    doc["servers"] = [{"url": context(request).cfg.server.public_url.rstrip("/")}]
    return web.json_response(doc)


@functools.cache
def _document() -> dict[str, Any]:
    return build_document(ROUTES)


ROUTES: list[Route] = [
    Route("POST", f"{PREFIX}/events", post_event, "Receive an event: open, update or resolve an incident, "
          "or page once", request=InboundEvent, security=("apiKey",), tags=("events",), responses=dict([
              (202, ("Accepted and applied", EventResponse)),
              (200, ("A replayed event_id: nothing was done again; the first result", EventResponse)),
              _ERR_400, _ERR_401, _ERR_403, _ERR_409, _ERR_413])),
    Route("POST", f"{PREFIX}/alertmanager", post_alertmanager, "Prometheus Alertmanager webhook receiver "
          "(payload version 4)", request=AlertmanagerWebhook, tags=("events",),
          security=("alertmanagerBearer", "alertmanagerBasic", "apiKey"), responses=dict([
              (200, ("Applied to the group's incident", AlertmanagerResponse)),
              _ERR_400, _ERR_401, _ERR_403, (404, ("The receiver is disabled (alertmanager.enabled)",
                                                   ErrorResponse)), _ERR_409, _ERR_413])),
    Route("POST", f"{PREFIX}/heartbeats/{{name}}", post_heartbeat, "Ping a heartbeat (config `heartbeats`) "
          "with an API key; a missed heartbeat recovers", security=("apiKey",), tags=("heartbeats",),
          responses=dict([(200, ("The ping was recorded", HeartbeatPing)), _ERR_401, _ERR_403,
                          (404, ("No such heartbeat", ErrorResponse))])),
    Route("GET", f"{PREFIX}/heartbeats/{{name}}", get_heartbeat, "Ping a heartbeat with its own `?token=` "
          "secret (for a cron line with curl)", query=HeartbeatQuery, tags=("heartbeats",),
          responses=dict([(200, ("The ping was recorded", HeartbeatPing)),
                          (400, ("The token is missing", ErrorResponse)),
                          (403, ("The token is wrong (or the heartbeat has none)", ErrorResponse)),
                          (404, ("No such heartbeat", ErrorResponse))])),
    Route("GET", f"{PREFIX}/incidents", list_incidents, "List incidents", query=IncidentQuery,
          security=("apiKey",), tags=("incidents",), responses=dict([
              (200, ("Incidents, newest first", IncidentList)), _ERR_400, _ERR_401, _ERR_403])),
    Route("GET", f"{PREFIX}/incidents/{{id}}", get_incident, "One incident with thread and delivery status",
          security=("apiKey",), tags=("incidents",), responses=dict([
              (200, ("The incident", IncidentDetailOut)),
              (400, ("Not an incident id", ErrorResponse)), _ERR_401, _ERR_403,
              (404, ("No such incident", ErrorResponse))])),
    Route("GET", f"{PREFIX}/schedules/{{name}}.ics", get_schedule_ics, "A schedule's on-call shifts as "
          "iCalendar, for calendar apps (authorized by the feed's own `?token=`)", query=ScheduleFeedQuery,
          tags=("schedules",), responses=dict([
              (200, ("text/calendar", None)), (400, ("The token is missing or a value is malformed",
                                                     ErrorResponse)),
              (403, ("The token is wrong (or the schedule has none)", ErrorResponse)),
              (404, ("No such schedule or contact", ErrorResponse))])),
    Route("GET", f"{PREFIX}/openapi.json", get_openapi, "This OpenAPI document", tags=("meta",),
          responses={200: ("OpenAPI 3.1 document", None)}),
]


def mount(rt: Runtime) -> Provided:
    """Add every /api/v1 route (a `_mounts()` entry of bot/server.py); nothing else to provide."""
    for route in ROUTES:
        rt.app.router.add_route(route.method, route.path, route.handler)
    return Provided()
