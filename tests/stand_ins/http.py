"""A reusable loopback HTTP stand-in: records every request and answers from a programmable script.

Use it for anything that speaks HTTP to a provider (Slack webhooks and Web API, Teams, Telegram Bot API,
Bot Connector, Twilio, generic webhooks)::

    async with HttpStandIn() as peer:                     # 127.0.0.1, a free port
        peer.script("/hook", (429, None, {"Retry-After": "2"}), (500,), hang(5), (200, "ok"))
        peer.on("*/sendMessage", lambda req: (200, {"ok": True, "result": {"message_id": 1}}))
        url = peer.url + "/hook"
        ...                                               # code under test talks to url
        assert peer.requests[0].json == {...}
        assert peer.requests_to("/hook")[1].headers["Idempotency-Key"] == "k1"

Answer selection for a request to `path` (query excluded), first match wins:
1. the queue of the first `script()` pattern matching `path` that still has replies (consumed in order);
2. the handler or fixed reply set with `on()` for the first matching pattern;
3. the stand-in's `default` (200, empty JSON object `{}` unless given).

Patterns are `fnmatch` globs on the path: "/hook", "/api/*", "*/sendMessage".

A reply is a `Reply`, or a tuple: `(status,)`, `(status, body)`, `(status, body, headers)`, or
`("hang", seconds)` (answer 200 only after `seconds`; use it for client timeouts; `close()` releases every
hanging request at once). `body` may be a dict/list (sent as JSON), str (text/plain), bytes, or None.
Note: in a 2-tuple the second element is always the body; headers go third:
`(429, None, {"Retry-After": "2"})`.
"""
from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, cast
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy


@dataclass
class Reply:
    """One scripted answer: status, body, headers, and an optional delay before answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


ReplyLike = Reply | tuple[Any, ...] | int
Handler = Callable[["Recorded"], ReplyLike | Awaitable[ReplyLike]]


def hang(seconds: float, status: int = 200) -> Reply:
    """A reply that stalls: the client's timeout should fire first."""
    return Reply(status=status, delay=seconds)


def retry_after(seconds: float | str, status: int = 429, body: Any = None) -> Reply:
    """A throttling reply with a Retry-After header."""
    return Reply(status=status, body=body, headers={"Retry-After": str(seconds)})


def as_reply(value: ReplyLike) -> Reply:
    """Normalise the tuple shorthands (see the module docstring) into a Reply."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, int):
        return Reply(status=value)
    if not isinstance(value, tuple) or not value:
        raise TypeError(f"not a reply: {value!r}")
    if value[0] == "hang":
        return hang(float(value[1]) if len(value) > 1 else 3600.0)
    status, body, headers = [*value, None, None][:3]
    return Reply(status=int(status), body=body, headers=dict(headers or {}))


@dataclass
class Recorded:
    """One request as the stand-in saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any
    """Parsed body when it is JSON (None otherwise)."""
    form: dict[str, str] | None
    """Parsed urlencoded or multipart form fields (first value of each), else None."""
    form_all: list[tuple[str, str]] | None
    at: float
    """time.monotonic() on arrival: compare with each other or with the test's own monotonic clock."""
    wall: float
    """time.time() on arrival."""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _parse_form(content_type: str, body: bytes) -> list[tuple[str, str]] | None:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    if ctype == "multipart/form-data":
        # The stdlib MIME parser reads multipart bodies without consuming aiohttp's stream twice.
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
        out = []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name is None:
                continue
            payload = cast(bytes, part.get_payload(decode=True) or b"")
            out.append((str(name), payload.decode(part.get_content_charset() or "utf-8", errors="replace")))
        return out
    return None


class HttpStandIn:
    """An aiohttp server on 127.0.0.1 that records requests and answers from scripts (see module doc)."""

    def __init__(self, *, default: ReplyLike | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[Recorded] = []
        self._default = as_reply(default) if default is not None else Reply(200, {})
        self._scripts: list[tuple[str, deque[Reply]]] = []
        self._handlers: list[tuple[str, Handler]] = []
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:40123."""
        return f"http://{self.host}:{self.port}"

    # --- programming the answers ---------------------------------------------------------------------

    def script(self, pattern: str, *replies: ReplyLike) -> HttpStandIn:
        """Queue replies for requests whose path matches `pattern`, consumed one per request."""
        for p, queue in self._scripts:
            if p == pattern:
                queue.extend(as_reply(r) for r in replies)
                return self
        self._scripts.append((pattern, deque(as_reply(r) for r in replies)))
        return self

    def on(self, pattern: str, handler: Handler | ReplyLike) -> HttpStandIn:
        """Answer matching requests with a fixed reply or `handler(recorded) -> reply` (sync or async)."""
        if callable(handler):
            self._handlers.append((pattern, handler))
        else:
            fixed = as_reply(handler)
            self._handlers.append((pattern, lambda _req: fixed))
        return self

    def set_default(self, reply: ReplyLike) -> HttpStandIn:
        self._default = as_reply(reply)
        return self

    def reset(self) -> None:
        """Forget recorded requests, scripts and handlers (the server keeps running)."""
        self.requests.clear()
        self._scripts.clear()
        self._handlers.clear()

    # --- reading what arrived ----------------------------------------------------------------------------

    def requests_to(self, pattern: str) -> list[Recorded]:
        return [r for r in self.requests if fnmatchcase(r.path, pattern)]

    async def wait_for(self, count: int, pattern: str = "*", timeout: float = 5.0) -> list[Recorded]:
        """Wait until at least `count` requests matching `pattern` arrived; return them."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.requests_to(pattern)) >= count),
                                   timeout)
        return self.requests_to(pattern)

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> HttpStandIn:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        return self

    async def close(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HttpStandIn:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the server side -----------------------------------------------------------------------------------

    async def _choose(self, rec: Recorded) -> Reply:
        for pattern, queue in self._scripts:
            if queue and fnmatchcase(rec.path, pattern):
                return queue.popleft()
        for pattern, handler in self._handlers:
            if fnmatchcase(rec.path, pattern):
                out = handler(rec)
                if asyncio.iscoroutine(out) or isinstance(out, Awaitable):
                    out = await out  # type: ignore[misc]
                return as_reply(out)  # type: ignore[arg-type]
        return self._default

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ctype = request.headers.get("Content-Type", "")
        parsed_json: Any = None
        if "json" in ctype.lower() and body:
            try:
                parsed_json = json.loads(body)
            except ValueError:
                parsed_json = None
        form_all = _parse_form(ctype, body)
        form: dict[str, str] | None = None
        if form_all is not None:
            form = {}
            for k, v in form_all:
                form.setdefault(k, v)
        rec = Recorded(
            method=request.method, path=request.path, query=dict(request.query),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body, json=parsed_json, form=form, form_all=form_all, at=time.monotonic(), wall=time.time(),
        )
        async with self._arrived:
            self.requests.append(rec)
            self._arrived.notify_all()
        reply = await self._choose(rec)
        if reply.delay:
            try:
                await asyncio.wait_for(self._released.wait(), reply.delay)
            except TimeoutError:
                pass  # the delay elapsed normally: answer now
        headers = dict(reply.headers)
        if isinstance(reply.body, (dict, list)):
            data = json.dumps(reply.body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(reply.body, str):
            data = reply.body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = reply.body or b""
        return web.Response(status=reply.status, body=data, headers=headers)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for servers that cannot bind port 0 themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
