"""Dockerfile and docker-compose.yml: no Docker daemon here, so check by reading what must be true —
and run the image's health check command for real against a live /healthz."""
from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from core.config import loads

ROOT = Path(__file__).resolve().parents[2]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def final_stage(ins: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    return ins[starts[-1]:]


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return final_stage(instructions(ROOT / "Dockerfile"))


def test_runtime_base_user_entrypoint_and_config(docker: list[tuple[str, str]]) -> None:
    assert docker[0] == ("FROM", "python:3.11-slim")
    users = [i for i, (w, _) in enumerate(docker) if w == "USER"]
    assert users, "the image must not run as root"
    user = docker[users[-1]][1].split(":")[0]
    assert user not in ("root", "0")
    last_run = max(i for i, (w, _) in enumerate(docker) if w == "RUN")
    assert users[-1] > last_run  # nothing after USER needs root
    entry = dict(docker)["ENTRYPOINT"]
    assert json.loads(entry) == ["tocsin", "run"]  # exec form: tocsin is PID 1 and gets SIGTERM itself
    assert json.loads(dict(docker)["CMD"]) == ["--host", "0.0.0.0"]
    env = " ".join(a for w, a in docker if w == "ENV")
    assert "TOCSIN_CONFIG=/etc/tocsin/config.yaml" in env
    assert any(w == "COPY" and a.endswith("/etc/tocsin/config.yaml") for w, a in docker)
    assert dict(docker).get("STOPSIGNAL", "SIGTERM") == "SIGTERM"
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'tocsin = "bot.cli:entry"' in scripts  # main() behind the closed-pipe guard


def test_everything_copied_exists_and_is_not_dockerignored() -> None:
    ignored = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()
               if x.strip() and not x.startswith("#")]
    for pat in (".venv", ".git", "*.db", ".env", "tocsin-backup-*.tar.gz"):
        assert pat in ignored, pat
    for word, args in instructions(ROOT / "Dockerfile"):
        if word != "COPY" or "--from=" in args:
            continue
        *sources, _dest = args.split()
        for src in sources:
            assert (ROOT / src).exists(), src
            assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), f"{src} is excluded by .dockerignore"


def healthcheck_argv(docker: list[tuple[str, str]]) -> list[str]:
    hc = dict(docker)["HEALTHCHECK"]
    assert "CMD" in hc
    argv = json.loads(hc[hc.index("CMD") + 3:].strip())
    assert argv[:2] == ["python", "-c"] and "curl" not in hc and "wget" not in hc  # slim has neither
    assert "/healthz" in hc
    return argv


async def test_the_health_check_command_really_probes_healthz(docker: list[tuple[str, str]],
                                                              free_port_: int) -> None:
    import asyncio

    argv = healthcheck_argv(docker)
    from bot.server import healthz

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", free_port_)
    await site.start()

    async def probe(url: str) -> int:
        proc = await asyncio.create_subprocess_exec(sys.executable, *argv[1:],
                                                    env={**os.environ, "TOCSIN_HEALTH_URL": url},
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return await proc.wait()

    try:
        assert await probe(f"http://127.0.0.1:{free_port_}/healthz") == 0
        assert await probe(f"http://127.0.0.1:{free_port_}/nope") != 0
    finally:
        await runner.cleanup()
    assert await probe(f"http://127.0.0.1:{free_port_}/healthz") != 0  # nothing listening


@pytest.fixture
def free_port_() -> int:
    from tests.conftest import free_port

    return free_port()


def test_compose_tocsin_waits_for_a_healthy_postgres() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svc = compose["services"]
    pg, app = svc["postgres"], svc["tocsin"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = app["environment"]["TOCSIN_DATABASE_URL"]
    assert url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in url
    assert "TOCSIN_AUDIT_KEY" in app["environment"]
    assert [c["target"] for c in app["configs"]] == ["/etc/tocsin/config.yaml"]
    assert compose["configs"][app["configs"][0]["source"]]["file"] == "./config.yaml"
    assert app.get("stop_grace_period")


def test_the_default_config_takes_the_database_from_the_environment() -> None:
    text = (ROOT / "config.yaml").read_text()
    assert "${TOCSIN_DATABASE_URL:-sqlite" in text
    url = "postgresql+asyncpg://tocsin:pw@postgres:5432/tocsin"
    assert loads(text, env={"TOCSIN_DATABASE_URL": url}).database.url == url
    assert loads(text, env={}).database.url.startswith("sqlite+aiosqlite:///")
