"""POST /api/v1/alertmanager: Prometheus Alertmanager's webhook receiver (payload version 4).

One incident per alert group (groupKey). Alertmanager re-sends a group every group_interval and
repeat_interval, so the group's state (its incident and the fingerprints that were firing) is kept in
seen_keys: a notification only adds an UPDATE when the set of firing alerts changed, and `resolved`
resolves the incident. The state and the incident change commit in one transaction.
"""
from __future__ import annotations

import logging
from typing import Any, Literal

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.api.auth import alertmanager_actor
from core.seen import bounded_key, lock_keys, recall, remember
from bot.api.http import ApiError, api_handler, context, json_response, parse_body
from bot.api.schemas import AlertmanagerResponse, AlertmanagerResult, AlertmanagerWebhook, AmAlert
from bot.context import Context
from core.config import SEVERITIES, Config, normalize_severity
from core.heartbeats import Heartbeats
from core.incidents import RESOLVED
from core.metrics import EVENTS_RECEIVED
from core.models import Incident
from core.rbac import Actor, Permission, require
from core.routing import RouteEvent, plan, sev_rank
from core.validation import TITLE_MAX

log = logging.getLogger("tocsin.api.alertmanager")

EVENT_TYPE = "alertmanager"
"""The event type routing rules see for Alertmanager notifications (and the metrics label)."""
LISTED_ALERTS = 20

Decision = Literal["open", "update", "resolve", "unchanged", "ignore"]


def firing_alerts(hook: AlertmanagerWebhook) -> list[AmAlert]:
    """The alerts still firing; a `resolved` notification has none, whatever its alerts say."""
    if hook.status == "resolved":
        return []
    return [a for a in hook.alerts if a.status == "firing"]


def decide(*, firing: set[str], known: set[str] | None, incident_open: bool) -> Decision:
    """What a notification does to its group's incident.

    `known` is the firing set we acted on last (None for a group never seen). A repeat of the same set
    is `unchanged`, also after a person resolved the incident by hand: the same alerts still firing do
    not reopen it, but a changed set opens a new incident.
    """
    if not firing:
        return "resolve" if incident_open else "ignore"
    if known is not None and firing == known:
        return "unchanged"
    return "update" if incident_open else "open"


def map_severity(cfg: Config, value: str | None) -> str | None:
    """A severity label value through alertmanager.severity_map (any case), else sev1..4 or its aliases."""
    if not value:
        return None
    v = value.strip().lower()
    mapping = {k.strip().lower(): sev for k, sev in cfg.alertmanager.severity_map.items()}
    if v in mapping:
        return mapping[v]
    sev = normalize_severity(v)
    return sev if sev in SEVERITIES else None


def severity_of(cfg: Config, hook: AlertmanagerWebhook) -> str:
    """The most severe mapped severity label among the firing alerts (all alerts when none fire) and the
    common labels; alertmanager.default_severity when none maps."""
    label = cfg.alertmanager.severity_label
    alerts = firing_alerts(hook) or hook.alerts
    values = [a.labels.get(label) for a in alerts] + [hook.commonLabels.get(label)]
    found = [s for s in (map_severity(cfg, v) for v in values) if s]
    return min(found, key=sev_rank) if found else cfg.alertmanager.default_severity


def _labels_text(labels: dict[str, str], *, skip: tuple[str, ...] = ("alertname",)) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip)


def alert_line(alert: AmAlert) -> str:
    """One alert: name, fingerprint and every label, so a person can find it in Alertmanager."""
    name = alert.labels.get("alertname", "alert")
    labels = _labels_text(alert.labels, skip=())
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    line = (f"- {name} [{alert.fingerprint}]" + (f" {{{labels}}}" if labels else "")
            + (f": {summary}" if summary else ""))
    return line + (f" <{alert.generatorURL}>" if alert.generatorURL else "")


def _listing(alerts: list[AmAlert]) -> list[str]:
    lines = [alert_line(a) for a in alerts[:LISTED_ALERTS]]
    if len(alerts) > LISTED_ALERTS:
        lines.append(f"... and {len(alerts) - LISTED_ALERTS} more")
    return lines


def title_of(hook: AlertmanagerWebhook) -> str:
    name = hook.groupLabels.get("alertname") or hook.commonLabels.get("alertname") or "Alertmanager alerts"
    group = _labels_text(hook.groupLabels)
    summary = hook.commonAnnotations.get("summary")
    title = name + (f" ({group})" if group else "") + (f": {summary}" if summary else "")
    # composed by us from labels: cut to the shared limit rather than refuse a page over its length
    return title if len(title) <= TITLE_MAX else title[:TITLE_MAX - 3] + "..."


