"""An idle `tocsin run` loads only what its config uses (issue 16: idle RSS < 150 MB with Slack, Teams and
Telegram). The heavy libraries of channels and features that are not configured (boto3 for SNS, twilio for
SMS and voice, pywebpush for web push, icalendar for schedule feeds, alembic for a schema that is already
current) must not be imported by the server: each costs megabytes of resident memory for the whole life of
the process. The check is a real `tocsin run` (bot.server.serve) in its own process, against the Slack,
Telegram and Teams stand-ins, listing sys.modules once it is up."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from core import migrate
from core.db import Database
from tests.procs import die_with_parent
from tests.slack.standin import SlackApi
from tests.stand_ins.http import HttpStandIn
from tests.telegram.botapi import TOKEN, BotApi

ROOT = Path(__file__).resolve().parents[2]

LAZY = ("boto3", "botocore", "twilio", "pywebpush", "py_vapid", "http_ece", "icalendar", "alembic", "mako")
"""Top-level packages an idle server without SMS, voice, web push or a feed request has no use for."""

_CHILD = """
import asyncio, json, os, signal, sys
from bot.server import serve

async def main(path):
    ready = asyncio.Event()
    run = asyncio.create_task(serve(path, ready=ready))
    await asyncio.wait([run, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if run.done():
        run.result()
    await asyncio.sleep(0.5)  # components start their loops; anything they import shows up
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    await run

asyncio.run(main(sys.argv[1]))
"""


def _config(db_url: str, slack: int, telegram: int, teams: int, **channels: Any) -> dict[str, Any]:
    return {
        "database": {"url": db_url},
        "server": {"host": "127.0.0.1", "port": 0, "public_url": "https://tocsin.example.com"},
        "logging": {"level": "WARNING"},
        "audit": {"checkpoint_key": "imports-checkpoint-key"},
        "contacts": [{"name": "alice", "email": "alice@example.com", "phone": "+15550100001"}],
        "contact_lists": [{"name": "oncall", "members": ["alice"]}],
        "routing": {"default_targets": {"lists": ["oncall"]}},
        "channels": {"email": {"outbox": True}, **channels},
        "slack": {"enabled": True, "bot_token": "xoxb-imports", "signing_secret": "imports-signing-secret",
                  "incident_channel": "CINCIDENTS", "api_url": f"http://127.0.0.1:{slack}/api/"},
        "telegram": {"enabled": True, "bot_token": TOKEN, "incident_chat_id": "-100777", "mode": "webhook",
                     "webhook_secret": "imports_Webhook-secret", "api_url": f"http://127.0.0.1:{telegram}/bot"},
        "teams": {"enabled": True, "allow_unauthenticated": True, "service_url": f"http://127.0.0.1:{teams}"},
    }


async def _loaded_by_run(tmp: Path, **channels: Any) -> set[str]:
    """Top-level packages in sys.modules of a `tocsin run` that is up, on a database already migrated
    (the first start of a fresh database runs alembic, of course)."""
    db_url = f"sqlite+aiosqlite:///{tmp}/tocsin.db"
    db = Database(db_url)
    try:
        await migrate.upgrade(db.engine)
    finally:
        await db.close()
    slack = SlackApi()
    await slack.start()
    tg = HttpStandIn()
    BotApi(tg)
    await tg.start()
    teams = HttpStandIn(default=(200, {"id": "1"}))
    await teams.start()
    try:
        path = tmp / "tocsin.yaml"
        path.write_text(yaml.safe_dump(_config(db_url, slack.port, tg.port, teams.port, **channels)))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(path), cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=die_with_parent)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode == 0, err.decode()[-3000:]
        return set(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for peer in (slack, tg, teams):
            await peer.close()


async def test_an_idle_server_without_sms_voice_or_webpush_loads_none_of_their_libraries(tmp_path: Path) -> None:
    loaded = await _loaded_by_run(tmp_path)
    assert {"slack_bolt", "telegram", "botbuilder"} <= loaded  # the chat adapters are really there
    assert sorted(loaded & set(LAZY)) == []


async def test_a_configured_twilio_channel_does_load_twilio(tmp_path: Path) -> None:
    """The other side of the same check: it sees a library that a configured feature imports (the voice
    and SMS callbacks check Twilio's signature with the twilio library), so the test above can fail."""
    loaded = await _loaded_by_run(
        tmp_path,
        voice={"account_sid": "AC" + "0" * 32, "auth_token": "voice-token", "from_number": "+15550100000"},
        sms={"provider": "twilio", "account_sid": "AC" + "0" * 32, "auth_token": "sms-token",
             "from_number": "+15550100000"})
    assert "twilio" in loaded
    assert sorted(loaded & {"boto3", "botocore", "pywebpush", "icalendar", "alembic"}) == []
