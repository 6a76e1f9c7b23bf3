"""The issue's 'done when', as a user would do it: the real `tocsin` CLI in a subprocess."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tocsin(tmp: Path, *args: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TOCSIN_CONFIG=str(ROOT / "config.yaml"),
               TOCSIN_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'tocsin.db'}", USER=user, LOGNAME=user)
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=60)


def test_declare_list_ack_resolve_verify_then_tamper(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    r = tocsin(tmp_path, "incident", "declare", "sev2", "Checkout", "is", "failing")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("declared INC-1 [sev2] Checkout is failing")
    r = tocsin(tmp_path, "incident", "list")
    assert "INC-1" in r.stdout and "open" in r.stdout
    r = tocsin(tmp_path, "incident", "ack", "INC-1")
    assert r.returncode == 0 and "acknowledged by cli:alice" in r.stdout
    r = tocsin(tmp_path, "--as", "bob", "incident", "resolve", "INC-1", "fixed")
    assert r.returncode == 0, r.stderr
    r = tocsin(tmp_path, "incident", "show", "INC-1")
    assert "resolved" in r.stdout and "acknowledged by cli:alice" in r.stdout
    r = tocsin(tmp_path, "audit", "verify")
    assert r.returncode == 0 and "OK: audit chain intact, 3 entries" in r.stdout
    r = tocsin(tmp_path, "audit", "show", "--incident", "INC-1")
    assert r.stdout.count("INC-1") == 3

    with sqlite3.connect(tmp_path / "tocsin.db") as db:
        db.execute("UPDATE audit_log SET details = '{\"title\":\"nothing happened\"}' WHERE seq = 2")
    r = tocsin(tmp_path, "audit", "verify")
    assert r.returncode == 1
    assert "BROKEN at entry 2" in r.stderr and "edited" in r.stderr


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    r = tocsin(tmp_path, "incident", "update", "INC-9", "hello")
    assert r.returncode == 1 and r.stderr.strip() == "error: no incident INC-9"
    r = tocsin(tmp_path, "incident", "declare", "sev9", "x")
    assert r.returncode == 1 and "unknown severity 'sev9'" in r.stderr
    r = tocsin(tmp_path, "--as", "slack:UNKNOWN", "incident", "declare", "sev1", "x")
    assert r.returncode == 1 and "has role VIEWER" in r.stderr
    r = tocsin(tmp_path, "incident", "frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("routing:\n  rules:\n    - name: x\n      min_severity: sev9\n")
    r = tocsin(tmp_path, "--config", str(bad), "incident", "list")
    assert r.returncode == 1 and f"{bad}:4 routing.rules[0].min_severity" in r.stderr
