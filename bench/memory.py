"""Memory: the resident set of a real `tocsin run` process (its own process, nothing else loaded).

1. idle, with Slack, Teams and Telegram enabled against loopback stand-ins (in another process);
2. the same, with 10,000 open incidents in the database, each with a pending escalation (so the timer
   holds 10,000 scheduled jobs).
RSS is read from /proc/PID/status once /healthz answers and the process has settled. Targets: idle
< 150 MB, with 10,000 open incidents < 250 MB.

    .venv/bin/python bench/memory.py [--incidents 10000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from bench.common import ChildPeer, info, print_table, quick, target  # noqa: E402

IDLE_MB = 150.0
LOADED_MB = 250.0
SETTLE_SECONDS = 3.0

_PEERS = """
import asyncio, sys
from tests.slack.standin import SlackApi
from tests.stand_ins.http import HttpStandIn
from tests.telegram.botapi import BotApi

async def main():
    slack = SlackApi()
    await slack.start()
    tg_peer = HttpStandIn()
    BotApi(tg_peer)
    await tg_peer.start()
    teams = HttpStandIn(default=(200, {"id": "1"}))
    await teams.start()
    print(slack.port, tg_peer.port, teams.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for p in (slack, tg_peer, teams):
        await p.close()

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(db_url: str, port: int, ports: list[int]) -> dict[str, Any]:
    from tests.telegram.botapi import TOKEN

    slack, telegram, teams = (f"http://127.0.0.1:{p}" for p in ports)
    return {
        "database": {"url": db_url},
        "server": {"host": "127.0.0.1", "port": port, "public_url": "https://tocsin.example.com"},
        "logging": {"level": "WARNING"},
        "audit": {"checkpoint_key": "bench-checkpoint-key"},
        "contacts": [{"name": "alice", "email": "alice@example.com"}],
        "contact_lists": [{"name": "oncall", "members": ["alice"]}],
        "routing": {"default_targets": {"lists": ["oncall"]},
                    "rules": [{"name": "all", "event_types": ["declare"], "targets": {"lists": ["oncall"]},
                               "escalation_policy": "bench"}]},
        "escalation_policies": [{"name": "bench", "repeat": 0,
                                 "levels": [{"wait_minutes": 600, "targets": {"lists": ["oncall"]}}]}],
        "channels": {"email": {"outbox": True}},
        "slack": {"enabled": True, "bot_token": "xoxb-bench", "signing_secret": "bench-signing-secret",
                  "incident_channel": "CINCIDENTS", "api_url": slack + "/api/"},
        "telegram": {"enabled": True, "bot_token": TOKEN, "incident_chat_id": "-100777", "mode": "webhook",
                     "webhook_secret": "bench_Webhook-secret", "api_url": f"{telegram}/bot"},
        "teams": {"enabled": True, "allow_unauthenticated": True, "service_url": teams},
    }


async def _fill(cfg_dict: dict[str, Any], incidents: int) -> None:
    """Open incidents with an escalation due in a day (bulk insert: setup, not measured)."""
    from sqlalchemy import Table, insert

    from bot.context import open_context
    from core.config import Config
    from core.models import Incident

    cfg = Config.model_validate(cfg_dict | {"slack": {}, "telegram": {}, "teams": {}})
    ctx = await open_context(cfg=cfg)
    try:
        snapshot = cfg.policy("bench").model_dump(mode="json")
        t0 = datetime.now(timezone.utc)
        rows = [{"id": i + 1, "title": f"open incident {i}", "description": "", "severity": "sev2",
                 "state": "open", "source": "bench", "commander": "bench", "created_at": t0, "updated_at": t0,
                 "state_since": t0, "version": 1, "escalation_policy": "bench",
                 "escalation_snapshot": snapshot,
                 "escalation_level": 0, "escalation_round": 0,
                 "next_escalation_at": t0 + timedelta(days=1, seconds=i), "labels": {"team": "bench"},
                 "payload": {}} for i in range(incidents)]
        async with ctx.db.transaction() as s:
            for k in range(0, len(rows), 2000):
                await s.execute(insert(cast(Table, Incident.__table__)), rows[k:k + 2000])
    finally:
        await ctx.close()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _serve_and_measure(cfg_dict: dict[str, Any], tmp: str) -> float:
    path = Path(tmp) / "tocsin.yaml"
    path.write_text(yaml.safe_dump(cfg_dict))
    port = cfg_dict["server"]["port"]
    proc = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(path), "run"], cwd=str(ROOT),
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"tocsin run exited {proc.returncode} before it was ready")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("tocsin run not ready within 90 s")
                await asyncio.sleep(0.2)
        await asyncio.sleep(SETTLE_SECONDS)
        return _rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _run(incidents: int) -> list[dict[str, Any]]:
    peers = ChildPeer(_PEERS, what="Slack/Telegram/Teams stand-ins")
    try:
        with tempfile.TemporaryDirectory(prefix="tocsin-bench-mem-") as tmp:
            idle_cfg = config(f"sqlite+aiosqlite:///{tmp}/idle.db", _free_port(), peers.ports)
            idle = await _serve_and_measure(idle_cfg, tmp)
            loaded_cfg = config(f"sqlite+aiosqlite:///{tmp}/loaded.db", _free_port(), peers.ports)
            await _fill(loaded_cfg, incidents)
            loaded = await _serve_and_measure(loaded_cfg, tmp)
    finally:
        peers.close()
    return [
        target("idle RSS of `tocsin run`, Slack + Teams + Telegram enabled (MiB)", round(idle, 1),
               f"< {IDLE_MB:g}", idle < IDLE_MB),
        target(f"RSS of `tocsin run` with {incidents:,} open incidents, each escalation scheduled (MiB)",
               round(loaded, 1), f"< {LOADED_MB:g}", loaded < LOADED_MB),
        info("RSS per open incident (KiB)", round((loaded - idle) * 1024 / max(1, incidents), 1)),
    ]


def run(*, incidents: int | None = None) -> list[dict[str, Any]]:
    """10,000 open incidents (quick: 2,000)."""
    return asyncio.run(_run(incidents or (2000 if quick() else 10_000)))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--incidents", type=int)
    rows = run(incidents=ap.parse_args().incidents)
    print_table(rows, "memory")
    return 0 if all(r["passed"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
