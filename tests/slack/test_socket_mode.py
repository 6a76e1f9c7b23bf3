"""Socket Mode (slack.app_token set, no signing secret): the bot dials a loopback WebSocket that speaks
Slack's Socket Mode envelopes, acks each envelope, and runs commands exactly as over HTTP."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from bot.slack.app import EVENTS_PATH
from tests.slack.conftest import SlackEnv
from tests.slack.standin import SlackApi


class SocketPeer:
    """Slack's side of one Socket Mode connection: says hello, then pushes the envelopes it is given."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.acks: list[dict[str, Any]] = []
        self.acked = asyncio.Condition()
        self.connections = 0
        app = web.Application()
        app.router.add_get("/link", self._ws)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/link"

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}})

        async def push() -> None:
            while True:
                await ws.send_json(await self.outbox.get())

        pusher = asyncio.create_task(push())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    async with self.acked:
                        self.acks.append(data)
                        self.acked.notify_all()
        finally:
            pusher.cancel()
        return ws

    async def wait_acks(self, n: int) -> list[dict[str, Any]]:
        async with self.acked:
            await asyncio.wait_for(self.acked.wait_for(lambda: len(self.acks) >= n), 10)
        return self.acks


def slash_envelope(envelope_id: str, text: str, *, response_url: str, retry: int = 0) -> dict[str, Any]:
    return {"envelope_id": envelope_id, "type": "slash_commands", "accepts_response_payload": True,
            "retry_attempt": retry, "retry_reason": "timeout" if retry else "",
            "payload": {"team_id": "T1", "channel_id": "CGENERAL", "user_id": "UOP", "user_name": "op",
                        "command": "/incident", "text": text, "response_url": response_url,
                        "trigger_id": f"trig-{envelope_id.rstrip('r')}", "api_app_id": "A1"}}


async def test_socket_mode_runs_commands_once(make_slack_env: Callable[..., Any],
                                              slack_api: SlackApi) -> None:
    peer = SocketPeer()
    await peer.server.start_server()
    try:
        slack_api.on("/api/apps.connections.open", lambda _r: (200, {"ok": True, "url": peer.url}))
        env: SlackEnv = await make_slack_env(slack={"signing_secret": None, "app_token": "xapp-test"})
        # No signing secret: there is no HTTP route that could be fed unsigned requests.
        resp = await env.client.post(EVENTS_PATH, data="command=/incident")
        assert resp.status in (404, 405)

        for _ in range(100):
            if peer.connections:
                break
            await asyncio.sleep(0.05)
        [opened] = slack_api.requests_to("/api/apps.connections.open")
        assert opened.headers["Authorization"] == "Bearer xapp-test"

        url = slack_api.response_url("sock")
        await peer.outbox.put(slash_envelope("e1", "declare sev2 Over the socket", response_url=url))
        # Slack redelivers an envelope it thinks was not acked: it must not run twice.
        await peer.outbox.put(slash_envelope("e1r", "declare sev2 Over the socket", response_url=url,
                                             retry=1))
        acks = await peer.wait_acks(2)
        assert [a["envelope_id"] for a in acks] == ["e1", "e1r"]
        await env.adapter.drain()
        assert [i.title for i in await env.incidents()] == ["Over the socket"]
        [answer] = slack_api.responses("sock")
        assert answer["text"].startswith("Declared INC-1 [sev2]")
        await env.adapter.close()  # hang up before the peer goes away (a server-side close waits for us)
    finally:
        await peer.server.close()
