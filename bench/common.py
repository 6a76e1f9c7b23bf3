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


class ChildPeer:
    """A loopback stand-in in its own process, so its work shares neither our event loop nor our CPU.
    `script` is Python that starts a server, prints its port, and serves until stdin closes."""

    def __init__(self, script: str, *, what: str) -> None:
        import os
        import subprocess
        import sys
        from pathlib import Path

        root = Path(__file__).resolve().parents[1]
        env = dict(os.environ, PYTHONPATH=str(root))
        self.proc = subprocess.Popen([sys.executable, "-c", script], cwd=str(root), env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"{what} did not start (said {line!r})")
        self.url = f"http://127.0.0.1:{int(line)}"

    def close(self) -> None:
        import subprocess

        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
