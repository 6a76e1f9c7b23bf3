"""End to end with a real Prometheus Alertmanager (Debian's prometheus-alertmanager), all on loopback.

Alertmanager gets two receivers pointing at the running bot, one with bearer and one with basic auth,
as its http_config sends them. Alerts pushed through its v2 API open incidents; a new alert in a group
adds an UPDATE; when the alerts' endsAt passes, Alertmanager sends `resolved` and the incidents resolve.
Skips when the binary is missing, except under CI (tests/setup_peers.py installs it for `make test`).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.procs import die_with_parent
from tests.api.conftest import AM_PASSWORD, AM_TOKEN, AM_USER, OPS
from tests.conftest import free_port

BINARY = "prometheus-alertmanager"

AM_CONFIG = """
global:
  resolve_timeout: 5s
route:
  receiver: tocsin-bearer
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: tocsin-basic
      matchers: ['auth="basic"']
receivers:
  - name: tocsin-bearer
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
  - name: tocsin-basic
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          basic_auth: {{username: {user}, password: {password}}}
"""


def require_alertmanager() -> str:
    path = shutil.which(BINARY)
    if path is None:
        reason = (f"{BINARY} is not installed (`make test` installs it through tests/setup_peers.py; "
                  f"or: apt-get install -y {BINARY})")
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; it is required in CI")
        pytest.skip(reason)
    return path


async def until(what: str, check: Callable[[], Awaitable[Any]], *, timeout: float, log: Path) -> Any:
    """Poll `check` until it returns something truthy; fail with Alertmanager's log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n--- alertmanager log ---\n{tail}")


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@contextlib.asynccontextmanager
async def running_alertmanager(tmp_path: Path, hook_url: str,
                               config: str = AM_CONFIG) -> AsyncIterator[tuple[str, Path, aiohttp.ClientSession]]:
    """A real Alertmanager sending to `hook_url`, ready: yields (its URL, its log file, an HTTP session)."""
    binary = require_alertmanager()
    (tmp_path / "am.yml").write_text(config.format(url=hook_url, token=AM_TOKEN, user=AM_USER,
                                                   password=AM_PASSWORD))
    am_port = free_port()
    am_url = f"http://127.0.0.1:{am_port}"
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=", "--log.level=debug",
            stdout=out, stderr=asyncio.subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"{am_url}/-/ready") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    if proc.returncode is not None:
                        pytest.fail(f"alertmanager exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                    return False

            await until("alertmanager to be ready", ready, timeout=20, log=log)
            yield am_url, log, http
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.mark.timeout(90)
async def test_real_alertmanager_opens_updates_and_resolves(make_client: Any, tmp_path: Path) -> None:
    require_alertmanager()
    client, _ctx = await make_client()
    hook_url = f"http://127.0.0.1:{client.server.port}/api/v1/alertmanager"
    async with running_alertmanager(tmp_path, hook_url) as (am_url, log, http):
        ends = datetime.now(timezone.utc) + timedelta(seconds=7)

        async def push(name: str, instance: str, **labels: str) -> None:
            alert = {"labels": {"alertname": name, "instance": instance, "severity": "critical",
                                **labels},
                     "annotations": {"summary": f"{name} on {instance}"},
                     "startsAt": _iso(datetime.now(timezone.utc)), "endsAt": _iso(ends),
                     "generatorURL": "http://127.0.0.1/prometheus"}
            async with http.post(f"{am_url}/api/v2/alerts", json=[alert]) as r:
                assert r.status == 200, await r.text()

        async def incidents() -> dict[str, dict[str, Any]]:
            resp = await client.get("/api/v1/incidents?state=all", headers=OPS)
            return {i["labels"]["alertname"]: i for i in (await resp.json())["incidents"]}

        async def thread(iid: int) -> list[str]:
            resp = await client.get(f"/api/v1/incidents/{iid}", headers=OPS)
            return [m["kind"] for m in (await resp.json())["thread"]]

        await push("E2EBearer", "db1")
        await push("E2EBasic", "web1", auth="basic")
        opened = await until("both groups to open incidents",
                             lambda: _both(incidents, ("E2EBearer", "E2EBasic")), timeout=15, log=log)
        bearer_inc, basic_inc = opened["E2EBearer"], opened["E2EBasic"]
        assert bearer_inc["source"] == "alertmanager" and bearer_inc["severity"] == "sev1"
        assert bearer_inc["commander"] == basic_inc["commander"] == "api:alertmanager"
        assert bearer_inc["state"] == basic_inc["state"] == "open"

        # A second alert in the bearer group changes its firing set: one UPDATE.
        await push("E2EBearer", "db2")

        async def updated() -> bool:
            return await thread(bearer_inc["id"]) == ["INITIAL", "UPDATE"]

        await until("the new alert to add an UPDATE", updated, timeout=15, log=log)

        async def resolved() -> bool:
            now = await incidents()
            return all(now[n]["state"] == "resolved" for n in ("E2EBearer", "E2EBasic"))

        await until("endsAt to pass and both incidents to resolve", resolved, timeout=25, log=log)
        assert await thread(bearer_inc["id"]) == ["INITIAL", "UPDATE", "RESOLVED"]
        assert await thread(basic_inc["id"]) == ["INITIAL", "RESOLVED"]
        assert len(await incidents()) == 2  # repeats never opened a second incident


@pytest.mark.timeout(90)
async def test_real_alertmanager_watchdog_pings_the_heartbeat(make_client: Any, tmp_path: Path) -> None:
    """kube-prometheus' always-firing Watchdog, through a real Alertmanager: each notification is a ping of
    heartbeat `prometheus` (after a miss it recovers the incident) and it never opens an incident."""
    require_alertmanager()
    from core.heartbeats import Heartbeats
    from core.models import HeartbeatState, Incident

    client, ctx = await make_client(heartbeats=[{"name": "prometheus", "interval": "5m"}],
                                    alertmanager={"watchdog": {"heartbeat": "prometheus"}})
    beats = Heartbeats(ctx.service)
    await beats.sync()
    ctx.clock.advance(minutes=6)  # the pipeline was silent: missed
    # The app's own heartbeat timer may see the miss before this check does (a tick falls between the
    # clock's advance and this line on a busy machine): either way exactly one incident is opened for it,
    # which the last assertion checks.
    await beats.check()
    async with ctx.db.sessions() as s:
        state = await s.get(HeartbeatState, "prometheus")
        assert state is not None and state.incident_id is not None, "the miss opened no incident"
        missed = (await s.get(Incident, state.incident_id)).ref  # type: ignore[union-attr]
    hook_url = f"http://127.0.0.1:{client.server.port}/api/v1/alertmanager"
    async with running_alertmanager(tmp_path, hook_url) as (am_url, log, http):
        alert = {"labels": {"alertname": "Watchdog", "severity": "none"},
                 "annotations": {"summary": "always firing"}, "startsAt": _iso(datetime.now(timezone.utc)),
                 "endsAt": _iso(datetime.now(timezone.utc) + timedelta(hours=1))}
        async with http.post(f"{am_url}/api/v2/alerts", json=[alert]) as r:
            assert r.status == 200, await r.text()

        async def pinged() -> int:
            async with ctx.db.sessions() as s:
                row = await s.get(HeartbeatState, "prometheus")
            return int(row.pings) if row is not None and row.pings else 0

        await until("the Watchdog notification to ping the heartbeat", pinged, timeout=15, log=log)
        resp = await client.get("/api/v1/incidents?state=all", headers=OPS)
        incidents = (await resp.json())["incidents"]
        assert [(i["ref"], i["state"]) for i in incidents] == [(missed, "resolved")]


async def _both(incidents: Callable[[], Awaitable[dict[str, dict[str, Any]]]],
                names: tuple[str, ...]) -> dict[str, dict[str, Any]] | None:
    now = await incidents()
    return now if all(n in now for n in names) else None


def test_missing_binary_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y prometheus-alertmanager"):
        require_alertmanager()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        require_alertmanager()
