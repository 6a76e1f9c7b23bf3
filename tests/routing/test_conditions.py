"""Condition operators, table-driven: matches, non-matches, type mismatches and missing fields; bad
conditions are refused when the config loads, with file:line."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from core.config import Condition, loads
from core.errors import ConfigError
from core.routing import check_condition, lookup

EVENT: dict[str, Any] = {
    "event_type": "alert", "severity": "sev2", "source": "api",
    "payload": {"verdict": "malicious", "score": 87, "ratio": "0.25", "ok": True, "tags": ["db", "prod"],
                "nested": {"host": "db-1.example.com"}, "empty": None, "items": [{"id": 7}]},
    "labels": {"team": "payments", "app.kubernetes.io/name": "checkout"},
    "metadata": {},
}

CASES = [
    # field, operator, value, expected
    ("payload.verdict", "eq", "malicious", True),
    ("payload.verdict", "eq", "benign", False),
    ("payload.score", "eq", 87, True),
    ("payload.score", "eq", "87", True),            # YAML/JSON scalars compare by their text
    ("payload.score", "eq", 87.0, True),
    ("payload.ok", "eq", True, True),
    ("payload.ok", "eq", "true", True),
    ("payload.ok", "eq", 1, False),                  # a boolean is not the number 1
    ("payload.tags", "eq", ["db", "prod"], True),
    ("payload.tags", "eq", "['db', 'prod']", False),  # a list never equals its string form
    ("payload.verdict", "ne", "benign", True),
    ("payload.verdict", "ne", "malicious", False),
    ("payload.missing", "ne", "x", False),            # missing never matches, ne included
    ("payload.score", "gt", 80, True),
    ("payload.score", "gt", 87, False),
    ("payload.score", "gte", 87, True),
    ("payload.score", "lt", 100, True),
    ("payload.score", "lte", 86, False),
    ("payload.ratio", "lt", 0.5, True),               # numeric strings compare as numbers
    ("payload.verdict", "gt", 1, False),              # type mismatch: not a number
    ("payload.ok", "gt", 0, False),                   # booleans are not numbers
    ("payload.tags", "gte", 1, False),
    ("labels.team", "in", ["payments", "search"], True),
    ("labels.team", "in", ["search"], False),
    ("payload.score", "in", ["87", 12], True),
    ("labels.team", "not_in", ["search"], True),
    ("labels.team", "not_in", ["payments"], False),
    ("labels.missing", "not_in", ["payments"], False),
    ("payload.verdict", "contains", "lic", True),
    ("payload.verdict", "contains", "xyz", False),
    ("payload.tags", "contains", "prod", True),
    ("payload.tags", "contains", "staging", False),
    ("payload.nested", "contains", "host", True),     # an object contains its keys
    ("payload.score", "contains", "8", False),        # a number is not searched as text
    ("payload.verdict", "contains", ["lic"], False),  # a list is not searched for in a string
    ("payload.nested", "contains", ["host"], False),  # unhashable value: a non-match, not a TypeError
    ("payload.nested.host", "regex", r"^db-\d+\.", True),
    ("payload.nested.host", "regex", r"^web-", False),
    ("payload.score", "regex", r"^8\d$", True),
    ("payload.tags", "regex", "db", False),           # not a string
    ("payload.empty", "regex", ".*", False),
    ("payload.verdict", "exists", None, True),
    ("payload.verdict", "exists", True, True),
    ("payload.verdict", "exists", False, False),
    ("payload.missing", "exists", None, False),
    ("payload.missing", "exists", False, True),
    ("payload.empty", "exists", True, False),         # null counts as absent
    ("payload.items.0.id", "eq", 7, True),            # list index in a path
    ("payload.items.3.id", "eq", 7, False),
    ("labels.app.kubernetes.io/name", "eq", "checkout", True),  # dotted label names need no escaping
    ("severity", "eq", "sev2", True),
    ("payload.verdict.deeper", "eq", "x", False),     # path through a string
]


@pytest.mark.parametrize(("field", "op", "value", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]!r}" for c in CASES])
def test_operator_table(field: str, op: str, value: Any, expected: bool) -> None:
    ok, why = check_condition(Condition(field=field, operator=op, value=value), EVENT)
    assert ok is expected, why
    assert why  # every decision comes with a reason


def test_missing_field_reason_names_the_field() -> None:
    ok, why = check_condition(Condition(field="payload.nope", operator="eq", value=1), EVENT)
    assert not ok and why == "payload.nope is missing"


def test_type_mismatch_reason_says_so() -> None:
    ok, why = check_condition(Condition(field="payload.verdict", operator="gt", value=3), EVENT)
    assert not ok and "not comparable as numbers" in why


def test_lookup_missing_vs_null() -> None:
    from core.routing import _MISSING

    assert lookup(EVENT, "payload.empty") is None
    assert lookup(EVENT, "payload.nothing") is _MISSING
    assert lookup(EVENT, "labels.team") == "payments"


def _config_with_condition(cond: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "contacts": [{"name": "a", "email": "a@example.com"}],
        "contact_lists": [{"name": "l", "members": ["a"]}],
        "routing": {"rules": [
            {"name": "first", "targets": {"lists": ["l"]}},
            {"name": "second", "conditions": [{"field": "payload.x", "operator": "eq", "value": 1}, cond],
             "targets": {"lists": ["l"]}},
        ]},
    }, sort_keys=False)


@pytest.mark.parametrize(("cond", "message"), [
    ({"field": "payload.x", "operator": "regex", "value": "(unclosed"}, "bad regex '(unclosed'"),
    ({"field": "payload.x", "operator": "regex", "value": r"(a)\1"}, "no backreferences or lookarounds"),
    ({"field": "payload.x", "operator": "regex", "value": "db(?=-prod)"}, "bad regex 'db(?=-prod)'"),
    ({"field": "payload.x", "operator": "regex", "value": "(?<!x)y"}, "no backreferences or lookarounds"),
    ({"field": "payload.x", "operator": "regex", "value": 5}, "regex needs a string value"),
    ({"field": "payload.x", "operator": "in", "value": "a"}, "in needs a list value"),
    ({"field": "payload.x", "operator": "not_in", "value": 3}, "not_in needs a list value"),
    ({"field": "payload.x", "operator": "gt", "value": "high"}, "gt needs a number"),
    ({"field": "payload.x", "operator": "lte", "value": True}, "lte needs a number"),
    ({"field": "payload.x", "operator": "exists", "value": "yes"}, "exists takes true, false or no value"),
    ({"field": "payload.x", "operator": "like", "value": "a"}, "must be"),
])
def test_bad_conditions_are_refused_at_load_with_file_and_line(cond: dict[str, Any], message: str) -> None:
    text = _config_with_condition(cond)
    with pytest.raises(ConfigError) as exc:
        loads(text, filename="routes.yaml", env={})
    (problem,) = exc.value.problems
    lines = text.splitlines()
    # the reported line is inside the second rule's second condition
    line_no = int(problem.split(":")[1].split()[0])
    second_cond = max(i for i, ln in enumerate(lines, 1) if ln.strip().startswith("- field: payload.x"))
    assert problem.startswith("routes.yaml:") and second_cond <= line_no <= second_cond + 2, (problem, lines)
    assert "routing.rules[1].conditions[1]" in problem and message in problem


def test_numeric_string_threshold_is_accepted() -> None:
    cfg = loads(_config_with_condition({"field": "payload.score", "operator": "gte", "value": "90"}), env={})
    assert cfg.routing.rules[1].conditions[1].value == "90"
