"""Prometheus metrics, defined once. Counters/histograms are bumped where things happen; gauges that
describe database state (queue depth, incidents by state) are refreshed from the database at scrape time,
so they are right with any number of worker tasks or processes."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_RECEIVED = Counter("tocsin_events_received_total", "Events received (incident actions and inbound events); "
                          "outcome=duplicate for a replay that changed nothing (an event_id seen before, "
                          "an Alertmanager repeat of an unchanged group)", ["event_type", "outcome"],
                          registry=REGISTRY)
DELIVERIES = Counter("tocsin_deliveries_total", "Delivery outcomes (final and per attempt retry)",
                     ["channel", "status"], registry=REGISTRY)
DELIVERY_LATENCY = Histogram("tocsin_delivery_latency_seconds", "Time from queueing (declare) to delivered",
                             ["channel"], registry=REGISTRY,
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900))
RETRIES = Counter("tocsin_retries_total", "Retries scheduled", ["channel", "reason"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("tocsin_queue_depth", "Deliveries by status", ["status"], registry=REGISTRY)
INCIDENTS = Gauge("tocsin_incidents", "Incidents by state", ["state"], registry=REGISTRY)
ESCALATIONS = Counter("tocsin_escalations_total", "Escalations fired", ["level"], registry=REGISTRY)
AUDIT_ENTRIES = Counter("tocsin_audit_entries_total", "Audit entries appended by this process", registry=REGISTRY)
ALERTS = Counter("tocsin_internal_alerts_total", "Internal alerts (a page failed for good)", ["channel", "status"],
                 registry=REGISTRY)
HEARTBEAT_AGE = Gauge("tocsin_heartbeat_last_ping_age_seconds", "Seconds since each heartbeat's last ping "
                      "(since it was added, if it never pinged)", ["heartbeat"], registry=REGISTRY)
HEARTBEAT_MISSED = Gauge("tocsin_heartbeat_missed", "1 while the heartbeat is missed (its incident is open)",
                         ["heartbeat"], registry=REGISTRY)
MAINTENANCE_SUPPRESSED = Counter("tocsin_maintenance_suppressed_total", "What maintenance windows suppressed: "
                                 "kind=event (an inbound event opened or paged nothing), kind=escalation "
                                 "(an open incident's escalation was paused)", ["kind"], registry=REGISTRY)
MAINTENANCE_ACTIVE = Gauge("tocsin_maintenance_windows_active", "Maintenance windows active now",
                           registry=REGISTRY)
FLAPPING_HELD = Counter("tocsin_flapping_held_total", "Inbound events a flapping incident recorded without paging: "
                        "kind=resolve (a resolve held, the incident stays open), kind=fire (a re-fire or update)",
                        ["kind"], registry=REGISTRY)
INCIDENTS_FLAPPING = Gauge("tocsin_incidents_flapping", "Open incidents marked flapping (held open until stable)",
                           registry=REGISTRY)
