"""The reusable HTTP stand-in behaves as documented (others build Slack/Telegram/Bot Connector fakes on it)."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.stand_ins.http import HttpStandIn, Recorded, Reply, as_reply, hang, retry_after


def test_reply_shorthands() -> None:
    assert as_reply((204,)) == Reply(204)
    assert as_reply(404) == Reply(404)
    assert as_reply((200, {"ok": True})) == Reply(200, {"ok": True})
    assert as_reply((429, None, {"Retry-After": "2"})) == Reply(429, None, {"Retry-After": "2"})
    assert as_reply(("hang", 3)) == hang(3)
    assert retry_after(2) == Reply(429, None, {"Retry-After": "2"})
    with pytest.raises(TypeError):
        as_reply("nope")  # type: ignore[arg-type]


async def test_script_then_handler_then_default() -> None:
    async with HttpStandIn(default=(418, "teapot")) as peer, aiohttp.ClientSession() as http:
        peer.script("/a/*", (500,), retry_after(1))
        peer.on("/a/*", lambda req: (200, {"echo": req.json}))

        async def later(req: Recorded) -> Reply:
            await asyncio.sleep(0)
            return Reply(201, req.form)

        peer.on("/async", later)
        statuses = []
        for _ in range(3):
            async with http.post(f"{peer.url}/a/x?q=1", json={"n": 1}) as resp:
                statuses.append((resp.status, resp.headers.get("Retry-After"), await resp.text()))
        assert statuses[0][0] == 500
        assert statuses[1][:2] == (429, "1")
        assert statuses[2] == (200, None, '{"echo": {"n": 1}}')
        async with http.post(f"{peer.url}/async", data={"k": "v", "x": "1"}) as resp:
            assert resp.status == 201 and await resp.json() == {"k": "v", "x": "1"}
        async with http.get(f"{peer.url}/other") as resp:
            assert resp.status == 418 and await resp.text() == "teapot"
        first = peer.requests[0]
        assert (first.method, first.path, first.query, first.json) == ("POST", "/a/x", {"q": "1"}, {"n": 1})
        assert [r.path for r in peer.requests_to("/a/*")] == ["/a/x"] * 3
        assert peer.requests[0].at <= peer.requests[-1].at


async def test_multipart_form_is_parsed() -> None:
    async with HttpStandIn() as peer, aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("chat_id", "42")
        form.add_field("text", "héllo")
        form.add_field("document", b"bytes", filename="a.txt", content_type="text/plain")
        async with http.post(f"{peer.url}/bot/sendDocument", data=form) as resp:
            assert resp.status == 200
        assert peer.requests[0].form == {"chat_id": "42", "text": "héllo", "document": "bytes"}


async def test_wait_for_and_reset() -> None:
    async with HttpStandIn() as peer, aiohttp.ClientSession() as http:
        async def fire() -> None:
            await asyncio.sleep(0.05)
            async with http.put(f"{peer.url}/late", data=b"raw"):
                pass

        task = asyncio.create_task(fire())
        got = await peer.wait_for(1, "/late", timeout=2)
        await task
        assert got[0].body == b"raw" and got[0].method == "PUT"
        peer.reset()
        assert peer.requests == []


async def test_close_releases_hanging_requests_quickly() -> None:
    peer = await HttpStandIn().start()
    peer.script("/slow", hang(60))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(f"{peer.url}/slow", timeout=aiohttp.ClientTimeout(total=0.2)):
                pass
    started = time.monotonic()
    await peer.close()
    assert time.monotonic() - started < 2
