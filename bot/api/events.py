"""POST /api/v1/events: an inbound event opens, updates or resolves an incident, or pages once.

Routing rules decide (`action`: auto | open | update | resolve | notify, and `severity`); the event's
correlation value (api.correlation_key, default metadata.correlation_id) finds the incident to update.
The event_id is remembered in the same transaction as the change, so a replay does nothing twice and a
failure stores nothing.
"""
from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.api.auth import api_actor
from core.seen import bounded_key, lock_keys, remember
from bot.api.http import api_handler, context, field_error, json_response, parse_body
from bot.api.schemas import EventResponse, EventResult, InboundEvent
from bot.context import Context
from core.config import SEVERITIES, Config, normalize_severity
from core.db import connection
from core.incident_store import RESOLVED
from core.metrics import EVENTS_RECEIVED
from core.models import Incident, SeenKey
from core.rbac import Actor, Permission, require
from core.routing import RouteEvent, lookup, plan

log = logging.getLogger("tocsin.api.events")

CORRELATION_MAX = 500  # incidents.correlation_key is String(500)


def path_value(data: dict[str, Any], path: str) -> Any:
    """routing.lookup with None for an absent field (its sentinel is no JSON value)."""
    value = lookup(data, path)
    return value if isinstance(value, (str, int, float, bool, dict, list)) else None


def correlation_of(cfg: Config, view: dict[str, Any], *, tenant: str) -> str | None:
    """The incident correlation key of an event (`evt:<tenant>:<value>`), or None when it has none.
    Scoped by tenant so two tenants' ids never touch each other's incidents."""
    path = cfg.api.correlation_key
    value = path_value(view, path)
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list, bool)):
        raise field_error(path, "the correlation value must be a string or a number")
    key = f"evt:{tenant}:{value}"
    if len(key) > CORRELATION_MAX:
        raise field_error(path, f"the correlation value is too long (at most {CORRELATION_MAX} characters "
                                "with the tenant)")
    return key


def payload_severity(cfg: Config, view: dict[str, Any]) -> tuple[str | None, Any]:
    """(severity, None) from api.severity_field, or (None, raw) when the field holds something else."""
    raw = path_value(view, cfg.api.severity_field)
    if raw is None:
        return None, None
    sev = normalize_severity(raw) if isinstance(raw, str) else None
    return (sev, None) if sev in SEVERITIES else (None, raw)


def pick_severity(cfg: Config, *, rule: str | None, payload: str | None, invalid: Any) -> str:
    """A matched rule's severity, else the event's, else api.default_severity; a severity field that
    is present but not a severity is the sender's mistake, said back to them."""
    if rule:
        return rule
    if payload:
        return payload
    if invalid is not None:
        raise field_error(cfg.api.severity_field,
                          f"{invalid!r} is not a severity (sev1..sev4 or critical, high, medium, low)")
    return cfg.api.default_severity


