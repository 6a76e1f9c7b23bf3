"""GET /metrics in Prometheus text format, plus the hooks that bump the process-local counters.

Gauges that describe database state (deliveries by status, incidents by state) are computed from the
database at scrape time, so every process reports the same, right numbers however many workers run.
Counters count what happened in this process; Prometheus sums them across instances.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select

from bot.server import Provided
from core.clock import Clock, SystemClock, utc
from core.metrics import (
    AUDIT_ENTRIES,
    EVENTS_RECEIVED,
    HEARTBEAT_AGE,
    HEARTBEAT_MISSED,
    INCIDENTS,
    INCIDENTS_FLAPPING,
    MAINTENANCE_ACTIVE,
    QUEUE_DEPTH,
    REGISTRY,
)
from core.models import Delivery, HeartbeatState, Incident, MaintenanceWindow

if TYPE_CHECKING:
    from bot.server import Runtime
    from core.audit.log import Appended, AuditLog
    from core.db import Database
    from core.events import IncidentEvent

log = logging.getLogger("tocsin.metrics")

QUEUE_STATUSES = ("queued", "sending", "delivered", "failed", "dead", "cancelled")
"""Always exported (as 0 when empty), so an alert on `tocsin_queue_depth{status="dead"} > 0` has a series."""
INCIDENT_STATES = ("open", "monitoring", "resolved")


async def refresh_gauges(db: Database, clock: Clock | None = None) -> None:
    """Set the database-state gauges from one read. Statuses no longer present drop to 0."""
    now = (clock or SystemClock()).now()
    async with db.engine.connect() as conn:
        active = (await conn.execute(select(func.count()).select_from(MaintenanceWindow).where(
            MaintenanceWindow.ended_at.is_(None), MaintenanceWindow.starts_at <= now))).scalar_one()
        beats = (await conn.execute(select(HeartbeatState.name, HeartbeatState.last_ping_at,
                                           HeartbeatState.incident_id))).all()
        queue = {status: n for status, n in (await conn.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status))).all()}
        states = {state: n for state, n in (await conn.execute(
            select(Incident.state, func.count()).group_by(Incident.state))).all()}
        flapping = (await conn.execute(select(func.count()).select_from(Incident).where(
            Incident.flapping_until.is_not(None), Incident.state != "resolved"))).scalar_one()
    for status in sorted(set(QUEUE_STATUSES) | set(queue)):
        QUEUE_DEPTH.labels(status=status).set(int(queue.get(status, 0)))
    for state in sorted(set(INCIDENT_STATES) | set(states)):
        INCIDENTS.labels(state=state).set(int(states.get(state, 0)))
    MAINTENANCE_ACTIVE.set(int(active))
    INCIDENTS_FLAPPING.set(int(flapping))
    HEARTBEAT_AGE.clear()
    HEARTBEAT_MISSED.clear()
    for name, last, incident_id in beats:
        if last is not None:
            HEARTBEAT_AGE.labels(heartbeat=name).set((now - utc(last)).total_seconds())  # type: ignore[operator]
        HEARTBEAT_MISSED.labels(heartbeat=name).set(1 if incident_id is not None else 0)


class MetricsEndpoint:
    """The /metrics handler. One scrape at a time refreshes the gauges (concurrent scrapes share it)."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock
        self._lock = asyncio.Lock()

    async def handle(self, request: web.Request) -> web.Response:
        # Prometheus text by default; OpenMetrics when the scraper asks for it.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        async with self._lock:
            try:
                await refresh_gauges(self.db, self.clock)
            except Exception:
                # Stale gauges would look like real numbers: drop them, keep the counters, say why.
                log.warning("metrics.refresh.failed", exc_info=True)
                QUEUE_DEPTH.clear()
                INCIDENTS.clear()
                HEARTBEAT_AGE.clear()
                HEARTBEAT_MISSED.clear()
            body = encoder(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": content_type})


def count_event(event: IncidentEvent) -> None:
    """IncidentService listener: one tocsin_events_received_total per incident action, after commit."""
    EVENTS_RECEIVED.labels(event_type=event.kind, outcome="accepted").inc()


def count_audit_entries(audit: AuditLog) -> None:
    """Chain AuditLog.on_append so tocsin_audit_entries_total follows appends (keeping any earlier hook)."""
    previous = audit.on_append
    if getattr(previous, "_tocsin_counts_audit", False):
        return

    def on_append(entry: Appended) -> None:
        AUDIT_ENTRIES.inc()
        if previous is not None:
            previous(entry)

    on_append._tocsin_counts_audit = True  # type: ignore[attr-defined]
    audit.on_append = on_append


def mount_metrics(rt: Runtime) -> Provided:
    """Server mount: the /metrics route and the counter hooks on the incident service and audit log."""
    endpoint = MetricsEndpoint(rt.ctx.db, rt.ctx.clock)
    rt.app.router.add_get("/metrics", endpoint.handle)
    rt.ctx.service.events.subscribe(count_event)
    count_audit_entries(rt.ctx.audit)
    if rt.ctx.service.audit is not rt.ctx.audit:
        count_audit_entries(rt.ctx.service.audit)
    return Provided()
