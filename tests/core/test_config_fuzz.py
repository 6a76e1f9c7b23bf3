"""Property: any YAML text gives a valid Config or a ConfigError whose every line names a location."""
from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Config, loads
from core.errors import ConfigError

LOCATION = re.compile(r"^fuzz\.yaml(:\d+)?[ :]")

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
keys = st.sampled_from(["server", "port", "host", "routing", "rules", "name", "min_severity", "contacts",
                        "email", "phone", "access", "slack:U1", "cli:*", "channels", "email", "retry",
                        "max_retries", "contact_lists", "members", "lists", "escalation_policies", "levels",
                        "wait_minutes", "targets", "conditions", "field", "operator", "value", "x"])
trees = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=4),
                     max_leaves=25)


def check(text: str) -> None:
    try:
        cfg = loads(text, filename="fuzz.yaml", env={})
    except ConfigError as exc:
        assert exc.problems
        for p in exc.problems:
            assert LOCATION.match(p), p
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, trees, max_size=5))
def test_any_mapping_validates_or_names_a_location(data: dict[str, object]) -> None:
    check(yaml.safe_dump(data))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_validates_or_names_a_location(text: str) -> None:
    check(text)
