"""Escalation fixtures: a routing rule that picks policy `p`, contexts on the real clock, and escalators
that are always closed."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.context import Context
from core.clock import SystemClock
from core.escalation import Escalator


def policy_config(*waits: float, repeat: int = 0,
                  targets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Rule `major` (sev2+, declare only) pages oncall and picks policy `p` with these waits (minutes).
    Level targets default to: leads (carol), then bob, then alice."""
    default = [{"lists": ["leads"]}, {"contacts": ["bob"]}, {"contacts": ["alice"]}]
    levels = [{"wait_minutes": w, "targets": (targets or default)[i % len(targets or default)]}
              for i, w in enumerate(waits)]
    return {
        "routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
            {"name": "major", "event_types": ["declare"], "min_severity": "sev2",
             "targets": {"lists": ["oncall"]}, "escalation_policy": "p"}]},
        "escalation_policies": [{"name": "p", "levels": levels, "repeat": repeat}],
    }


@pytest.fixture
def real_ctx(make_ctx: Callable[..., Any]) -> Callable[..., Any]:
    """Factory: a Context on the system clock (for the APScheduler timing tests)."""

    async def factory(**overrides: Any) -> Context:
        return await make_ctx(clock=SystemClock(), **overrides)

    return factory


@pytest.fixture
async def escalators() -> AsyncIterator[Callable[..., Any]]:
    """Factory: a started (or not) Escalator that is closed at the end of the test."""
    made: list[Escalator] = []

    async def factory(ctx: Context, *, start: bool = True, **kwargs: Any) -> Escalator:
        esc = Escalator(ctx.service, **kwargs)
        if start:
            await esc.start()
        made.append(esc)
        return esc

    yield factory
    for e in made:
        if e.scheduler is not None:
            await e.close()
