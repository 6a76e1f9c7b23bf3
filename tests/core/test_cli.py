"""The issue's 'done when', as a user would do it: the real `tocsin` CLI in a subprocess."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_version(tmp_path: Path) -> None:
    r = tocsin(tmp_path, "--version")
    assert r.returncode == 0 and r.stdout.startswith("tocsin ") and r.stdout.split()[1][0].isdigit(), r


@pytest.mark.parametrize("args", [
    ("--help",), ("--version",), ("audit", "show"), ("audit", "verify"), ("incident", "list", "all"),
    ("incident", "show", "INC-1"), ("outbox",), ("config", "check"), ("route", "explain", "--incident", "INC-1"),
], ids=lambda a: " ".join(a))
def test_output_into_a_closed_pipe_ends_quietly(cli_db: Path, args: tuple[str, ...]) -> None:
    """`tocsin ... | head`: the reader is gone before the command writes; no traceback, no error line."""
    env = dict(os.environ, TOCSIN_CONFIG=str(ROOT / "config.yaml"),
               TOCSIN_DATABASE_URL=f"sqlite+aiosqlite:///{cli_db / 'tocsin.db'}")
    proc = subprocess.Popen([sys.executable, "-m", "bot", *args], cwd=cli_db, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err  # 141 = 128 + SIGPIPE, as a shell reports it


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    assert tocsin(tmp, "db", "upgrade").returncode == 0
    assert tocsin(tmp, "incident", "declare", "sev3", "Search", "is", "slow").returncode == 0
    return tmp


def test_user_add_without_a_terminal_points_at_password_stdin(cli_db: Path) -> None:
    r = tocsin(cli_db, "user", "add", "ada", "--role", "admin")  # stdin is not a terminal here
    assert r.returncode == 1 and "--password-stdin" in r.stderr and "Traceback" not in r.stderr, r.stderr
    env = dict(os.environ, TOCSIN_CONFIG=str(ROOT / "config.yaml"),
               TOCSIN_DATABASE_URL=f"sqlite+aiosqlite:///{cli_db / 'tocsin.db'}")
    r = subprocess.run([sys.executable, "-m", "bot", "user", "add", "ada", "--role", "admin", "--password-stdin"],
                       cwd=cli_db, env=env, input="a-long-password\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "user ada added" in r.stdout, r.stderr


@pytest.mark.parametrize("args", [("outbox", "-n", "0"), ("outbox", "--limit", "-5"), ("audit", "show", "-n", "0"),
                                  ("audit", "show", "--limit", "many")], ids=lambda a: " ".join(a))
def test_counts_accept_only_positive_numbers(cli_db: Path, args: tuple[str, ...]) -> None:
    r = tocsin(cli_db, *args)
    assert r.returncode == 2 and "expected a positive whole number" in r.stderr, r.stderr


def test_run_takes_a_port_and_the_readme_says_how(tmp_path: Path) -> None:
    r = tocsin(tmp_path, "run", "--help")
    assert "--port" in r.stdout
    readme = (ROOT / "README.md").read_text()
    for needle in ("TOCSIN_CONFIG=", "make run", "--port", "--password-stdin", "--version"):
        assert needle in readme, needle


def test_pyproject_license_is_an_spdx_string() -> None:
    """The table form made every `pip install -e .` (so `make run` and `make test`) print a setuptools
    deprecation warning; the string form needs setuptools 77 or later."""
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in meta["build-system"]["requires"]
    assert "License ::" not in " ".join(meta["project"].get("classifiers", []))  # deprecated with PEP 639
