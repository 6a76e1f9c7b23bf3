"""Shared by the benchmarks: one table format (figure, value, target, pass/fail)."""
from __future__ import annotations

from typing import Any


def print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    if title:
        print(f"\n== {title}")
    w = max([len(str(r["figure"])) for r in rows] + [6])
    print(f"{'figure':<{w}}  {'value':>14}  {'target':<14}  result")
    print("-" * (w + 40))
    for r in rows:
        passed = r.get("passed")
        verdict = "-" if passed is None else ("PASS" if passed else "FAIL")
        value = r["value"]
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        print(f"{r['figure']:<{w}}  {shown:>14}  {str(r.get('target') or ''):<14}  {verdict}")
