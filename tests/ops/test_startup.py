"""Startup, as an operator meets it: the real `tocsin` CLI in a subprocess. Where the database is, who holds
it, and every way a start can fail is one line naming the problem, exit code 1, no traceback, and nothing
left running."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import die_with_parent

ROOT = Path(__file__).resolve().parents[2]


def env_for(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env.update({"PYTHONPATH": str(ROOT), "USER": "alice", "LOGNAME": "alice", **extra})
    return env


def tocsin(cwd: Path, config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "--config", str(config), *args], cwd=cwd,
                          env=env_for(**env), capture_output=True, text=True, timeout=60,
                          preexec_fn=die_with_parent)


def install(tmp: Path, db_url: str | None = None) -> Path:
    """The example config in its own directory (database.url relative: `tocsin.db`), or with `db_url`."""
    conf = tmp / "srv"
    conf.mkdir()
    text = (ROOT / "config.yaml").read_text()
    if db_url is not None:
        text = text.replace("${TOCSIN_DATABASE_URL:-sqlite+aiosqlite:///tocsin.db}", db_url)
    (conf / "config.yaml").write_text(text)
    (tmp / "elsewhere").mkdir()
    return conf / "config.yaml"


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    """The problem line: exit 1, no traceback, and the only line on stderr that is not a JSON log record."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_relative_sqlite_path_is_taken_from_the_config_directory(tmp_path: Path) -> None:
    config = install(tmp_path)
    away = tmp_path / "elsewhere"
    assert tocsin(away, config, "db", "upgrade").returncode == 0
    r = tocsin(away, config, "incident", "declare", "sev2", "Checkout", "down")
    assert r.returncode == 0, r.stderr
    assert not (away / "tocsin.db").exists()
    # Another directory, the same database: the incident is there.
    r = tocsin(tmp_path, config, "incident", "list")
    assert r.returncode == 0 and "Checkout down" in r.stdout, r.stdout + r.stderr
    assert (config.parent / "tocsin.db").exists() and not (tmp_path / "tocsin.db").exists()


def test_cli_commands_refuse_to_create_a_missing_database(tmp_path: Path) -> None:
    config = install(tmp_path)
    away = tmp_path / "elsewhere"
    for args in (("incident", "declare", "sev2", "x"), ("incident", "list"), ("audit", "verify"),
                 ("notify", "oncall", "hello"), ("outbox",), ("backup", "--out", str(away))):
        line = one_error_line(tocsin(away, config, *args))
        assert f"database {config.parent / 'tocsin.db'} does not exist" in line, line
        assert "tocsin db upgrade" in line
    assert not any(p.name.startswith("tocsin.db") for p in (*config.parent.iterdir(), *away.iterdir()))
    # `db upgrade` is the command that creates it.
    r = tocsin(away, config, "db", "upgrade")
    assert r.returncode == 0 and (config.parent / "tocsin.db").exists(), r.stderr


def test_cli_refuses_a_database_without_schema(tmp_path: Path) -> None:
    """An empty file where the database should be (touched, or created by a stray tool) is not a database."""
    config = install(tmp_path)
    (config.parent / "tocsin.db").touch()
    line = one_error_line(tocsin(tmp_path, config, "incident", "list"))
    assert "holds no Tocsin schema" in line and "tocsin db upgrade" in line


def wait_for_log(proc: subprocess.Popen[str], event: str, timeout: float = 30) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if event in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no {event} from tocsin run (exit {proc.poll()})")


def start_run(cwd: Path, config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config), "run", *args], cwd=cwd,
                            env=env_for(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=die_with_parent)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_second_run_on_the_same_sqlite_file_refuses_naming_the_first(tmp_path: Path) -> None:
    config = install(tmp_path)
    first = start_run(tmp_path, config, "--port", "0")
    try:
        wait_for_log(first, "server.started")
        r = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "run", "--port", "0"],
                           cwd=tmp_path / "elsewhere", env=env_for(), capture_output=True, text=True, timeout=60,
                           preexec_fn=die_with_parent)
        line = one_error_line(r)
        assert f"pid {first.pid}" in line and str(config.parent / "tocsin.db") in line, line
        assert "PostgreSQL" in line
        assert '"component.start"' not in r.stderr  # refused before anything started
    finally:
        stop(first)
    # The lock goes with the process: a new run starts.
    again = start_run(tmp_path, config, "--port", "0")
    try:
        wait_for_log(again, "server.started")
    finally:
        stop(again)


def test_port_in_use_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    config = install(tmp_path)
    assert tocsin(tmp_path, config, "db", "upgrade").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = tocsin(tmp_path, config, "run", "--port", str(port))
    line = one_error_line(r)
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in line, line
    # The port is taken before the worker, the escalation timer or any adapter starts.
    assert '"component.start"' not in r.stderr and "notify.worker.started" not in r.stderr, r.stderr


@pytest.mark.parametrize("args", [("run",), ("db", "upgrade"), ("incident", "list"), ("audit", "verify"),
                                  ("incident", "declare", "sev1", "x")])
def test_an_unreachable_database_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    port = free_port()  # nothing listens there
    config = install(tmp_path, f"postgresql+asyncpg://tocsin:s3cret-pw@127.0.0.1:{port}/tocsin")
    line = one_error_line(tocsin(tmp_path, config, *args, "--port", str(free_port())) if args == ("run",)
                          else tocsin(tmp_path, config, *args))
    assert "database unavailable" in line and f"127.0.0.1:{port}" in line, line
    assert "s3cret-pw" not in line


def test_a_module_that_cannot_be_imported_is_one_line(tmp_path: Path) -> None:
    """A missing driver or package: the operator gets its name, not a traceback."""
    config = install(tmp_path)
    shadow = tmp_path / "shadow"
    (shadow / "aiosqlite").mkdir(parents=True)
    (shadow / "aiosqlite" / "__init__.py").write_text("raise ImportError('aiosqlite is broken here', "
                                                      "name='aiosqlite')\n")
    for args in (("db", "upgrade"), ("run", "--port", str(free_port())), ("incident", "list")):
        r = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), *args], cwd=tmp_path,
                           env=env_for(PYTHONPATH=f"{shadow}{os.pathsep}{ROOT}"), capture_output=True, text=True,
                           timeout=60, preexec_fn=die_with_parent)
        line = one_error_line(r)
        assert "aiosqlite" in line, line
