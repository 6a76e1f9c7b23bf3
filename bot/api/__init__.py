"""HTTP API v1: inbound events, the Prometheus Alertmanager receiver and the incident read API."""
from __future__ import annotations

from bot.api.routes import ROUTES, mount

__all__ = ["ROUTES", "mount"]
