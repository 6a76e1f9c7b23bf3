"""Routing compiled once per config version (core.routing.compiled, Config.derive) and the by-name indexes
of the named sections (Config._named): reused while the config is the same, rebuilt for another version,
and giving exactly what a walk over the lists gives."""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import ContactList
from core.routing import expand_lists, list_members, rule_tests, rules_may_match
from tests.conftest import make_config
from tests.routing.test_plan import CONTACTS, LISTS, POLICY, RULES, cfg_with


def test_compiled_once_per_config_and_again_for_another_version() -> None:
    cfg = cfg_with(RULES, **POLICY)
    tests, members = rule_tests(cfg), list_members(cfg)
    assert rule_tests(cfg) is tests and list_members(cfg) is members
    assert [sorted(t.event_types) for t in tests] == [["declare", "update"], [], []]
    assert [t.min_rank for t in tests] == [None, 2, None]
    assert members["everyone"] == ("dave", "alice", "bob", "carol")
    # a copy that changes what routing reads (it shares the original's cache) compiles anew ...
    one_rule = cfg.routing.model_copy(update={"rules": cfg.routing.rules[:1]})
    narrower = cfg.model_copy(update={"routing": one_rule})
    assert len(rule_tests(narrower)) == 1
    lists = cfg.model_copy(update={"contact_lists": [ContactList(name="oncall", members=["carol"])]})
    assert list_members(lists) == {"oncall": ("carol",)}
    # ... and the original still gets its own (compiled again: the copy took the shared entry)
    assert rule_tests(cfg) == tests and list_members(cfg) == members
    # a copy that changes something else reuses it; a reload (a new Config) compiles its own
    tests = rule_tests(cfg)
    assert rule_tests(cfg.model_copy(update={"contacts": []})) is tests
    assert rule_tests(cfg_with(RULES, **POLICY)) is not tests


def test_rules_may_match() -> None:
    only_declares = cfg_with([{"name": "d", "event_types": ["declared"], "targets": {"lists": ["leads"]}}])
    assert rules_may_match(only_declares, "declare")
    assert not rules_may_match(only_declares, "escalation")
    assert rules_may_match(cfg_with(RULES, **POLICY), "escalate")  # `major` has no event types
    assert not rules_may_match(cfg_with([]), "declare")


def test_by_name_indexes_follow_the_section_and_keep_the_first_of_a_name() -> None:
    cfg = cfg_with(RULES, **POLICY)
    assert cfg.contact("bob") is cfg.contacts[1] and cfg.contact("nobody") is None
    assert cfg.contact_list("leads") is cfg.contact_lists[1]
    assert cfg.destination("war-room") is cfg.destinations[1]
    bob = cfg.contacts[1].model_copy(update={"email": "b@x"})
    other = cfg.model_copy(update={"contacts": [bob, bob.model_copy(update={"email": "second@x"})]})
    assert other.contact("bob") is bob and other.contact("alice") is None  # the first of a name
    assert cfg.contact("bob").email == "bob@example.com"  # type: ignore[union-attr]


def _walk_all(lists: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Reference: one walk over all the named lists with one set of lists seen (what expand_lists did
    before it read the compiled lists)."""
    by_name = {cl["name"]: cl for cl in lists}
    out: list[str] = []
    seen: set[str] = set()

    def walk(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        for m in by_name[name]["members"]:
            if m not in out:
                out.append(m)
        for sub in by_name[name]["lists"]:
            walk(sub)

    for n in names:
        walk(n)
    return out


@st.composite
def list_forests(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[str]]:
    """Up to 7 contact lists over 8 contacts, each including only lists defined after it (no cycles),
    and the names asked for (unknown ones too)."""
    n = draw(st.integers(1, 7))
    people = [c["name"] for c in CONTACTS] + ["frank", "gina", "hal"]
    lists = [{"name": f"l{i}", "members": draw(st.lists(st.sampled_from(people), max_size=5)),
              "lists": draw(st.lists(st.sampled_from([f"l{j}" for j in range(i + 1, n)] or ["l0"]),
                                     max_size=3)) if i + 1 < n else []}
             for i in range(n)]
    names = draw(st.lists(st.sampled_from([f"l{i}" for i in range(n)] + ["missing"]), min_size=1,
                          max_size=4))
    return lists, names


@settings(max_examples=150, deadline=None)
@given(list_forests())
def test_expanding_from_the_compiled_lists_equals_one_walk_over_them_all(
        forest: tuple[list[dict[str, Any]], list[str]]) -> None:
    lists, names = forest
    extra = [{"name": n} for n in ("frank", "gina", "hal")]
    cfg = make_config(contacts=CONTACTS + extra, contact_lists=lists,
                      routing={"default_targets": {"lists": ["l0"]}})
    assert expand_lists(cfg, names) == _walk_all(lists, names)


def test_expanding_the_sample_lists() -> None:
    cfg = make_config(contacts=CONTACTS, contact_lists=LISTS,
                      routing={"default_targets": {"lists": ["leads"]}})
    assert expand_lists(cfg, ["oncall", "everyone"]) == ["alice", "bob", "dave", "carol"]
    assert expand_lists(cfg, ["leads", "everyone", "nope"]) == ["carol", "dave", "alice", "bob"]