def _footer(hook: AlertmanagerWebhook) -> list[str]:
    out = []
    if hook.truncatedAlerts:
        out.append(f"({hook.truncatedAlerts} more alerts were left out by Alertmanager's max_alerts)")
    if hook.externalURL:
        out.append(f"Alertmanager: {hook.externalURL}")
    return out


def description_of(hook: AlertmanagerWebhook, firing: list[AmAlert]) -> str:
    head = [f"{len(firing)} alert(s) firing in group {hook.groupKey}"]
    return "\n".join(head + _listing(firing) + _footer(hook))


def change_text(hook: AlertmanagerWebhook, firing: list[AmAlert], known: set[str]) -> str:
    """The UPDATE for a changed firing set: what started, what stopped, what still fires."""
    now = {a.fingerprint for a in firing}
    started = [a for a in firing if a.fingerprint not in known]
    stopped = [a for a in hook.alerts if a.fingerprint in known and a.fingerprint not in now]
    gone = len(known - now)
    lines = [f"Firing alerts changed: {len(started)} new, {gone} no longer firing, {len(now)} firing now."]
    if started:
        lines += ["New:"] + _listing(started)
    if stopped:
        lines += ["Resolved:"] + _listing(stopped)
    return "\n".join(lines + _footer(hook))


def _payload(hook: AlertmanagerWebhook, firing: list[AmAlert]) -> dict[str, Any]:
    """What the incident keeps of the notification (routing rules see it as payload.*)."""
    return {"group_key": hook.groupKey, "receiver": hook.receiver, "status": hook.status,
            "external_url": hook.externalURL, "group_labels": hook.groupLabels,
            "common_annotations": hook.commonAnnotations, "firing": len(firing),
            "truncated_alerts": hook.truncatedAlerts}


async def watchdog(ctx: Context, hook: AlertmanagerWebhook) -> tuple[AlertmanagerWebhook, str | None]:
    """With alertmanager.watchdog.heartbeat set: a firing Watchdog alert pings that heartbeat, and the
    Watchdog alerts are taken out of the notification (they never open an incident). Returns the rest and
    what was done with the Watchdog, if it was there."""
    dog = ctx.cfg.alertmanager.watchdog
    if not dog.heartbeat:
        return hook, None
    dogs = [a for a in hook.alerts if a.labels.get("alertname") == dog.alertname]
    if not dogs:
        return hook, None
    rest = hook.model_copy(update={"alerts": [a for a in hook.alerts if a not in dogs]})
    if hook.status == "firing" and any(a.status == "firing" for a in dogs):
        result = await Heartbeats(ctx.service).ping(dog.heartbeat, via=f"alertmanager {dog.alertname}")
        note = f"{dog.alertname} counted as a ping of heartbeat {dog.heartbeat!r}"
        return rest, note + (f"; it recovered {result.recovered}" if result.recovered else "")
    return rest, f"{dog.alertname} resolved: not a ping; heartbeat {dog.heartbeat!r} will be missed"


async def receive(ctx: Context, hook: AlertmanagerWebhook, *, actor: Actor) -> AlertmanagerResponse:
    """Apply one Alertmanager notification to its group's incident."""
    hook, dog_note = await watchdog(ctx, hook)
    if dog_note is not None and not hook.alerts:
        EVENTS_RECEIVED.labels(event_type=EVENT_TYPE, outcome="heartbeat").inc()
        return AlertmanagerResponse(status="accepted", group_key=hook.groupKey,
                                    result=AlertmanagerResult(action="heartbeat", note=dog_note))
    group_key = bounded_key("am", hook.groupKey)
    firing = firing_alerts(hook)
    log.info("notify.event.received", extra={"event_type": EVENT_TYPE, "event_id": hook.groupKey,
                                             "source": "alertmanager", "status": hook.status,
                                             "alerts": len(hook.alerts), "actor": actor.identity})
    async with ctx.db.grouped() as s:  # group commit: shares a transaction with concurrent writes
        await lock_keys(s, group_key)
        result = await _apply(ctx, hook, firing, actor=actor, group_key=group_key, session=s)
    await ctx.service.events.publish_pending(s)
    EVENTS_RECEIVED.labels(event_type=EVENT_TYPE,
                           outcome="duplicate" if result.action == "unchanged" else "accepted").inc()
    return AlertmanagerResponse(status="accepted", group_key=hook.groupKey, result=result)


