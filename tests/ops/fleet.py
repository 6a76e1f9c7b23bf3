"""Run real `python -m bot run` processes against one database, for the scale-out and shutdown tests."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.procs import die_with_parent
from tests.conftest import BASE_CONFIG, deep_merge, free_port

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "fleet-api-key-5e6f7a8b"


def write_config(path: Path, *, db_url: str, hook_url: str, **over: Any) -> Path:
    """Every incident pages one webhook destination (the stand-in); events come in through the API."""
    data = deep_merge(BASE_CONFIG, {
        "database": {"url": db_url},
        "logging": {"level": "INFO", "format": "json"},
        "api": {"keys": [{"name": "fleet", "key": API_KEY, "role": "operator"}]},
        "destinations": [{"name": "hook", "channel": "webhook", "url": hook_url}],
        "routing": {"default_targets": {"lists": [], "destinations": ["hook"]}, "rules": []},
        "channels": {"webhook": {"outbox": False, "retry": {"max_retries": 5, "base_seconds": 0.2,
                                                            "timeout_seconds": 5}}},
        "worker": {"lease_seconds": 2, "poll_seconds": 0.5},
        "console": {"enabled": False},
    })
    data = deep_merge(data, over)
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Bot:
    proc: asyncio.subprocess.Process
    port: int
    log: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)


async def start_bot(config: Path, *, name: str, log_dir: Path) -> Bot:
    port = free_port()
    log = log_dir / f"{name}.log"
    fh = log.open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), "run", "--host", "127.0.0.1", "--port", str(port),
        cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=fh, stderr=fh,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent)
    fh.close()
    return Bot(proc, port, log)


async def wait_ready(bot: Bot, *, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            if bot.proc.returncode is not None:
                raise AssertionError(f"bot exited with {bot.proc.returncode}:\n{bot.tail()}")
            try:
                async with http.get(bot.url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if loop.time() > end:
                raise AssertionError(f"bot on {bot.port} not ready after {timeout}s:\n{bot.tail()}")
            await asyncio.sleep(0.1)


async def post_events(bots: list[Bot], n: int, *, prefix: str = "e", parallel: int = 16) -> list[dict[str, Any]]:
    """n inbound events, round-robin over the bots, each opening its own incident."""
    sem = asyncio.Semaphore(parallel)
    out: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        async def one(i: int) -> None:
            body = {"event_type": "job.failed", "event_id": f"{prefix}{i}", "tenant_id": "t",
                    "timestamp": "2026-01-01T10:30:00Z",
                    "payload": {"title": f"job {prefix}{i} failed", "severity": "sev2"},
                    "metadata": {"source_service": "ci", "correlation_id": f"{prefix}-corr-{i}"}}
            async with sem, http.post(bots[i % len(bots)].url + "/api/v1/events", json=body) as r:
                data = await r.json()
                assert r.status == 202, data
                out.append(data)

        await asyncio.gather(*(one(i) for i in range(n)))
    return out


async def stop_all(bots: list[Bot]) -> None:
    for b in bots:
        if b.proc.returncode is None:
            b.signal(signal.SIGTERM)
    for b in bots:
        try:
            await b.wait(15)
        except asyncio.TimeoutError:
            b.signal(signal.SIGKILL)
            await b.wait(5)


async def eventually(check: Any, *, timeout: float, every: float = 0.2, what: str = "condition") -> Any:
    """Poll an async check until it returns a truthy value."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"{what} not reached in {timeout}s (last: {value!r})")
        await asyncio.sleep(every)
