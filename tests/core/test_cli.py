"""The issue's 'done when', as a user would do it: the real `tocsin` CLI in a subprocess."""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tocsin(tmp: Path, *args: str, user: str = "alice", columns: int = 80) -> subprocess.CompletedProcess[str]:
    """The CLI with its output into a pipe (as `tocsin ... | less` would), at COLUMNS=columns."""
    env = dict(os.environ, TOCSIN_CONFIG=str(ROOT / "config.yaml"),
               TOCSIN_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'tocsin.db'}", USER=user, LOGNAME=user,
               COLUMNS=str(columns))
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=60)


def test_declare_list_ack_resolve_verify_then_tamper(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    r = tocsin(tmp_path, "incident", "declare", "sev2", "Checkout", "is", "failing")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Declared INC-1 [sev2] Checkout is failing")
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


LONG = "Checkout is failing for every customer in the EU region since the 14:02 deploy of the payments service"


def test_list_pages_fit_80_columns_and_say_how_many_more(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    for n in range(4):
        assert tocsin(tmp_path, "incident", "declare", "sev2", f"{LONG} #{n + 1}").returncode == 0
    r = tocsin(tmp_path, "incident", "list", "--limit", "2")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and all(len(ln) <= 80 for ln in lines), r.stdout
    assert "\x1b" not in r.stdout  # a pipe gets no colours or cursor movement
    assert lines[0].split() == ["ID", "SEV", "STATE", "AGE", "ACKED", "BY", "TITLE"]
    assert "INC-4" in r.stdout and "INC-3" in r.stdout and "INC-2" not in r.stdout
    assert lines[-1] == "2 more; next page: --offset 2"
    title_words = " ".join(ln[ln.index("Checkout"):] if "Checkout" in ln else ln.strip() for ln in lines[2:6])
    assert f"{LONG} #4" in title_words  # the title wraps inside its column, nothing cut off
    r = tocsin(tmp_path, "incident", "list", "--limit", "2", "--offset", "2")
    assert "INC-2" in r.stdout and "INC-1" in r.stdout and "more" not in r.stdout
    r = tocsin(tmp_path, "incident", "list", "--offset", "-1")
    assert r.returncode == 2 and "expected 0 or more" in r.stderr
    wide = tocsin(tmp_path, "incident", "list", columns=160)
    assert max(len(ln) for ln in wide.stdout.splitlines()) > 80  # uses the room a wide terminal has


def test_every_verb_says_what_it_queued(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    assert "pages queued" in tocsin(tmp_path, "incident", "declare", "sev2", "Checkout").stdout
    for args in (("ack", "INC-1"), ("update", "INC-1", "rolling", "back"), ("monitor", "INC-1"),
                 ("resolve", "INC-1", "fixed")):
        r = tocsin(tmp_path, "incident", *args)
        assert r.returncode == 0 and re.search(r"\b\d+ pages queued", r.stdout), (args, r.stdout, r.stderr)
    assert tocsin(tmp_path, "incident", "declare", "sev3", "Second").returncode == 0
    r = tocsin(tmp_path, "incident", "ack", "INC-2")
    assert re.fullmatch(r"INC-2: acknowledged by cli:alice, \d+ pages queued\.\n", r.stdout), r.stdout


def test_show_lists_dead_and_failed_deliveries_with_their_last_error(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    assert tocsin(tmp_path, "incident", "declare", "sev2", "Checkout").returncode == 0
    with sqlite3.connect(tmp_path / "tocsin.db") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM deliveries ORDER BY id")]
        assert len(ids) >= 2
        db.execute("UPDATE deliveries SET status = 'dead', attempts = 4, last_error = ? WHERE id = ?",
                   ("503 from smtp.example.com: mailbox unavailable, try again later " * 2, ids[0]))
        db.execute("UPDATE deliveries SET status = 'failed', attempts = 1, last_error = 'invalid phone number' "
                   "WHERE id = ?", (ids[1],))
    r = tocsin(tmp_path, "incident", "show", "INC-1")
    assert r.returncode == 0 and all(len(ln) <= 80 for ln in r.stdout.splitlines()), r.stdout
    assert "not delivered:" in r.stdout and "dead" in r.stdout and "failed" in r.stdout
    assert "invalid phone number" in r.stdout and "mailbox" in r.stdout
def test_maintenance_from_the_cli(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    r = tocsin(tmp_path, "maintenance", "start", "--for", "2h", "--match", "source=alertmanager,labels.team=db",
               "--reason", "DB upgrade")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Maintenance M-1 started by cli:alice for 2h") and "DB upgrade" in r.stdout
    r = tocsin(tmp_path, "maintenance", "list")
    assert "M-1 [source=alertmanager,labels.team=db] active" in r.stdout
    r = tocsin(tmp_path, "maintenance", "start", "--for", "9h")
    assert r.returncode == 1 and "at most 8h (maintenance.max_duration)" in r.stderr
    r = tocsin(tmp_path, "maintenance", "start", "--for", "2h", "--match", "team")
    assert r.returncode == 2 and "is not key=value" in r.stderr
    r = tocsin(tmp_path, "maintenance", "end", "M-1")
    assert r.returncode == 0 and "Maintenance M-1 ended by cli:alice" in r.stdout
    r = tocsin(tmp_path, "maintenance", "list")
    assert r.stdout.strip() == "No active maintenance windows."
    r = tocsin(tmp_path, "heartbeat", "list")
    assert r.returncode == 0 and "no heartbeats configured" in r.stdout


def test_roles_and_notes_from_the_cli(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    assert tocsin(tmp_path, "incident", "declare", "sev3", "Queue", "backlog").returncode == 0
    r = tocsin(tmp_path, "incident", "role", "INC-1", "comms", "bob")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "INC-1: bob is now comms (assigned by cli:alice); 1 private message(s) queued."
    r = tocsin(tmp_path, "incident", "note", "INC-1", "Consumers", "were", "paused")
    assert r.returncode == 0 and r.stdout.strip() == "INC-1: note added to the timeline."
    r = tocsin(tmp_path, "incident", "show", "INC-1")
    assert "Commander: cli:alice · Comms: bob" in r.stdout and "Consumers were paused" in r.stdout
    r = tocsin(tmp_path, "incident", "declare", "sev4", "Slow", "report", "--commander", "carol")
    assert r.returncode == 0 and r.stdout.strip().endswith("Commander: carol."), r.stdout + r.stderr
    r = tocsin(tmp_path, "incident", "role", "INC-1", "chef", "bob")
    assert r.returncode != 0 and "unknown role 'chef'" in (r.stdout + r.stderr)
    r = tocsin(tmp_path, "audit", "show", "--incident", "INC-1")
    assert "incident.role" in r.stdout and "incident.note" in r.stdout


def test_export_from_the_cli(tmp_path: Path) -> None:
    assert tocsin(tmp_path, "db", "upgrade").returncode == 0
    assert tocsin(tmp_path, "incident", "declare", "sev2", "Queue", "backlog").returncode == 0
    assert tocsin(tmp_path, "incident", "note", "INC-1", "Consumers", "paused").returncode == 0
    r = tocsin(tmp_path, "incident", "export", "INC-1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# INC-1: Queue backlog\n") and "| Note | cli:alice | Consumers paused |" in r.stdout
    assert "## Postmortem" in r.stdout and "### Root cause" in r.stdout
    r = tocsin(tmp_path, "incident", "export", "INC-1", "--format", "json", "--out", str(tmp_path / "inc.json"))
    assert r.returncode == 0 and r.stdout.strip() == f"Wrote {tmp_path / 'inc.json'}"
    import json
    data = json.loads((tmp_path / "inc.json").read_text())
    assert data["incident"]["title"] == "Queue backlog" and data["timeline"][-1]["text"] == "Consumers paused"
    r = tocsin(tmp_path, "incident", "export", "INC-7")
    assert r.returncode == 1 and r.stderr.strip() == "error: no incident INC-7"
    r = tocsin(tmp_path, "incident", "export", "INC-1", "--format", "pdf")
    assert r.returncode == 2 and "invalid choice: 'pdf'" in r.stderr
