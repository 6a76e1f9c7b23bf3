"""Storms page once: a rule with min_occurrences N within T opens one incident at the N-th matching event
(the count shown on it); fewer, or spread wider than T, open nothing. Frozen clock; SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from core.config import loads
from core.errors import ConfigError
from core.models import Delivery, Incident
from core.rbac import Actor

API = Actor("api:alertmanager", "10.0.0.1")  # an inbound system caller (role operator)
RULES = {"routing": {"default_targets": {"lists": ["oncall"]}, "rules": [
    {"name": "flaky-disk", "sources": ["monitor"], "min_occurrences": 3, "within": "10m",
     "targets": {"lists": ["leads"]}}]}}


@pytest.mark.parametrize("gaps_minutes, opened_at", [
    ([0, 1, 1], 3),           # three within 10m: opens at the third
    ([0, 1], None),           # two: held
    ([0, 6, 6], None),        # spread over 12m: never three within 10m
    ([0, 6, 6, 1], 4),        # the 2nd, 3rd and 4th are within 10m
    ([0, 1, 1, 1, 1], 3),     # opens once at the third; the 4th and 5th count again from zero
])
async def test_min_occurrences_table(make_ctx: Callable[..., Any], gaps_minutes: list[int],
                                     opened_at: int | None) -> None:
    ctx = await make_ctx(**RULES)
    outcomes = []
    for gap in gaps_minutes:
        ctx.clock.advance(minutes=gap)
        out = await ctx.service.declare(actor=API, title="disk errors on db1", severity="sev2", source="monitor",
                                        event_type="disk", correlation_key="evt:t:disk-db1")
        outcomes.append(out)
    opened = [i + 1 for i, o in enumerate(outcomes) if o.incident is not None]
    assert opened == ([] if opened_at is None else [opened_at])
    assert all(o.held for o in outcomes if o.incident is None)
    async with ctx.db.sessions() as s:
        incidents = list((await s.execute(select(Incident))).scalars())
        paged = int((await s.execute(select(func.count()).select_from(Delivery))).scalar_one())
    assert len(incidents) == len(opened)
    if opened:
        assert incidents[0].description.startswith("Opened after 3 matching events within 10m (rule flaky-disk).")
        assert incidents[0].labels["occurrences"] == "3" and paged > 0
    else:
        assert paged == 0
        assert "of 3 matching events within 10m" in outcomes[-1].note


async def test_people_and_other_sources_are_not_held(make_ctx: Callable[..., Any]) -> None:
    ctx = await make_ctx(**RULES)
    assert (await ctx.service.declare(actor=Actor("cli:op"), title="x", severity="sev2", source="monitor")).incident
    assert (await ctx.service.declare(actor=API, title="x", severity="sev2", source="other")).incident


def test_min_occurrences_needs_within() -> None:
    with pytest.raises(ConfigError) as err:
        loads("routing:\n  rules:\n    - name: r\n      min_occurrences: 3\n", filename="c.yaml", env={})
    assert "c.yaml:3 routing.rules[0]: min_occurrences needs `within`" in str(err.value)