def _first_text(payload: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = payload.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def texts(event: InboundEvent, *, source: str) -> tuple[str, str, str]:
    """(title, description, update text) from common payload fields, with a readable fallback."""
    p = event.payload
    title = _first_text(p, "title", "summary") or f"{event.event_type} from {source}"
    description = _first_text(p, "description", "message") or ""
    update = (_first_text(p, "message", "summary", "description", "title")
              or f"{event.event_type} ({event.event_id})")
    return title, description, update


def route_event(event: InboundEvent, *, source: str, severity: str | None) -> RouteEvent:
    meta = event.metadata.model_dump(mode="json") if event.metadata else {}
    labels = {"tenant_id": event.tenant_id, "event_id": event.event_id, "source_service": source}
    if event.metadata and event.metadata.correlation_id:
        labels["correlation_id"] = event.metadata.correlation_id
    return RouteEvent(event_type=event.event_type, severity=severity, source=source, payload=event.payload,
                      labels=labels, metadata={**meta, "tenant_id": event.tenant_id})


_SEEN, _INC = SeenKey.__table__, Incident.__table__
_PROBE = select(
    exists().where(_SEEN.c.key == bindparam("seen")).label("seen"),
    select(_SEEN.c.result).where(_SEEN.c.key == bindparam("seen")).scalar_subquery().label("result"),
    # as IncidentStore.find_by_correlation (no key: NULL matches nothing)
    select(_INC.c.id).where(_INC.c.correlation_key == bindparam("correlation", type_=_INC.c.correlation_key.type),
                            _INC.c.state != RESOLVED)
    .order_by(_INC.c.id.desc()).limit(1).scalar_subquery().label("existing"))
"""Built once: every event asks both before anything else (the seen key's result, for a replay's answer)."""


async def ingest(ctx: Context, event: InboundEvent, *, actor: Actor) -> EventResponse:
    """Apply one event exactly once (per tenant and event_id)."""
    cfg = ctx.cfg
    source = event.metadata.source_service if event.metadata else "api"
    # The payload came from JSON and is JSON already: not copied (a near-limit one took 8 ms of the loop).
    view = {**event.model_dump(mode="json", exclude={"payload"}), "payload": event.payload}
    correlation = correlation_of(cfg, view, tenant=event.tenant_id)
    seen_key = bounded_key("event", f"{event.tenant_id}:{event.event_id}")
    log.info("notify.event.received", extra={
        "event_type": event.event_type, "event_id": event.event_id, "source": source,
        "tenant": event.tenant_id, "actor": actor.identity})
    async with ctx.db.grouped() as s:  # group commit: shares a transaction with concurrent events
        await lock_keys(s, seen_key, *([correlation] if correlation else []))
        conn = await connection(s)  # one statement: was the event seen, and which incident it correlates to
        probe = (await conn.execute(_PROBE, {"seen": seen_key, "correlation": correlation})).one()
        if probe.seen:
            log.info("notify.event.duplicate", extra={"event_id": event.event_id, "tenant": event.tenant_id})
            EVENTS_RECEIVED.labels(event_type=event.event_type, outcome="duplicate").inc()
            return EventResponse(status="duplicate", event_id=event.event_id,
                                 result=EventResult.model_validate(probe.result["result"]))
        existing = None if probe.existing is None else await s.get(Incident, probe.existing)
        result = await _apply(ctx, event, actor=actor, source=source, view=view, existing=existing,
                              correlation=correlation, session=s)
        await remember(s, seen_key, now=ctx.clock.now(), result={"result": result.model_dump(mode="json")})
    await ctx.service.events.publish_pending(s)
    EVENTS_RECEIVED.labels(event_type=event.event_type, outcome="accepted").inc()
    return EventResponse(status="accepted", event_id=event.event_id, result=result)


async def _apply(ctx: Context, event: InboundEvent, *, actor: Actor, source: str, view: dict[str, Any],
                 existing: Incident | None, correlation: str | None, session: AsyncSession) -> EventResult:
    """`existing`: the newest open or monitoring incident with the event's correlation key."""
    cfg, svc = ctx.cfg, ctx.service
    payload_sev, invalid = payload_severity(cfg, view)
    decision = plan(cfg, route_event(event, source=source, severity=payload_sev), now=ctx.clock.now())
    rules = [r.name for r in decision.matched_rules]
    action = decision.action
    title, description, update_text = texts(event, source=source)

    if action == "notify":
        sev = pick_severity(cfg, rule=decision.severity, payload=payload_sev, invalid=invalid)
        route = route_event(event, source=source, severity=sev)
        out = await svc.notify(actor=actor, text=f"{title}\n{description}".strip(), severity=sev,
                               event_type=event.event_type, source=source, payload=event.payload,
                               labels=route.labels, metadata=route.metadata, urgent=event.urgent,
                               session=session)
        if out.suppressed_by is not None:
            return EventResult(action="suppressed", severity=sev, rules=rules, note=out.note)
        return EventResult(action="notified", severity=sev, queued=out.queued, rules=rules)

    if action in ("update", "resolve") or (action == "auto" and existing is not None):
        if existing is None:
            why = (f"no open incident has correlation key {correlation!r}" if correlation else
                   f"the event has no correlation value at {cfg.api.correlation_key}")
            log.info("notify.event.ignored", extra={"event_id": event.event_id, "action": action, "why": why})
            return EventResult(action="ignored", rules=rules, note=f"nothing to {action}: {why}")
        if action == "resolve":
            out = await svc.resolve(existing.id, actor=actor, text=update_text, session=session)
            verb = "resolved"
        else:
            out = await svc.update(existing.id, actor=actor, text=update_text, session=session)
            verb = "updated"
        if out.held:  # a flapping incident recorded it without paging (core/flapping.py)
            verb = "held"
        return EventResult(action=verb, incident=existing.ref, incident_id=existing.id,
                           severity=existing.severity, queued=out.queued, rules=rules,
                           note=out.note if out.held else "")

    # `open` always opens; `auto` opens when no incident with this correlation key is open.
    sev = pick_severity(cfg, rule=decision.severity, payload=payload_sev, invalid=invalid)
    route = route_event(event, source=source, severity=sev)
    out = await svc.declare(actor=actor, title=title, severity=sev, description=description, source=source,
                            labels=route.labels, payload=event.payload, correlation_key=correlation,
                            event_type=event.event_type, session=session)
    inc = out.incident
    if out.held:
        return EventResult(action="held", severity=sev, rules=rules, note=out.note)
    if out.suppressed_by is not None or inc is None:
        return EventResult(action="suppressed", severity=sev, rules=rules, note=out.note)
    return EventResult(action="opened", incident=inc.ref, incident_id=inc.id, severity=sev, queued=out.queued,
                       rules=rules)


@api_handler
async def post_event(request: web.Request) -> web.StreamResponse:
    """Authenticate (401), authorize (403) before reading the body, then validate (413/400) and apply."""
    ctx = context(request)
    actor = api_actor(request, ctx.cfg)
    require(ctx.cfg, actor, Permission.SEND_INCIDENTS)
    event = await parse_body(request, InboundEvent)
    response = await ingest(ctx, event, actor=actor)
    return json_response(response, status=202 if response.status == "accepted" else 200)
