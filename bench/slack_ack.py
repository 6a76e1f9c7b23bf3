"""Slack ack benchmark: how fast the real server answers signed slash commands (Slack gives up after 3 s).

The real app (bot.server.build_app, Slack enabled, SQLite, delivery worker on, as in `tocsin run`) listens
on loopback; a Slack Web API stand-in (auth.test, chat.postMessage, response_url) runs in its own process.
A load client sends correctly signed `/incident declare ...` commands, 20 at a time. Every command
declares an incident, so the acked work (parse, service transaction, audit, queued pages and card sync,
answer through response_url) runs while later commands arrive. We report the HTTP answer time p50/p99/max
(the ack), the time until each command's answer reached its response_url, and check each command ran once.
The answer time of a burst measures the database's write rate (each declare is one serialized transaction
on SQLite), not the ack: commands queue behind each other once acked.

    .venv/bin/python bench/slack_ack.py [--n 400] [--concurrency 20]

`run()` returns rows of {figure, value, target, passed} for `make bench`.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench.common import ChildPeer, StallProbe, aprofiled, pct, print_table, quick  # noqa: E402
from bot.context import open_context  # noqa: E402
from bot.server import build_app  # noqa: E402
from bot.slack.app import EVENTS_PATH, SlackAdapter  # noqa: E402
from core.config import loads  # noqa: E402
from core.models import Incident  # noqa: E402

SECRET = "bench-signing-secret"
TARGET_P99_MS = 250.0
ANSWER_P99_MS = 1000.0
SLACK_DEADLINE_MS = 3000.0

_PEER = """
import asyncio, sys
from tests.slack.standin import SlackApi