async def _apply(ctx: Context, hook: AlertmanagerWebhook, firing: list[AmAlert], *, actor: Actor,
                 group_key: str, session: AsyncSession) -> AlertmanagerResult:
    cfg, svc = ctx.cfg, ctx.service
    row = await recall(session, group_key)
    state: dict[str, Any] = dict(row.result) if row else {}
    known = set(state.get("fingerprints", [])) if row else None
    inc = await session.get(Incident, state["incident_id"]) if state.get("incident_id") else None
    incident_open = inc is not None and inc.state != RESOLVED
    now_firing = {a.fingerprint for a in firing}

    severity = severity_of(cfg, hook)
    payload = _payload(hook, firing)
    route = RouteEvent(event_type=EVENT_TYPE, severity=severity, source="alertmanager", payload=payload,
                       labels=dict(hook.commonLabels), metadata={
                           "receiver": hook.receiver, "group_key": hook.groupKey, "status": hook.status})
    choice = plan(cfg, route, now=ctx.clock.now())
    rules = [r.name for r in choice.matched_rules]
    severity = choice.severity or severity
    what = decide(firing=now_firing, known=known, incident_open=incident_open)
    base = {"severity": severity, "firing": len(now_firing), "rules": rules}

    async def keep(incident_id: int | None) -> None:
        await remember(session, group_key, now=ctx.clock.now(), result={
            "incident_id": incident_id, "fingerprints": sorted(now_firing), "status": hook.status})

    if what == "ignore":
        if row is not None:
            await keep(state.get("incident_id"))
        return AlertmanagerResult(action="ignored", note="no open incident for this group", **base)
    if what == "unchanged":
        return AlertmanagerResult(action="unchanged", incident=inc.ref if inc else None,
                                  incident_id=inc.id if inc else None,
                                  note="the same alerts are firing; nothing new to say", **base)
    if what == "resolve" and inc is not None:
        out = await svc.resolve(inc.id, actor=actor, session=session,
                                text="All alerts of the group resolved (Alertmanager).\n"
                                     + "\n".join(_listing(hook.alerts)))
        await keep(inc.id)
        return AlertmanagerResult(action="held" if out.held else "resolved", incident=inc.ref, incident_id=inc.id,
                                  queued=out.queued, note=out.note if out.held else "", **base)
    if what == "update" and inc is not None:
        out = await svc.update(inc.id, actor=actor, text=change_text(hook, firing, known or set()),
                               session=session)
        await keep(inc.id)
        return AlertmanagerResult(action="held" if out.held else "updated", incident=inc.ref, incident_id=inc.id,
                                  queued=out.queued, note=out.note if out.held else "", **base)
    # open: a new group, a group that fires again after it resolved, or new alerts after a manual resolve.
    if choice.action == "notify":
        out = await svc.notify(actor=actor, text=f"{title_of(hook)}\n{description_of(hook, firing)}",
                               severity=severity, event_type=EVENT_TYPE, source="alertmanager",
                               payload=payload, labels=route.labels, metadata=route.metadata, session=session)
        if out.suppressed_by is not None:
            return AlertmanagerResult(action="suppressed", note=out.note, **base)
        await keep(None)
        return AlertmanagerResult(action="notified", queued=out.queued, **base)
    description = description_of(hook, firing)
    if inc is not None and inc.state == RESOLVED:
        # the group fired again after it resolved: a new incident that links the previous one
        description = f"Reopens {inc.ref} (the same Alertmanager group, resolved earlier).\n{description}"
        payload = {**payload, "previous_incident": inc.ref}
    out = await svc.declare(actor=actor, title=title_of(hook), severity=severity,
                            description=description, source="alertmanager",
                            labels=dict(hook.commonLabels), payload=payload, event_type=EVENT_TYPE,
                            correlation_key=bounded_key("am", hook.groupKey, limit=500), session=session)
    opened = out.incident
    if out.held:
        return AlertmanagerResult(action="held", note=out.note, **base)
    if out.suppressed_by is not None or opened is None:
        # not remembered: the group opens its incident on its first notification after the window
        return AlertmanagerResult(action="suppressed", note=out.note, **base)
    await keep(opened.id)
    return AlertmanagerResult(action="opened", incident=opened.ref, incident_id=opened.id, queued=out.queued,
                              **base)


@api_handler
async def post_alertmanager(request: web.Request) -> web.StreamResponse:
    """Authenticate (401) and authorize (403) before reading the body, then validate (413/400) and apply."""
    ctx = context(request)
    if not ctx.cfg.alertmanager.enabled:
        raise ApiError(404, "not_found", "the Alertmanager receiver is disabled (alertmanager.enabled)")
    actor = alertmanager_actor(request, ctx.cfg)
    require(ctx.cfg, actor, Permission.SEND_INCIDENTS)
    hook = await parse_body(request, AlertmanagerWebhook)
    return json_response(await receive(ctx, hook, actor=actor))
