"""Test suite (a package, so `tests.stand_ins` and helpers import the same way under any runner)."""