async def main():
    api = SlackApi()
    await api.start()
    api.on("/_stats", lambda _r: (200, {r.path: r.wall for r in api.requests_to("/response/*")}))
    print(api.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await api.close()

asyncio.run(main())
"""


class Peer(ChildPeer):
    """The Slack stand-in in a child process, so its work does not slow the server we measure."""

    def __init__(self) -> None:
        super().__init__(_PEER, what="Slack stand-in")


def config_yaml(db_url: str, api_url: str) -> str:
    return yaml.safe_dump({
        "database": {"url": db_url},
        "logging": {"level": "WARNING"},
        "audit": {"checkpoint_key": "bench-checkpoint-key"},
        "access": {"slack:UBENCH": "operator"},
        "contacts": [{"name": "alice", "email": "alice@example.com"},
                     {"name": "bob", "email": "bob@example.com"}],
        "contact_lists": [{"name": "oncall", "members": ["alice", "bob"]}],
        "routing": {"default_targets": {"lists": ["oncall"]}},
        "channels": {"email": {"outbox": True}},
        "slack": {"enabled": True, "bot_token": "xoxb-bench", "signing_secret": SECRET,
                  "incident_channel": "CINCIDENTS", "api_url": api_url + "/api/"},
    })


def signed(body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sig}


def command(i: int, peer_url: str) -> str:
    return urlencode({"team_id": "T1", "channel_id": "CGENERAL", "user_id": "UBENCH", "user_name": "bench",
                      "command": "/incident", "text": f"declare sev4 bench incident {i}",
                      "response_url": f"{peer_url}/response/{i}", "trigger_id": f"bench-trigger-{i}"})


async def _run(n: int, concurrency: int) -> list[dict[str, Any]]:
    peer = Peer()
    tmp = tempfile.TemporaryDirectory(prefix="tocsin-bench-slack-")
    try:
        cfg = loads(config_yaml(f"sqlite+aiosqlite:///{tmp.name}/tocsin.db", peer.url), env={})
        ctx = await open_context(cfg=cfg)
        app, rt = await build_app(ctx)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}{EVENTS_PATH}"
        adapter = next(c for c in rt.components if isinstance(c, SlackAdapter))
        ack_ms: list[float] = []
        sent_at: dict[int, float] = {}
        statuses: dict[int, int] = {}
        async with aiohttp.ClientSession() as http:
            # One warm-up command: bolt calls auth.test once, on the first request of the process.
            t0 = time.perf_counter()
            body = command(0, peer.url)
            async with http.post(url, data=body, headers=signed(body)) as r:
                await r.read()
            first_ms = (time.perf_counter() - t0) * 1000
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(1, n + 1):
                queue.put_nowait(i)

            async def client() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    body = command(i, peer.url)
                    headers = signed(body)
                    sent_at[i] = time.time()
                    started = time.perf_counter()
                    async with http.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                    ack_ms.append((time.perf_counter() - started) * 1000)
                    statuses[i] = resp.status

            async with StallProbe() as probe, aprofiled("slack"):
                wall = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(concurrency)))
                load_s = time.perf_counter() - wall
                await adapter.drain(timeout=120)
                done_s = time.perf_counter() - wall
            async with http.get(peer.url + "/_stats") as r:
                answered: dict[str, float] = await r.json()
        async with ctx.db.sessions() as s:
            incidents = int((await s.execute(select(func.count()).select_from(Incident))).scalar_one())
        await runner.cleanup()
        await ctx.close()
    finally:
        peer.close()
        tmp.cleanup()

    answer_ms = [(answered[f"/response/{i}"] - sent_at[i]) * 1000
                 for i in sent_at if f"/response/{i}" in answered]
    received = len(answer_ms)
    answer_ms = answer_ms or [float("nan")]
    ok = sum(1 for s in statuses.values() if s == 200)
    p50, p99, worst = pct(ack_ms, 50), pct(ack_ms, 99), max(ack_ms)
    return [
        {"figure": f"slash command ack p50 (ms, {concurrency} concurrent)", "value": round(p50, 1),
         "target": None, "passed": None},
        {"figure": f"slash command ack p99 (ms, {concurrency} concurrent)", "value": round(p99, 1),
         "target": f"< {TARGET_P99_MS:.0f}", "passed": p99 < TARGET_P99_MS},
        {"figure": "slash command ack max (ms)", "value": round(worst, 1),
         "target": f"< {SLACK_DEADLINE_MS:.0f}", "passed": worst < SLACK_DEADLINE_MS},
        {"figure": "first request incl. auth.test (ms)", "value": round(first_ms, 1), "target": None,
         "passed": None},
        {"figure": "HTTP 200 answers", "value": ok, "target": f"= {n}", "passed": ok == n},
        {"figure": "incidents declared (each command once)", "value": incidents, "target": f"= {n + 1}",
         "passed": incidents == n + 1},
        {"figure": "answer at response_url p50 (ms)", "value": round(statistics.median(answer_ms), 1),
         "target": None, "passed": None},
        {"figure": "answer at response_url p99 (ms)", "value": round(pct(answer_ms, 99), 1),
         "target": f"< {ANSWER_P99_MS:.0f}", "passed": pct(answer_ms, 99) < ANSWER_P99_MS},
        {"figure": "answers received", "value": received, "target": f"= {n}", "passed": received == n},
        {"figure": "commands/s while acking", "value": round(n / load_s, 1), "target": None, "passed": None},
        {"figure": "all work done after (s)", "value": round(done_s, 2), "target": None, "passed": None},
        probe.row("the Slack burst (server and load client share the loop)"),
    ]


def run(*, n: int | None = None, concurrency: int = 20) -> list[dict[str, Any]]:
    """Run the benchmark; rows of {figure, value, target, passed}. 400 commands (quick: 100)."""
    logging.getLogger().setLevel(logging.WARNING)
    return asyncio.run(_run(n or (100 if quick() else 400), concurrency))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="slash commands to send (400, quick 100)")
    ap.add_argument("--concurrency", type=int, default=20, help="commands in flight at once")
    args = ap.parse_args()
    rows = run(n=args.n, concurrency=args.concurrency)
    n = args.n or (100 if quick() else 400)
    print_table(rows, title=f"Slack ack: {n} signed /incident declare commands, {args.concurrency} concurrent")
    return 0 if all(r["passed"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
