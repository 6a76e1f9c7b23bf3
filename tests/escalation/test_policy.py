"""Escalation policy (core/escalation_policy.py): the pure progression through a policy snapshot
(levels, rounds, repeat, manual past the end)."""
from __future__ import annotations

from typing import Any

import pytest

from core.escalation_policy import next_step

SNAP: dict[str, Any] = {"name": "p", "repeat": 1, "levels": [
    {"wait_minutes": 5, "targets": {"lists": ["a"]}},
    {"wait_minutes": 10, "targets": {"lists": ["b"]}},
    {"wait_minutes": 15, "targets": {"lists": ["c"]}},
]}


@pytest.mark.parametrize(("level", "rnd", "manual", "expected"), [
    # (level paged so far, round) -> (level paged now, round, targets, wait before the next step)
    (0, 0, False, (1, 0, ["a"], 10.0)),
    (1, 0, False, (2, 0, ["b"], 15.0)),
    (2, 0, False, (3, 0, ["c"], 5.0)),     # last level of round 1; repeat=1 -> level 1 again in 5 min
    (3, 0, False, (1, 1, ["a"], 10.0)),    # round 2 starts over
    (2, 1, False, (3, 1, ["c"], None)),    # last level of the last round: nothing after
    (3, 1, False, None),                   # exhausted: the timer has nothing to fire
    (3, 1, True, (3, 1, ["c"], None)),     # a manual escalation re-pages the last level
])
def test_progression(level: int, rnd: int, manual: bool, expected: tuple[Any, ...] | None) -> None:
    step = next_step(SNAP, level=level, round=rnd, manual=manual)
    if expected is None:
        assert step is None
        return
    assert step is not None
    assert (step.level, step.round, step.targets["lists"], step.next_wait_minutes) == expected
    assert step.levels == 3 and step.rounds == 2 and step.index == step.level - 1


def test_total_fires_is_levels_times_rounds() -> None:
    level, rnd, fired = 0, 0, []
    while (step := next_step(SNAP, level=level, round=rnd, manual=False)) is not None:
        fired.append((step.round + 1, step.level))
        level, rnd = step.level, step.round
        if step.next_wait_minutes is None:
            break
    assert fired == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]


@pytest.mark.parametrize("snap", [None, {}, {"levels": []}])
def test_no_policy(snap: Any) -> None:
    assert next_step(snap, level=0, round=0, manual=True) is None
